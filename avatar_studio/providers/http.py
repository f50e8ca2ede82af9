"""The HTTP plumbing every cloud adapter shares: timeouts, retries, error messages, safe downloads.

Why one module: the three vendors fail in the same ways (429 with ``Retry-After``, 5xx bursts, a
refused key, malformed JSON, an expired download link, a ZIP without the model), and the user
must get the same clear sentence for each whichever provider they chose. Adapters only describe
their vendor's flow; this module decides what is transient (the worker retries the job later)
and what is final (the job fails with the message).

    ProviderError (base.py)
    ├── transient=True   429/5xx after retries, timeouts, connection failures, malformed answers
    └── transient=False  401/403 (the key), other 4xx (the request), missing files in a result
"""

from __future__ import annotations

import email.utils
import io
import logging
import random
import time
import zipfile
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin

import httpx

from avatar_studio.providers.base import ProviderError

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 512 * 1024 * 1024  # a provider's ZIP or GLB; more is not an avatar
_REDIRECTS = {301, 302, 303, 307, 308}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta or HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _message_of(response: httpx.Response) -> str:
    """The provider's own words for an error, when its body has any (JSON ``detail``/``message``/``error``)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:200] if text and "<html" not in text.lower() else ""
    if isinstance(body, dict):
        for key in ("detail", "message", "description", "error_description", "error", "msg"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:300]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"][:300]
    return ""


class ProviderHttp:
    """An httpx client for one provider: every call is bounded in time and retried when that helps."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        backoff_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self._sleep = sleep
        self._auth_headers = {k.lower() for k in (headers or {})} | {"authorization"}
        self.client = httpx.Client(base_url=base_url, headers=dict(headers or {}), timeout=timeout,
                                   transport=transport, follow_redirects=False)
        # downloads go through a client without base URL or default credentials (see download())
        self._raw = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    def close(self) -> None:
        self.client.close()
        self._raw.close()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        jittered = min(self.backoff_cap_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
        return max(jittered, min(retry_after or 0.0, self.backoff_cap_s * 4))

    def request(self, method: str, url: str, *, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        """Send, retrying 429/5xx/timeouts (non-idempotent requests only when nothing was sent)."""
        safe = method.upper() in ("GET", "HEAD", "PUT", "DELETE") if idempotent is None else idempotent
        last: str = ""
        retry_after: float | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self._delay(attempt - 1, retry_after))
            try:
                response = self.client.request(method, url, **kwargs)
            except httpx.ConnectError:
                last = "cannot connect"
                continue
            except httpx.TimeoutException:
                last = "did not answer in time"
                if not safe:
                    break
                continue
            except httpx.TransportError as exc:
                last = f"the connection failed ({type(exc).__name__})"
                if not safe:
                    break
                continue
            if response.status_code == 429 or response.status_code >= 500:
                retry_after = retry_after_seconds(response)
                last = f"answered HTTP {response.status_code}"
                log.info("%s %s %s → %s (try %d)", self.provider, method, url, response.status_code, attempt + 1)
                if response.status_code == 429 or safe:
                    continue
                break
            return self._check(response)
        raise ProviderError(f"{self.provider} is not available right now ({last}); the job will be retried",
                            transient=True, retry_after=retry_after)

    def _check(self, response: httpx.Response) -> httpx.Response:
        status = response.status_code
        if status in (401, 403):
            raise ProviderError(f"{self.provider} refused the API key (HTTP {status}); check the key in Settings")
        if 400 <= status < 500:
            detail = _message_of(response)
            raise ProviderError(f"{self.provider} rejected the request (HTTP {status})" + (f": {detail}" if detail
                                                                                           else ""))
        return response

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """The JSON body of a successful call; a malformed answer is transient (it may be a proxy hiccup)."""
        response = self.request(method, url, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ProviderError(f"{self.provider} sent an answer that is not valid JSON", transient=True) from None

    def download(self, url: str, *, max_bytes: int = MAX_RESULT_BYTES, send_auth: bool = True) -> bytes:
        """Fetch a result file, following redirects by hand so credentials never leave the provider's host.

        httpx drops ``Authorization`` on cross-origin redirects but not vendor headers such as
        ``DIDIMO-API-KEY``; pre-signed storage URLs must not receive them either.
        """
        origin = httpx.URL(str(self.client.base_url))
        current = httpx.URL(urljoin(str(self.client.base_url), url))
        for _ in range(6):
            same_host = (current.scheme, current.host, current.port) == (origin.scheme, origin.host, origin.port)
            response = self._get_raw(current, same_host and send_auth, max_bytes)
            if response.status_code in _REDIRECTS and "location" in response.headers:
                current = current.join(response.headers["location"])
                continue
            if response.status_code in (401, 403) and not same_host:
                raise ProviderError(f"the download link from {self.provider} has expired or was refused "
                                    f"(HTTP {response.status_code}); the job will be retried", transient=True)
            if response.status_code == 404:
                raise ProviderError(f"{self.provider}'s result file is gone (HTTP 404); the job will be retried",
                                    transient=True)
            self._check(response)
            return response.content
        raise ProviderError(f"{self.provider}'s download redirected too many times", transient=True)

    def _get_raw(self, url: httpx.URL, with_auth: bool, max_bytes: int) -> httpx.Response:
        """One GET with retries on 429/5xx/timeouts, streaming with a size cap; redirects returned as-is."""
        headers = {k: v for k, v in self.client.headers.items() if with_auth or k.lower() not in self._auth_headers}
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self._delay(attempt - 1, None))
            try:
                with self._raw.stream("GET", url, headers=headers) as response:
                    if response.status_code == 429 or response.status_code >= 500:
                        continue
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body.extend(chunk)
                        if len(body) > max_bytes:
                            raise ProviderError(f"{self.provider}'s result is larger than "
                                                f"{max_bytes // (1024 * 1024)} MB; refusing it")
                    return httpx.Response(response.status_code, headers=response.headers, content=bytes(body),
                                          request=response.request)
            except (httpx.TimeoutException, httpx.TransportError):
                continue
        raise ProviderError(f"could not download the result from {self.provider}; the job will be retried",
                            transient=True)


def glb_from_zip(data: bytes, provider: str, *, prefer: Callable[[str], bool] | None = None) -> bytes:
    """The GLB inside a provider's result ZIP (the first one ``prefer`` likes, else the first)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ProviderError(f"{provider} sent a result that is not a valid ZIP file", transient=True) from None
    with archive:
        names = [n for n in archive.namelist() if n.lower().endswith(".glb") and not n.startswith("__MACOSX")]
        if not names:
            listed = ", ".join(archive.namelist()[:8]) or "nothing"
            raise ProviderError(f"{provider}'s result ZIP contains no GLB model (it holds: {listed})")
        chosen = next((n for n in names if prefer and prefer(n)), names[0])
        info = archive.getinfo(chosen)
        if info.file_size > MAX_RESULT_BYTES:
            raise ProviderError(f"{provider}'s GLB is larger than {MAX_RESULT_BYTES // (1024 * 1024)} MB")
        return archive.read(chosen)
