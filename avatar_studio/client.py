"""The desktop app's only door to the avatar service: one method per endpoint, typed results, our errors.

Why a hand-written client over ``httpx`` instead of raw requests in the GUI: the GUI must show every
failure as one sentence and must never create a job twice, whatever the network does. This module is
where HTTP statuses, retries and the service's error body become Python types, so nothing above it
looks at a status code.

Seams (copied from httpx's own design): ``transport=`` is passed straight to :class:`httpx.Client`, so
tests inject :class:`httpx.MockTransport` for the failures a live server cannot easily produce.

Errors — every exception leaving this module is a :class:`ServiceError`; ``str()`` is the service's
message (or ours, written for the user), and ``.status``, ``.code``, ``.field`` come from the body
``{"error": {"code", "message", "field"?}}``::

    ServiceError                 base; .status .code .message .field
    ├── AuthError                401: no token, or the token is not valid (user deleted?)
    ├── ForbiddenError           403: e.g. consent_required
    ├── NotFoundError            404: unknown (or someone else's) job, asset, endpoint
    ├── ValidationError          400/413/415/422: the request was refused; .field names what
    ├── ServerError              5xx after retries
    ├── ServiceUnavailable       no answer after retries (refused, timed out, dropped)
    ├── DownloadError            the signed-URL download failed or was not a GLB
    └── JobTimeout               wait_for_job ran out of time (also a TimeoutError)

Retries: connection failures, 429 and 5xx answers are retried with exponential backoff (honouring
``Retry-After``) for requests that are safe to repeat: GET, PATCH and DELETE of ``/users/me``, and
saving preferences (a create-or-replace). ``POST /users`` and ``POST /avatar/jobs`` are retried only
when the connection could not be opened at all, so the request provably never reached the service —
a lost answer must not become a second user or a duplicate job.

The bearer token is sent only to the service's own API, never to a signed download URL (which may
point at another host such as S3), and never appears in a log line, an exception or a ``repr``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import struct
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)

T = TypeVar("T")

GLB_MAGIC = b"glTF"
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Errors raised before a single byte of the request left this machine: safe to retry even for POST.
PRE_SEND_ERRORS: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout,
                                                            httpx.PoolTimeout)
# Errors worth another try for a repeatable request (not e.g. UnsupportedProtocol, which never heals).
TRANSIENT_ERRORS: tuple[type[httpx.TransportError], ...] = (httpx.TimeoutException, httpx.NetworkError,
                                                            httpx.RemoteProtocolError)
FINISHED = frozenset({"done", "error"})


# -- errors ----------------------------------------------------------------------------------------
class ServiceError(Exception):
    """Any failure talking to the avatar service; ``str()`` is a sentence for the user."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        parts = [repr(self.message)]
        parts += [f"{k}={v!r}" for k, v in (("status", self.status), ("code", self.code), ("field", self.field))
                  if v is not None]
        return f"{type(self).__name__}({', '.join(parts)})"


class AuthError(ServiceError):
    """401: sign in again (the token is missing, wrong, or its user was deleted)."""


class ForbiddenError(ServiceError):
    """403: signed in but not allowed, e.g. ``consent_required`` before a selfie upload."""


class NotFoundError(ServiceError):
    """404: no such object for this user (another user's id answers the same)."""


class ValidationError(ServiceError):
    """The service refused the request's content (400/413/415/422); ``field`` names the culprit."""


class ServerError(ServiceError):
    """The service failed (5xx) on every attempt."""


class ServiceUnavailable(ServiceError):
    """No answer at all: the service is not running, not reachable, or too slow."""


class DownloadError(ServiceError):
    """The asset could not be downloaded, or what arrived is not a GLB; nothing was written."""


class JobTimeout(ServiceError, TimeoutError):
    """:meth:`ServiceClient.wait_for_job` gave up; the job itself may still finish later."""


