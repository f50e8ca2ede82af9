"""Contract tests of the Didimo adapter against a fake Didimo over real HTTP (``fake_didimo.py``).

What matters here, beyond the happy path: Didimo's poses are joint poses, so the adapter's baked
morph deltas are checked against deltas computed in this file from the rig's own numbers (a
rotation about the jaw pivot, an eyelid offset), not against the adapter's code; the API key must
never reach the storage host the result link redirects to; and each failure must reach the user
as one clear sentence with the right transient flag, without the key in it or in the logs.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from fake_didimo import (
    API_KEY,
    EYELID_DROP,
    GRID_X,
    GRID_Y,
    HEAD_YAW,
    JAW_AA,
    JAW_I,
    JAW_OPEN,
    JAW_PIVOT,
    DidimoFake,
    build_didimo_zip,
    head_grid,
    run_fake_didimo,
)

from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.providers.base import JobOptions, ProviderError, Selfie
from avatar_studio.providers.didimo import DidimoProvider, pose_frame_pair

SELFIE = Selfie(data=b"\xff\xd8\xff\xe0 not really a jpeg", mime_type="image/jpeg", width=640, height=480)
ARKIT = JobOptions(blendshapes="arkit")
BASIC = JobOptions(blendshapes="basic")


@pytest.fixture
def fake() -> DidimoFake:
    return DidimoFake(zip_bytes=build_didimo_zip())


@pytest.fixture
def api_url(fake: DidimoFake) -> Iterator[str]:
    with run_fake_didimo(fake) as url:
        yield url


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def provider(api_url: str, sleeps: list[float]) -> Iterator[DidimoProvider]:
    p = DidimoProvider(API_KEY, base_url=api_url, sleep=sleeps.append)
    yield p
    p.close()


def run_job(provider: DidimoProvider, options: JobOptions = ARKIT, max_polls: int = 10) -> tuple[str, list[float]]:
    job = provider.start(SELFIE, options)
    progress = []
    for _ in range(max_polls):
        status = provider.poll(job)
        progress.append(status.progress)
        if status.done:
            return job, progress
    raise AssertionError(f"not done after {max_polls} polls: {progress}")


def glb_json(glb: bytes) -> dict:
    length, kind = struct.unpack_from("<II", glb, 12)
    assert kind == 0x4E4F534A
    return json.loads(glb[20 : 20 + length])


# -- independent expectations (plain numpy, from the fake rig's constants) --------------------------
def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def jaw_delta_world(p: np.ndarray, angle: float) -> np.ndarray:
    """World offset of a vertex fully on the jaw when the jaw turns by ``angle`` about its pivot.

    The head joint is yawed at rest, so both poses sit inside that yaw: world = R_y(yaw) · local.
    """
    posed_local = JAW_PIVOT + rot_x(angle) @ (p - JAW_PIVOT)
    return rot_y(HEAD_YAW) @ (posed_local - p)


def head_primitive_deltas(glb: bytes, blendshape_map: dict[str, str], morph: str) -> tuple[np.ndarray, np.ndarray]:
    """(rest world positions, world deltas of ``morph``) of the head mesh as the app's loader reads them."""
    avatar = load_avatar(glb, blendshape_map=blendshape_map)
    prim = next(p for p in avatar.primitives if p.name == "ddmo_head")
    slot = avatar.morph_index(morph)
    k = list(prim.morph_slots).index(slot)
    return prim.positions.astype(np.float64), prim.morph_positions[k].astype(np.float64)


