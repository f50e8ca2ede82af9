"""in3D as it exists today: Avaturn's API, where the user makes the avatar in Avaturn's own page.

Why this adapter does not take the selfie (``design/providers.md`` §2.1, §7): in3D publishes no API of
its own any more; its avatar platform is Avaturn [D §2.1]. Avaturn has exactly two ways to create an
avatar, and neither accepts one photo:

* direct upload, which needs a frontal photo, two side photos and a body type [D §2.3 step 3], none of
  which the seed's single selfie can supply; faking the side photos would be a request that cannot
  work, and its export is "UNDEFINED" until the avatar is opened in Avaturn's UI anyway [I §2.3 step 5];
* a *session*: a short-lived link to Avaturn's page where the user scans themselves or uploads photos
  and customises the result [D §2.3 step 4; session types and "links are short-lived" from
  https://docs.avaturn.me/docs/integration/api/basic_flow].

So the adapter uses sessions, ``needs_selfie`` is False, and :meth:`In3dProvider.check` refuses a job
that comes with a selfie instead of silently dropping the photo the user thought would be used.

The flow, and how sure each step is (section numbers are ``design/providers.md``):

1. ``POST /api/v1/users/new`` → ``{id}``: a fresh anonymous Avaturn user per job [D §2.3 step 1]. The
   user id is the ``provider_job_id``: everything else can be looked up from it, so any worker can
   resume the job.
2. ``POST /api/v1/sessions/new`` with ``{"user_id", "config": {"type": "create_or_edit_existing"}}``
   → ``{url, id}`` [D basic_flow page; body shape from the OpenAPI copy, I §2.3]. ``url`` is the page
   the user must open; :meth:`~In3dProvider.poll` reports it as ``action_url`` while nothing is
   finished. ``create_or_edit_existing`` rather than ``create``: for a user with no avatar it opens the
   creation flow, and for a resumed job whose avatar is already being made it opens the dashboard
   instead of a second creation.
3. Completion: Avaturn announces it with the ``avatar.ready`` webhook [D §2.3 step 4], which cannot
   reach a desktop app (no public URL; §2.3 "Desktop note"). The only poll the public material allows
   is the user's avatar list, ``GET /api/v1/users/{id}/avatars``, which by default returns only
   completely processed avatars [I §2.3 step 4, OpenAPI copy]. No progress figure exists [I §2.3,
   §7], so progress is stepwise: 0 while the user is in the page, 0.5 while exporting, 1 when done.
4. ``POST /api/v1/exports/new?avatar_id=…`` → ``{status, url}``; ``pending`` starts the export,
   ``ready`` carries a temporary URL that must be downloaded at once and never stored [I §2.3 step 5].
   Calling it again is how the export is polled [I §2.3 "Desktop note"]. The URL looks pre-signed, so
   it is fetched without the API token [I §2.3 step 3].
5. The export is a GLB [D §0 for Avaturn]. No export option asks for face animation: whether the
   avatar has ARKit/viseme morphs depends on the body type the user picked in the page [I §2.3
   "Output and rig"]. So :meth:`~In3dProvider.result` reads the morph names from the GLB and refuses
   an avatar without ARKit shapes [I §5, Avaturn row], and ``blendshapes="basic"`` is refused up front
   because nothing in the API can request a viseme set.

Auth is ``Authorization: Bearer <token>`` [I §2.3 Access]; the API needs a paid Avaturn plan [D §2.3].
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from avatar_studio.avatar.blendshapes import ARKIT_52, canonical_name
from avatar_studio.avatar.errors import AvatarError
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.providers.base import JobOptions, ProviderError, ProviderResult, ProviderStatus, Selfie
from avatar_studio.providers.http import ProviderHttp

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.avaturn.me"
"""Avaturn's API root; paths are under ``/api/v1/`` [I §2.3 Access]. ``IN3D_URL`` overrides it."""

LABEL = "in3D (Avaturn)"
"""How the provider is named in every message: users chose "in3d", but the pages they see are Avaturn's."""

SESSION_TYPE = "create_or_edit_existing"
SESSION_TTL_S = 600.0
"""How long a session link is reused before a new one is made. Avaturn says links are short-lived and
must be made per use [D basic_flow page] but gives no lifetime, so 10 minutes is a guess [I]: long
enough not to swap the link under a user mid-scan often, short enough that a stale link is replaced."""

