"""Avatar SDK (itSeez3D) "Avatar WEB API", MetaPerson 2.0 pipeline: one selfie → rigged GLB with ARKit morphs.

Why this flow: the vendor splits a job into OAuth token → Player → avatar → export → ZIP
(``design/providers.md`` §0, §1.9), and our worker may resume a job in another process with nothing
but the id :meth:`AvatarSdkProvider.start` returned. So that id carries both the avatar code and the
Player UID the avatar belongs to (``"<avatar code>|<player uid>"``), and everything else (token,
exports URL, file URL) is re-derived from the API on each call.

Every behaviour below is tagged like the design notes: [D] documented by the vendor, [I] inferred.
Sections cited are of ``/work/shared/design/providers.md``. Nothing here was checked against a live
account; the contract tests run against ``tests/providers/fake_avatar_sdk.py``, which encodes the same
reading of the docs.

The HTTP rules (timeouts, retries, which failures are transient, safe downloads) are
:class:`~avatar_studio.providers.http.ProviderHttp`'s, shared with the other cloud adapters.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from avatar_studio.avatar.blendshapes import ARKIT_52, CANONICAL_NAMES, canonical_name, resolve_names
from avatar_studio.avatar.errors import AvatarError
from avatar_studio.avatar.gltf_document import split_glb
from avatar_studio.providers.base import JobOptions, ProviderError, ProviderResult, ProviderStatus, Selfie
from avatar_studio.providers.http import ProviderHttp, glb_from_zip

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.avatarsdk.com"  # [D] §1.1
DISPLAY_NAME = "Avatar SDK"  # how the shared HTTP layer names the vendor in user-facing messages
KEY_HINT = "set the Avatar SDK key as client_id:client_secret in Settings"

PIPELINE = "metaperson_2.0"  # [D] §1.1, §1.4; the head_* pipelines are older and lack mobile_51 + GLB export
PIPELINE_SUBTYPES = ("male", "female")  # [D] §1.4: required for MetaPerson 2.0
# [I] The API cannot infer the subtype and our job options have no field for it; the vendor's own
# MetaPerson 2.0 curl tutorial walks through a female avatar, so that is the default (§1.4).
DEFAULT_PIPELINE_SUBTYPE = "female"

# [D] §1.5: the avatar's (and each export's) status values.
RUNNING = frozenset({"Pending", "Uploading", "Queued", "Computing"})
COMPLETED = "Completed"
FAILED = frozenset({"Failed", "Timed Out"})

# [I] §1.5: ``progress`` is shown as "<progress>%" by the vendor sample, so it is read as 0–100. The
# avatar computation gets the first 90 % of our bar; the export that follows gets the rest.
AVATAR_SHARE = 0.9
EXPORT_SHARE = 0.09

# [D] §1.7 names the sets; the ORDER of targets inside each set is not documented. [I] mobile_51 is
# taken to be ARKit's documented order without ``tongueOut`` (the likely missing 52nd shape, §1.7), and
# visemes_15 the 14 Oculus visemes in the order MetaPerson's docs list them, then ``Laughter``.
# Only used when a GLB arrives with unnamed morph targets (§1.7, the Unity loader's index fallback).
MOBILE_51: tuple[str, ...] = tuple(name for name in ARKIT_52 if name != "tongueOut")
VISEMES_15: tuple[str, ...] = (
    "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou", "Laughter",
)  # fmt: skip
_INDEX_FALLBACK: dict[int, tuple[str, ...]] = {
    51: MOBILE_51,
    15: VISEMES_15,
    66: MOBILE_51 + VISEMES_15,  # [I] the Unity loader also recognises 66 = both sets; order assumed
}

_TOKEN_MARGIN_S = 300.0  # refresh this long before expiry at most (10 % of a short-lived token)
_DEFAULT_EXPIRES_IN = 36000.0  # [D] §1.2: the documented lifetime, used when the answer omits it
_ID_SEPARATOR = "|"
_SAFE_CODE = re.compile(r"[A-Za-z0-9_-]{1,128}")  # [I] codes are hex/UUID-like; they become URL path segments
_FAILURE_MESSAGE_KEYS = ("status_message", "message", "detail", "error", "reason")  # [I] §1.8, see _failure


@dataclass(frozen=True)
class _Credentials:
    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # never let a secret reach a log line or a traceback by accident
        return "_Credentials(client_id=…, client_secret=…)"


@dataclass(frozen=True)
class _Token:
    value: str
    fresh_until: float  # time.monotonic() after which the token is fetched again

    def __repr__(self) -> str:
        return "_Token(…)"


def parse_key(api_key: str | None) -> _Credentials:
    """``client_id:client_secret`` → credentials; the one message for a missing or malformed key.

    [D] §1.2: an app with the client-credentials grant has exactly these two values. The secret may
    itself contain ``:`` in principle, so only the first one separates.
    """
    client_id, sep, client_secret = (api_key or "").strip().partition(":")
    if not sep or not client_id.strip() or not client_secret.strip():
        raise ProviderError(KEY_HINT)
    return _Credentials(client_id.strip(), client_secret.strip())


def _split_job_id(provider_job_id: str) -> tuple[str, str]:
    code, sep, player = provider_job_id.partition(_ID_SEPARATOR)
    if not sep or not _SAFE_CODE.fullmatch(code) or not _SAFE_CODE.fullmatch(player):
        raise ProviderError(f"this job's {DISPLAY_NAME} reference is damaged ({provider_job_id!r}); start a new job")
    return code, player


class _BearerAuth(httpx.Auth):
    """httpx auth flow: Bearer token on API calls, and one token refresh when the API answers 401.

    Why an auth flow rather than a header: the retry on 401 must re-send the same request (including
    a multipart upload) with the new token before :class:`ProviderHttp` turns the 401 into "refused the
    API key". The token is only attached to the API's own origin, so a URL taken from a JSON answer can
    never carry it elsewhere.
    """

    requires_request_body = True  # buffer the upload so it can be sent a second time

    def __init__(self, provider: AvatarSdkProvider) -> None:
        self._provider = provider

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self._provider._same_origin(request.url):
            yield request
            return
        token = self._provider._token()
        request.headers["Authorization"] = f"Bearer {token}"  # [D] §1.2
        response = yield request
        if response.status_code == 401:
            # [I] §1.2: no refresh token exists; a 401 on a cached token means it was revoked or
            # expired early, so fetch a new one once. A second 401 is the key's fault.
            log.info("%s answered 401 with a cached token; fetching a new token once", DISPLAY_NAME)
            token = self._provider._token(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


class AvatarSdkProvider:
    """The ``avatar-sdk`` provider: MetaPerson 2.0 avatars from one selfie, via the Avatar WEB API."""

    name: ClassVar[str] = "avatar-sdk"
    needs_selfie: ClassVar[bool] = True

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        pipeline_subtype: str | None = None,
    ) -> None:
        self._api_key = api_key  # parsed lazily: check() must report a bad key as a ProviderError
        self.base_url = (base_url or os.environ.get("AVATAR_SDK_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.pipeline_subtype = (
            pipeline_subtype or os.environ.get("AVATAR_SDK_PIPELINE_SUBTYPE") or DEFAULT_PIPELINE_SUBTYPE
        )
        self._http = ProviderHttp(DISPLAY_NAME, self.base_url, transport=transport, sleep=sleep,
                                  headers={"X-User-Agent": "avatar-studio"})  # [D] §1.2 informational header
        self._auth = _BearerAuth(self)
        self._origin = httpx.URL(self.base_url + "/")
        self._lock = threading.Lock()
        self._download_lock = threading.Lock()
        self._cached_token: _Token | None = None
        self._player: str | None = None

    def close(self) -> None:
        """Release the HTTP connections (the worker may keep one instance per process instead)."""
        self._http.close()

    # -- Provider protocol -----------------------------------------------------------------------
    def check(self, selfie: Selfie | None, options: JobOptions) -> None:
        """Refuse what cannot work before the job is queued: the key's shape, a missing photo, the options.

        No network call: a queued job finds out about a refused key on its first request, with the
        same message, and checking here would make every job submission wait on the vendor.
        """
        parse_key(self._api_key)
        if selfie is None:
            raise ProviderError(f"{DISPLAY_NAME} makes the avatar from a selfie; upload one with the job")
        if options.output != "glb":
            raise ProviderError(f"{DISPLAY_NAME} can only deliver GLB here, not {options.output!r}")
        if options.blendshapes not in ("arkit", "basic"):
            raise ProviderError(f"{DISPLAY_NAME} offers the 'arkit' and 'basic' blendshape sets, "
                                f"not {options.blendshapes!r}")
        if self.pipeline_subtype not in PIPELINE_SUBTYPES:
            raise ProviderError("the Avatar SDK pipeline subtype (AVATAR_SDK_PIPELINE_SUBTYPE) must be 'male' or "
                                f"'female', not {self.pipeline_subtype!r}")

    def start(self, selfie: Selfie | None, options: JobOptions) -> str:
        """Upload the selfie as a new MetaPerson 2.0 avatar with a GLB export; return ``code|player``."""
        self.check(selfie, options)
        assert selfie is not None  # check() refused None
        player = self._player_uid()
        extension = "png" if selfie.mime_type == "image/png" else "jpg"
        fields = {
            "name": "Avatar Studio selfie",  # [D] §1.4: sent by every vendor sample
            "pipeline": PIPELINE,  # [D] §1.4
            "pipeline_subtype": self.pipeline_subtype,  # [D] §1.4
            "export_parameters": json.dumps(export_parameters(options)),  # [D] §1.4 (a JSON string)
        }
        photo = {"photo": (f"selfie.{extension}", selfie.data, selfie.mime_type)}  # [D] §1.4
        # [D] §1.4: multipart body. [I] §1.8: httpx sends bytes parts with a Content-Length, not chunked.
        # POST is not retried on 5xx by ProviderHttp: a second attempt could create a second avatar.
        avatar = self._api_json("POST", "/avatars/", player, data=fields, files=photo)
        code = avatar.get("code") if isinstance(avatar, dict) else None
        if not isinstance(code, str) or not _SAFE_CODE.fullmatch(code):
            raise ProviderError(f"{DISPLAY_NAME} accepted the photo but did not say which avatar it made",
                                transient=True)
        log.info("%s avatar %s created (pipeline %s/%s, %s blendshapes)", DISPLAY_NAME, code, PIPELINE,
                 self.pipeline_subtype, options.blendshapes)
        return f"{code}{_ID_SEPARATOR}{player}"

    def poll(self, provider_job_id: str) -> ProviderStatus:
        """The avatar's status, then its export's: done only once the GLB export can be downloaded."""
        code, player = _split_job_id(provider_job_id)
        avatar = self._avatar(code, player)
        status = avatar.get("status")
        if status in FAILED:
            raise self._failure("could not make the avatar", avatar)
        if status != COMPLETED:
            if status not in RUNNING:
                # [I] an unknown status is taken as "still working": the worker's deadline bounds it.
                log.warning("%s avatar %s has an unknown status %r; still waiting", DISPLAY_NAME, code, status)
            return ProviderStatus(progress=AVATAR_SHARE * _fraction(avatar.get("progress")))
        export = self._latest_export(avatar, code, player)
        if export is None:  # [I] the export may be listed only once the avatar is computed
            return ProviderStatus(progress=AVATAR_SHARE)
        export_status = export.get("status")
        if export_status in FAILED:
            raise self._failure("could not export the avatar as GLB", export)
        if export_status == COMPLETED:
            return ProviderStatus(progress=1.0, done=True)
        return ProviderStatus(progress=AVATAR_SHARE + EXPORT_SHARE * _fraction(export.get("progress")))

    def result(self, provider_job_id: str) -> ProviderResult:
        """Download the export's avatar ZIP, take its GLB, and map its morph names to canonical ones."""
        code, player = _split_job_id(provider_job_id)
        avatar = self._avatar(code, player)
        export = self._latest_export(avatar, code, player)
        if export is None or export.get("status") != COMPLETED:
            raise ProviderError(f"{DISPLAY_NAME} has not finished exporting the avatar yet", transient=True)
        url = _avatar_file_url(export)
        # [D] §1.6: the file URL needs the Bearer token. ProviderHttp.download sends it only to the API's
        # own host and drops it on a redirect elsewhere (e.g. to pre-signed storage, which may expire).
        # [I] §1.2: ``?access_token=`` is never used: the token would end up in access logs.
        # The download reads the client's default headers, so the token sits there only meanwhile,
        # under a lock so two concurrent results cannot remove each other's.
        # [I] a 401 here is not retried with a new token: the token was just checked to be fresh.
        token = self._token()
        with self._download_lock:
            self._http.client.headers["Authorization"] = f"Bearer {token}"
            try:
                archive = self._http.download(url)
            finally:
                self._http.client.headers.pop("Authorization", None)
        # [D] §1.6 the file is a ZIP; [I] its layout is undocumented, so take the first GLB, preferring
        # one named like the avatar.
        glb = glb_from_zip(archive, DISPLAY_NAME, prefer=lambda name: "avatar" in name.lower())
        return ProviderResult(glb=glb, blendshape_map=blendshape_map_for(glb))

    # -- vendor calls ----------------------------------------------------------------------------
    def _token(self, stale: str | None = None) -> str:
        """A Bearer token, fetched once and shared by every call until shortly before it expires.

        ``stale`` is a token the API just refused: a new one is fetched unless another thread already
        replaced it.
        """
        with self._lock:
            cached = self._cached_token
            if cached is not None and cached.value != stale and time.monotonic() < cached.fresh_until:
                return cached.value
            credentials = parse_key(self._api_key)
            # [D] §1.2: client-credentials grant, client authenticated with HTTP Basic; the vendor's
            # curl tutorials send the form as multipart (-F). Idempotent: retrying cannot do harm.
            body = self._http.json(
                "POST", "/o/token/", idempotent=True,
                auth=httpx.BasicAuth(credentials.client_id, credentials.client_secret),
                files={"grant_type": (None, "client_credentials")},
            )
            value = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(value, str) or not value:
                raise ProviderError(f"{DISPLAY_NAME} sent no access token", transient=True)
            expires_in = body.get("expires_in", _DEFAULT_EXPIRES_IN)
            if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in < 0:
                expires_in = _DEFAULT_EXPIRES_IN
            margin = min(_TOKEN_MARGIN_S, 0.1 * float(expires_in))
            self._cached_token = _Token(value, time.monotonic() + float(expires_in) - margin)
            log.debug("%s token fetched, valid for %s s", DISPLAY_NAME, expires_in)
            return value

    def _player_uid(self) -> str:
        """This instance's Player; [D] §1.2 Players never expire and own the avatars made with them.

        [I] §1.2, §1.9: the header may not be mandatory for MetaPerson 2.0, but every vendor sample
        creates a Player first. The UID travels in the job id so another process can poll the job.
        """
        with self._lock:
            if self._player is not None:
                return self._player
        # Retried on 5xx like a read: at worst the vendor keeps one unused Player.
        body = self._api_json("POST", "/players/", None, idempotent=True, files={"comment": (None, "avatar-studio")})
        code = body.get("code") if isinstance(body, dict) else None
        if not isinstance(code, str) or not _SAFE_CODE.fullmatch(code):
            raise ProviderError(f"{DISPLAY_NAME} did not return a Player ID", transient=True)
        with self._lock:
            if self._player is None:
                self._player = code
            return self._player

    def _avatar(self, code: str, player: str) -> dict[str, Any]:
        # [D] §1.5 the avatar resource; [I] built as /avatars/{code}/ like third-party code, since only
        # the code survives in the job id (the sample follows the ``url`` field, which is the same path).
        avatar = self._api_json("GET", f"/avatars/{code}/", player)
        if not isinstance(avatar, dict):
            raise ProviderError(f"{DISPLAY_NAME} sent an avatar description that is not a JSON object",
                                transient=True)
        return avatar

    def _latest_export(self, avatar: dict[str, Any], code: str, player: str) -> dict[str, Any] | None:
        """The newest export of the avatar ([D] §1.6 the sample sorts exports by ``created_on``)."""
        exports_url = avatar.get("exports")
        if not isinstance(exports_url, str) or not self._same_origin(self._http.client.base_url.join(exports_url)):
            exports_url = f"/avatars/{code}/exports/"  # [I] §1.6 same shape as the avatar path
        body = self._api_json("GET", exports_url, player)
        # [D] §1.6 lists are paginated (``Link`` header); [I] one job has one or two exports, so page one.
        items = body.get("results") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise ProviderError(f"{DISPLAY_NAME} sent an export list that is not a list", transient=True)
        exports = [e for e in items if isinstance(e, dict)]
        if not exports:
            return None
        return max(exports, key=lambda e: str(e.get("created_on") or ""))

    def _api_json(self, method: str, url: str, player: str | None, **kwargs: Any) -> Any:
        headers = {"X-PlayerUID": player} if player else {}  # [D] §1.2
        return self._http.json(method, url, auth=self._auth, headers=headers, **kwargs)

    def _same_origin(self, url: httpx.URL) -> bool:
        origin = self._origin
        return (url.scheme, url.host, url.port) == (origin.scheme, origin.host, origin.port)

    @staticmethod
    def _failure(what: str, item: dict[str, Any]) -> ProviderError:
        """A final failure in the provider's words. [D] §1.8 it is a status on a 200 answer; [I] the
        field holding a reason is undocumented, so the usual names are tried."""
        status = item.get("status")
        reason = next((item[k].strip() for k in _FAILURE_MESSAGE_KEYS
                       if isinstance(item.get(k), str) and item[k].strip()), "")
        message = f"{DISPLAY_NAME} {what} (status {status})"
        return ProviderError(f"{message}: {reason[:300]}" if reason else message)


