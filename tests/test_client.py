"""ServiceClient end to end against a real embedded service on loopback, plus injected transport failures.

The contract (routes, bodies, statuses, error shape) is exercised over real HTTP; ``httpx.MockTransport``
is used only for what a healthy local server does not do on demand: 5xx bursts, garbage bodies,
timeouts, dropped answers and other hosts.
"""

from __future__ import annotations

import io
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from PIL import Image

from avatar_studio import __version__
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.client import (
    AuthError,
    DownloadError,
    ForbiddenError,
    JobStatus,
    JobTimeout,
    NotFoundError,
    ServerError,
    ServiceClient,
    ServiceError,
    ServiceUnavailable,
    ValidationError,
)
from avatar_studio.config import Settings
from avatar_studio.providers.base import JobOptions, ProviderResult, ProviderStatus, Selfie, register_provider
from avatar_studio.service.runner import EmbeddedService

PROVIDER = "client-test"
SLOW_WIDTH = 200  # a selfie this wide makes a job that takes SLOW_S and asks the user to act meanwhile
FAST_S = 0.15
SLOW_S = 1.5
ACTION_URL = "https://vendor.example/capture/123"
TOKEN_LIKE = "tok-3f9a1c-never-show-me"


class ClientTestProvider:
    """A real provider with no vendor behind it: done ``FAST_S`` after start, with a valid ARKit head.

    The provider job id carries the start time, so any worker instance can poll it; a selfie
    ``SLOW_WIDTH`` pixels wide takes ``SLOW_S`` and reports an action URL until then.
    """

    name: ClassVar[str] = PROVIDER
    needs_selfie: ClassVar[bool] = True
    poll_interval_s: ClassVar[float] = 0.03

    def check(self, selfie: Selfie | None, options: JobOptions) -> None:
        """Nothing to refuse: every option value the service accepts is one this provider serves."""

    def start(self, selfie: Selfie | None, options: JobOptions) -> str:
        duration = SLOW_S if selfie is not None and selfie.width == SLOW_WIDTH else FAST_S
        return f"{time.time():.6f}/{duration}"

    def poll(self, provider_job_id: str) -> ProviderStatus:
        started, duration = (float(part) for part in provider_job_id.split("/"))
        elapsed = time.time() - started
        if elapsed >= duration:
            return ProviderStatus(progress=1.0, done=True)
        return ProviderStatus(progress=round(elapsed / duration, 3),
                              action_url=ACTION_URL if duration == SLOW_S else None)

    def result(self, provider_job_id: str) -> ProviderResult:
        return ProviderResult(glb=make_arkit_head_glb(2000))


register_provider(PROVIDER, lambda _key: ClientTestProvider())


def jpeg(width: int = 320, height: int = 240) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (190, 140, 110)).save(out, "JPEG")
    return out.getvalue()


def png(width: int = 256, height: int = 256) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 210)).save(out, "PNG")
    return out.getvalue()


# -- the live service --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedService]:
    data = tmp_path_factory.mktemp("client-service")
    settings = Settings.from_env(env={}, data_dir=data).with_(provider=PROVIDER, poll_interval_s=0.02)
    with EmbeddedService(settings, workers=2) as svc:
        yield svc


@pytest.fixture
def client(service: EmbeddedService) -> Iterator[ServiceClient]:
    with ServiceClient(service.base_url, backoff=0.01) as c:
        yield c


@pytest.fixture
def consenting(client: ServiceClient) -> ServiceClient:
    client.create_user(age_confirmed=True, consent_selfie=True)
    return client


@pytest.fixture(scope="module")
def finished(service: EmbeddedService) -> tuple[str, str]:
    """(token, asset id) of a user whose one job finished: shared by the tests that need an asset."""
    with ServiceClient(service.base_url) as c:
        user = c.create_user(age_confirmed=True, consent_selfie=True)
        status = c.wait_for_job(c.create_job(jpeg()), timeout=30)
    assert status.status == "done", status
    assert status.asset_id is not None
    return user.token, status.asset_id