# -- happy path ---------------------------------------------------------------------------------------
def test_happy_path_creates_polls_and_bakes_the_arkit_pack(provider: DidimoProvider, fake: DidimoFake) -> None:
    job, progress = run_job(provider)

    assert job == "arkit/dd0001"
    created = fake.created[0]
    assert created["fields"] == {"input_type": "photo", "transfer_formats": "gltf", "arkit": "true"}
    assert created["photo"] == SELFIE.data and created["photo_type"] == "image/jpeg"
    assert progress == [0.0, pytest.approx(0.33), 1.0]

    result = provider.result(job)
    assert result.blendshape_map == {"ARKit_eyeBlinkLeft": "eyeBlinkLeft", "ARKit_jawOpen": "jawOpen"}

    doc = glb_json(result.glb)
    head, hair = doc["meshes"]
    assert head["extras"]["targetNames"] == ["ARKit_eyeBlinkLeft", "ARKit_jawOpen"]
    assert "targets" not in hair["primitives"][0]  # no pose moves the hair: it gets no targets at all
    assert doc["asset"]["extras"]["avatar_studio"]["didimo_bake"]["unmoved"] == ["cheekPuff"]
    # one self-contained GLB that still has its skeleton
    assert len(doc["buffers"]) == 1 and "uri" not in doc["buffers"][0]
    assert all("uri" not in image and image["mimeType"] == "image/png" for image in doc["images"])
    assert doc["skins"][0]["joints"] == [1, 2, 3] and doc["nodes"][4]["skin"] == 0
    # two eyelid vertices move for the blink: stored sparse; the jaw moves 15 of 25: stored dense
    blink, jaw = (doc["accessors"][t["POSITION"]] for t in head["primitives"][0]["targets"])
    assert blink["sparse"]["count"] == 2 and "bufferView" not in blink
    assert "bufferView" in jaw and "sparse" not in jaw

    avatar = load_avatar(result.glb, blendshape_map=result.blendshape_map)
    assert {"jawOpen", "eyeBlinkLeft"} <= set(avatar.morph_names)
    assert "cheekPuff" not in avatar.morph_names
    assert avatar.textures and avatar.warnings == []


def test_baked_jaw_open_equals_the_jaw_rotation_computed_independently(provider: DidimoProvider) -> None:
    job, _ = run_job(provider)
    result = provider.result(job)
    rest, jaw = head_primitive_deltas(result.glb, result.blendshape_map, "jawOpen")

    grid, _, _ = head_grid()
    grid = grid.astype(np.float64)
    # The loader shows the rest pose (head yawed), so the rest is not the bind pose the mesh is stored in.
    np.testing.assert_allclose(rest, grid @ rot_y(HEAD_YAW).T, atol=1e-6)
    per_row = len(GRID_X)
    for v, p in enumerate(grid):
        row = v // per_row
        expected = {0: 1.0, 1: 1.0, 2: 0.5}.get(row, 0.0) * jaw_delta_world(p, JAW_OPEN)
        np.testing.assert_allclose(jaw[v], expected, atol=2e-6, err_msg=f"vertex {v} (row y={GRID_Y[row]})")
    assert np.linalg.norm(jaw[0]) > 0.01  # the chin really moves (a centimetre or more)


def test_baked_blink_is_the_eyelid_offset_in_the_yawed_head(provider: DidimoProvider) -> None:
    job, _ = run_job(provider)
    result = provider.result(job)
    _, blink = head_primitive_deltas(result.glb, result.blendshape_map, "eyeBlinkLeft")

    top_row = len(GRID_Y) - 1
    on_eyelid = [top_row * len(GRID_X) + i for i, x in enumerate(GRID_X) if x > 0]
    assert on_eyelid == [23, 24]
    expected = np.zeros_like(blink)
    expected[on_eyelid] = rot_y(HEAD_YAW) @ EYELID_DROP
    np.testing.assert_allclose(blink, expected, atol=1e-6)


def test_basic_bakes_the_oculus_visemes(provider: DidimoProvider, fake: DidimoFake) -> None:
    job, _ = run_job(provider, BASIC)
    assert job.startswith("basic/")
    assert fake.created[0]["fields"] == {"input_type": "photo", "transfer_formats": "gltf", "oculus_lipsync": "true"}

    result = provider.result(job)
    assert result.blendshape_map == {"oculus_aa": "viseme_aa", "oculus_I": "viseme_ih"}
    doc = glb_json(result.glb)
    assert doc["meshes"][0]["extras"]["targetNames"] == ["oculus_aa", "oculus_I"]
    assert doc["asset"]["extras"]["avatar_studio"]["didimo_bake"]["unmoved"] == ["sil"]
    grid = head_grid()[0].astype(np.float64)
    for morph, angle in (("viseme_aa", JAW_AA), ("viseme_ih", JAW_I)):
        _, delta = head_primitive_deltas(result.glb, result.blendshape_map, morph)
        np.testing.assert_allclose(delta[0], jaw_delta_world(grid[0], angle), atol=2e-6)