def _error_class(status: int) -> type[ServiceError]:
    if status == 401:
        return AuthError
    if status == 403:
        return ForbiddenError
    if status == 404:
        return NotFoundError
    if status in (400, 413, 415, 422):
        return ValidationError
    if status >= 500:
        return ServerError
    return ServiceError


def _readable_text(text: str, limit: int = 200) -> str:
    """A one-line excerpt of a non-JSON body: S3's XML ``<Message>`` or an HTML page's words."""
    found = re.search(r"<Message>(.*?)</Message>", text, re.S)
    if found:
        text = found.group(1)
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_error(response: httpx.Response, what: str) -> tuple[str, str | None, str | None]:
    """(message, code, field) from an error response, whatever its body looks like."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"]:
            code = err.get("code") if isinstance(err.get("code"), str) else None
            fld = err.get("field") if isinstance(err.get("field"), str) else None
            return err["message"], code, fld
        if isinstance(body.get("detail"), str) and body["detail"]:
            return body["detail"], None, None
    reason = response.reason_phrase or "error"
    excerpt = _readable_text(response.text) if response.content else ""
    message = f"{what} failed: the service answered HTTP {response.status_code} {reason}"
    return (f"{message}: {excerpt}" if excerpt else message), None, None


def _error_from(response: httpx.Response, what: str, cls: type[ServiceError] | None = None) -> ServiceError:
    message, code, fld = _parse_error(response, what)
    return (cls or _error_class(response.status_code))(message, status=response.status_code, code=code, field=fld)


class _RetryableStatus(Exception):
    """Internal: an answer worth another try; carries the error to raise if there is none left."""

    def __init__(self, error: ServiceError, retry_after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


# -- results ---------------------------------------------------------------------------------------
def _when(raw: Any) -> datetime:
    """The service speaks UTC; a timestamp without an offset is read as UTC, not local time."""
    value = datetime.fromisoformat(str(raw))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CreatedUser:
    user_id: str
    token: str = field(repr=False)  # shown once by the service; keep it in the keyring


@dataclass(frozen=True)
class UserInfo:
    user_id: str
    age_confirmed: bool
    consent_selfie: bool
    created_at: datetime

    @property
    def may_upload(self) -> bool:
        """Both confirmations the service demands before it accepts a selfie."""
        return self.age_confirmed and self.consent_selfie


@dataclass(frozen=True)
class JobStatus:
    status: str  # queued | processing | done | error
    progress: float  # 0..1
    asset_id: str | None = None
    error: str | None = None  # for the user, when status == "error"
    action_url: str | None = None  # where the user must act (e.g. a provider's capture page)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True, kw_only=True)
class JobSummary(JobStatus):
    """A row of :meth:`ServiceClient.jobs`: the job's status plus who made it and when."""

    job_id: str
    provider: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class JobPage:
    jobs: tuple[JobSummary, ...]
    total: int
    limit: int
    offset: int

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.jobs) < self.total


@dataclass(frozen=True)
class AssetUrl:
    url: str  # signed and expiring; may point at another host (S3)
    expires_in: int  # seconds


@dataclass(frozen=True)
class Preferences:
    asset_id: str
    appearance: dict[str, Any]
    voice: dict[str, Any]
    persona: dict[str, Any]
    updated_at: datetime | None = None  # None: nothing saved yet


@dataclass(frozen=True)
class Health:
    status: str
    database: str
    version: str
    providers: tuple[str, ...]


def _job_status_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": str(body["status"]), "progress": float(body["progress"]), "asset_id": body.get("assetId"),
            "error": body.get("error"), "action_url": body.get("actionUrl")}