def test_create_user_signs_the_client_in(client: ServiceClient) -> None:
    user = client.create_user(age_confirmed=True, consent_selfie=False)
    assert client.token == user.token
    me = client.me()
    assert me.user_id == user.user_id
    assert (me.age_confirmed, me.consent_selfie, me.may_upload) == (True, False, False)
    assert me.created_at.tzinfo is not None
    assert abs(datetime.now(UTC) - me.created_at) < timedelta(minutes=5)
    assert user.token not in repr(user)
    assert user.token not in repr(client)


def test_update_me_changes_only_the_given_flags(client: ServiceClient) -> None:
    client.create_user(age_confirmed=False, consent_selfie=False)
    after_age = client.update_me(age_confirmed=True)
    assert (after_age.age_confirmed, after_age.consent_selfie) == (True, False)
    after_consent = client.update_me(consent_selfie=True)
    assert (after_consent.age_confirmed, after_consent.consent_selfie) == (True, True)
    withdrawn = client.update_me(consent_selfie=False)
    assert (withdrawn.age_confirmed, withdrawn.consent_selfie) == (True, False)
    assert client.me() == withdrawn


def test_delete_me_signs_out_and_the_old_token_stops_working(service: EmbeddedService,
                                                            client: ServiceClient) -> None:
    user = client.create_user(age_confirmed=True, consent_selfie=True)
    client.delete_me()
    assert client.token is None
    with ServiceClient(service.base_url, user.token) as stale, pytest.raises(AuthError) as caught:
        stale.me()
    assert caught.value.status == 401
    assert "not valid" in str(caught.value)
    assert user.token not in str(caught.value) + repr(caught.value)


def test_missing_consent_is_a_forbidden_error_with_the_services_sentence(client: ServiceClient) -> None:
    client.create_user(age_confirmed=True, consent_selfie=False)
    with pytest.raises(ForbiddenError) as caught:
        client.create_job(jpeg())
    err = caught.value
    assert (err.status, err.code) == (403, "consent_required")
    assert str(err) == err.message == "before a selfie can be processed, consent to selfie processing"


def test_a_wrong_or_missing_token_is_an_auth_error(service: EmbeddedService) -> None:
    with ServiceClient(service.base_url, TOKEN_LIKE, retries=0) as wrong, pytest.raises(AuthError) as caught:
        wrong.jobs()
    assert caught.value.code == "unauthorized"
    assert TOKEN_LIKE not in str(caught.value) + repr(caught.value) + repr(wrong)
    with ServiceClient(service.base_url) as anonymous, pytest.raises(AuthError, match="sign in first"):
        anonymous.me()


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid", "../../users/me"])
def test_an_unknown_job_is_not_found(consenting: ServiceClient, job_id: str) -> None:
    """An id is one path segment: '../../users/me' must not reach GET /users/me (which would answer 200)."""
    with pytest.raises(NotFoundError) as caught:
        consenting.job(job_id)
    assert caught.value.status == 404
    assert str(caught.value) in ("no such job", "no such endpoint")


def test_another_users_asset_is_not_found(consenting: ServiceClient, finished: tuple[str, str]) -> None:
    _, asset_id = finished
    with pytest.raises(NotFoundError, match="no such asset"):
        consenting.asset_url(asset_id)


@pytest.mark.parametrize(("kwargs", "field", "status"), [
    ({"blendshapes": "fancy"}, "options.blendshapes", 422),
    ({"output": "fbx"}, "options.output", 422),
    ({"provider": "no-such-vendor"}, "provider", 422),
])
def test_bad_job_options_are_validation_errors_naming_the_field(consenting: ServiceClient, kwargs: dict[str, str],
                                                                field: str, status: int) -> None:
    with pytest.raises(ValidationError) as caught:
        consenting.create_job(jpeg(), **kwargs)
    assert (caught.value.status, caught.value.field) == (status, field)
    assert field in str(caught.value)


def test_a_non_image_upload_is_refused_by_the_service(consenting: ServiceClient) -> None:
    with pytest.raises(ValidationError) as caught:
        consenting.create_job(b"GIF89a not a selfie", filename="selfie.gif")
    assert (caught.value.status, caught.value.field) == (415, "file")
    assert "JPEG or PNG" in str(caught.value)
    with pytest.raises(ValidationError) as missing:
        consenting.create_job(None)
    assert missing.value.field == "file"