def test_the_api_key_never_reaches_the_storage_host(provider: DidimoProvider, fake: DidimoFake) -> None:
    job, _ = run_job(provider)
    provider.result(job)

    assert fake.storage_headers, "the download never reached storage"
    for headers in fake.storage_headers:
        assert "didimo-api-key" not in headers and "authorization" not in headers
        assert API_KEY not in json.dumps(headers)
    assert set(fake.api_keys_seen) == {API_KEY}  # while every call to the API itself carried it
    assert ("GET", "/v3/didimos/dd0001/results/gltf") in fake.api_calls


def test_pose_frame_pair_is_the_group_neutral_then_the_range_end() -> None:
    ranges = {"browDownLeft": [0, 1], "jawOpen": [48, 50]}
    assert pose_frame_pair(ranges, "jawOpen") == (0.0, 50.0)
    assert pose_frame_pair({"Anger": [104, 105], "Neutral": [116, 117]}, "Anger") == (116.0, 105.0)


# -- transient failures ----------------------------------------------------------------------------
def test_429_is_retried_honouring_retry_after(provider: DidimoProvider, fake: DidimoFake, sleeps: list[float]) -> None:
    fake.inject = [429, 429]
    fake.retry_after = "7"
    job = provider.start(SELFIE, ARKIT)
    assert job == "arkit/dd0001"
    assert len(sleeps) == 2 and all(s >= 7 for s in sleeps)


def test_a_5xx_burst_while_polling_is_retried(provider: DidimoProvider, fake: DidimoFake) -> None:
    job = provider.start(SELFIE, ARKIT)
    fake.inject = [503, 502, 500]
    assert provider.poll(job).progress == 0.0


def test_a_5xx_burst_longer_than_the_retries_is_transient(provider: DidimoProvider, fake: DidimoFake) -> None:
    job = provider.start(SELFIE, ARKIT)
    fake.inject = [503] * 10
    with pytest.raises(ProviderError, match="didimo is not available right now") as err:
        provider.poll(job)
    assert err.value.transient


def test_a_5xx_on_create_is_not_resent(provider: DidimoProvider, fake: DidimoFake) -> None:
    """A POST that failed server-side may still have created (and billed) a didimo: no blind resend."""
    fake.inject = [500]
    with pytest.raises(ProviderError, match="not available right now") as err:
        provider.start(SELFIE, ARKIT)
    assert err.value.transient
    assert [call for call in fake.api_calls if call[0] == "POST"] == [("POST", "/v3/didimos")]


def test_malformed_json_is_transient(provider: DidimoProvider, fake: DidimoFake) -> None:
    job = provider.start(SELFIE, ARKIT)
    fake.malformed_json = True
    with pytest.raises(ProviderError, match="not valid JSON") as err:
        provider.poll(job)
    assert err.value.transient


def test_an_expired_download_link_is_transient(provider: DidimoProvider, fake: DidimoFake) -> None:
    job, _ = run_job(provider)
    fake.expired_download = True
    with pytest.raises(ProviderError, match="download link from didimo has expired") as err:
        provider.result(job)
    assert err.value.transient


def test_a_job_that_never_finishes_keeps_reporting_progress(provider: DidimoProvider, fake: DidimoFake) -> None:
    fake.never_finish = True
    job = provider.start(SELFIE, ARKIT)
    statuses = [provider.poll(job) for _ in range(6)]
    assert all(not s.done and s.progress == pytest.approx(0.42) for s in statuses)
    with pytest.raises(ProviderError, match="not finished") as err:
        provider.result(job)
    assert err.value.transient
    assert not fake.storage_headers


