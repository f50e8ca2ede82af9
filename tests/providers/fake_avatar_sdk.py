"""A fake Avatar SDK "Avatar WEB API" (MetaPerson 2.0) that records what the adapter sends.

Why a fake server and not mocked calls: the adapter's contract is HTTP (paths, headers, multipart
field names, redirects, which host gets which credentials), so the tests speak real HTTP to this app
over loopback (``loopback.serve_asgi``). It implements the vendor contract as
``design/providers.md`` §1.2–§1.8 describes it, with the same [D]/[I] caveats:

* ``POST /o/token/``: client credentials by HTTP Basic or form fields, ``grant_type`` required [D].
* ``POST /players/`` → ``{"code": …}`` [D]; avatar calls need ``Authorization: Bearer`` [D] and the
  ``X-PlayerUID`` of a known player [I: the vendor never says the header is enforced].
* ``POST /avatars/`` multipart: ``photo``, ``name``, ``pipeline``, ``pipeline_subtype``,
  ``export_parameters`` (JSON string) [D] → the avatar object with ``url``, ``code``, ``status``,
  ``progress``, ``exports`` [D/I].
* ``GET /avatars/{code}/``: ``Queued`` → ``Computing`` (progress 0–100 [I]) → ``Completed``, or
  ``Failed`` with a message [D statuses; I the message field].
* ``GET /avatars/{code}/exports/``: a list of exports with ``status`` and ``files`` [D], empty until
  the avatar is computed [I]; the file URL follows the third-party pattern
  ``/avatars/{code}/exports/{export}/files/{identity}/file/`` [I] and returns a ZIP [D].
* Optionally that file URL redirects to a second server, :func:`make_storage_app`, standing for
  pre-signed object storage on another origin; it records whether credentials reached it.

Fault switches (:class:`FakeAvatarSdk` attributes and :meth:`FakeAvatarSdk.inject`) cover what the
adapter must survive: 429 with ``Retry-After``, 5xx bursts, refused keys, revoked tokens, malformed
JSON, a ZIP without a GLB, an expired storage link, a job that never finishes and a failed job.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret-7f3a9c"
PIPELINE = "metaperson_2.0"
SUBTYPES = ("male", "female")


@dataclass
class Recorded:
    """One request as the fake saw it; header names lower-cased, multipart fields split by kind."""

    route: str  # token, players, create, avatar, exports, file, storage
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)  # name → (filename, type, data)
    content_type: str = ""


@dataclass
class Fault:
    """A canned answer that replaces the next normal one on a route."""

    status: int
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        if isinstance(self.body, dict | list):
            return JSONResponse(self.body, status_code=self.status, headers=self.headers)
        return Response(self.body, status_code=self.status, headers=self.headers,
                        media_type="application/json")


@dataclass
class _Avatar:
    code: str
    player: str
    export_code: str
    created_on: str
    polls: int = 0
    export_polls: int = 0


class FakeAvatarSdk:
    """State and switches of one fake Avatar SDK account; :attr:`app` is the ASGI app to serve."""

    def __init__(self, glb: bytes, *, storage_url: str | None = None) -> None:
        self.glb = glb
        self.storage_url = storage_url  # when set, file downloads redirect there (another origin)
        self.requests: list[Recorded] = []
        self.tokens_issued: list[str] = []
        self.valid_tokens: set[str] = set()
        self.players: list[str] = []
        self.avatars: dict[str, _Avatar] = {}
        self.faults: dict[str, list[Fault]] = {}
        # behaviour switches
        self.token_expires_in: float = 36000  # [D] §1.2
        self.polls_to_complete: int | None = 4  # None: the avatar never finishes
        self.export_polls_to_complete = 2  # exports-list reads before the export is Completed
        self.fail_after_polls: int | None = None  # status Failed from this poll on
        self.fail_status = "Failed"
        self.failure_message = "No face found in the photo"
        self.failure_message_key = "message"  # [I] the field name is undocumented
        self.zip_without_glb = False
        self.storage_expired = False
        self.old_failed_export = False  # list an older, failed export before the real one
        self._lock = threading.Lock()
        self.app = self._make_app()

    # -- switches --------------------------------------------------------------------------------
    def inject(self, route: str, *faults: Fault) -> None:
        """Answer the next requests on ``route`` with ``faults``, in order, then behave normally."""
        self.faults.setdefault(route, []).extend(faults)

    def revoke_tokens(self) -> None:
        """Make every issued token invalid (the next API call gets 401), as an early expiry would."""
        self.valid_tokens.clear()

    def recorded(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def zip_bytes(self) -> bytes:
        """The export ZIP [D §1.6: a ZIP; I: its layout]: the GLB plus a stray texture folder."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            if self.zip_without_glb:
                archive.writestr("avatar/model.fbx", b"Kaydara FBX Binary  \x00")
            else:
                archive.writestr("avatar/model.glb", self.glb)
            archive.writestr("avatar/textures/Color.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
        return buffer.getvalue()

    # -- helpers ---------------------------------------------------------------------------------
    async def _record(self, route: str, request: Request) -> Recorded:
        record = Recorded(route=route, method=request.method, path=request.url.path,
                          query=dict(request.query_params),
                          headers={k.lower(): v for k, v in request.headers.items()},
                          content_type=request.headers.get("content-type", ""))
        if request.method == "POST" and record.content_type.startswith(("multipart/", "application/x-www")):
            form = await request.form()
            for name, value in form.multi_items():
                if isinstance(value, str):
                    record.fields[name] = value
                else:
                    record.files[name] = (value.filename or "", value.content_type or "", await value.read())
        with self._lock:
            self.requests.append(record)
        return record

    def _fault(self, route: str) -> Response | None:
        with self._lock:
            queue = self.faults.get(route)
            return queue.pop(0).response() if queue else None

    def _bearer_ok(self, record: Recorded) -> bool:
        header = record.headers.get("authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else record.query.get("access_token", "")
        return token in self.valid_tokens

    @staticmethod
    def _denied() -> Response:
        # [D] §1.8 DRF-style error body with ``detail``
        return JSONResponse({"detail": "Authentication credentials were not provided."}, status_code=401)

    def _avatar_json(self, avatar: _Avatar, base: str, status: str, progress: int) -> dict[str, Any]:
        return {
            "url": f"{base}/avatars/{avatar.code}/",
            "code": avatar.code,
            "status": status,
            "progress": progress,
            "created_on": avatar.created_on,
            "name": "Avatar Studio selfie",
            "description": "",
            "exports": f"{base}/avatars/{avatar.code}/exports/",
        }

    def _avatar_state(self, avatar: _Avatar) -> tuple[str, int, str | None]:
        """(status, progress, failure message) after this poll."""
        n = avatar.polls
        if self.fail_after_polls is not None and n >= self.fail_after_polls:
            return self.fail_status, min(99, 20 * n), self.failure_message
        if self.polls_to_complete is None:
            return "Computing", min(99, 10 * n), None
        if n >= self.polls_to_complete:
            return "Completed", 100, None
        if n <= 1:
            return "Queued", 0, None
        return "Computing", int(100 * (n - 1) / (self.polls_to_complete - 1)), None

    # -- the app ---------------------------------------------------------------------------------
    def _make_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/o/token/")
        async def token(request: Request) -> Response:
            record = await self._record("token", request)
            if (fault := self._fault("token")) is not None:
                return fault
            client_id, client_secret = record.fields.get("client_id"), record.fields.get("client_secret")
            header = record.headers.get("authorization", "")
            if header.startswith("Basic "):
                decoded = base64.b64decode(header[6:]).decode()
                client_id, _, client_secret = decoded.partition(":")
            if (client_id, client_secret) != (CLIENT_ID, CLIENT_SECRET):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            if record.fields.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            value = uuid.uuid4().hex
            with self._lock:
                self.tokens_issued.append(value)
                self.valid_tokens.add(value)
            return JSONResponse({"access_token": value, "token_type": "Bearer",
                                 "expires_in": self.token_expires_in, "scope": "read write"})

        @app.post("/players/")
        async def players(request: Request) -> Response:
            record = await self._record("players", request)
            if (fault := self._fault("players")) is not None:
                return fault
            if not self._bearer_ok(record):
                return self._denied()
            code = uuid.uuid4().hex
            self.players.append(code)
            return JSONResponse({"code": code, "comment": record.fields.get("comment", "")}, status_code=201)

        @app.post("/avatars/")
        async def create(request: Request) -> Response:
            record = await self._record("create", request)
            if (fault := self._fault("create")) is not None:
                return fault
            if not self._bearer_ok(record):
                return self._denied()
            if record.headers.get("x-playeruid") not in self.players:
                return JSONResponse({"detail": "Unknown player"}, status_code=400)
            if not record.content_type.startswith("multipart/form-data"):
                return JSONResponse({"detail": "Unsupported media type"}, status_code=415)
            problems = []
            if "photo" not in record.files or not record.files["photo"][2]:
                problems.append("photo: This field is required.")
            if record.fields.get("pipeline") != PIPELINE:
                problems.append("pipeline: unknown pipeline")
            if record.fields.get("pipeline_subtype") not in SUBTYPES:
                problems.append("pipeline_subtype: unknown subtype")
            try:
                json.loads(record.fields.get("export_parameters", "{}"))
            except ValueError:
                problems.append("export_parameters: not JSON")
            if problems:
                return JSONResponse({"detail": "; ".join(problems)}, status_code=400)
            avatar = _Avatar(code=uuid.uuid4().hex, player=record.headers["x-playeruid"],
                             export_code=uuid.uuid4().hex, created_on="2026-05-01T10:00:00.000000Z")
            self.avatars[avatar.code] = avatar
            base = str(request.base_url).rstrip("/")
            return JSONResponse(self._avatar_json(avatar, base, "Uploading", 0), status_code=201)

        def lookup(record: Recorded, code: str) -> _Avatar | Response:
            if not self._bearer_ok(record):
                return self._denied()
            avatar = self.avatars.get(code)
            if avatar is None or record.headers.get("x-playeruid") != avatar.player:
                return JSONResponse({"detail": "Not found."}, status_code=404)
            return avatar

        @app.get("/avatars/{code}/")
        async def get_avatar(code: str, request: Request) -> Response:
            record = await self._record("avatar", request)
            if (fault := self._fault("avatar")) is not None:
                return fault
            avatar = lookup(record, code)
            if isinstance(avatar, Response):
                return avatar
            avatar.polls += 1
            status, progress, message = self._avatar_state(avatar)
            body = self._avatar_json(avatar, str(request.base_url).rstrip("/"), status, progress)
            if message is not None:
                body[self.failure_message_key] = message
            return JSONResponse(body)

        @app.get("/avatars/{code}/exports/")
        async def exports(code: str, request: Request) -> Response:
            record = await self._record("exports", request)
            if (fault := self._fault("exports")) is not None:
                return fault
            avatar = lookup(record, code)
            if isinstance(avatar, Response):
                return avatar
            if self._avatar_state(avatar)[0] != "Completed":
                return JSONResponse([])
            avatar.export_polls += 1
            done = avatar.export_polls >= self.export_polls_to_complete
            base = str(request.base_url).rstrip("/")
            files = [
                {"identity": identity, "category": category, "static_files": [],
                 "file": f"{base}/avatars/{code}/exports/{avatar.export_code}/files/{identity}/file/"}
                for identity, category in (("HaircutGenerated", "haircuts"), ("avatar", "avatar"))
            ] if done else []
            listing = [{"code": avatar.export_code, "created_on": "2026-05-01T10:05:00.000000Z",
                        "status": "Completed" if done else "Computing", "progress": 100 if done else 50,
                        "files": files}]
            if self.old_failed_export:
                listing.append({"code": "old", "created_on": "2026-05-01T10:01:00.000000Z", "status": "Failed",
                                "files": []})
            return JSONResponse(listing)

        @app.get("/avatars/{code}/exports/{export_code}/files/{identity}/file/")
        async def export_file(code: str, export_code: str, identity: str, request: Request) -> Response:
            record = await self._record("file", request)
            if (fault := self._fault("file")) is not None:
                return fault
            # [I] no X-PlayerUID here: the vendor sample downloads files as plain browser links with
            # ``?access_token=`` (§1.2), which cannot carry a custom header.
            if not self._bearer_ok(record):
                return self._denied()
            avatar = self.avatars.get(code)
            if avatar is None or export_code != avatar.export_code or identity != "avatar":
                return JSONResponse({"detail": "Not found."}, status_code=404)
            if self.storage_url:
                return RedirectResponse(f"{self.storage_url}/storage/{code}/{identity}.zip?X-Signature=abc123",
                                        status_code=302)
            return Response(self.zip_bytes(), media_type="application/zip")

        return app


def make_storage_app(fake: FakeAvatarSdk) -> FastAPI:
    """Pre-signed object storage on another origin: serves the ZIP, or 403 once the link has expired."""
    app = FastAPI()

    @app.get("/storage/{code}/{name}")
    async def storage(code: str, name: str, request: Request) -> Response:
        await fake._record("storage", request)
        if (fault := fake._fault("storage")) is not None:
            return fault
        if fake.storage_expired or request.query_params.get("X-Signature") != "abc123":
            return Response("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                            status_code=403, media_type="application/xml")
        if code not in fake.avatars:
            return Response(status_code=404)
        return Response(fake.zip_bytes(), media_type="application/zip")

    return app