def test_selfie_to_downloaded_avatar(consenting: ServiceClient, tmp_path: Path) -> None:
    job_id = consenting.create_job(jpeg())
    seen: list[JobStatus] = []
    status = consenting.wait_for_job(job_id, timeout=30, interval=0.02, on_progress=seen.append)
    assert status.status == "done" and status.progress == 1.0 and status.error is None
    assert status.asset_id is not None and status.action_url is None
    assert seen[-1] == status
    progress = [s.progress for s in seen]
    assert progress == sorted(progress)

    link = consenting.asset_url(status.asset_id)
    assert link.url.startswith(consenting.base_url) and link.expires_in == 3600
    calls: list[tuple[int, int | None]] = []
    dest = consenting.download(link.url, tmp_path / "out" / "avatar.glb",
                               progress=lambda got, total: calls.append((got, total)), chunk=4096)
    data = dest.read_bytes()
    assert dest == tmp_path / "out" / "avatar.glb" and data[:4] == b"glTF"
    assert len(calls) > 1
    counts = [got for got, _ in calls]
    assert counts == sorted(set(counts)) and counts[-1] == len(data)
    assert {total for _, total in calls} <= {len(data), None}
    avatar = load_avatar(dest)
    assert len(avatar.morph_names) > 0
    assert [p.name for p in dest.parent.iterdir()] == ["avatar.glb"]


def test_a_png_path_is_uploaded_with_its_sniffed_type(consenting: ServiceClient, tmp_path: Path) -> None:
    photo = tmp_path / "me.png"
    photo.write_bytes(png())
    job_id = consenting.create_job(photo)
    assert consenting.job(job_id).status in ("queued", "processing", "done")


def test_wait_for_job_times_out_while_the_user_must_act(consenting: ServiceClient) -> None:
    job_id = consenting.create_job(jpeg(width=SLOW_WIDTH))
    seen: list[JobStatus] = []
    with pytest.raises(JobTimeout, match="check again later") as caught:
        consenting.wait_for_job(job_id, timeout=0.4, interval=0.05, on_progress=seen.append)
    assert isinstance(caught.value, TimeoutError)
    assert seen and all(not s.finished for s in seen)
    later = consenting.wait_for_job(job_id, timeout=30, interval=0.05, on_progress=seen.append)
    assert later.status == "done"
    assert ACTION_URL in {s.action_url for s in seen}


def test_a_tampered_download_link_fails_and_leaves_no_file(service: EmbeddedService, finished: tuple[str, str],
                                                           tmp_path: Path) -> None:
    token, asset_id = finished
    with ServiceClient(service.base_url, token) as c:
        url = c.asset_url(asset_id).url
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        query["sig"] = ("A" if query["sig"][0] != "A" else "B") + query["sig"][1:]
        forged = urlunsplit(parts._replace(query=urlencode(query)))
        with pytest.raises(DownloadError) as caught:
            c.download(forged, tmp_path / "avatar.glb")
    assert caught.value.status == 403
    assert str(caught.value) == "the download link is not valid"
    assert list(tmp_path.iterdir()) == []


def test_raising_from_the_progress_callback_cancels_the_download(service: EmbeddedService,
                                                                 finished: tuple[str, str], tmp_path: Path) -> None:
    token, asset_id = finished

    class Cancelled(Exception):
        pass

    def cancel_after_first_chunk(got: int, total: int | None) -> None:
        raise Cancelled

    with ServiceClient(service.base_url, token) as c, pytest.raises(Cancelled):
        c.download(c.asset_url(asset_id).url, tmp_path / "avatar.glb", progress=cancel_after_first_chunk, chunk=1024)
    assert list(tmp_path.iterdir()) == []


def test_preferences_round_trip(service: EmbeddedService, finished: tuple[str, str]) -> None:
    token, asset_id = finished
    with ServiceClient(service.base_url, token) as c:
        empty = c.preferences(asset_id)
        assert (empty.appearance, empty.voice, empty.persona, empty.updated_at) == ({}, {}, {}, None)
        appearance = {"bindi": True, "earrings": "jhumka", "hairColour": "black"}
        voice = {"language": "hinglish", "pitch": 0.1, "speed": -0.05}
        persona = {"warmth": 0.8, "humor": 0.4, "formality": 0.3, "curiosity": 0.9}
        c.save_preferences(asset_id, appearance, voice, persona)
        saved = c.preferences(asset_id)
        assert saved.asset_id == asset_id
        assert (saved.appearance, saved.voice, saved.persona) == (appearance, voice, persona)
        assert saved.updated_at is not None and saved.updated_at.tzinfo is not None
        with pytest.raises(ValidationError) as caught:
            c.save_preferences(asset_id, {}, {"language": "klingon"}, {})
        assert caught.value.field == "voice.language"
        with pytest.raises(NotFoundError):
            c.preferences(str(uuid.uuid4()))