# -- final failures ----------------------------------------------------------------------------------
def test_a_refused_key_is_final(api_url: str, fake: DidimoFake) -> None:
    provider = DidimoProvider("wrong-key", base_url=api_url, sleep=lambda s: None)
    with pytest.raises(ProviderError, match=r"didimo refused the API key \(HTTP 401\)") as err:
        provider.start(SELFIE, ARKIT)
    assert not err.value.transient
    assert not fake.created


def test_a_failed_job_reports_didimos_message(provider: DidimoProvider, fake: DidimoFake) -> None:
    job = provider.start(SELFIE, ARKIT)
    fake.fail_with = "No face detected in the photo"
    with pytest.raises(ProviderError) as err:
        provider.poll(job)
    assert str(err.value) == "didimo could not build the avatar: No face detected in the photo (error 10042)"
    assert not err.value.transient


@pytest.mark.parametrize(
    ("zip_kwargs", "message"),
    [
        ({"without": ("avatar.gltf",)}, "didimo's result ZIP contains no glTF model (it holds: "),
        ({"without": ("ddmo_head.bin",)}, "avatar.gltf refers to the buffer 'ddmo_head.bin', which is not in the ZIP"),
        ({"without": ("ddmo_head_albedo.png",)}, "the texture 'ddmo_head_albedo.png', which is not in the ZIP"),
        ({"without": ("avatar_info.json",)}, "this didimo has no ARKit pose pack: its result has no avatar_info.json"),
        ({"animation_frames": {"oculus": {"aa": [0, 1]}}}, "this didimo has no ARKit pose pack (avatar_info.json"),
        ({"animation_frames": {"ARKit": {"cheekPuff": [5, 6]}}}, "none of the didimo's 1 ARKit poses moves any vertex"),
    ],
)
def test_broken_results_are_final_with_a_clear_message(
    provider: DidimoProvider, fake: DidimoFake, zip_kwargs: dict, message: str
) -> None:
    fake.zip_bytes = build_didimo_zip(**zip_kwargs)
    job, _ = run_job(provider)
    with pytest.raises(ProviderError) as err:
        provider.result(job)
    assert message in str(err.value)
    assert not err.value.transient


def test_a_result_that_is_not_a_zip_is_transient(provider: DidimoProvider, fake: DidimoFake) -> None:
    fake.zip_bytes = b"<html>gateway hiccup</html>"
    job, _ = run_job(provider)
    with pytest.raises(ProviderError, match="not a valid ZIP") as err:
        provider.result(job)
    assert err.value.transient


def test_check_refuses_what_didimo_cannot_do(api_url: str) -> None:
    with pytest.raises(ProviderError, match="needs an API key"):
        DidimoProvider(None, base_url=api_url).check(SELFIE, ARKIT)
    provider = DidimoProvider(API_KEY, base_url=api_url)
    with pytest.raises(ProviderError, match="upload a selfie"):
        provider.check(None, ARKIT)
    heic = Selfie(data=b"....", mime_type="image/heic", width=1, height=1)
    with pytest.raises(ProviderError, match="JPEG or PNG"):
        provider.check(heic, ARKIT)


def test_the_key_is_never_logged_nor_in_errors(
    api_url: str, fake: DidimoFake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = DidimoProvider(API_KEY, base_url=api_url, sleep=lambda s: None)
    messages = [repr(provider)]
    job, _ = run_job(provider)
    provider.result(job)
    fake.inject = [429] * 6
    fake.expired_download = True
    for call in (lambda: provider.poll(job), lambda: provider.result(job)):
        with pytest.raises(ProviderError) as err:
            call()
        messages.append(str(err.value))
    fake.fail_with = "face not found"
    with pytest.raises(ProviderError) as err:
        provider.poll(job)
    messages.append(str(err.value))
    provider.close()

    assert caplog.records, "nothing was logged, so this test proves nothing"
    assert API_KEY not in caplog.text
    for message in messages:
        assert API_KEY not in message
