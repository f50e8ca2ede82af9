"""Contract tests of the Avatar SDK adapter against the fake vendor, over real HTTP on loopback.

What they pin down: the requests the adapter sends (paths, auth, multipart fields, export
parameters), how it reads progress, exports and the ZIP, and which failures reach the user as
final versus "will be retried". The fake (``fake_avatar_sdk.py``) records every request, so most
tests assert on both what came back and what went out. Nobody really sleeps: retries use a
``sleep`` that only records its argument.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from fake_avatar_sdk import CLIENT_ID, CLIENT_SECRET, FakeAvatarSdk, Fault, make_storage_app
from gltf_builder import build_glb
from loopback import serve_asgi

from avatar_studio.avatar.blendshapes import ARKIT_52, CANONICAL_NAMES
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.providers.avatar_sdk import KEY_HINT, MOBILE_51, AvatarSdkProvider, blendshape_map_for
from avatar_studio.providers.base import JobOptions, ProviderError, ProviderStatus, Selfie

KEY = f"{CLIENT_ID}:{CLIENT_SECRET}"
SELFIE = Selfie(data=b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, mime_type="image/jpeg", width=640, height=480)
ARKIT = JobOptions(blendshapes="arkit")
BASIC = JobOptions(blendshapes="basic")
METAPERSON_VISEMES = ["PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou", "Laughter"]


def metaperson_glb(head: list[str] | int, teeth: list[str] | int | None = None) -> bytes:
    """A tiny GLB shaped like a MetaPerson export: a head mesh, optionally lower teeth.

    A list gives named targets (``extras.targetNames``); an int gives that many unnamed ones.
    """
    triangle = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)

    def mesh(spec: list[str] | int) -> dict[str, object]:
        count = spec if isinstance(spec, int) else len(spec)
        out: dict[str, object] = {"positions": triangle, "indices": [0, 1, 2],
                                  "targets": [triangle * 0.01 * (k + 1) for k in range(count)]}
        if not isinstance(spec, int):
            out["names"] = spec
        return out

    return build_glb([mesh(head)] + ([mesh(teeth)] if teeth is not None else []))


@dataclass
class Env:
    fake: FakeAvatarSdk
    url: str
    storage_url: str
    sleeps: list[float] = field(default_factory=list)
    providers: list[AvatarSdkProvider] = field(default_factory=list)

    def provider(self, key: str | None = KEY) -> AvatarSdkProvider:
        """A fresh adapter instance, as a new worker process would build it."""
        provider = AvatarSdkProvider(key, base_url=self.url, sleep=self.sleeps.append)
        self.providers.append(provider)
        return provider


@pytest.fixture(scope="module")
def head_glb() -> bytes:
    # raw ARKit spellings (eyeBlink_L) so the map has real work to do; teeth share jawOpen
    return make_arkit_head_glb(300, name_style="arkit_raw", split_teeth=True)


class Swappable:
    """An ASGI app that forwards to whichever fake the current test installed.

    Why: starting and stopping two uvicorn servers per test costs ~0.4 s each time; the servers live
    for the module and every test still gets a fake with fresh state and default switches.
    """

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Swappable, str, Swappable, str]]:
    api, storage = Swappable(), Swappable()
    with serve_asgi(storage) as storage_url, serve_asgi(api) as url:
        yield api, url, storage, storage_url


@pytest.fixture
def env(head_glb: bytes, servers: tuple[Swappable, str, Swappable, str]) -> Iterator[Env]:
    api, url, storage, storage_url = servers
    fake = FakeAvatarSdk(head_glb)
    api.app, storage.app = fake.app, make_storage_app(fake)
    environment = Env(fake, url, storage_url)
    yield environment
    for provider in environment.providers:
        provider.close()


def run_to_done(provider: AvatarSdkProvider, job_id: str, limit: int = 50) -> list[ProviderStatus]:
    statuses = []
    for _ in range(limit):
        status = provider.poll(job_id)
        statuses.append(status)
        if status.done:
            return statuses
    raise AssertionError(f"not done after {limit} polls: {statuses[-3:]}")


def raises(call: Callable[[], object]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        call()
    return info.value


# -- happy path --------------------------------------------------------------------------------------

def test_happy_path_sends_the_documented_requests_and_returns_a_mapped_glb(env: Env, head_glb: bytes) -> None:
    provider = env.provider()
    provider.check(SELFIE, ARKIT)
    job_id = provider.start(SELFIE, ARKIT)
    statuses = run_to_done(provider, job_id)
    result = provider.result(job_id)

    # progress: several steps, in [0, 1], never backwards, 1.0 only when done
    progress = [s.progress for s in statuses]
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert progress == sorted(progress)
    assert len(set(progress)) >= 4
    assert statuses[-1] == ProviderStatus(progress=1.0, done=True)
    assert not any(s.done for s in statuses[:-1]) and all(p < 1.0 for p in progress[:-1])

    # the token: client credentials, HTTP Basic, one request for the whole job
    (token_request,) = env.fake.recorded("token")
    assert token_request.headers["authorization"] == "Basic " + base64.b64encode(KEY.encode()).decode()
    assert token_request.fields == {"grant_type": "client_credentials"}
    assert token_request.content_type.startswith("multipart/form-data")
    (token,) = env.fake.tokens_issued

    # one player, then every avatar call carries the Bearer token and the player's UID
    (player,) = env.fake.players
    api_calls = [r for r in env.fake.requests if r.route in ("players", "create", "avatar", "exports", "file")]
    assert all(r.headers["authorization"] == f"Bearer {token}" for r in api_calls)
    assert all(r.headers.get("x-playeruid") == player for r in api_calls if r.route in ("create", "avatar", "exports"))
    assert all("access_token" not in r.query for r in api_calls)

    # the upload: documented multipart fields, a Content-Length rather than chunked transfer
    (create,) = env.fake.recorded("create")
    assert create.files["photo"] == ("selfie.jpg", "image/jpeg", SELFIE.data)
    assert create.fields["pipeline"] == "metaperson_2.0"
    assert create.fields["pipeline_subtype"] in ("male", "female")
    assert create.fields["name"]
    assert "transfer-encoding" not in create.headers and int(create.headers["content-length"]) > len(SELFIE.data)
    export = json.loads(create.fields["export_parameters"])
    assert export["format"] == "glb" and export["embed"] is True
    assert export["blendshapes"] == {"list": ["mobile_51"], "embed": True}
    assert export["textures"]["embed"] is True

    # the GLB is the one in the ZIP, it loads, and the map turns raw ARKit names into canonical ones
    assert result.glb == head_glb
    assert result.blendshape_map["eyeBlink_L"] == "eyeBlinkLeft"
    assert result.blendshape_map["jawOpen"] == "jawOpen"
    assert set(result.blendshape_map.values()) <= CANONICAL_NAMES
    avatar = load_avatar(result.glb, blendshape_map=result.blendshape_map)
    assert set(ARKIT_52) <= set(avatar.morph_names)
    assert avatar.raw_names["jawOpen"] == ["jawOpen"]  # head and teeth: one slider


def test_poll_before_the_export_is_listed_keeps_waiting_and_newest_export_wins(env: Env) -> None:
    env.fake.export_polls_to_complete = 3
    env.fake.old_failed_export = True  # an older failed export must not be mistaken for this job's
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    statuses = run_to_done(provider, job_id)
    export_phase = [s.progress for s in statuses if 0.9 <= s.progress < 1.0]
    assert len(export_phase) >= 2
    assert provider.result(job_id).glb.startswith(b"glTF")


def test_download_redirected_to_storage_sends_no_credentials_there(env: Env, head_glb: bytes) -> None:
    env.fake.storage_url = env.storage_url
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    run_to_done(provider, job_id)
    assert provider.result(job_id).glb == head_glb
    (file_request,) = env.fake.recorded("file")
    assert file_request.headers["authorization"].startswith("Bearer ")
    (stored,) = env.fake.recorded("storage")
    assert "authorization" not in stored.headers
    assert "x-playeruid" not in stored.headers and "x-user-agent" not in stored.headers


# -- token handling ----------------------------------------------------------------------------------

def test_token_is_fetched_once_for_many_calls(env: Env) -> None:
    provider = env.provider()
    for _ in range(3):
        job_id = provider.start(SELFIE, ARKIT)
        run_to_done(provider, job_id)
        provider.result(job_id)
    assert len(env.fake.recorded("token")) == 1
    assert len(env.fake.players) == 1  # the player is cached by the instance too
    assert len(env.fake.recorded("create")) == 3


def test_revoked_token_is_refreshed_once_and_the_call_repeated(env: Env) -> None:
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    env.fake.revoke_tokens()
    status = provider.poll(job_id)
    assert not status.done
    assert len(env.fake.tokens_issued) == 2
    first, second = env.fake.recorded("avatar")
    assert first.headers["authorization"] != second.headers["authorization"]
    assert second.headers["authorization"] == f"Bearer {env.fake.tokens_issued[1]}"


def test_upload_is_resent_whole_after_a_token_refresh(env: Env) -> None:
    provider = env.provider()
    provider.check(SELFIE, ARKIT)
    provider.poll(provider.start(SELFIE, ARKIT))  # warm the token and the player
    env.fake.revoke_tokens()
    provider.start(SELFIE, ARKIT)
    refused, accepted = env.fake.recorded("create")[1:]
    assert refused.files["photo"][2] == accepted.files["photo"][2] == SELFIE.data
    assert len(env.fake.avatars) == 2


def test_expired_token_is_replaced_before_use(env: Env) -> None:
    env.fake.token_expires_in = 0  # every token is stale as soon as it arrives
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    provider.poll(job_id)
    assert len(env.fake.tokens_issued) == 3  # players, create, poll


def test_api_refusing_even_a_new_token_is_a_key_error(env: Env) -> None:
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    denied = Fault(401, {"detail": "Invalid token."})
    env.fake.inject("avatar", denied, denied)
    error = raises(lambda: provider.poll(job_id))
    assert not error.transient
    assert str(error) == "Avatar SDK refused the API key (HTTP 401); check the key in Settings"
    assert len(env.fake.tokens_issued) == 2  # refreshed exactly once


# -- resuming in another process ---------------------------------------------------------------------

def test_a_fresh_instance_resumes_the_job_from_its_id_alone(env: Env, head_glb: bytes) -> None:
    job_id = env.provider().start(SELFIE, ARKIT)
    resumed = env.provider()  # another worker process: no cached token, no cached player
    run_to_done(resumed, job_id)
    assert resumed.result(job_id).glb == head_glb
    (player,) = env.fake.players  # the second instance created no player of its own
    assert all(r.headers["x-playeruid"] == player for r in env.fake.requests if r.route in ("avatar", "exports"))
    assert len(env.fake.recorded("token")) == 2  # one per instance


def test_a_damaged_job_id_is_a_final_error(env: Env) -> None:
    error = raises(lambda: env.provider().poll("no-separator"))
    assert not error.transient and "damaged" in str(error)


# -- blendshape sets and names -----------------------------------------------------------------------

def test_basic_asks_for_visemes_and_maps_them(env: Env) -> None:
    env.fake.glb = metaperson_glb(["Body", "NoseWidth"], METAPERSON_VISEMES)
    provider = env.provider()
    job_id = provider.start(SELFIE, BASIC)
    run_to_done(provider, job_id)
    result = provider.result(job_id)
    export = json.loads(env.fake.recorded("create")[0].fields["export_parameters"])
    assert export["blendshapes"]["list"] == ["visemes_15"]
    assert result.blendshape_map["PP"] == "viseme_PP"
    assert result.blendshape_map["ih"] == "viseme_ih"
    assert result.blendshape_map["E"] == "viseme_E"
    assert "Laughter" not in result.blendshape_map  # not an OVR viseme: keeps its name
    assert "NoseWidth" not in result.blendshape_map and "Body" not in result.blendshape_map  # identity shapes
    avatar = load_avatar(result.glb, blendshape_map=result.blendshape_map)
    assert {f"viseme_{v}" for v in METAPERSON_VISEMES[:-1]} <= set(avatar.morph_names)


def test_unnamed_targets_fall_back_to_index_order() -> None:
    glb = metaperson_glb(51, 15)
    mapping = blendshape_map_for(glb)
    # both meshes have target_0..target_14, with different meanings: those keys are left out
    assert "target_0" not in mapping and "target_14" not in mapping
    assert mapping["target_15"] == MOBILE_51[15]
    assert mapping["target_50"] == MOBILE_51[50]
    head_only = blendshape_map_for(metaperson_glb(51))
    assert [head_only[f"target_{k}"] for k in range(51)] == list(MOBILE_51)
    avatar = load_avatar(metaperson_glb(51), blendshape_map=head_only)
    assert set(avatar.morph_names) == set(ARKIT_52) - {"tongueOut"}
    visemes = blendshape_map_for(metaperson_glb(15))
    assert visemes["target_0"] == "viseme_PP" and visemes["target_13"] == "viseme_ou"
    assert "target_14" not in visemes  # Laughter


def test_map_never_makes_a_mesh_ambiguous() -> None:
    # the head has both spellings of one shape; the teeth only the raw one
    glb = metaperson_glb(["jawOpen", "JawOpen", "mouthSmile_L"], ["JawOpen"])
    mapping = blendshape_map_for(glb)
    assert mapping == {"jawOpen": "jawOpen", "mouthSmile_L": "mouthSmileLeft"}
    load_avatar(glb, blendshape_map=mapping)  # must not raise


# -- failures ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", [None, "", "no-colon", ":secret", "id:", "   "])
def test_missing_or_malformed_key_is_refused_before_any_request(env: Env, key: str | None) -> None:
    provider = env.provider(key)
    error = raises(lambda: provider.check(SELFIE, ARKIT))
    assert str(error) == KEY_HINT and not error.transient
    assert str(raises(lambda: provider.start(SELFIE, ARKIT))) == KEY_HINT
    assert env.fake.requests == []


def test_missing_selfie_is_refused(env: Env) -> None:
    error = raises(lambda: env.provider().check(None, ARKIT))
    assert not error.transient and "selfie" in str(error)


def test_wrong_key_is_a_final_key_error(env: Env) -> None:
    provider = env.provider(f"{CLIENT_ID}:wrong-secret")
    provider.check(SELFIE, ARKIT)  # the shape is fine; only the vendor can tell it is wrong
    error = raises(lambda: provider.start(SELFIE, ARKIT))
    assert str(error) == "Avatar SDK refused the API key (HTTP 401); check the key in Settings"
    assert not error.transient
    assert env.fake.recorded("create") == []


def test_429_with_retry_after_is_waited_out(env: Env) -> None:
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    env.fake.inject("avatar", Fault(429, {"detail": "Request was throttled."}, {"Retry-After": "7"}))
    assert not provider.poll(job_id).done
    assert len(env.fake.recorded("avatar")) == 2
    assert env.sleeps and max(env.sleeps) >= 7


def test_429_that_does_not_stop_is_transient_with_retry_after(env: Env) -> None:
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    throttled = Fault(429, {"detail": "Request was throttled."}, {"Retry-After": "12"})
    env.fake.inject("avatar", *[throttled] * 10)
    error = raises(lambda: provider.poll(job_id))
    assert error.transient and error.retry_after == 12
    assert "not available right now" in str(error)


def test_5xx_burst_on_a_read_is_retried(env: Env) -> None:
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    env.fake.inject("avatar", Fault(503, "<html>Service Unavailable</html>"), Fault(502), Fault(500))
    assert provider.poll(job_id).progress >= 0.0
    assert len(env.fake.recorded("avatar")) == 4


def test_long_5xx_outage_is_transient(env: Env) -> None:
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    env.fake.inject("exports", *[Fault(503)] * 10)
    env.fake.polls_to_complete = 1
    error = raises(lambda: provider.poll(job_id))
    assert error.transient and "HTTP 503" in str(error)


def test_5xx_on_the_upload_is_not_retried_and_is_transient(env: Env) -> None:
    provider = env.provider()
    env.fake.inject("create", Fault(500, {"detail": "Internal error"}))
    error = raises(lambda: provider.start(SELFIE, ARKIT))
    assert error.transient
    assert len(env.fake.recorded("create")) == 1  # a retry could have made a second avatar


def test_token_endpoint_5xx_is_retried(env: Env) -> None:
    env.fake.inject("token", Fault(503), Fault(503))
    provider = env.provider()
    provider.start(SELFIE, ARKIT)
    assert len(env.fake.recorded("token")) == 3


def test_malformed_json_is_transient(env: Env) -> None:
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    env.fake.inject("avatar", Fault(200, '{"status": "Computing", "progr'))
    error = raises(lambda: provider.poll(job_id))
    assert error.transient and "not valid JSON" in str(error)


def test_rejected_upload_reports_the_vendor_detail(env: Env) -> None:
    provider = env.provider()
    env.fake.inject("create", Fault(400, {"detail": "photo: This field is required."}))
    error = raises(lambda: provider.start(SELFIE, ARKIT))
    assert not error.transient
    assert str(error) == "Avatar SDK rejected the request (HTTP 400): photo: This field is required."


def test_zip_without_a_glb_is_a_final_error(env: Env) -> None:
    env.fake.zip_without_glb = True
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    run_to_done(provider, job_id)
    error = raises(lambda: provider.result(job_id))
    assert not error.transient
    assert "contains no GLB model" in str(error) and "model.fbx" in str(error)


def test_expired_storage_link_is_transient_and_gets_no_credentials(env: Env) -> None:
    env.fake.storage_url = env.storage_url
    env.fake.storage_expired = True
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    run_to_done(provider, job_id)
    error = raises(lambda: provider.result(job_id))
    assert error.transient and "expired" in str(error)
    stored = env.fake.recorded("storage")
    assert stored and all("authorization" not in r.headers for r in stored)
    # the worker retries later: a fresh link works
    env.fake.storage_expired = False
    assert provider.result(job_id).glb.startswith(b"glTF")


def test_a_job_that_never_finishes_keeps_reporting_progress_below_done(env: Env) -> None:
    env.fake.polls_to_complete = None
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    statuses = [provider.poll(job_id) for _ in range(25)]
    assert not any(s.done for s in statuses)
    progress = [s.progress for s in statuses]
    assert progress == sorted(progress) and max(progress) < 0.9
    assert env.fake.recorded("exports") == []  # nothing to export yet


@pytest.mark.parametrize(("status", "key"), [("Failed", "message"), ("Timed Out", "status_message"),
                                             ("Failed", "detail")])
def test_failed_job_is_final_with_the_vendor_message(env: Env, status: str, key: str) -> None:
    env.fake.fail_after_polls = 2
    env.fake.fail_status = status
    env.fake.failure_message_key = key
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    assert not provider.poll(job_id).done
    error = raises(lambda: provider.poll(job_id))
    assert not error.transient
    assert str(error) == f"Avatar SDK could not make the avatar (status {status}): No face found in the photo"


def test_failed_export_is_final(env: Env) -> None:
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    env.fake.polls_to_complete = 1
    failed = {"code": "x", "created_on": "2026-05-01T10:05:00Z", "status": "Failed", "files": []}
    env.fake.inject("exports", Fault(200, [failed]))
    error = raises(lambda: provider.poll(job_id))
    assert not error.transient and "could not export the avatar as GLB (status Failed)" in str(error)


# -- secrets -----------------------------------------------------------------------------------------

def test_key_and_token_never_reach_logs_or_errors(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env.fake.storage_url = env.storage_url
    messages: list[str] = []
    provider = env.provider()
    job_id = provider.start(SELFIE, ARKIT)
    env.fake.inject("avatar", Fault(429, {}, {"Retry-After": "1"}), Fault(503))
    run_to_done(provider, job_id)
    provider.result(job_id)
    env.fake.revoke_tokens()
    provider.poll(job_id)
    env.fake.inject("avatar", Fault(401), Fault(401))
    messages.append(str(raises(lambda: provider.poll(job_id))))
    messages.append(str(raises(lambda: env.provider(f"{CLIENT_ID}:{CLIENT_SECRET}x").start(SELFIE, ARKIT))))
    messages.append(repr(provider._cached_token))

    secrets = [CLIENT_SECRET, base64.b64encode(KEY.encode()).decode(), *env.fake.tokens_issued]
    assert caplog.records  # the adapter and httpx did log
    logged = [record.getMessage() for record in caplog.records] + [repr(record.args) for record in caplog.records]
    for secret in secrets:
        assert not any(secret in line for line in logged), "a secret reached the log"
        assert not any(secret in message for message in messages), "a secret reached an error message"