def test_jobs_are_paged_newest_first(consenting: ServiceClient) -> None:
    created = [consenting.create_job(jpeg()) for _ in range(3)]
    first = consenting.jobs(limit=2)
    assert (first.total, first.limit, first.offset, first.has_more) == (3, 2, 0, True)
    second = consenting.jobs(limit=2, offset=2)
    assert (len(second.jobs), second.has_more) == (1, False)
    listed = [j.job_id for j in first.jobs + second.jobs]
    assert listed == created[::-1]
    for job in first.jobs + second.jobs:
        assert job.provider == PROVIDER
        assert job.created_at.tzinfo is not None and job.updated_at >= job.created_at
        assert job.status in ("queued", "processing", "done")
    with pytest.raises(ValidationError) as caught:
        consenting.jobs(limit=0)
    assert caught.value.field == "limit"


def test_health(client: ServiceClient) -> None:
    health = client.health()
    assert (health.status, health.database, health.version) == ("ok", "ok", __version__)
    assert PROVIDER in health.providers


# -- injected failures ---------------------------------------------------------------------------------
HEALTH_BODY = {"status": "ok", "database": "ok", "version": "9.9", "providers": ["x"]}
BASE = "http://service.test"


class Recorder:
    """A MockTransport handler that plays a script of answers (or exceptions) and records each request."""

    def __init__(self, *script: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)

    def client(self, token: str | None = TOKEN_LIKE, retries: int = 3) -> ServiceClient:
        return ServiceClient(BASE, token, retries=retries, backoff=0.001, transport=httpx.MockTransport(self))


def test_a_503_is_retried_and_the_token_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(httpx.Response(503, json={"error": {"code": "storage_unavailable", "message": "busy"}}),
                   httpx.Response(503, headers={"Retry-After": "0"}, text="busy"),
                   httpx.Response(200, json=HEALTH_BODY))
    caplog.set_level("DEBUG")
    with rec.client() as c:
        assert c.health().version == "9.9"
    assert len(rec.requests) == 3
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN_LIKE}" for r in rec.requests)
    assert "retrying" in caplog.text
    assert TOKEN_LIKE not in caplog.text


def test_5xx_on_every_attempt_is_a_server_error_with_the_services_message() -> None:
    rec = Recorder(httpx.Response(500, json={"error": {"code": "internal_error", "message": "it has been logged"}}))
    with rec.client(retries=2) as c, pytest.raises(ServerError) as caught:
        c.me()
    assert len(rec.requests) == 3
    assert (caught.value.status, caught.value.code, str(caught.value)) == (500, "internal_error",
                                                                           "it has been logged")


def test_a_garbage_500_body_still_reads_as_a_sentence() -> None:
    page = "<html><head><style>h1{color:red}</style></head><body><h1>Bad Gateway</h1><p>upstream crashed</p></body>"
    rec = Recorder(httpx.Response(502, text=page, headers={"Content-Type": "text/html"}))
    with rec.client(retries=1) as c, pytest.raises(ServerError) as caught:
        c.jobs()
    message = str(caught.value)
    assert "HTTP 502" in message and "upstream crashed" in message
    assert "<" not in message and "color" not in message
    assert caught.value.code is None and len(rec.requests) == 2


def test_a_non_json_success_is_a_service_error() -> None:
    rec = Recorder(httpx.Response(200, text="<html>captive portal</html>"))
    with rec.client() as c, pytest.raises(ServiceError, match="not JSON") as caught:
        c.health()
    assert caught.value.code == "bad_response"