# -- the client ------------------------------------------------------------------------------------
class ServiceClient:
    """A synchronous client of the avatar service (thread-safe, like the ``httpx.Client`` under it).

    ``retries`` is the number of extra attempts after the first; the wait before attempt *n* is
    ``backoff * 2**n`` with jitter, or the service's ``Retry-After``; either is capped at ``backoff_max``
    so a GUI action never hangs on one long server-chosen pause.
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.25, backoff_max: float = 4.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        base = base_url.strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"the service URL must start with http:// or https://, not {base_url!r}")
        if retries < 0 or backoff < 0 or backoff_max < 0:
            raise ValueError("retries, backoff and backoff_max must not be negative")
        self.base_url = base
        self._token = token or None
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._backoff_max = backoff_max
        # No default Authorization header: the token is added per API request, so download() of a
        # signed URL on another host can never carry it.
        self._http = httpx.Client(base_url=base, timeout=httpx.Timeout(timeout), transport=transport,
                                  follow_redirects=False)

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        """The bearer token in use (set by :meth:`create_user`, cleared by :meth:`delete_me`)."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value or None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServiceClient({self.base_url!r}, signed_in={self._token is not None})"

    # -- users ---------------------------------------------------------------------------------------
    def create_user(self, age_confirmed: bool, consent_selfie: bool) -> CreatedUser:
        """Create a user and sign this client in as it; the token is only ever shown here."""
        body = self._json("POST", "/users", what="creating a user", idempotent=False,
                          if_lost="the account may still have been created",
                          json={"ageConfirmed": age_confirmed, "consentSelfie": consent_selfie})
        user = self._parse("creating a user", body, lambda b: CreatedUser(str(b["userId"]), str(b["token"])))
        self._token = user.token
        return user

    def me(self) -> UserInfo:
        body = self._json("GET", "/users/me", what="reading your account")
        return self._parse("reading your account", body, _user_info)

    def update_me(self, age_confirmed: bool | None = None, consent_selfie: bool | None = None) -> UserInfo:
        """Confirm age and give or withdraw selfie consent; ``None`` leaves a flag unchanged."""
        changes = {k: v for k, v in (("ageConfirmed", age_confirmed), ("consentSelfie", consent_selfie))
                   if v is not None}
        body = self._json("PATCH", "/users/me", what="updating your account", json=changes)
        return self._parse("updating your account", body, _user_info)

    def delete_me(self) -> None:
        """Delete the account with all its selfies, avatars and preferences; signs this client out.

        A retry after a lost answer may meet 401 because the first attempt already deleted the user
        (and with it the token): that is the outcome asked for, so it counts as success.
        """
        self._request("DELETE", "/users/me", what="deleting your account", ok_after_lost_answer=frozenset({401}))
        self._token = None

    # -- jobs ----------------------------------------------------------------------------------------
    def create_job(self, selfie: bytes | str | os.PathLike[str] | None, *, filename: str | None = None,
                   content_type: str | None = None, blendshapes: str = "arkit", output: str = "glb",
                   realism: str = "high", provider: str | None = None) -> str:
        """Queue an avatar job for a selfie (JPEG or PNG bytes, or a path); returns the job id.

        ``content_type`` is sniffed from the magic bytes when not given; the service checks the image
        anyway, so an unknown type is sent as-is and refused there with the service's own message.
        """
        files: dict[str, tuple[str, bytes, str]] | None = None
        if selfie is not None:
            if isinstance(selfie, bytes | bytearray | memoryview):
                data = bytes(selfie)
                name = filename
            else:
                path = Path(selfie)
                data = path.read_bytes()
                name = filename or path.name
            mime = content_type or _sniff_image(data)
            default_name = "selfie.png" if mime == "image/png" else "selfie.jpg"
            files = {"file": (name or default_name, data, mime)}
        form = {"options": json.dumps({"output": output, "blendshapes": blendshapes, "realism": realism})}
        if provider is not None:
            form["provider"] = provider
        body = self._json("POST", "/avatar/jobs", what="uploading the selfie", idempotent=False,
                          if_lost="the job may still have been created, so check your jobs before trying again",
                          data=form, files=files)
        return self._parse("uploading the selfie", body, lambda b: str(b["jobId"]))

    def job(self, job_id: str) -> JobStatus:
        body = self._json("GET", f"/avatar/jobs/{_segment(job_id)}", what="checking the avatar job")
        return self._parse("checking the avatar job", body, lambda b: JobStatus(**_job_status_fields(b)))

    def jobs(self, limit: int = 20, offset: int = 0) -> JobPage:
        """One page of the user's jobs, newest first."""
        body = self._json("GET", "/avatar/jobs", what="listing your avatar jobs",
                          params={"limit": limit, "offset": offset})
        return self._parse("listing your avatar jobs", body, _job_page)

    def wait_for_job(self, job_id: str, *, timeout: float, interval: float = 0.5,
                     on_progress: Callable[[JobStatus], None] | None = None) -> JobStatus:
        """Poll until the job is ``done`` or ``error`` and return that status (an error is not raised).

        ``on_progress`` sees every poll, including ``action_url`` when the user must act; raising from
        it stops the wait. :class:`JobTimeout` after ``timeout`` seconds; the job keeps running.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            if on_progress is not None:
                on_progress(status)
            if status.finished:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobTimeout(f"the avatar is still {status.status} ({status.progress:.0%}) after {timeout:g} s; "
                                 "it keeps going on the service, so check again later", code="job_timeout")
            time.sleep(min(interval, left))

    # -- assets --------------------------------------------------------------------------------------
    def asset_url(self, asset_id: str) -> AssetUrl:
        """A signed, expiring download URL for the asset's GLB."""
        body = self._json("GET", f"/avatar/assets/{_segment(asset_id)}", what="getting the avatar's download link")
        return self._parse("getting the avatar's download link", body,
                           lambda b: AssetUrl(str(b["url"]), int(b["expiresIn"])))

    def download(self, url: str, dest: str | os.PathLike[str],
                 progress: Callable[[int, int | None], None] | None = None, chunk: int = 64 * 1024) -> Path:
        """Stream a signed URL into ``dest`` (a GLB); returns ``dest``.

        The bytes go to a temporary file next to ``dest`` that replaces it only once complete and
        checked (``glTF`` magic, declared length), so a failure never leaves half a file or destroys
        an older copy. ``progress(received, total)`` follows each chunk; ``total`` is None when the
        server does not say (after a retried failure it starts again from 0); raising from it cancels
        the download, leaving nothing behind. No bearer token is sent: the URL is its own credential.
        """
        target = Path(dest)
        return self._with_retries(lambda: self._download_once(url, target, progress, chunk),
                                  idempotent=True, what="downloading the avatar", download=True)

    def _download_once(self, url: str, target: Path, progress: Callable[[int, int | None], None] | None,
                       chunk: int) -> Path:
        what = "downloading the avatar"
        # Per-request headers only: the client has no default Authorization, so none reaches the URL's host.
        with self._http.stream("GET", url, follow_redirects=True) as response:
            if response.status_code != 200:
                response.read()
                error = _error_from(response, what, DownloadError)
                if response.status_code in RETRY_STATUSES:
                    raise _RetryableStatus(error, _retry_after(response))
                raise error
            total = _content_length(response)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as handle:
                    received = 0
                    head = b""
                    for piece in response.iter_bytes(chunk):
                        if len(head) < 12:
                            head += piece[: 12 - len(head)]
                            if len(head) >= len(GLB_MAGIC) and not head.startswith(GLB_MAGIC):
                                raise DownloadError(f"{what} failed: the file is not a GLB avatar "
                                                    f"(it starts with {head[:4]!r}, not {GLB_MAGIC!r})",
                                                    code="not_glb")
                        handle.write(piece)
                        received += len(piece)
                        if progress is not None:
                            progress(received, total)
                _check_glb(head, received, total, what)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return target

    # -- preferences ---------------------------------------------------------------------------------
    def save_preferences(self, asset_id: str, appearance: Mapping[str, Any], voice: Mapping[str, Any],
                         persona: Mapping[str, Any]) -> None:
        """Create or replace the preferences of one asset (so a retry is harmless)."""
        self._request("POST", "/avatar/preferences", what="saving your preferences",
                      json={"assetId": asset_id, "appearance": dict(appearance), "voice": dict(voice),
                            "persona": dict(persona)})

    def preferences(self, asset_id: str) -> Preferences:
        body = self._json("GET", f"/avatar/preferences/{_segment(asset_id)}", what="reading your preferences")
        return self._parse("reading your preferences", body, _preferences)

    # -- service -------------------------------------------------------------------------------------
    def health(self) -> Health:
        body = self._json("GET", "/health", what="checking the service")
        return self._parse("checking the service", body, lambda b: Health(
            str(b["status"]), str(b["database"]), str(b["version"]), tuple(str(p) for p in b["providers"])))

    # -- plumbing ------------------------------------------------------------------------------------
    def _json(self, method: str, path: str, *, what: str, **kwargs: Any) -> Any:
        response = self._request(method, path, what=what, **kwargs)
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError):
            raise ServiceError(f"{what} failed: the service sent an answer that is not JSON "
                               f"(HTTP {response.status_code})", status=response.status_code,
                               code="bad_response") from None

    @staticmethod
    def _parse(what: str, body: Any, build: Callable[[Any], T]) -> T:
        """Turn a JSON body into a result; a body of the wrong shape is the service's fault, said so."""
        try:
            return build(body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ServiceError(f"{what} failed: the service's answer has an unexpected shape ({exc!r})",
                               code="bad_response") from None

    def _request(self, method: str, path: str, *, what: str, idempotent: bool = True, if_lost: str | None = None,
                 ok_after_lost_answer: frozenset[int] = frozenset(), **kwargs: Any) -> httpx.Response:
        """One API call with retries; returns a 2xx response or raises our error for it.

        ``if_lost`` completes the message when a non-repeatable request was sent but its answer never
        came. ``ok_after_lost_answer`` lists statuses that mean success on a retry after such a loss
        (DELETE /users/me: the first attempt deleted the user, so the retry's token is unknown → 401).
        """
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        lost_answer = False

        def attempt() -> httpx.Response:
            nonlocal lost_answer
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except TRANSIENT_ERRORS as exc:
                lost_answer = lost_answer or not isinstance(exc, PRE_SEND_ERRORS)
                raise
            if response.is_success or (lost_answer and response.status_code in ok_after_lost_answer):
                return response
            error = _error_from(response, what)
            if response.status_code in RETRY_STATUSES:
                raise _RetryableStatus(error, _retry_after(response))
            raise error

        return self._with_retries(attempt, idempotent=idempotent, what=what, if_lost=if_lost)

    def _with_retries(self, attempt: Callable[[], T], *, idempotent: bool, what: str, if_lost: str | None = None,
                      download: bool = False) -> T:
        for n in range(self._retries + 1):
            last = n == self._retries
            try:
                return attempt()
            except _RetryableStatus as retry:
                if last or not idempotent:
                    raise retry.error from None
                delay = retry.retry_after if retry.retry_after is not None else self._delay(n)
                reason = f"HTTP {retry.error.status}"
            except TRANSIENT_ERRORS as exc:
                retryable = idempotent or isinstance(exc, PRE_SEND_ERRORS)
                if last or not retryable:
                    raise self._unreachable(exc, what, download=download,
                                            if_lost=None if isinstance(exc, PRE_SEND_ERRORS) else if_lost) from exc
                delay = self._delay(n)
                reason = type(exc).__name__
            except httpx.TransportError as exc:  # e.g. a proxy or protocol problem that will not heal
                cls = DownloadError if download else ServiceUnavailable
                raise cls(f"{what} failed: {exc or type(exc).__name__}", code="transport_error") from exc
            delay = min(delay, self._backoff_max)
            log.info("%s: retrying in %.2f s after %s (attempt %d of %d)", what, delay, reason, n + 2,
                     self._retries + 1)
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt either returns or raises")

    def _delay(self, n: int) -> float:
        """Exponential backoff with jitter, so many clients of one restarted service do not retry in step."""
        return min(self._backoff_max, self._backoff * 2.0**n) * (0.5 + random.random() / 2)

    def _unreachable(self, exc: httpx.TransportError, what: str, *, download: bool,
                     if_lost: str | None) -> ServiceError:
        if isinstance(exc, httpx.TimeoutException):
            problem = f"did not answer within {self._timeout:g} s"
        elif isinstance(exc, httpx.ConnectError):
            problem = "cannot be reached"
        else:
            problem = "dropped the connection"
        if download:
            return DownloadError(f"{what} failed: the download server {problem}", code="unreachable")
        message = f"{what} failed: the avatar service at {self.base_url} {problem}"
        if if_lost:
            message += f"; {if_lost}"
        elif isinstance(exc, httpx.ConnectError):
            message += "; is it running?"
        return ServiceUnavailable(message, code="unreachable")


def _segment(value: str) -> str:
    """An id as one URL path segment, so a stray '/' or '?' cannot reach another route."""
    return quote(str(value), safe="")


def _sniff_image(data: bytes) -> str:
    if data.startswith(JPEG_MAGIC):
        return "image/jpeg"
    if data.startswith(PNG_MAGIC):
        return "image/png"
    return "application/octet-stream"


def _content_length(response: httpx.Response) -> int | None:
    raw = response.headers.get("Content-Length")
    if raw is None or response.headers.get("Content-Encoding"):
        return None  # with compression the header counts wire bytes, not the bytes we receive
    try:
        return int(raw)
    except ValueError:
        return None


def _check_glb(head: bytes, received: int, total: int | None, what: str) -> None:
    """The GLB header states the file's length: a cheap, exact guard against a truncated download."""
    if total is not None and received != total:
        raise DownloadError(f"{what} failed: got {received} of {total} bytes", code="incomplete")
    if len(head) < 12 or not head.startswith(GLB_MAGIC):
        raise DownloadError(f"{what} failed: the file is not a GLB avatar ({received} bytes)", code="not_glb")
    declared = struct.unpack_from("<I", head, 8)[0]
    if declared != received:
        raise DownloadError(f"{what} failed: the GLB says it has {declared} bytes but {received} arrived",
                            code="incomplete")


def _user_info(body: Any) -> UserInfo:
    return UserInfo(str(body["userId"]), bool(body["ageConfirmed"]), bool(body["consentSelfie"]),
                    _when(body["createdAt"]))


def _job_page(body: Any) -> JobPage:
    jobs = tuple(
        JobSummary(**_job_status_fields(j), job_id=str(j["jobId"]), provider=str(j["provider"]),
                   created_at=_when(j["createdAt"]), updated_at=_when(j["updatedAt"]))
        for j in body["jobs"]
    )
    return JobPage(jobs, int(body["total"]), int(body["limit"]), int(body["offset"]))


def _preferences(body: Any) -> Preferences:
    updated = body.get("updatedAt")
    return Preferences(str(body["assetId"]), dict(body["appearance"]), dict(body["voice"]), dict(body["persona"]),
                       _when(updated) if updated else None)


__all__ = [
    "AssetUrl",
    "AuthError",
    "CreatedUser",
    "DownloadError",
    "ForbiddenError",
    "Health",
    "JobPage",
    "JobStatus",
    "JobSummary",
    "JobTimeout",
    "NotFoundError",
    "Preferences",
    "ServerError",
    "ServiceClient",
    "ServiceError",
    "ServiceUnavailable",
    "UserInfo",
    "ValidationError",
]