NO_KEY = (
    "in3D (Avaturn) needs an API token; set it in Settings "
    "(Avaturn's API is only available on a paid plan)"
)
SELFIE_NOT_USED = (
    "in3D needs the user to complete a scan in its own page; the selfie is not sent. "
    "Start the job without a photo, then open the page the job links to"
)
BASIC_UNSUPPORTED = (
    'in3D (Avaturn) cannot be asked for the "basic" blendshape set: its export takes no options, and '
    'the face shapes depend on the body type chosen in its page; use blendshapes "arkit"'
)
NO_FACE_ANIMATION = (
    "the in3D (Avaturn) avatar has no face animation (its GLB has no ARKit blendshapes); "
    "start a new job and pick a body type with face animation in Avaturn's page"
)

_ARKIT = frozenset(ARKIT_52)


@dataclass(frozen=True)
class _Session:
    url: str
    created: float


@dataclass(frozen=True)
class _Export:
    status: str
    url: str | None


class In3dProvider:
    """The ``in3d`` provider: the user makes the avatar in Avaturn's page; the job waits and downloads it."""

    name: ClassVar[str] = "in3d"
    needs_selfie: ClassVar[bool] = False
    poll_interval_s: ClassVar[float] = 5.0  # no documented rate limit; §7 suggests at least 3–5 s [I]

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        session_ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api_key = api_key or None
        self._session_ttl_s = session_ttl_s
        self._clock = clock
        # The session link per Avaturn user, kept in memory only: it is a bearer link into the user's
        # avatar, and a resumed job simply asks for a new one (Avaturn wants one per use anyway).
        self._sessions: dict[str, _Session] = {}
        root = base_url or os.environ.get("IN3D_URL") or DEFAULT_BASE_URL
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._http = ProviderHttp(LABEL, root, headers=headers, transport=transport, sleep=sleep)

    def close(self) -> None:
        self._http.close()

    # -- Provider protocol ---------------------------------------------------------------------
    def check(self, selfie: Selfie | None, options: JobOptions) -> None:
        """Refuse what cannot work, before anything is queued or sent (order: key, selfie, options)."""
        if not self._api_key:
            raise ProviderError(NO_KEY)
        if selfie is not None:
            raise ProviderError(SELFIE_NOT_USED)
        if options.blendshapes != "arkit":
            raise ProviderError(BASIC_UNSUPPORTED)

    def start(self, selfie: Selfie | None, options: JobOptions) -> str:
        """Create the job's Avaturn user; its id is the job id.

        The selfie is never sent, even if a caller skipped :meth:`check`: a worker must not upload a
        photo to a provider that does not use it.
        """
        self._require_key()
        del selfie  # deliberately unused, see the module docstring
        body = self._http.json("POST", "/api/v1/users/new")
        user_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(user_id, str) or not user_id:
            raise self._unexpected("creating a user", body)
        # The session link is made by the first poll, not here: a failure to make it must not cost a
        # second Avaturn user when the worker retries start(); the user id alone resumes the job.
        log.info("%s: created user %s for a new job", LABEL, user_id)
        return user_id

    def poll(self, provider_job_id: str) -> ProviderStatus:
        """Waiting for the user (with the page's link), exporting, or done."""
        user_id = self._user_id(provider_job_id)
        avatar_id = self._finished_avatar(user_id)
        if avatar_id is None:
            return ProviderStatus(progress=0.0, action_url=self._session_url(user_id))
        self._sessions.pop(user_id, None)  # the user's part is over; the link must not be shown again
        export = self._export(avatar_id)
        if export.status == "ready" and export.url:
            return ProviderStatus(progress=1.0, done=True)
        return ProviderStatus(progress=0.5)

    def result(self, provider_job_id: str) -> ProviderResult:
        """Ask for the export again (its URL is temporary and never stored), download it, check the face rig."""
        user_id = self._user_id(provider_job_id)
        avatar_id = self._finished_avatar(user_id)
        if avatar_id is None:
            raise ProviderError(f"{LABEL} has no finished avatar for this job yet; the job will be retried",
                                transient=True)
        export = self._export(avatar_id)
        if export.status != "ready" or not export.url:
            raise ProviderError(f"{LABEL} has not finished exporting the avatar yet; the job will be retried",
                                transient=True)
        if not _is_web_url(export.url):
            raise ProviderError(f"{LABEL} sent an export link that is not a web address")
        data = self._http.download(export.url, send_auth=False)
        glb = _as_glb(data)
        return ProviderResult(glb=glb, blendshape_map=_face_map(glb))

    # -- steps ---------------------------------------------------------------------------------
    def _require_key(self) -> None:
        if not self._api_key:
            raise ProviderError(NO_KEY)

    def _user_id(self, provider_job_id: str) -> str:
        self._require_key()
        if not isinstance(provider_job_id, str) or not provider_job_id.strip():
            raise ProviderError(f"{LABEL}: this job has no Avaturn user id to resume; start a new job")
        return provider_job_id.strip()

    def _session_url(self, user_id: str) -> str:
        """The page link for ``user_id``: reused while fresh, else a new session (Avaturn wants one per use)."""
        session = self._sessions.get(user_id)
        now = self._clock()
        if session is not None and now - session.created < self._session_ttl_s:
            return session.url
        body = self._http.json("POST", "/api/v1/sessions/new",
                               json={"user_id": user_id, "config": {"type": SESSION_TYPE}})
        url = body.get("url") if isinstance(body, dict) else None
        if not _is_web_url(url):
            raise self._unexpected("opening a session", body)
        log.info("%s: new session page for user %s", LABEL, user_id)  # the link itself is not logged
        self._sessions[user_id] = _Session(url=url, created=now)
        return url

    def _finished_avatar(self, user_id: str) -> str | None:
        """The id of the user's processed avatar, or None while the user is still in the page.

        The job's Avaturn user is fresh, so any avatar it has was made for this job; if the user made
        several, the last one listed is taken [I: the list order is undocumented].
        """
        body = self._http.json("GET", f"/api/v1/users/{quote(user_id, safe='')}/avatars")
        if not isinstance(body, list):
            raise self._unexpected("listing the user's avatars", body)
        ids = [item.get("id") for item in body if isinstance(item, dict)]
        if any(not isinstance(i, str) or not i for i in ids) or len(ids) != len(body):
            raise self._unexpected("listing the user's avatars", body)
        return ids[-1] if ids else None

    def _export(self, avatar_id: str) -> _Export:
        # Idempotent in effect: a second call reports the same export (§2.3 step 5), so 5xx are retried.
        body = self._http.json("POST", "/api/v1/exports/new", params={"avatar_id": avatar_id}, idempotent=True)
        status = body.get("status") if isinstance(body, dict) else None
        url = body.get("url") if isinstance(body, dict) else None
        if status == "failed":
            raise ProviderError(f"{LABEL} could not export the avatar; open the job's page again or start a "
                                f"new job")
        if status not in ("pending", "ready") or not (url is None or isinstance(url, str)):
            raise self._unexpected("exporting the avatar", body)
        return _Export(status=status, url=url)

    @staticmethod
    def _unexpected(step: str, body: Any) -> ProviderError:
        """An answer whose shape we do not know: the API changed, so retrying will not help."""
        shape = type(body).__name__ if not isinstance(body, dict) else "fields " + ", ".join(sorted(body)[:8])
        return ProviderError(f"{LABEL} answered {step} in a form Avatar Studio does not know ({shape}); "
                             f"the in3d adapter may need an update")


