"""The durable job queue on the ``avatar_jobs`` table: claim, lease heartbeat, guarded final updates.

Why a queue on the job table instead of a library (``design/backend.md`` §3): the spec's table must
carry status and progress anyway, only this shape works unchanged on SQLite and PostgreSQL, and
provider jobs run for minutes and must survive a worker dying (at-least-once with leases, not the
at-most-once of a dequeue-by-delete queue).

How it stays correct with several workers:

* :func:`claim` is one ``UPDATE … WHERE id = (SELECT … ORDER BY created_at LIMIT 1 FOR UPDATE SKIP
  LOCKED) RETURNING …``. On PostgreSQL the row lock makes two workers pick different rows; SQLite
  has one writer at a time, so the same statement is atomic there (``FOR UPDATE`` is not rendered).
* A claim is a *lease* (``locked_by``, ``locked_until``). The worker renews it with
  :func:`heartbeat` while it polls the provider; a crashed worker's job becomes claimable again
  once ``locked_until`` passes.
* Every later write (:func:`heartbeat`, :func:`finish`, :func:`fail`, :func:`retry_later`,
  :func:`release`) is guarded by ``locked_by = :me AND status = 'processing'``, so a worker that
  lost its lease can never overwrite the new owner's work; the functions return whether they won.

Time comes from the caller (``now``, an aware UTC datetime) rather than the database clock: SQLite
has no usable ``now()`` for aware timestamps, and tests drive time explicitly. The price is that
**every worker host needs a synchronised clock** (NTP): a host running ahead would treat live
leases as expired and reclaim jobs early, one running behind would leave dead leases for longer.

Each function runs one statement on the given session and does not commit: the caller owns the
transaction (keep it short, and never call a provider inside it).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from avatar_studio.service.models import AvatarJob

FINISHED: Final = ("done", "error")


class _Keep:
    """Sentinel type: leave a column as it is (``None`` would mean "set it NULL")."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()


@dataclass(frozen=True)
class ClaimedJob:
    """A snapshot of the claimed row, safe to use after the claim transaction has ended.

    Why not the ORM object: callers may use a session factory with ``expire_on_commit=True``, and the
    worker reads the job long after the claim transaction, outside any session.
    """

    id: uuid.UUID
    user_id: uuid.UUID
    provider: str
    provider_job_id: str | None
    progress: float
    options: dict
    selfie_key: str | None
    attempts: int
    created_at: datetime
    locked_until: datetime


def _check_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("queue times must be aware UTC datetimes; use datetime.now(UTC)")