def test_a_closed_port_is_service_unavailable_after_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    attempts: list[httpx.Request] = []

    class Counting(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            attempts.append(request)
            return super().handle_request(request)

    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with ServiceClient(url, TOKEN_LIKE, retries=2, backoff=0.01, transport=Counting()) as c, \
            pytest.raises(ServiceUnavailable) as caught:
        c.health()
    assert len(attempts) == 3 and time.monotonic() - started < 5
    assert url in str(caught.value) and "cannot be reached" in str(caught.value)
    assert TOKEN_LIKE not in str(caught.value) + repr(caught.value)


def test_a_job_post_is_not_retried_once_sent() -> None:
    rec = Recorder(httpx.ReadTimeout("timed out"), httpx.Response(202, json={"jobId": "second"}))
    with rec.client() as c, pytest.raises(ServiceUnavailable) as caught:
        c.create_job(jpeg())
    assert len(rec.requests) == 1
    assert "may still have been created" in str(caught.value)


def test_a_job_post_is_retried_when_the_connection_never_opened() -> None:
    rec = Recorder(httpx.ConnectError("refused"), httpx.Response(202, json={"jobId": "j1"}))
    with rec.client() as c:
        assert c.create_job(jpeg(), provider="x", blendshapes="basic") == "j1"
    assert len(rec.requests) == 2
    sent = rec.requests[-1]
    assert sent.headers["Content-Type"].startswith("multipart/form-data")
    body = sent.read()
    assert b'name="file"; filename="selfie.jpg"' in body and b"Content-Type: image/jpeg" in body
    assert json.dumps({"output": "glb", "blendshapes": "basic", "realism": "high"}).encode() in body
    assert b'name="provider"' in body


def test_a_job_post_is_not_retried_on_a_5xx() -> None:
    rec = Recorder(httpx.Response(503, json={"error": {"code": "storage_unavailable", "message": "no disk"}}))
    with rec.client() as c, pytest.raises(ServerError, match="no disk"):
        c.create_job(jpeg())
    assert len(rec.requests) == 1


def test_a_get_is_retried_after_a_read_timeout() -> None:
    rec = Recorder(httpx.ReadTimeout("slow"), httpx.Response(200, json={"status": "queued", "progress": 0.0}))
    with rec.client() as c:
        assert c.job("j1") == JobStatus("queued", 0.0)
    assert len(rec.requests) == 2


def test_delete_me_after_a_lost_answer_counts_the_401_as_done() -> None:
    rec = Recorder(httpx.ReadError("connection reset"),
                   httpx.Response(401, json={"error": {"code": "unauthorized", "message": "the token is not valid"}}))
    with rec.client() as c:
        c.delete_me()
        assert c.token is None
    assert [r.method for r in rec.requests] == ["DELETE", "DELETE"]


def test_download_sends_no_token_to_another_host(tmp_path: Path) -> None:
    glb = make_arkit_head_glb(500)
    rec = Recorder(httpx.Response(200, content=glb))
    with rec.client() as c:
        dest = c.download("https://bucket.s3.example.com/avatars/a.glb?X-Amz-Signature=abc", tmp_path / "a.glb")
    assert dest.read_bytes() == glb
    assert "authorization" not in rec.requests[0].headers


@pytest.mark.parametrize(("body", "match"), [
    (b"<html>not an avatar</html>", "not a GLB"),
    (b"glTF\x02\x00\x00\x00\xff\xff\x00\x00truncated", "says it has"),
])
def test_a_download_that_is_not_a_whole_glb_leaves_nothing(tmp_path: Path, body: bytes, match: str) -> None:
    dest = tmp_path / "a.glb"
    dest.write_bytes(b"the previous avatar")
    rec = Recorder(httpx.Response(200, content=body))
    with rec.client() as c, pytest.raises(DownloadError, match=match):
        c.download("https://cdn.example.com/a.glb", dest)
    assert dest.read_bytes() == b"the previous avatar"
    assert [p.name for p in tmp_path.iterdir()] == ["a.glb"]


def test_an_s3_xml_error_reads_as_its_message(tmp_path: Path) -> None:
    xml = "<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    rec = Recorder(httpx.Response(403, text=xml, headers={"Content-Type": "application/xml"}))
    with rec.client() as c, pytest.raises(DownloadError) as caught:
        c.download("https://bucket.s3.example.com/a.glb", tmp_path / "a.glb")
    assert caught.value.status == 403 and str(caught.value).endswith(": Request has expired")
    assert list(tmp_path.iterdir()) == []


def test_the_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http://"):
        ServiceClient("localhost:8000")