def _is_web_url(value: object) -> bool:
    """Whether a link from the provider is an absolute http(s) URL (the only kind we open or show)."""
    if not isinstance(value, str):
        return False
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, ValueError):
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def _as_glb(data: bytes) -> bytes:
    """The export as GLB bytes; anything else is refused by name (Avaturn exports a GLB [D §0])."""
    if data[:4] == b"glTF":
        return data
    if data[:2] == b"PK":
        what = "a ZIP archive"
    elif data.lstrip()[:1] in (b"<", b"{"):
        what = "a web page or a JSON document"
    else:
        what = f"{len(data)} bytes of unknown data"
    raise ProviderError(f"{LABEL} sent an export that is not a GLB model ({what})")


def _face_map(glb: bytes) -> dict[str, str]:
    """Provider morph name → canonical name, refusing an avatar without ARKit face shapes (§5)."""
    try:
        avatar = load_avatar(glb)
    except AvatarError as exc:
        raise ProviderError(f"{LABEL} sent a GLB Avatar Studio cannot read: {exc}") from None
    mapping = {raw: canonical for raws in avatar.raw_names.values() for raw in raws
               if (canonical := canonical_name(raw)) is not None}
    arkit = {name for name in mapping.values() if name in _ARKIT}
    if not arkit:
        raise ProviderError(NO_FACE_ANIMATION)
    log.info("%s: avatar has %d/52 ARKit shapes and %d visemes", LABEL, len(arkit),
             len(set(mapping.values()) - _ARKIT))
    return mapping