def export_parameters(options: JobOptions) -> dict[str, Any]:
    """The MetaPerson 2.0 export request: one embedded GLB with the blendshape set the job asked for.

    [D] §1.4 the keys and their meaning; [I] §1.4 the "suggested minimum" values. ``arkit`` asks for
    ``mobile_51`` (ARKit names, §1.7) and ``basic`` for ``visemes_15`` (Oculus visemes).
    """
    blendshape_sets = ["mobile_51"] if options.blendshapes == "arkit" else ["visemes_15"]
    return {
        "format": "glb",
        "embed": True,
        "textures": {"embed": True},
        "blendshapes": {"list": blendshape_sets, "embed": True},
        "haircuts": {"list": ["HaircutGenerated"]},
    }


def _fraction(progress: Any) -> float:
    """Vendor progress (0–100, [I] §1.5) as [0, 1]; anything unreadable counts as no progress."""
    if isinstance(progress, bool) or not isinstance(progress, int | float):
        return 0.0
    return min(1.0, max(0.0, float(progress) / 100.0))


def _avatar_file_url(export: dict[str, Any]) -> str:
    """``files[identity=avatar].file`` of an export ([D] §1.6)."""
    files = export.get("files")
    for entry in files if isinstance(files, list) else []:
        if isinstance(entry, dict) and entry.get("identity") == "avatar" and isinstance(entry.get("file"), str):
            return entry["file"]
    raise ProviderError(f"{DISPLAY_NAME}'s export has no avatar file (it lists: "
                        f"{', '.join(_identities(files)) or 'nothing'})")