def _owned(job_id: uuid.UUID, worker_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(AvatarJob.id == job_id, AvatarJob.locked_by == worker_id, AvatarJob.status == "processing")


def _guarded_update(session: Session, job_id: uuid.UUID, worker_id: str, values: dict[str, object]) -> bool:
    result = session.execute(
        sa.update(AvatarJob).where(_owned(job_id, worker_id)).values(**values),
        execution_options={"synchronize_session": False},
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def claim(session: Session, worker_id: str, lease_s: float, now: datetime) -> ClaimedJob | None:
    """Take the oldest runnable job for ``worker_id`` for ``lease_s`` seconds, or None when there is none.

    Runnable: ``queued`` with ``next_attempt_at`` unset or due, or ``processing`` whose lease ran
    out (its worker died or stalled). ``attempts`` counts claims, so a job that keeps killing its
    worker is eventually given up by the worker's attempt cap.
    """
    _check_aware(now)
    runnable = sa.or_(
        sa.and_(
            AvatarJob.status == "queued",
            sa.or_(AvatarJob.next_attempt_at.is_(None), AvatarJob.next_attempt_at <= now),
        ),
        sa.and_(AvatarJob.status == "processing", AvatarJob.locked_until < now),
    )
    pick = (
        sa.select(AvatarJob.id)
        .where(runnable)
        .order_by(AvatarJob.created_at, AvatarJob.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    until = now + timedelta(seconds=lease_s)
    row = session.execute(
        sa.update(AvatarJob)
        .where(AvatarJob.id == pick)
        .values(
            status="processing",
            locked_by=worker_id,
            locked_until=until,
            next_attempt_at=None,
            attempts=AvatarJob.attempts + 1,
            updated_at=now,
        )
        .returning(
            AvatarJob.id,
            AvatarJob.user_id,
            AvatarJob.provider,
            AvatarJob.provider_job_id,
            AvatarJob.progress,
            AvatarJob.options,
            AvatarJob.selfie_key,
            AvatarJob.attempts,
            AvatarJob.created_at,
            AvatarJob.locked_until,
        ),
        execution_options={"synchronize_session": False},
    ).one_or_none()
    if row is None:
        return None
    return ClaimedJob(
        id=row.id,
        user_id=row.user_id,
        provider=row.provider,
        provider_job_id=row.provider_job_id,
        progress=row.progress,
        options=dict(row.options or {}),
        selfie_key=row.selfie_key,
        attempts=row.attempts,
        created_at=row.created_at,
        locked_until=row.locked_until,
    )


def heartbeat(
    session: Session,
    job_id: uuid.UUID,
    worker_id: str,
    lease_s: float,
    now: datetime,
    *,
    progress: float | None = None,
    action_url: str | _Keep | None = KEEP,
    provider_job_id: str | None = None,
) -> bool:
    """Renew the lease and record what the provider reported; False means the lease was lost.

    ``progress`` and ``provider_job_id`` are left alone when None; ``action_url`` is left alone when
    :data:`KEEP` and cleared with None (a provider drops the URL once the user has acted). Progress
    is clamped to [0, 1], the table's check constraint. A worker that gets False must stop working
    on the job at once: another worker owns it now.
    """
    _check_aware(now)
    values: dict[str, object] = {"locked_until": now + timedelta(seconds=lease_s), "updated_at": now}
    if progress is not None:
        values["progress"] = min(1.0, max(0.0, float(progress)))
    if not isinstance(action_url, _Keep):
        values["action_url"] = action_url
    if provider_job_id is not None:
        values["provider_job_id"] = provider_job_id
    return _guarded_update(session, job_id, worker_id, values)


def finish(session: Session, job_id: uuid.UUID, worker_id: str, now: datetime) -> bool:
    """Mark the job done (progress 1, lock cleared), only if ``worker_id`` still holds it.

    The worker inserts the asset row in the same transaction after this returns True, so a worker
    that lost its lease cannot add a second asset for the job.
    """
    _check_aware(now)
    return _guarded_update(session, job_id, worker_id, {
        "status": "done", "progress": 1.0, "error": None, "action_url": None, "locked_by": None,
        "locked_until": None, "next_attempt_at": None, "finished_at": now, "updated_at": now,
    })


def fail(session: Session, job_id: uuid.UUID, worker_id: str, now: datetime, message: str) -> bool:
    """Mark the job failed with ``message`` (shown to the user), only if ``worker_id`` still holds it."""
    _check_aware(now)
    return _guarded_update(session, job_id, worker_id, {
        "status": "error", "error": message, "action_url": None, "locked_by": None, "locked_until": None,
        "next_attempt_at": None, "finished_at": now, "updated_at": now,
    })


def backoff_delay(
    attempt: int,
    *,
    retry_after: float | None = None,
    base_s: float = 2.0,
    cap_s: float = 600.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before run ``attempt + 1``: exponential, jittered, never below ``retry_after``.

    Jitter (a uniform factor in [0.5, 1]) spreads the retries of many jobs that failed together
    (a provider outage) so they do not hit the provider again in lock-step. A provider's
    ``Retry-After`` is a floor: it knows better than our guess when it will accept work again.
    """
    rng = rng or random
    exponential = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    delay = exponential * rng.uniform(0.5, 1.0)
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return delay


def retry_later(
    session: Session,
    job_id: uuid.UUID,
    worker_id: str,
    now: datetime,
    *,
    attempt: int,
    retry_after: float | None = None,
    base_s: float = 2.0,
    cap_s: float = 600.0,
    rng: random.Random | None = None,
) -> datetime | None:
    """Put the job back in the queue after a transient failure; returns when it becomes runnable.

    Returns None when ``worker_id`` no longer holds the job. ``provider_job_id`` is kept, so the
    next run resumes the provider job instead of starting (and paying for) a new one.
    """
    _check_aware(now)
    due = now + timedelta(seconds=backoff_delay(attempt, retry_after=retry_after, base_s=base_s, cap_s=cap_s,
                                                rng=rng))
    won = _guarded_update(session, job_id, worker_id, {
        "status": "queued", "locked_by": None, "locked_until": None, "next_attempt_at": due, "updated_at": now,
    })
    return due if won else None


def release(session: Session, job_id: uuid.UUID, worker_id: str, now: datetime) -> bool:
    """Hand the job back at once without counting the run (the worker is shutting down).

    Why not just let the lease expire: a graceful stop should not delay the job by a whole lease,
    nor spend one of its attempts.
    """
    _check_aware(now)
    return _guarded_update(session, job_id, worker_id, {
        "status": "queued", "locked_by": None, "locked_until": None, "next_attempt_at": None,
        "attempts": AvatarJob.attempts - 1, "updated_at": now,
    })


def expired_selfies(session: Session, now: datetime, retention_s: float) -> list[tuple[uuid.UUID, str]]:
    """``(job_id, selfie_key)`` of finished jobs whose selfie has outlived the retention period.

    Retention applies to every finished job, failed ones included: a selfie is kept only as long as
    the user agreed to, whatever became of the avatar.
    """
    _check_aware(now)
    cutoff = now - timedelta(seconds=retention_s)
    rows = session.execute(
        sa.select(AvatarJob.id, AvatarJob.selfie_key)
        .where(AvatarJob.status.in_(FINISHED), AvatarJob.selfie_key.is_not(None), AvatarJob.finished_at <= cutoff)
        .order_by(AvatarJob.finished_at)
    ).all()
    return [(row.id, row.selfie_key) for row in rows]


def clear_selfie(session: Session, job_id: uuid.UUID, selfie_key: str) -> bool:
    """Forget a deleted selfie's key (only if it is still the same key, so a concurrent change wins)."""
    result = session.execute(
        sa.update(AvatarJob)
        .where(AvatarJob.id == job_id, AvatarJob.selfie_key == selfie_key)
        .values(selfie_key=None),
        execution_options={"synchronize_session": False},
    )
    return result.rowcount == 1  # type: ignore[attr-defined]
