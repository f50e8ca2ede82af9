"""Contract tests for the in3D (Avaturn) adapter against a fake of the vendor over real HTTP.

What is pinned here is what the user sees: the refusals before a job is queued (exact wording), the
page link while the job waits for them, a GLB the app can load with canonical blendshape names, and
one clear sentence with the right transient flag for each way the provider can fail.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from fake_in3d import FakeIn3d

from avatar_studio.avatar.blendshapes import ARKIT_52, CANONICAL_NAMES
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.providers.base import JobOptions, ProviderError, ProviderStatus, Selfie
from avatar_studio.providers.in3d import DEFAULT_BASE_URL, In3dProvider

TOKEN = "avt-SECRET-0123456789abcdef0123456789abcdef"
SELFIE = Selfie(data=b"\xff\xd8\xff" + b"\x00" * 64, mime_type="image/jpeg", width=640, height=480)


@pytest.fixture
def fake() -> Iterator[FakeIn3d]:
    with FakeIn3d(TOKEN).running() as running:
        yield running


@pytest.fixture
def sleeps() -> list[float]:
    return []


def provider(fake: FakeIn3d, sleeps: list[float], key: str | None = TOKEN) -> In3dProvider:
    return In3dProvider(key, base_url=fake.api_url, sleep=sleeps.append)


def started(fake: FakeIn3d, sleeps: list[float]) -> tuple[In3dProvider, str]:
    p = provider(fake, sleeps)
    p.check(None, JobOptions())
    return p, p.start(None, JobOptions())


def finish(fake: FakeIn3d, user_id: str) -> None:
    """The user completes the scan in Avaturn's page (through the fake's control endpoint)."""
    httpx.post(f"{fake.api_url}/control/complete/{user_id}").raise_for_status()


def run_to_done(p: In3dProvider, job_id: str, limit: int = 10) -> list[ProviderStatus]:
    seen = []
    for _ in range(limit):
        seen.append(p.poll(job_id))
        if seen[-1].done:
            return seen
    raise AssertionError(f"not done after {limit} polls: {seen}")


# -- check(): refused before anything is queued -----------------------------------------------------
def test_check_refuses_a_missing_key() -> None:
    with pytest.raises(ProviderError) as info:
        In3dProvider(None, base_url="http://127.0.0.1:9").check(None, JobOptions())
    assert str(info.value) == ("in3D (Avaturn) needs an API token; set it in Settings "
                               "(Avaturn's API is only available on a paid plan)")
    assert info.value.transient is False


def test_check_refuses_a_selfie_because_the_scan_happens_in_the_providers_page() -> None:
    with pytest.raises(ProviderError) as info:
        In3dProvider(TOKEN, base_url="http://127.0.0.1:9").check(SELFIE, JobOptions())
    assert str(info.value) == ("in3D needs the user to complete a scan in its own page; the selfie is not sent. "
                               "Start the job without a photo, then open the page the job links to")
    assert info.value.transient is False


def test_check_refuses_the_basic_set_which_cannot_be_requested() -> None:
    with pytest.raises(ProviderError) as info:
        In3dProvider(TOKEN, base_url="http://127.0.0.1:9").check(None, JobOptions(blendshapes="basic"))
    assert str(info.value) == (
        'in3D (Avaturn) cannot be asked for the "basic" blendshape set: its export takes no options, and '
        'the face shapes depend on the body type chosen in its page; use blendshapes "arkit"')
    assert info.value.transient is False


def test_check_accepts_a_job_without_selfie_and_sends_nothing(fake: FakeIn3d, sleeps: list[float]) -> None:
    assert In3dProvider.needs_selfie is False and In3dProvider.name == "in3d"
    provider(fake, sleeps).check(None, JobOptions())
    assert fake.api_calls == []


def test_the_base_url_comes_from_the_environment_or_the_documented_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IN3D_URL", raising=False)
    assert str(In3dProvider(TOKEN)._http.client.base_url).rstrip("/") == DEFAULT_BASE_URL
    monkeypatch.setenv("IN3D_URL", "http://avaturn.internal:8080")
    assert str(In3dProvider(TOKEN)._http.client.base_url).rstrip("/") == "http://avaturn.internal:8080"


# -- the happy path -----------------------------------------------------------------------------------
def test_the_job_shows_the_page_waits_for_the_user_then_delivers_a_loadable_glb(
    fake: FakeIn3d, sleeps: list[float]
) -> None:
    p, job_id = started(fake, sleeps)
    assert fake.sessions == []  # the first poll makes the link, so a failed start never costs a second user

    waiting = [p.poll(job_id) for _ in range(3)]
    assert fake.sessions == [{"id": fake.sessions[0]["id"], "user_id": job_id, "type": "create_or_edit_existing"}]
    assert all(not s.done and s.progress == 0.0 and s.action_url for s in waiting)
    assert len({s.action_url for s in waiting}) == 1  # the same link while it is fresh
    page = httpx.get(waiting[0].action_url or "")
    assert page.status_code == 200 and "scan page" in page.text

    finish(fake, job_id)
    statuses = run_to_done(p, job_id)
    assert statuses[0] == ProviderStatus(progress=0.5)  # exporting: the user's part is over, no link
    assert statuses[-1] == ProviderStatus(progress=1.0, done=True)

    result = p.result(job_id)
    avatar = load_avatar(result.glb, blendshape_map=result.blendshape_map)
    assert set(ARKIT_52) <= set(avatar.morph_names)
    assert result.blendshape_map["eyeBlink_L"] == "eyeBlinkLeft"  # the fake spells ARKit's raw values
    assert result.blendshape_map["jawOpen"] == "jawOpen"
    assert set(result.blendshape_map.values()) <= CANONICAL_NAMES
    assert fake.storage_auth_seen == []  # the signed URL never saw the token
    assert fake.uploads == 0  # no photo ever left the app
    assert len(fake.sessions) == 1


def test_the_user_can_also_finish_after_some_polls(fake: FakeIn3d, sleeps: list[float]) -> None:
    fake.complete_after_polls = 2
    fake.export_pending_calls = 0
    p, job_id = started(fake, sleeps)
    statuses = run_to_done(p, job_id)
    assert [s.action_url is not None for s in statuses] == [True, True, False]
    assert p.result(job_id).glb[:4] == b"glTF"


def test_a_fresh_instance_resumes_from_the_job_id_alone(fake: FakeIn3d, sleeps: list[float]) -> None:
    first, job_id = started(fake, sleeps)
    first.poll(job_id)
    resumed = provider(fake, sleeps)
    status = resumed.poll(job_id)
    assert status.action_url and not status.done
    assert len(fake.sessions) == 2  # a new link: Avaturn's links are per use and the old one is not stored
    finish(fake, job_id)
    run_to_done(provider(fake, sleeps), job_id)
    result = provider(fake, sleeps).result(job_id)  # the export URL is asked for again, never stored
    assert load_avatar(result.glb).morph_names


def test_an_old_session_link_is_replaced(fake: FakeIn3d, sleeps: list[float]) -> None:
    now = [0.0]
    p = In3dProvider(TOKEN, base_url=fake.api_url, sleep=sleeps.append, session_ttl_s=60, clock=lambda: now[0])
    job_id = p.start(None, JobOptions())
    first = p.poll(job_id).action_url
    now[0] = 59.0
    assert p.poll(job_id).action_url == first
    now[0] = 61.0
    assert p.poll(job_id).action_url not in (None, first)


def test_start_never_uploads_a_selfie_even_if_given(fake: FakeIn3d, sleeps: list[float]) -> None:
    provider(fake, sleeps).start(SELFIE, JobOptions())
    assert fake.uploads == 0
    assert [path for _, path in fake.api_calls] == ["/api/v1/users/new"]


# -- failures ---------------------------------------------------------------------------------------
def test_a_session_that_never_completes_keeps_waiting_with_the_link(fake: FakeIn3d, sleeps: list[float]) -> None:
    fake.never_completes = True
    fake.complete_after_polls = 0
    p, job_id = started(fake, sleeps)
    finish(fake, job_id)
    statuses = [p.poll(job_id) for _ in range(20)]
    assert all(not s.done and s.action_url for s in statuses)  # the worker's deadline ends it, not the adapter
    with pytest.raises(ProviderError) as info:
        p.result(job_id)
    assert str(info.value) == "in3D (Avaturn) has no finished avatar for this job yet; the job will be retried"
    assert info.value.transient is True


def test_429_is_retried_after_the_retry_after_delay(fake: FakeIn3d, sleeps: list[float]) -> None:
    p, job_id = started(fake, sleeps)
    fake.rate_limited, fake.retry_after = 2, "7"
    assert p.poll(job_id).action_url
    assert len(sleeps) == 2 and all(s >= 7 for s in sleeps)


def test_persistent_429_is_transient_and_carries_retry_after(fake: FakeIn3d, sleeps: list[float]) -> None:
    p, job_id = started(fake, sleeps)
    fake.rate_limited, fake.retry_after = 100, "30"
    with pytest.raises(ProviderError) as info:
        p.poll(job_id)
    assert str(info.value) == ("in3D (Avaturn) is not available right now (answered HTTP 429); "
                               "the job will be retried")
    assert info.value.transient is True and info.value.retry_after == 30


def test_a_5xx_burst_is_retried(fake: FakeIn3d, sleeps: list[float]) -> None:
    p, job_id = started(fake, sleeps)
    finish(fake, job_id)
    fake.server_errors = 3
    assert p.poll(job_id) == ProviderStatus(progress=0.5)
    assert len(sleeps) == 3


def test_a_5xx_burst_while_exporting_is_retried(fake: FakeIn3d, sleeps: list[float]) -> None:
    p, job_id = started(fake, sleeps)
    finish(fake, job_id)
    fake.inject_on, fake.server_errors = "/api/v1/exports/", 2  # exports/new is safe to repeat (§2.3 step 5)
    assert p.poll(job_id) == ProviderStatus(progress=0.5)
    assert len(sleeps) == 2 and fake.server_errors == 0


def test_a_long_5xx_outage_is_transient(fake: FakeIn3d, sleeps: list[float]) -> None:
    p, job_id = started(fake, sleeps)
    fake.server_errors = 100
    with pytest.raises(ProviderError) as info:
        p.poll(job_id)
    assert str(info.value) == ("in3D (Avaturn) is not available right now (answered HTTP 503); "
                               "the job will be retried")
    assert info.value.transient is True


def test_a_5xx_on_creating_the_user_is_not_blindly_repeated(fake: FakeIn3d, sleeps: list[float]) -> None:
    fake.server_errors = 1
    with pytest.raises(ProviderError) as info:
        provider(fake, sleeps).start(None, JobOptions())
    assert info.value.transient is True
    assert fake.api_calls == [("POST", "/api/v1/users/new")]  # a POST that may have created a user


def test_a_refused_token_is_final(fake: FakeIn3d, sleeps: list[float]) -> None:
    fake.refuse_token = True
    with pytest.raises(ProviderError) as info:
        provider(fake, sleeps).start(None, JobOptions())
    assert str(info.value) == "in3D (Avaturn) refused the API key (HTTP 401); check the key in Settings"
    assert info.value.transient is False


def test_a_wrong_token_is_refused_too(fake: FakeIn3d, sleeps: list[float]) -> None:
    with pytest.raises(ProviderError) as info:
        provider(fake, sleeps, key="not-the-token").start(None, JobOptions())
    assert "refused the API key (HTTP 401)" in str(info.value) and info.value.transient is False


def test_without_a_key_nothing_is_sent(fake: FakeIn3d, sleeps: list[float]) -> None:
    p = provider(fake, sleeps, key=None)
    for call in (lambda: p.start(None, JobOptions()), lambda: p.poll("some-user"), lambda: p.result("some-user")):
        with pytest.raises(ProviderError, match="needs an API token") as info:
            call()
        assert info.value.transient is False
    assert fake.api_calls == []


def test_malformed_json_is_transient(fake: FakeIn3d, sleeps: list[float]) -> None:
    p, job_id = started(fake, sleeps)
    fake.malformed_json = 1
    with pytest.raises(ProviderError) as info:
        p.poll(job_id)
    assert str(info.value) == "in3D (Avaturn) sent an answer that is not valid JSON"
    assert info.value.transient is True
    assert p.poll(job_id).action_url  # and the next poll is fine


def test_an_export_that_is_not_a_glb_is_refused(fake: FakeIn3d, sleeps: list[float]) -> None:
    fake.export_not_glb = True
    p, job_id = started(fake, sleeps)
    finish(fake, job_id)
    run_to_done(p, job_id)
    with pytest.raises(ProviderError) as info:
        p.result(job_id)
    assert str(info.value) == "in3D (Avaturn) sent an export that is not a GLB model (a web page or a JSON document)"
    assert info.value.transient is False


def test_an_expired_export_url_is_transient_and_a_retry_gets_a_fresh_one(fake: FakeIn3d, sleeps: list[float]) -> None:
    p, job_id = started(fake, sleeps)
    finish(fake, job_id)
    run_to_done(p, job_id)
    fake.export_expired = True
    with pytest.raises(ProviderError) as info:
        p.result(job_id)
    assert str(info.value) == ("the download link from in3D (Avaturn) has expired or was refused (HTTP 403); "
                               "the job will be retried")
    assert info.value.transient is True
    fake.export_expired = False
    assert p.result(job_id).glb[:4] == b"glTF"
    assert fake.storage_auth_seen == []


def test_an_avatar_without_face_animation_is_refused(fake: FakeIn3d, sleeps: list[float]) -> None:
    fake.no_face_animation = True
    p, job_id = started(fake, sleeps)
    finish(fake, job_id)
    run_to_done(p, job_id)
    with pytest.raises(ProviderError) as info:
        p.result(job_id)
    assert str(info.value) == ("the in3D (Avaturn) avatar has no face animation (its GLB has no ARKit blendshapes); "
                               "start a new job and pick a body type with face animation in Avaturn's page")
    assert info.value.transient is False


def test_a_failed_export_is_final(fake: FakeIn3d, sleeps: list[float]) -> None:
    p, job_id = started(fake, sleeps)
    finish(fake, job_id)
    fake.export_status = "failed"
    with pytest.raises(ProviderError) as info:
        p.poll(job_id)
    assert str(info.value) == ("in3D (Avaturn) could not export the avatar; open the job's page again or start a "
                               "new job")
    assert info.value.transient is False


def test_an_unknown_answer_shape_is_named(fake: FakeIn3d, sleeps: list[float]) -> None:
    p, job_id = started(fake, sleeps)
    finish(fake, job_id)
    fake.export_status = "queued-somewhere"
    with pytest.raises(ProviderError) as info:
        p.poll(job_id)
    assert str(info.value) == ("in3D (Avaturn) answered exporting the avatar in a form Avatar Studio does not know "
                               "(fields status, url); the in3d adapter may need an update")
    assert info.value.transient is False


def test_an_unknown_job_id_is_a_clear_refusal(fake: FakeIn3d, sleeps: list[float]) -> None:
    with pytest.raises(ProviderError) as info:
        provider(fake, sleeps).poll("no-such-user")
    assert str(info.value) == "in3D (Avaturn) rejected the request (HTTP 404): User not found"
    assert info.value.transient is False


def test_the_key_never_reaches_logs_or_messages(
    fake: FakeIn3d, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    p, job_id = started(fake, sleeps)
    fake.rate_limited, fake.server_errors = 1, 2
    waiting = p.poll(job_id)
    for switch in ("malformed_json", "refuse_token"):
        setattr(fake, switch, 1 if switch == "malformed_json" else True)
        with pytest.raises(ProviderError) as info:
            p.poll(job_id)
        messages.append(str(info.value))
        messages.append(repr(info.value))
    fake.refuse_token = False
    finish(fake, job_id)
    run_to_done(p, job_id)
    fake.export_expired = True
    with pytest.raises(ProviderError) as info:
        p.result(job_id)
    messages.append(str(info.value))
    assert caplog.records, "the DEBUG capture saw nothing; the test would prove nothing"
    assert TOKEN not in caplog.text
    assert all(TOKEN not in m for m in messages)
    assert waiting.action_url and waiting.action_url not in caplog.text  # the page link is a bearer link too
