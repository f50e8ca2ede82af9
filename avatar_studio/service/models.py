"""The data model: the spec's four tables, column for column, plus what a real service needs.

Additions (each documented in the README):
* ``users.token_hash`` — SHA-256 of the bearer token; the token itself is never stored.
* ``users.updated_at`` — when consent or age confirmation last changed (``PATCH /users/me``).
* ``avatar_jobs.options`` — the validated job options, so a retry sends the provider the same request.
* ``avatar_jobs.error`` — the human-readable failure shown to the user.
* ``avatar_jobs.action_url`` — where the user must act when a provider needs it (in3D's scan).
* ``avatar_jobs.selfie_key`` — the storage key of the uploaded selfie; NULL once it is deleted.
* ``avatar_jobs.attempts``, ``locked_by``, ``locked_until``, ``next_attempt_at``, ``finished_at`` —
  the durable queue: leases, retry back-off, selfie retention.
* ``preferences`` has a unique (user_id, asset_id) pair: ``POST /avatar/preferences`` is an upsert.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on both engines (SQLite would store and return naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use datetime.now(UTC)")
        return value.astimezone(UTC) if dialect.name == "postgresql" else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

STATUSES = ("queued", "processing", "done", "error")


def utcnow() -> datetime:
    """Timestamps are set in Python: SQLite would hand back naive server-side defaults."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    age_confirmed: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    consent_selfie: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AvatarJob(Base):
    __tablename__ = "avatar_jobs"
    __table_args__ = (
        sa.Index("ix_avatar_jobs_status_created", "status", "created_at"),
        sa.Index("ix_avatar_jobs_user_created", "user_id", "created_at"),
        sa.CheckConstraint("status IN ('queued', 'processing', 'done', 'error')", name="ck_avatar_jobs_status"),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="ck_avatar_jobs_progress"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(sa.Text)
    provider_job_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    progress: Mapped[float] = mapped_column(sa.Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # additions
    options: Mapped[dict] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    action_url: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    selfie_key: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    locked_by: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AvatarAsset(Base):
    __tablename__ = "avatar_assets"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("avatar_jobs.id", ondelete="CASCADE"), unique=True
    )
    storage_key: Mapped[str] = mapped_column(sa.Text)
    blendshape_map: Mapped[dict] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Preferences(Base):
    __tablename__ = "preferences"
    __table_args__ = (sa.UniqueConstraint("user_id", "asset_id", name="uq_preferences_user_asset"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"))
    asset_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("avatar_assets.id", ondelete="CASCADE"))
    appearance: Mapped[dict] = mapped_column(JSONType, default=dict)
    voice: Mapped[dict] = mapped_column(JSONType, default=dict)
    persona: Mapped[dict] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
