"""A fake of in3D's current API (Avaturn), for contract tests over real HTTP.

It follows what ``design/providers.md`` §2.3 says about the vendor, and nothing more: anonymous users,
session links to a page where the user makes the avatar, a list of finished avatars, and an export that
is ``pending`` first and then ``ready`` with a temporary URL on *another* origin (the storage server),
which must never see the API token. The "user" finishes in the page when a test calls
``POST /control/complete/{user_id}`` (or, with ``complete_after_polls``, after that many avatar-list
polls), because nothing in the adapter can make that happen.

Switches on :class:`FakeIn3d` inject each failure the adapter must explain: 429 with ``Retry-After``, a
burst of 5xx, a refused token, malformed JSON, an export that is not a GLB, an expired export URL, an
avatar without face animation, and a user who never finishes.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from gltf_builder import build_glb
from loopback import serve_asgi

from avatar_studio.avatar.synthetic import make_arkit_head_glb

SESSION_TYPES = ("create_or_edit_existing", "create", "edit_existing")


@dataclass
class _User:
    avatars: list[str] = field(default_factory=list)  # finished avatar ids
    list_polls: int = 0


@dataclass
class _Export:
    calls: int = 0
    signatures: set[str] = field(default_factory=set)


class FakeIn3d:
    """The fake's state, its switches, and the two apps (API and storage)."""

    def __init__(self, token: str, *, name_style: str = "arkit_raw") -> None:
        self.token = token
        self.name_style = name_style
        self.lock = threading.Lock()
        # -- switches (tests set these while the servers run) --------------------------------
        self.complete_after_polls: int | None = None  # auto-finish after this many avatar-list polls
        self.export_pending_calls = 1  # exports/new answers "pending" this many times per avatar
        self.rate_limited = 0  # the next N API calls answer 429 with Retry-After
        self.retry_after = "2"
        self.server_errors = 0  # the next N API calls answer 503
        self.refuse_token = False  # every API call answers 401, whatever the token
        self.malformed_json = 0  # the next N API calls answer 200 with a body that is not JSON
        self.export_not_glb = False  # storage serves an HTML page instead of the model
        self.export_expired = False  # storage answers 403 (the signed URL expired)
        self.no_face_animation = False  # the GLB has no morph targets (a body type without face rig)
        self.never_completes = False  # the user never finishes in the page (control calls ignored)
        self.export_status: str | None = None  # force exports/new's status (e.g. "failed")
        self.inject_on: str = "/api/"  # the injected 429/5xx/malformed answers hit only paths starting so
        # -- records -----------------------------------------------------------------------------
        self.users: dict[str, _User] = {}
        self.sessions: list[dict[str, Any]] = []
        self.exports: dict[str, _Export] = {}
        self.api_calls: list[tuple[str, str]] = []
        self.uploads = 0  # any request with a body other than JSON (a photo upload would land here)
        self.storage_auth_seen: list[str] = []  # Authorization headers that reached storage (must stay empty)
        self.storage_downloads = 0
        self.api_url = ""
        self.storage_url = ""
        self.api = self._api_app()
        self.storage = self._storage_app()

    @contextmanager
    def running(self) -> Iterator[FakeIn3d]:
        """Serve the API and the storage origin on loopback for the duration of a test."""
        with serve_asgi(self.storage) as storage_url, serve_asgi(self.api) as api_url:
            self.storage_url, self.api_url = storage_url, api_url
            yield self

    def complete(self, user_id: str) -> None:
        """The user finishes the scan in the page: the avatar becomes ready (unless ``never_completes``)."""
        with self.lock:
            user = self.users[user_id]
            if not self.never_completes and not user.avatars:
                user.avatars.append(str(uuid.uuid4()))

    def glb(self) -> bytes:
        """The model the storage serves: a head with ARKit morphs, or a rig-less body."""
        if self.no_face_animation:
            positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
            return build_glb([{"positions": positions, "indices": [0, 1, 2]}],
                             nodes=[{"mesh": 0, "name": "Body_Mesh"}])
        return make_arkit_head_glb(200, texture=False, name_style=self.name_style)

    # -- the API origin ------------------------------------------------------------------------
    def _injected(self, request: Request) -> Response | None:
        """The answer a switch imposes on this API call, or None to let the endpoint answer (lock held)."""
        self.api_calls.append((request.method, request.url.path))
        if request.headers.get("content-type", "").startswith("multipart/"):
            self.uploads += 1
        if self.refuse_token or request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"detail": "Could not validate credentials"}, status_code=401)
        if not request.url.path.startswith(self.inject_on):
            return None
        if self.rate_limited:
            self.rate_limited -= 1
            return JSONResponse({"detail": "Too many requests"}, status_code=429,
                                headers={"Retry-After": self.retry_after})
        if self.server_errors:
            self.server_errors -= 1
            return Response("<html><body>503 Service Temporarily Unavailable</body></html>",
                            status_code=503, media_type="text/html")
        if self.malformed_json:
            self.malformed_json -= 1
            return Response('{"status": "pend', media_type="application/json")
        return None

    def _api_app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            if not request.url.path.startswith("/api/"):
                return await call_next(request)
            with self.lock:
                injected = self._injected(request)
            return injected if injected is not None else await call_next(request)

        @app.post("/api/v1/users/new")
        def new_user() -> dict[str, str]:
            user_id = str(uuid.uuid4())
            with self.lock:
                self.users[user_id] = _User()
            return {"id": user_id}

        @app.post("/api/v1/sessions/new")
        async def new_session(request: Request) -> Response:
            body = await request.json()
            user_id = body.get("user_id") if isinstance(body, dict) else None
            kind = (body.get("config") or {}).get("type", "create_or_edit_existing") if isinstance(body, dict) else None
            if kind not in SESSION_TYPES:
                return JSONResponse({"detail": [{"loc": ["body", "config", "type"], "msg": "invalid session type",
                                                 "type": "value_error"}]}, status_code=422)
            with self.lock:
                if user_id not in self.users:
                    return JSONResponse({"detail": "User not found"}, status_code=404)
                session_id = str(uuid.uuid4())
                self.sessions.append({"id": session_id, "user_id": user_id, "type": kind})
            return JSONResponse({"url": f"{self.api_url}/session/{session_id}?t={secrets.token_urlsafe(8)}",
                                 "id": session_id, "custom_upload_url": None})

        @app.get("/api/v1/users/{user_id}/avatars")
        def list_avatars(user_id: str) -> Response:
            with self.lock:
                user = self.users.get(user_id)
                if user is None:
                    return JSONResponse({"detail": "User not found"}, status_code=404)
                user.list_polls += 1
                auto = self.complete_after_polls
                if auto is not None and user.list_polls > auto and not user.avatars and not self.never_completes:
                    user.avatars.append(str(uuid.uuid4()))
                return JSONResponse([{"id": a} for a in user.avatars])

        @app.post("/api/v1/exports/new")
        def new_export(avatar_id: str) -> Response:
            with self.lock:
                if not any(avatar_id in u.avatars for u in self.users.values()):
                    return JSONResponse({"detail": "Avatar not found"}, status_code=404)
                export = self.exports.setdefault(avatar_id, _Export())
                export.calls += 1
                if self.export_status is not None:
                    return JSONResponse({"status": self.export_status, "url": None})
                if export.calls <= self.export_pending_calls:
                    return JSONResponse({"status": "pending", "url": None})
                signature = secrets.token_hex(8)
                export.signatures.add(signature)
            return JSONResponse({"status": "ready",
                                 "url": f"{self.storage_url}/exports/{avatar_id}.glb?sig={signature}"})

        @app.get("/session/{session_id}")
        def session_page(session_id: str) -> HTMLResponse:
            return HTMLResponse(f"<html><body>Avaturn scan page for session {session_id}</body></html>")

        @app.post("/control/complete/{user_id}")
        def control_complete(user_id: str) -> Response:
            if user_id not in self.users:
                return JSONResponse({"detail": "User not found"}, status_code=404)
            self.complete(user_id)
            return Response(status_code=204)

        return app

    # -- the storage origin (pre-signed, temporary export URLs) ----------------------------------
    def _storage_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/exports/{avatar_id}.glb")
        def download(avatar_id: str, sig: str, request: Request) -> Response:
            with self.lock:
                if "authorization" in request.headers:
                    self.storage_auth_seen.append(request.headers["authorization"])
                export = self.exports.get(avatar_id)
                if self.export_expired or export is None or sig not in export.signatures:
                    return Response("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                                    status_code=403, media_type="application/xml")
                self.storage_downloads += 1
                if self.export_not_glb:
                    return HTMLResponse("<html><body>Export is being prepared</body></html>")
            return Response(self.glb(), media_type="model/gltf-binary")

        return app
