"""The REST API of the spec (``/avatar/*``) plus users, health and the local signed-file route.

Handlers are plain ``def`` functions on a synchronous SQLAlchemy session (FastAPI runs them in its
thread pool): the same code serves SQLite and PostgreSQL, and the measured throughput is well above
what a desktop client or a worker fleet needs (``design/backend.md`` §4).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from avatar_studio import __version__
from avatar_studio.config import Settings
from avatar_studio.providers.base import ProviderError, available_providers, create_provider
from avatar_studio.service.auth import new_token, token_hash
from avatar_studio.service.db import session_factory
from avatar_studio.service.errors import ApiError, ErrorResponse, install_error_handlers, not_found
from avatar_studio.service.models import AvatarAsset, AvatarJob, Preferences, User, utcnow
from avatar_studio.service.schemas import (
    AssetUrl,
    Health,
    JobCreated,
    JobList,
    JobOptionsIn,
    JobStatus,
    JobSummary,
    Ok,
    PreferencesIn,
    PreferencesOut,
    UserCreate,
    UserCreated,
    UserOut,
    UserUpdate,
)
from avatar_studio.service.storage import LocalStorage, SignatureError, Storage, StorageError, content_type_for
from avatar_studio.service.uploads import sanitise_selfie


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can return (all share one shape)."""
    text = {401: "missing or invalid bearer token", 403: "not allowed", 404: "no such object",
            413: "upload too large", 415: "not a JPEG or PNG", 422: "invalid request", 503: "storage unavailable"}
    return {code: {"model": ErrorResponse, "description": text[code]} for code in codes}