def _identities(files: Any) -> Iterable[str]:
    return [str(e.get("identity")) for e in files if isinstance(e, dict)] if isinstance(files, list) else []


def blendshape_map_for(glb: bytes) -> dict[str, str]:
    """Provider morph-target name → canonical name, for every mesh of the GLB.

    [D] §1.7 mobile_51 uses ARKit camelCase and visemes_15 Oculus names (prefix unconfirmed), on
    several meshes (head, eyelashes, lower teeth); :func:`canonical_name` covers both spellings.
    [I] §1.7 targets without names get the index-order fallback (counts 51, 15, 66), keyed by the
    ``target_<k>`` names the glTF reader gives unnamed targets.

    The map is global but names are resolved per mesh, so an entry is kept only if it means the same
    canonical name in every mesh that has it; otherwise loading could turn it into a conflict.
    Identity shapes (``NoseWidth``…) and ``Laughter`` are left out: they are not expressions (§1.7).
    """
    try:
        doc, _ = split_glb(glb)
    except AvatarError as exc:
        raise ProviderError(f"{DISPLAY_NAME} sent a GLB that cannot be read: {exc}") from None
    meanings: dict[str, set[str | None]] = {}
    for names, resolved in _mesh_names(doc):
        for raw in names:
            meanings.setdefault(raw, set()).add(resolved.get(raw))
    mapping: dict[str, str] = {}
    for raw, values in meanings.items():
        meaning = values.pop() if len(values) == 1 else None
        if isinstance(meaning, str) and meaning in CANONICAL_NAMES:
            mapping[raw] = meaning
    return mapping


