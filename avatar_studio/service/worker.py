"""The job worker: claim a queued avatar job, drive its provider to the end, store the avatar.

Why it is built this way (``design/backend.md`` §3):

* No provider call happens inside a database transaction. A provider job runs for minutes; the
  worker holds a *lease* on the row instead and renews it (:func:`queue.heartbeat`) between polls,
  writing progress and the provider's action URL as it goes.
* The provider step is idempotent across workers: the provider's job id is stored the moment
  :meth:`Provider.start` returns, and a worker that claims a job which already has one resumes
  polling instead of starting (and paying for) a second provider job.
* Every final write is guarded by the lease. The asset row and the ``done`` status are written in
  one transaction that only succeeds while this worker still holds the job; a worker that lost
  its lease deletes the GLB it stored, so a job never gets two assets.
* No job is left ``processing``: each run ends in done, error, a retry (back to ``queued``) or a
  release on shutdown. Only a process that dies leaves a lease behind, and it expires.

Provider results are checked with the same reader the app uses (:func:`load_avatar`), so a user
never gets a "done" job whose file Avatar Studio cannot open.

Logging never includes the API key (it stays inside the provider) nor selfie bytes.
"""

from __future__ import annotations

import io
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import sqlalchemy as sa
from PIL import Image, UnidentifiedImageError
from sqlalchemy.orm import Session, sessionmaker

from avatar_studio.avatar.errors import AvatarError
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.config import Settings
from avatar_studio.providers.base import JobOptions, Provider, ProviderError, ProviderResult, Selfie, create_provider
from avatar_studio.service import queue
from avatar_studio.service.db import session_factory, transaction
from avatar_studio.service.models import AvatarAsset
from avatar_studio.service.storage import NotFound, Storage
from avatar_studio.service.uploads import sniff

log = logging.getLogger(__name__)

T = TypeVar("T")

GLB_CONTENT_TYPE = "model/gltf-binary"
DEFAULT_PROVIDER_POLL_S = 0.5
PROVIDER_CRASHED = "the avatar provider failed unexpectedly; please try again later"
INTERNAL_ERROR = "Avatar Studio could not complete this job because of an internal error; please try again"


def asset_key(asset_id: uuid.UUID) -> str:
    """Where an asset's GLB lives in storage (the API deletes ``avatars/<id>/`` with the asset)."""
    return f"avatars/{asset_id}/model.glb"


def _duration(seconds: float) -> str:
    if seconds >= 60:
        minutes = seconds / 60
        return f"{minutes:g} minute" if minutes == 1 else f"{minutes:.3g} minutes"
    return f"{seconds:g} second" if seconds == 1 else f"{seconds:.3g} seconds"


class _LeaseLost(Exception):
    """Another worker owns the job now; stop touching it."""


class _Stopping(Exception):
    """The worker was asked to stop while waiting on the provider."""


class _JobFailed(Exception):
    """End the job with this user-facing message."""


class _ProviderCrashed(Exception):
    """A provider raised something other than ProviderError (a bug or an unexpected response)."""