def _parse_id(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found(what) from None


# Built once: constructing a joined SELECT costs ~150 µs per request, five times the query itself.
_JOB_STATUS_FOR_TOKEN = (
    sa.select(AvatarJob.status, AvatarJob.progress, AvatarJob.error, AvatarJob.action_url, AvatarAsset.id)
    .join(User, User.id == AvatarJob.user_id)
    .outerjoin(AvatarAsset, AvatarAsset.job_id == AvatarJob.id)
    .where(AvatarJob.id == sa.bindparam("job_id"), User.token_hash == sa.bindparam("token_hash"))
)
_USER_ID_FOR_TOKEN = sa.select(User.id).where(User.token_hash == sa.bindparam("token_hash"))
_USER_FOR_TOKEN = sa.select(User).where(User.token_hash == sa.bindparam("token_hash"))


def _job_status(
    status: str, progress: float, error: str | None, action_url: str | None, asset_id: uuid.UUID | None
) -> dict[str, Any]:
    """The spec's job body: the error only for failed jobs, the action URL only while waiting."""
    return {
        "status": status,
        "progress": round(float(progress), 4),
        "assetId": str(asset_id) if asset_id else None,
        "error": error if status == "error" else None,
        "actionUrl": action_url if status in ("queued", "processing") else None,
    }


async def _db(request: Request) -> AsyncIterator[Session]:
    """A session per request. Async on purpose: creating one does no I/O, and a sync dependency
    would cost a thread-pool hop on every request (the handlers themselves stay sync)."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    session = factory()
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)  # may roll back: real I/O, so off the event loop


DB = Annotated[Session, Depends(_db)]


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _current_user_from_token(token: str, user: User | None = None) -> User:
    """401 with a sentence unless ``user`` is the token's user."""
    if not token:
        raise ApiError(401, "unauthorized", "sign in first: send 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})
    if user is None:
        raise ApiError(401, "unauthorized", "the token is not valid (the user may have been deleted)",
                       headers={"WWW-Authenticate": "Bearer"})
    return user


def _current_user(session: DB, authorization: Annotated[str | None, Header()] = None) -> User:
    """The user whose bearer token this is; 401 with a sentence otherwise."""
    token = _bearer(authorization)
    user = session.scalar(_USER_FOR_TOKEN, {"token_hash": token_hash(token)}) if token else None
    return _current_user_from_token(token, user)


CurrentUser = Annotated[User, Depends(_current_user)]


def create_app(settings: Settings, engine: sa.Engine, storage: Storage) -> FastAPI:
    """The ASGI app. The caller owns the engine (migrated) and the storage."""
    app = FastAPI(
        title="Avatar Studio service",
        version=__version__,
        description="Selfie → photoreal, animatable avatar: jobs, assets with signed URLs, preferences.",
    )
    install_error_handlers(app)
    app.state.session_factory = session_factory(engine)
    app.state.settings = settings
    app.state.storage = storage

    def _user_out(user: User) -> UserOut:
        return UserOut(user_id=str(user.id), age_confirmed=user.age_confirmed, consent_selfie=user.consent_selfie,
                       created_at=user.created_at)

    # -- users ---------------------------------------------------------------------------------
    @app.post("/users", status_code=201, response_model=UserCreated, responses=_errors(422), tags=["users"])
    def create_user(body: UserCreate, session: DB) -> UserCreated:
        """Create a user; the token is shown only here (the service keeps a hash)."""
        token = new_token()
        user = User(age_confirmed=body.age_confirmed, consent_selfie=body.consent_selfie, token_hash=token_hash(token))
        session.add(user)
        session.commit()
        return UserCreated(user_id=str(user.id), token=token)

    @app.get("/users/me", response_model=UserOut, responses=_errors(401), tags=["users"])
    def get_me(user: CurrentUser) -> UserOut:
        return _user_out(user)

    @app.patch("/users/me", response_model=UserOut, responses=_errors(401, 422), tags=["users"])
    def update_me(body: UserUpdate, user: CurrentUser, session: DB) -> UserOut:
        """Confirm age or give (or withdraw) selfie consent."""
        for name in ("age_confirmed", "consent_selfie"):
            value = getattr(body, name)
            if value is not None:
                setattr(user, name, value)
        user.updated_at = utcnow()
        session.commit()
        return _user_out(user)

    @app.delete("/users/me", status_code=204, responses=_errors(401, 503), tags=["users"])
    def delete_me(user: CurrentUser, session: DB) -> Response:
        """Delete the user with every selfie, asset, preference and job, storage included."""
        jobs = session.scalars(sa.select(AvatarJob).where(AvatarJob.user_id == user.id)).all()
        assets = session.scalars(sa.select(AvatarAsset).where(AvatarAsset.user_id == user.id)).all()
        try:  # storage first: if it fails the rows remain, so nothing is orphaned and the user can retry
            for job in jobs:
                storage.delete_prefix(f"selfies/{job.id}/")
            for asset in assets:
                storage.delete_prefix(f"avatars/{asset.id}/")
        except StorageError as exc:
            raise ApiError(503, "storage_unavailable", f"could not delete stored files: {exc}; try again") from None
        session.delete(user)  # rows cascade (ON DELETE CASCADE)
        session.commit()
        return Response(status_code=204)

    # -- jobs ------------------------------------------------------------------------------------
    @app.post("/avatar/jobs", status_code=202, response_model=JobCreated,
              responses=_errors(401, 403, 413, 415, 422, 503), tags=["avatar"])
    def create_job(
        user: CurrentUser,
        session: DB,
        file: Annotated[UploadFile | None, File(description="the selfie, JPEG or PNG")] = None,
        options: Annotated[str | None, Form(description="JSON: output, blendshapes, realism")] = None,
        provider: Annotated[str | None, Form()] = None,
    ) -> JobCreated:
        """Queue an avatar job for the user's selfie (consent and age confirmation required)."""
        if not (user.age_confirmed and user.consent_selfie):
            missing = [t for t, ok in (("confirm your age", user.age_confirmed),
                                       ("consent to selfie processing", user.consent_selfie)) if not ok]
            raise ApiError(403, "consent_required", f"before a selfie can be processed, {' and '.join(missing)}")
        parsed = _options(options)
        name = provider or settings.provider
        if name not in available_providers():
            raise ApiError(422, "invalid_request", f"provider: unknown provider {name!r} "
                           f"(available: {', '.join(available_providers()) or 'none'})", field="provider")
        try:
            impl = create_provider(name, settings.provider_api_key)
        except ProviderError as exc:
            raise ApiError(422, "provider_unavailable", f"provider: {exc}", field="provider") from None
        selfie = None
        if file is not None:
            data = file.file.read(settings.max_upload_bytes + 1)
            selfie = sanitise_selfie(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
        elif getattr(impl, "needs_selfie", True):
            raise ApiError(422, "invalid_request", f"file: a selfie is required for provider {name!r}", field="file")
        try:
            impl.check(selfie, parsed.to_options())
        except ProviderError as exc:
            raise ApiError(422, "provider_refused", str(exc), field="options") from None
        # The selfie is written before the row, outside any transaction: on SQLite an open write
        # transaction would make every other upload wait for this one's fsync.
        job = AvatarJob(id=uuid.uuid4(), user_id=user.id, provider=name, status="queued", progress=0.0,
                        options=parsed.model_dump())
        if selfie is not None:
            ext = "jpg" if selfie.mime_type == "image/jpeg" else "png"
            job.selfie_key = f"selfies/{job.id}/selfie.{ext}"
            try:
                storage.put(job.selfie_key, selfie.data, selfie.mime_type)
            except StorageError as exc:
                raise ApiError(503, "storage_unavailable", f"could not store the selfie: {exc}") from None
        try:
            session.add(job)
            session.commit()
        except Exception:
            if job.selfie_key:
                storage.delete(job.selfie_key)  # no stored selfie without its job row
            raise
        return JobCreated(job_id=str(job.id))

    def _options(raw: str | None) -> JobOptionsIn:
        if raw is None or raw.strip() == "":
            return JobOptionsIn()
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ApiError(422, "invalid_request", "options: not valid JSON", field="options") from None
        if not isinstance(value, dict):
            raise ApiError(422, "invalid_request", "options: must be a JSON object", field="options")
        try:
            return JobOptionsIn.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "options"
            message = f"options.{field}: {first['msg']}"
            raise ApiError(422, "invalid_request", message, field=f"options.{field}") from None

    @app.get("/avatar/jobs/{job_id}", response_model=JobStatus, response_model_exclude_none=True,
             responses=_errors(401, 404), tags=["avatar"])
    def get_job(job_id: str, authorization: Annotated[str | None, Header()] = None) -> Response:
        """Poll a job: status, progress, and the asset once done (or the error, or where to act).

        The app polls this every half second per job, so it is the hot path: one Core query (token,
        ownership, job and asset together) on a pooled connection, in a single thread-pool hop, and
        the JSON written directly. Only when that query finds nothing does the full user lookup run,
        to tell a bad token (401) from a job that is not the user's (404).
        """
        token = _bearer(authorization)
        jid = _parse_id(job_id, "job") if token else None
        with engine.connect() as conn:
            if jid is not None:
                row = conn.execute(_JOB_STATUS_FOR_TOKEN, {"job_id": jid, "token_hash": token_hash(token)}).first()
                if row is not None:
                    body = {k: v for k, v in _job_status(*row).items() if v is not None}
                    return JSONResponse(body)
            known = token and conn.execute(_USER_ID_FOR_TOKEN, {"token_hash": token_hash(token)}).first()
        if not known:
            _current_user_from_token(token)
        raise not_found("job")

    @app.get("/avatar/jobs", response_model=JobList, response_model_exclude_none=True,
             responses=_errors(401, 422), tags=["avatar"])
    def list_jobs(
        user: CurrentUser,
        session: DB,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        """The user's jobs, newest first."""
        total = session.scalar(sa.select(sa.func.count()).select_from(AvatarJob).where(AvatarJob.user_id == user.id))
        rows = session.execute(
            sa.select(AvatarJob, AvatarAsset.id)
            .outerjoin(AvatarAsset, AvatarAsset.job_id == AvatarJob.id)
            .where(AvatarJob.user_id == user.id)
            .order_by(AvatarJob.created_at.desc(), AvatarJob.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        jobs = [
            JobSummary.model_validate({
                "jobId": str(job.id), "provider": job.provider, "createdAt": job.created_at,
                "updatedAt": job.updated_at,
                **_job_status(job.status, job.progress, job.error, job.action_url, asset_id),
            })
            for job, asset_id in rows
        ]
        return {"jobs": jobs, "total": int(total or 0), "limit": limit, "offset": offset}

    # -- assets ----------------------------------------------------------------------------------
    def _own_asset(session: Session, user: User, asset_id: str) -> AvatarAsset:
        asset = session.get(AvatarAsset, _parse_id(asset_id, "asset"))
        if asset is None or asset.user_id != user.id:
            raise not_found("asset")
        return asset

    @app.get("/avatar/assets/{asset_id}", response_model=AssetUrl, responses=_errors(401, 404, 503), tags=["avatar"])
    def get_asset(asset_id: str, user: CurrentUser, session: DB) -> AssetUrl:
        """A signed, expiring URL to the asset's GLB."""
        asset = _own_asset(session, user, asset_id)
        try:
            url = storage.signed_url(asset.storage_key, settings.url_ttl_s)
        except StorageError as exc:
            raise ApiError(503, "storage_unavailable", f"could not sign a download URL: {exc}") from None
        return AssetUrl(url=url, expires_in=settings.url_ttl_s)

    # -- preferences -----------------------------------------------------------------------------
    @app.post("/avatar/preferences", response_model=Ok, responses=_errors(401, 404, 422), tags=["avatar"])
    def save_preferences(body: PreferencesIn, user: CurrentUser, session: DB) -> Ok:
        """Save (create or replace) the user's preferences for one asset."""
        asset = _own_asset(session, user, body.asset_id)
        values = {
            "appearance": body.appearance.model_dump(exclude_none=True),
            "voice": body.voice.model_dump(exclude_none=True),
            "persona": body.persona.model_dump(exclude_none=True),
        }
        prefs = session.scalar(sa.select(Preferences).where(Preferences.user_id == user.id,
                                                             Preferences.asset_id == asset.id))
        if prefs is None:
            session.add(Preferences(user_id=user.id, asset_id=asset.id, **values))
        else:
            for key, value in values.items():
                setattr(prefs, key, value)
            prefs.updated_at = utcnow()
        session.commit()
        return Ok()

    @app.get("/avatar/preferences/{asset_id}", response_model=PreferencesOut, responses=_errors(401, 404),
             tags=["avatar"])
    def get_preferences(asset_id: str, user: CurrentUser, session: DB) -> PreferencesOut:
        """The saved preferences of an asset (empty objects when none were saved yet)."""
        asset = _own_asset(session, user, asset_id)
        prefs = session.scalar(sa.select(Preferences).where(Preferences.user_id == user.id,
                                                             Preferences.asset_id == asset.id))
        if prefs is None:
            return PreferencesOut(asset_id=str(asset.id), appearance={}, voice={}, persona={})
        return PreferencesOut(asset_id=str(asset.id), appearance=prefs.appearance, voice=prefs.voice,
                              persona=prefs.persona, updated_at=prefs.updated_at)

    # -- service ---------------------------------------------------------------------------------
    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness with a real database round trip (a load balancer should stop routing on failure)."""
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return Health(status="ok", database="ok", version=__version__, providers=available_providers())

    if isinstance(storage, LocalStorage):
        local = storage

        @app.get("/files/{key:path}", include_in_schema=False)
        def download(key: str, request: Request) -> Response:
            """Serve a locally stored file to whoever holds a valid signed URL (no bearer token)."""
            try:
                path = local.verify(key, request.query_params.get("exp"), request.query_params.get("sig"))
            except SignatureError as exc:
                message = "the download link has expired; ask for a new one" if exc.reason == "expired" \
                    else "the download link is not valid"
                raise ApiError(403, "forbidden", message) from None
            except StorageError:  # gone, or resolving outside the storage root
                raise not_found("file") from None
            headers = {"Cache-Control": "private, max-age=60"}
            return FileResponse(path, media_type=content_type_for(key), headers=headers)

    return app