def _mesh_names(doc: dict[str, Any]) -> Iterable[tuple[list[str], dict[str, str | None]]]:
    """Per mesh with morph targets: the names the glTF reader will see, and what each one means."""
    meshes = doc.get("meshes")
    for mesh in meshes if isinstance(meshes, list) else []:
        if not isinstance(mesh, dict) or not isinstance(mesh.get("primitives"), list) or not mesh["primitives"]:
            continue
        first = mesh["primitives"][0] if isinstance(mesh["primitives"][0], dict) else {}
        targets = first.get("targets")
        count = len(targets) if isinstance(targets, list) else 0
        if not count:
            continue
        names = _declared_names(mesh, first, count)
        if names is not None:
            yield names, dict(resolve_names(names))
            continue
        unnamed = [f"target_{k}" for k in range(count)]  # what gltf_reader calls them
        order = _INDEX_FALLBACK.get(count)
        if order is None:
            log.info("%s mesh %r has %d unnamed morph targets; no known order to name them",
                     DISPLAY_NAME, mesh.get("name"), count)
            yield unnamed, {}
            continue
        log.info("%s mesh %r has %d unnamed morph targets; naming them by index order [inferred]",
                 DISPLAY_NAME, mesh.get("name"), count)
        yield unnamed, {raw: canonical_name(name) for raw, name in zip(unnamed, order, strict=True)}


def _declared_names(mesh: dict[str, Any], first: dict[str, Any], count: int) -> list[str] | None:
    """``extras.targetNames`` as the glTF reader accepts it (mesh first, then primitive), else None."""
    for holder in (mesh, first):
        extras = holder.get("extras")
        if isinstance(extras, dict) and "targetNames" in extras:
            names = extras["targetNames"]
            valid = (isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names)
                     and len(set(names)) == len(names))
            return list(names) if valid else None
    return None