class Worker:
    """Runs avatar jobs from the queue, one at a time; run several for parallelism.

    ``db`` is an engine or a session factory. ``provider_poll_s`` overrides how long to wait
    between provider polls (default: the provider's ``poll_interval_s`` attribute if it has one,
    else 0.5 s); ``retry_base_s``/``retry_cap_s`` shape the back-off after transient failures.

    ``settings.lease_s`` must be longer than the slowest single provider call (its HTTP timeout):
    the lease is renewed between calls, so a call outlasting it lets another worker take the job.
    """

    def __init__(
        self,
        settings: Settings,
        db: sa.Engine | sessionmaker[Session],
        storage: Storage,
        *,
        worker_id: str | None = None,
        provider_poll_s: float | None = None,
        retry_base_s: float = 2.0,
        retry_cap_s: float = 600.0,
        sweep_interval_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.sessions = session_factory(db) if isinstance(db, sa.Engine) else db
        self.storage = storage
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.provider_poll_s = provider_poll_s
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.sweep_interval_s = sweep_interval_s
        self._stop = threading.Event()
        self._rng = random.Random()
        # renew the lease well before it runs out, even while sleeping between slow polls
        self._beat_every = max(0.01, settings.lease_s / 3)

    # ------------------------------------------------------------------ loop

    def run_once(self) -> bool:
        """Claim one job and run it to its end (done, error, retry or release); False if none was runnable."""
        with transaction(self.sessions) as session:
            job = queue.claim(session, self.worker_id, self.settings.lease_s, self._now())
        if job is None:
            return False
        log.info("worker %s claimed job %s (attempt %d)", self.worker_id, job.id, job.attempts)
        try:
            self._run(job)
        except Exception:
            log.exception("internal error while running job %s", job.id)
            self._internal_error(job)
        except BaseException:
            self._release_quietly(job)
            raise
        return True

    def run_forever(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set: take jobs, sleep ``poll_interval_s`` when idle, sweep old selfies.

        Errors of the loop itself (the database unreachable) are logged and retried after the poll
        interval, so a worker survives a database restart.
        """
        self._stop = stop
        next_sweep = 0.0
        log.info("worker %s started", self.worker_id)
        while not stop.is_set():
            if time.monotonic() >= next_sweep:
                try:
                    self.sweep_selfies()
                except Exception:
                    log.exception("selfie retention sweep failed; will retry")
                next_sweep = time.monotonic() + self.sweep_interval_s
            try:
                worked = self.run_once()
            except Exception:
                log.exception("worker %s could not claim a job; will retry", self.worker_id)
                worked = False
            if not worked:
                stop.wait(self.settings.poll_interval_s)
        log.info("worker %s stopped", self.worker_id)

    def start_thread(self, stop: threading.Event) -> threading.Thread:
        """Run :meth:`run_forever` in a daemon thread (embedded mode); set ``stop`` and join to end it."""
        thread = threading.Thread(target=self.run_forever, args=(stop,), name=f"avatar-worker-{self.worker_id}",
                                  daemon=True)
        thread.start()
        return thread

    def sweep_selfies(self) -> int:
        """Delete selfies of finished jobs older than the retention period; returns how many."""
        with transaction(self.sessions) as session:
            expired = queue.expired_selfies(session, self._now(), self.settings.selfie_retention_s)
        deleted = 0
        for job_id, key in expired:
            if self._delete_selfie(job_id, key):
                deleted += 1
        if deleted:
            log.info("deleted %d selfie(s) past retention", deleted)
        return deleted

    # ------------------------------------------------------------------ one job

    def _run(self, job: queue.ClaimedJob) -> None:
        if job.attempts > self.settings.max_attempts:
            # only reachable when earlier runs died without a word (lease expiry): a poison job
            self._fail(job, f"the job was interrupted {job.attempts - 1} times and was given up; please try again")
            return
        deadline = job.created_at + timedelta(seconds=self.settings.job_deadline_s)
        try:
            if self._now() >= deadline:
                raise _JobFailed(self._deadline_message())
            result = self._drive_provider(job, deadline)
            self._check_result(result)
            self._store(job, result)
        except _LeaseLost:
            log.warning("worker %s lost the lease on job %s; another worker owns it now", self.worker_id, job.id)
        except _Stopping:
            self._release_quietly(job)
        except _JobFailed as exc:
            self._fail(job, str(exc))
        except ProviderError as exc:
            self._provider_failed(job, exc, deadline)
        except _ProviderCrashed as exc:
            log.error("provider %r raised an unexpected error on job %s", job.provider, job.id,
                      exc_info=exc.__cause__ or exc)
            self._fail(job, PROVIDER_CRASHED)

    def _drive_provider(self, job: queue.ClaimedJob, deadline: datetime) -> ProviderResult:
        provider = self._call(create_provider, job.provider, self.settings.provider_api_key)
        try:
            return self._run_provider(provider, job, deadline)
        finally:
            close = getattr(provider, "close", None)  # HTTP adapters hold connection pools
            if callable(close):
                try:
                    close()
                except Exception:  # closing must never turn a finished job into a failure
                    log.warning("closing provider %r failed", job.provider, exc_info=True)

    def _run_provider(self, provider: Provider, job: queue.ClaimedJob, deadline: datetime) -> ProviderResult:
        provider_job_id = job.provider_job_id
        if provider_job_id is None:
            selfie = self._load_selfie(job, provider)
            provider_job_id = self._call(provider.start, selfie, self._options(job.options))
            if not isinstance(provider_job_id, str) or not provider_job_id:
                raise _ProviderCrashed(f"start() returned {provider_job_id!r} instead of a job id")
            self._beat(job, provider_job_id=provider_job_id)  # stored at once: resumable from here on
            log.info("job %s started at provider %r as %s", job.id, job.provider, provider_job_id)
        else:
            log.info("job %s resumes provider job %s", job.id, provider_job_id)
        interval = self._poll_interval(provider)
        progress = job.progress
        while True:
            if self._stop.is_set():
                raise _Stopping
            if self._now() >= deadline:
                raise _JobFailed(self._deadline_message())
            status = self._call(provider.poll, provider_job_id)
            progress = max(progress, min(1.0, max(0.0, float(status.progress))))
            self._beat(job, progress=progress, action_url=status.action_url)
            if status.done:
                return self._call(provider.result, provider_job_id)
            self._pause(job, interval, deadline)

    def _check_result(self, result: ProviderResult) -> None:
        if not isinstance(result, ProviderResult):
            raise _ProviderCrashed(f"result() returned {type(result).__name__} instead of ProviderResult")
        try:
            load_avatar(result.glb, blendshape_map=result.blendshape_map)
        except AvatarError as exc:
            raise _JobFailed(f"the provider returned a file Avatar Studio cannot read: {exc}") from exc
        except Exception as exc:  # a reader bug must not mark the job done with a file the app cannot open
            log.exception("reading a provider result failed unexpectedly")
            raise _JobFailed(f"the provider returned a file Avatar Studio cannot read: {type(exc).__name__}") from exc

    def _store(self, job: queue.ClaimedJob, result: ProviderResult) -> None:
        asset_id = uuid.uuid4()
        key = asset_key(asset_id)
        self.storage.put(key, result.glb, GLB_CONTENT_TYPE)
        try:
            with transaction(self.sessions) as session:
                won = queue.finish(session, job.id, self.worker_id, self._now())
                if won:
                    session.add(AvatarAsset(id=asset_id, user_id=job.user_id, job_id=job.id, storage_key=key,
                                            blendshape_map=dict(result.blendshape_map)))
        except BaseException:
            self._delete_object(key)
            raise
        if not won:
            self._delete_object(key)
            raise _LeaseLost
        log.info("job %s done: asset %s", job.id, asset_id)
        self._after_finish(job)

    # ------------------------------------------------------------------ endings

    def _fail(self, job: queue.ClaimedJob, message: str) -> None:
        with transaction(self.sessions) as session:
            won = queue.fail(session, job.id, self.worker_id, self._now(), message)
        if not won:
            log.warning("job %s: could not record the failure %r; the lease was lost", job.id, message)
            return
        log.info("job %s failed: %s", job.id, message)
        self._after_finish(job)

    def _provider_failed(self, job: queue.ClaimedJob, exc: ProviderError, deadline: datetime) -> None:
        message = str(exc) or f"the avatar provider {job.provider!r} failed"
        now = self._now()
        too_late = exc.retry_after is not None and now + timedelta(seconds=exc.retry_after) >= deadline
        if not exc.transient or job.attempts >= self.settings.max_attempts or too_late:
            self._fail(job, message)
            return
        with transaction(self.sessions) as session:
            due = queue.retry_later(session, job.id, self.worker_id, now, attempt=job.attempts,
                                    retry_after=exc.retry_after, base_s=self.retry_base_s, cap_s=self.retry_cap_s,
                                    rng=self._rng)
        if due is None:
            log.warning("job %s: could not schedule a retry; the lease was lost", job.id)
        else:
            log.info("job %s: transient provider error (%s); retry %d at %s", job.id, message, job.attempts + 1,
                     due.isoformat())

    def _internal_error(self, job: queue.ClaimedJob) -> None:
        """Our own failure (storage or database): retry with back-off while attempts remain.

        If even that write fails (the database is down) the lease simply expires and the job is
        claimed again later, which is the crash path.
        """
        try:
            if job.attempts >= self.settings.max_attempts:
                self._fail(job, INTERNAL_ERROR)
                return
            with transaction(self.sessions) as session:
                queue.retry_later(session, job.id, self.worker_id, self._now(), attempt=job.attempts,
                                  base_s=self.retry_base_s, cap_s=self.retry_cap_s, rng=self._rng)
        except Exception:
            log.exception("job %s: could not record the internal error; its lease will expire", job.id)

    def _release_quietly(self, job: queue.ClaimedJob) -> None:
        try:
            with transaction(self.sessions) as session:
                queue.release(session, job.id, self.worker_id, self._now())
            log.info("job %s released for another worker", job.id)
        except Exception:
            log.exception("job %s: could not release it; its lease will expire", job.id)

    def _after_finish(self, job: queue.ClaimedJob) -> None:
        """Selfie retention starts when a job ends, done or failed; 0 means delete it now."""
        if job.selfie_key and self.settings.selfie_retention_s <= 0:
            self._delete_selfie(job.id, job.selfie_key)

    def _delete_selfie(self, job_id: uuid.UUID, key: str) -> bool:
        try:
            self.storage.delete(key)
            with transaction(self.sessions) as session:
                queue.clear_selfie(session, job_id, key)
        except Exception:
            log.exception("could not delete the selfie of job %s; the retention sweep will retry", job_id)
            return False
        return True

    def _delete_object(self, key: str) -> None:
        try:
            self.storage.delete(key)
        except Exception:
            log.exception("could not delete the orphaned object %s", key)

    # ------------------------------------------------------------------ helpers

    def _call(self, method: Callable[..., T], *args: object) -> T:
        """Call a provider method; anything but ProviderError becomes _ProviderCrashed (logged, generic message)."""
        try:
            return method(*args)
        except ProviderError:
            raise
        except Exception as exc:
            raise _ProviderCrashed(f"{type(exc).__name__} from {getattr(method, '__name__', 'provider')}") from exc

    def _beat(self, job: queue.ClaimedJob, **changes: object) -> None:
        with transaction(self.sessions) as session:
            alive = queue.heartbeat(session, job.id, self.worker_id, self.settings.lease_s, self._now(),
                                    **changes)  # type: ignore[arg-type]
        if not alive:
            raise _LeaseLost

    def _pause(self, job: queue.ClaimedJob, seconds: float, deadline: datetime) -> None:
        """Wait between polls, renewing the lease during long waits and waking at once on stop."""
        seconds = min(seconds, max(0.0, (deadline - self._now()).total_seconds()))
        end = time.monotonic() + seconds
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            if self._stop.wait(min(remaining, self._beat_every)):
                raise _Stopping
            if time.monotonic() < end:
                self._beat(job)

    def _poll_interval(self, provider: Provider) -> float:
        if self.provider_poll_s is not None:
            return self.provider_poll_s
        suggested = getattr(provider, "poll_interval_s", None)
        return float(suggested) if isinstance(suggested, int | float) and suggested > 0 else DEFAULT_PROVIDER_POLL_S

    def _load_selfie(self, job: queue.ClaimedJob, provider: Provider) -> Selfie | None:
        needed = getattr(provider, "needs_selfie", True)
        try:
            if job.selfie_key is None:
                raise NotFound("(none)")
            data = self.storage.get(job.selfie_key)
        except NotFound:
            if needed:
                raise _JobFailed("the selfie for this job is no longer stored; please upload it again") from None
            return None
        mime = sniff(data)
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            if needed:
                raise _JobFailed("the stored selfie cannot be read; please upload it again") from exc
            return None
        if mime is None:
            raise _JobFailed("the stored selfie is neither JPEG nor PNG; please upload it again")
        return Selfie(data=data, mime_type=mime, width=width, height=height)

    @staticmethod
    def _options(raw: dict) -> JobOptions:
        known = {f.name for f in fields(JobOptions)}
        return JobOptions(**{k: v for k, v in (raw or {}).items() if k in known})

    def _deadline_message(self) -> str:
        return f"the provider did not finish within {_duration(self.settings.job_deadline_s)}"

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC)
