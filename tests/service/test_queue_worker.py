"""The job queue and worker on SQLite and PostgreSQL, with the fake provider doing the provider's part.

Single-process tests drive one or two :class:`Worker` objects with ``run_once`` so every step is
deterministic; the fake provider's hooks look at the database between polls. The multi-process
tests run real worker processes (spawn): on both engines no job is started or finished twice
(the fake provider's O_APPEND log is the duplicate detector), and on PostgreSQL a job whose worker
is SIGKILLed completes once its lease runs out.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fake_provider import (
    FAKE,
    NAME_NO_SELFIE,
    FakeProvider,
    Script,
    register_fake,
    run_worker_process,
    selfie_hash,
)
from PIL import Image

from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.config import Settings
from avatar_studio.providers import base as provider_base
from avatar_studio.providers.base import JobOptions, ProviderError, Selfie
from avatar_studio.service import queue
from avatar_studio.service.db import create_engine, migrate, session_factory, transaction
from avatar_studio.service.models import AvatarAsset, AvatarJob, User
from avatar_studio.service.storage import LocalStorage, StorageError
from avatar_studio.service.worker import PROVIDER_CRASHED, Worker, asset_key

SECRET = b"queue-worker-test-secret-32bytes"


def make_selfie(index: int) -> bytes:
    """A distinct small PNG per index (the fake provider keys scenarios by the selfie's bytes)."""
    img = Image.new("RGB", (64, 64), (index % 256, (index // 256) % 256, 7))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


@dataclass
class Env:
    engine: sa.Engine
    storage: LocalStorage
    settings: Settings
    user_id: uuid.UUID

    def add_job(self, selfie: bytes | None, *, provider: str = "fake", created_at: datetime | None = None) -> uuid.UUID:
        (job_id,) = self.add_jobs([selfie], provider=provider, created_at=created_at)
        return job_id

    def add_jobs(self, selfies: list[bytes | None], *, provider: str = "fake",
                 created_at: datetime | None = None) -> list[uuid.UUID]:
        """Queue jobs the way the API does (selfie stored first), all visible in one commit."""
        rows = []
        for selfie in selfies:
            job_id = uuid.uuid4()
            key = f"selfies/{job_id}/selfie.png" if selfie is not None else None
            if key is not None:
                self.storage.put(key, selfie, "image/png")
            now = created_at or datetime.now(UTC)
            rows.append(AvatarJob(id=job_id, user_id=self.user_id, provider=provider, status="queued", progress=0.0,
                                  options={"output": "glb", "blendshapes": "arkit", "realism": "high"},
                                  selfie_key=key, created_at=now, updated_at=now))
        with transaction(session_factory(self.engine)) as s:
            s.add_all(rows)
        return [row.id for row in rows]

    def job(self, job_id: uuid.UUID) -> AvatarJob:
        with session_factory(self.engine)() as s:
            return s.get_one(AvatarJob, job_id)

    def assets(self, job_id: uuid.UUID | None = None) -> list[AvatarAsset]:
        with session_factory(self.engine)() as s:
            stmt = sa.select(AvatarAsset)
            if job_id is not None:
                stmt = stmt.where(AvatarAsset.job_id == job_id)
            return list(s.scalars(stmt))

    def worker(self, settings: Settings | None = None, **kwargs: object) -> Worker:
        options: dict = {"provider_poll_s": 0.01, "retry_base_s": 0.01}
        options.update(kwargs)
        return Worker(settings or self.settings, self.engine, self.storage, **options)

    def stored(self, prefix: str) -> list[str]:
        folder = self.storage.root / prefix
        return sorted(str(p.relative_to(self.storage.root)) for p in folder.rglob("*") if p.is_file()) \
            if folder.exists() else []


@pytest.fixture(autouse=True)
def _fake_provider() -> Iterator[None]:
    """Register the fake for these tests only: other test files list the available providers."""
    saved = dict(provider_base._registry)
    register_fake()
    FAKE.reset()
    yield
    FAKE.reset()
    provider_base._registry.clear()
    provider_base._registry.update(saved)


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    engine = create_engine(db_url)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        user = User(age_confirmed=True, consent_selfie=True, token_hash=uuid.uuid4().hex)
        s.add(user)
        s.flush()
        user_id = user.id
    settings = Settings(data_dir=tmp_path, database_url=db_url, provider="fake", signing_secret=SECRET, lease_s=30.0,
                        max_attempts=3, job_deadline_s=600.0, poll_interval_s=0.01, selfie_retention_s=0.0)
    yield Env(engine, LocalStorage(tmp_path / "storage", SECRET), settings, user_id)
    engine.dispose()


def run_until_finished(worker: Worker, env: Env, job_id: uuid.UUID, timeout: float = 10.0) -> AvatarJob:
    """Run the worker until the job is done or failed (waiting out retry back-off in between)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = env.job(job_id)
        if job.status in ("done", "error"):
            return job
        if not worker.run_once():
            time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


# ---------------------------------------------------------------------------------------- happy path


def test_job_goes_queued_processing_done_with_progress_and_asset(env: Env) -> None:
    selfie = make_selfie(1)
    seen: list[tuple[str, float, str | None, bool]] = []
    job_id = env.add_job(selfie)

    def look(_index: int) -> None:
        job = env.job(job_id)
        seen.append((job.status, job.progress, job.action_url, job.provider_job_id is not None))

    FAKE.plan(selfie, Script(steps=(0.2, 0.5, 0.8), action_url="https://scan.example/abc", action_polls=1,
                             on_poll=look))
    assert env.job(job_id).status == "queued"

    assert env.worker().run_once() is True

    # each poll sees what the previous poll's heartbeat wrote; the action URL is cleared once the provider drops it
    assert seen == [
        ("processing", 0.0, None, True),
        ("processing", 0.2, "https://scan.example/abc", True),
        ("processing", 0.5, None, True),
        ("processing", 0.8, None, True),
    ]
    job = env.job(job_id)
    assert (job.status, job.progress, job.error, job.action_url) == ("done", 1.0, None, None)
    assert job.locked_by is None and job.locked_until is None and job.finished_at is not None
    assert job.attempts == 1
    (asset,) = env.assets(job_id)
    assert asset.user_id == env.user_id
    assert asset.blendshape_map == {"eyeBlink_L": "eyeBlinkLeft", "eyeBlink_R": "eyeBlinkRight", "jawOpen": "jawOpen"}
    assert asset.storage_key == asset_key(asset.id)
    avatar = load_avatar(env.storage.get(asset.storage_key), blendshape_map=asset.blendshape_map)
    assert avatar is not None
    assert FAKE.count("start") == 1 and FAKE.count("result") == 1
    # retention 0: the selfie is gone from storage and from the row
    assert job.selfie_key is None and env.stored("selfies") == []
    assert env.worker().run_once() is False


def test_provider_without_selfie_gets_none(env: Env) -> None:
    job_id = env.add_job(None, provider=NAME_NO_SELFIE)
    job = run_until_finished(env.worker(), env, job_id)
    assert job.status == "done"
    assert FAKE.calls[0] == ("start", "none")


def test_missing_selfie_fails_the_job(env: Env) -> None:
    job_id = env.add_job(make_selfie(2))
    env.storage.delete(f"selfies/{job_id}/selfie.png")
    job = run_until_finished(env.worker(), env, job_id)
    assert job.status == "error" and "no longer stored" in (job.error or "")
    assert FAKE.count("start") == 0


# ---------------------------------------------------------------------------------------- resume and retries


def test_resume_after_crash_polls_without_starting_again(env: Env) -> None:
    selfie = make_selfie(3)
    FAKE.plan(selfie, Script(steps=(0.3, 0.6)))
    job_id = env.add_job(selfie)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    sessions = session_factory(env.engine)
    # a worker claims the job and starts the provider job, then dies (its lease ran out an hour ago)
    with transaction(sessions) as s:
        claimed = queue.claim(s, "dead-worker", env.settings.lease_s, long_ago)
    assert claimed is not None and claimed.id == job_id
    provider_job_id = FakeProvider(None).start(Selfie(selfie, "image/png", 64, 64), JobOptions())
    with transaction(sessions) as s:
        assert queue.heartbeat(s, job_id, "dead-worker", env.settings.lease_s, long_ago, progress=0.3,
                               provider_job_id=provider_job_id)
    assert env.job(job_id).status == "processing"

    job = run_until_finished(env.worker(worker_id="survivor"), env, job_id)

    assert job.status == "done" and job.attempts == 2 and job.provider_job_id == provider_job_id
    assert FAKE.count("start") == 1
    assert len(env.assets(job_id)) == 1


def test_transient_errors_are_retried_with_backoff_then_succeed(env: Env) -> None:
    selfie = make_selfie(4)
    FAKE.plan(selfie, Script(start_errors=[ProviderError("busy, try later", transient=True, retry_after=0.4)],
                             poll_errors=[ProviderError("network hiccup", transient=True)]))
    job_id = env.add_job(selfie)
    worker = env.worker(retry_base_s=0.3)

    assert worker.run_once() is True  # start fails: retry no sooner than retry_after
    job = env.job(job_id)
    assert (job.status, job.attempts, job.locked_by, job.error) == ("queued", 1, None, None)
    assert job.next_attempt_at is not None
    assert 0.39 <= (job.next_attempt_at - job.updated_at).total_seconds() <= 0.5
    assert worker.run_once() is False  # not due yet

    time.sleep(0.45)
    assert worker.run_once() is True  # start succeeds, the first poll fails: back-off, provider job kept
    job = env.job(job_id)
    assert (job.status, job.attempts) == ("queued", 2)
    assert job.provider_job_id is not None
    backoff = (job.next_attempt_at - job.updated_at).total_seconds()
    assert 0.3 <= backoff <= 0.6  # base 0.3 × 2^(2-1), jittered into [0.5, 1]

    job = run_until_finished(worker, env, job_id)
    assert (job.status, job.attempts) == ("done", 3)
    assert FAKE.count("start") == 2  # the failed start and the good one; the retry after the poll resumed
    assert len(env.assets(job_id)) == 1


def test_attempts_are_capped_with_the_providers_message(env: Env) -> None:
    selfie = make_selfie(5)
    FAKE.plan(selfie, Script(start_errors=[ProviderError("the provider is overloaded", transient=True)
                                           for _ in range(10)]))
    job_id = env.add_job(selfie)
    job = run_until_finished(env.worker(), env, job_id)
    assert (job.status, job.error, job.attempts) == ("error", "the provider is overloaded", 3)
    assert FAKE.count("start") == 3
    assert job.selfie_key is None and env.stored("selfies") == []  # failed jobs lose their selfie too


def test_permanent_error_ends_the_job(env: Env) -> None:
    selfie = make_selfie(6)
    FAKE.plan(selfie, Script(fail_message="no face was found in the photo"))
    job_id = env.add_job(selfie)
    assert env.worker().run_once()
    job = env.job(job_id)
    assert (job.status, job.error, job.attempts, job.locked_by) == ("error", "no face was found in the photo", 1, None)
    assert job.finished_at is not None and env.assets() == []
    assert job.selfie_key is None and env.stored("selfies") == []


def test_unexpected_provider_exception_is_a_clear_job_error_and_logged(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    selfie = make_selfie(7)
    FAKE.plan(selfie, Script(crash=RuntimeError("KeyError deep inside the SDK")))
    job_id = env.add_job(selfie)
    with caplog.at_level(logging.ERROR, logger="avatar_studio.service.worker"):
        assert env.worker().run_once()
    job = env.job(job_id)
    assert (job.status, job.error) == ("error", PROVIDER_CRASHED)
    assert any(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)


def test_unreadable_result_is_refused(env: Env) -> None:
    selfie = make_selfie(8)
    FAKE.plan(selfie, Script(steps=(), glb=b"glTF\x02\x00\x00\x00 definitely not a model"))
    job_id = env.add_job(selfie)
    assert env.worker().run_once()
    job = env.job(job_id)
    assert job.status == "error"
    assert (job.error or "").startswith("the provider returned a file Avatar Studio cannot read: ")
    assert env.assets() == [] and env.stored("avatars") == []


def test_deadline_exceeded_while_polling(env: Env) -> None:
    selfie = make_selfie(9)
    FAKE.plan(selfie, Script(never_finish=True))
    settings = env.settings.with_(job_deadline_s=60.0)
    # created 59.7 s ago: the deadline passes while the worker polls
    job_id = env.add_job(selfie, created_at=datetime.now(UTC) - timedelta(seconds=59.7))
    started = time.monotonic()
    assert env.worker(settings, provider_poll_s=0.05).run_once()
    assert time.monotonic() - started < 5
    job = env.job(job_id)
    assert (job.status, job.error) == ("error", "the provider did not finish within 1 minute")
    assert FAKE.count("poll") >= 2


def test_deadline_already_past_when_claimed(env: Env) -> None:
    job_id = env.add_job(make_selfie(10), created_at=datetime.now(UTC) - timedelta(hours=2))
    assert env.worker().run_once()
    job = env.job(job_id)
    assert (job.status, job.error) == ("error", "the provider did not finish within 10 minutes")
    assert FAKE.count("start") == 0


# ---------------------------------------------------------------------------------------- leases


def _expire_lease(env: Env, job_id: uuid.UUID) -> None:
    with transaction(session_factory(env.engine)) as s:
        s.execute(sa.update(AvatarJob).where(AvatarJob.id == job_id)
                  .values(locked_until=datetime.now(UTC) - timedelta(seconds=1)))


def test_lease_lost_before_the_final_update_gives_no_duplicate(env: Env) -> None:
    selfie = make_selfie(11)
    job_id = env.add_job(selfie)
    second = env.worker(worker_id="second")

    def takeover() -> None:
        # while the first worker downloads the result, its lease runs out and another worker finishes the job
        _expire_lease(env, job_id)
        assert second.run_once() is True
        assert env.job(job_id).status == "done"

    FAKE.plan(selfie, Script(steps=(0.5,), on_result=takeover))
    assert env.worker(worker_id="first").run_once() is True

    job = env.job(job_id)
    assert (job.status, job.attempts, job.locked_by) == ("done", 2, None)
    (asset,) = env.assets(job_id)
    assert env.stored("avatars") == [asset.storage_key]  # the first worker deleted the GLB it had stored
    assert FAKE.count("start") == 1 and FAKE.count("result") == 2


def test_lease_lost_while_polling_stops_the_worker(env: Env) -> None:
    selfie = make_selfie(12)
    job_id = env.add_job(selfie)

    def steal(index: int) -> None:
        if index == 1:
            _expire_lease(env, job_id)
            with transaction(session_factory(env.engine)) as s:
                assert queue.claim(s, "thief", 30.0, datetime.now(UTC)) is not None

    FAKE.plan(selfie, Script(steps=(0.1, 0.2, 0.3), on_poll=steal))
    assert env.worker(worker_id="victim").run_once() is True
    job = env.job(job_id)
    assert (job.status, job.locked_by) == ("processing", "thief")  # untouched by the victim
    assert FAKE.count("poll") == 2 and env.assets() == []
    assert job.selfie_key is not None  # the new owner still needs it


def test_guarded_updates_refuse_other_workers(env: Env) -> None:
    job_id = env.add_job(None, provider=NAME_NO_SELFIE)
    now = datetime.now(UTC)
    sessions = session_factory(env.engine)
    with transaction(sessions) as s:
        assert queue.claim(s, "owner", 30.0, now) is not None
        assert queue.claim(s, "other", 30.0, now) is None  # leased: nothing runnable
    with transaction(sessions) as s:
        assert not queue.heartbeat(s, job_id, "other", 30.0, now, progress=0.5)
        assert not queue.finish(s, job_id, "other", now)
        assert not queue.fail(s, job_id, "other", now, "nope")
        assert queue.retry_later(s, job_id, "other", now, attempt=1) is None
        assert not queue.release(s, job_id, "other", now)
    job = env.job(job_id)
    assert (job.status, job.locked_by, job.progress) == ("processing", "owner", 0.0)
    with transaction(sessions) as s:  # after the lease runs out, anyone may claim it
        claimed = queue.claim(s, "other", 30.0, now + timedelta(seconds=31))
    assert claimed is not None and claimed.attempts == 2


def test_claim_order_and_retry_due_time(env: Env) -> None:
    base = datetime.now(UTC)
    first = env.add_job(None, provider=NAME_NO_SELFIE, created_at=base - timedelta(seconds=2))
    second = env.add_job(None, provider=NAME_NO_SELFIE, created_at=base - timedelta(seconds=1))
    sessions = session_factory(env.engine)
    with transaction(sessions) as s:
        claimed = queue.claim(s, "w", 30.0, base)
        assert claimed is not None and claimed.id == first
        due = queue.retry_later(s, first, "w", base, attempt=1, retry_after=10.0, base_s=1.0)
        assert due is not None and due - base == timedelta(seconds=10)
    with transaction(sessions) as s:
        claimed = queue.claim(s, "w", 30.0, base)
        assert claimed is not None and claimed.id == second
        assert queue.claim(s, "w2", 30.0, base + timedelta(seconds=9)) is None
        again = queue.claim(s, "w2", 30.0, base + timedelta(seconds=10))
        assert again is not None and again.id == first and again.attempts == 2


def test_stop_releases_the_job_in_flight(env: Env) -> None:
    selfie = make_selfie(13)
    FAKE.plan(selfie, Script(never_finish=True))
    job_id = env.add_job(selfie)
    stop = threading.Event()
    thread = env.worker(provider_poll_s=0.05).start_thread(stop)
    deadline = time.monotonic() + 10
    while FAKE.count("poll") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    job = env.job(job_id)
    assert (job.status, job.locked_by, job.attempts) == ("queued", None, 0)
    assert job.provider_job_id is not None  # the next worker resumes it


class _BrokenStorage(LocalStorage):
    """A disk that refuses writes of avatars: our own failure, not the provider's."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if key.startswith("avatars/"):
            raise StorageError("disk full")
        super().put(key, data, content_type)


def test_internal_error_is_retried_then_fails_never_stuck_processing(env: Env, tmp_path: Path) -> None:
    selfie = make_selfie(14)
    FAKE.plan(selfie, Script(steps=()))
    job_id = env.add_job(selfie)
    broken = _BrokenStorage(env.storage.root, SECRET)
    worker = Worker(env.settings, env.engine, broken, provider_poll_s=0.01, retry_base_s=0.01)
    assert worker.run_once()
    job = env.job(job_id)
    assert (job.status, job.attempts) == ("queued", 1)
    job = run_until_finished(worker, env, job_id)
    assert job.status == "error" and "internal error" in (job.error or "")
    assert job.attempts == 3 and FAKE.count("start") == 1  # later runs resumed the provider job


# ---------------------------------------------------------------------------------------- selfie retention


def test_selfies_kept_for_retention_then_swept(env: Env) -> None:
    settings = env.settings.with_(selfie_retention_s=60.0)
    good, bad = make_selfie(15), make_selfie(16)
    FAKE.plan(bad, Script(fail_message="the photo is too dark"))
    done_id, failed_id = env.add_job(good), env.add_job(bad)
    worker = env.worker(settings)
    assert worker.run_once() and worker.run_once()
    assert env.job(done_id).status == "done" and env.job(failed_id).status == "error"
    assert len(env.stored("selfies")) == 2
    assert worker.sweep_selfies() == 0

    with transaction(session_factory(env.engine)) as s:  # pretend the jobs ended over a minute ago
        for job_id in (done_id, failed_id):
            finished = s.get_one(AvatarJob, job_id).finished_at
            s.execute(sa.update(AvatarJob).where(AvatarJob.id == job_id)
                      .values(finished_at=finished - timedelta(seconds=61)))
    assert worker.sweep_selfies() == 2
    assert env.stored("selfies") == []
    assert env.job(done_id).selfie_key is None and env.job(failed_id).selfie_key is None
    assert worker.sweep_selfies() == 0


# ---------------------------------------------------------------------------------------- several processes


def _spawn(ctx: multiprocessing.context.SpawnContext, db_url: str, tmp: Path, name: str,
           **kwargs: object) -> multiprocessing.process.BaseProcess:
    process = ctx.Process(target=run_worker_process,
                          args=(db_url, str(tmp), str(tmp / "storage"), 60.0),
                          kwargs={"ready_path": str(tmp / f"ready-{name}"), **kwargs}, daemon=True)
    process.start()
    return process


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _log(path: Path) -> list[tuple[str, str, str, int]]:
    if not path.exists():
        return []
    return [(m, h, p, int(pid)) for m, h, p, pid in (line.split() for line in path.read_text().splitlines())]


@pytest.fixture
def pg_env(pg_database: str, tmp_path: Path) -> Iterator[Env]:
    yield from _process_env(pg_database, tmp_path)


@pytest.fixture(params=["postgresql", "sqlite"])
def mp_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """Both engines for the multi-process claim test (SQLite: the embedded default, one writer at a time)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'avatar-studio.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    yield from _process_env(url, tmp_path)


def _process_env(url: str, tmp_path: Path) -> Iterator[Env]:
    engine = create_engine(url)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        user = User(age_confirmed=True, consent_selfie=True, token_hash=uuid.uuid4().hex)
        s.add(user)
        s.flush()
        user_id = user.id
    settings = Settings(data_dir=tmp_path, database_url=url, provider="fake", signing_secret=SECRET)
    yield Env(engine, LocalStorage(tmp_path / "storage", SECRET), settings, user_id)
    engine.dispose()


def test_many_worker_processes_claim_each_job_once(mp_env: Env, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    log_path = tmp_path / "provider.log"
    workers = 3
    started = time.monotonic()
    processes = [_spawn(ctx, mp_env.settings.database_url, tmp_path, str(i), provider_delay_s=0.0,
                        log_path=str(log_path)) for i in range(workers)]
    try:
        _wait_for(lambda: all((tmp_path / f"ready-{i}").exists() for i in range(workers)), 30, "worker start-up")
        spawn_s = time.monotonic() - started
        selfies = [make_selfie(1000 + i) for i in range(200)]
        hashes = {selfie_hash(selfie) for selfie in selfies}
        mp_env.add_jobs(selfies)  # one commit: the clock starts when all 200 are visible
        queued = time.monotonic()

        def all_finished() -> bool:
            with mp_env.engine.connect() as c:
                return c.scalar(sa.select(sa.func.count()).select_from(AvatarJob)
                                .where(AvatarJob.status.in_(("queued", "processing")))) == 0

        _wait_for(all_finished, 40, "200 jobs")
        elapsed = time.monotonic() - queued
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.join(10)
    assert all(p.exitcode == 0 for p in processes)  # SIGTERM is a graceful stop

    with session_factory(mp_env.engine)() as s:
        jobs = list(s.scalars(sa.select(AvatarJob)))
        assets = list(s.scalars(sa.select(AvatarAsset)))
    assert Counter(j.status for j in jobs) == {"done": 200}
    assert {j.attempts for j in jobs} == {1}
    assert len(assets) == 200 and len({a.job_id for a in assets}) == 200
    entries = _log(log_path)
    starts = Counter(h for m, h, _, _ in entries if m == "start")
    results = Counter(h for m, h, _, _ in entries if m == "result")
    assert set(starts) == set(hashes) and set(starts.values()) == {1}, "a job was started twice"
    assert set(results) == set(hashes) and set(results.values()) == {1}, "a job was finished twice"
    split = Counter(pid for m, _, _, pid in entries if m == "start")
    assert len(split) >= 2, f"one process did all the work: {split}"
    print(f"\n{mp_env.engine.dialect.name}: {workers} worker processes: spawn {spawn_s:.2f} s; "
          f"200 jobs in {elapsed:.2f} s ({200 / elapsed:.0f} jobs/s); split {sorted(split.values())}; duplicates 0")


def test_sigkilled_worker_job_completes_after_its_lease(pg_env: Env, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    log_path = tmp_path / "provider.log"
    lease = 1.0
    selfie = make_selfie(1)
    options = {"provider_delay_s": 2.0, "log_path": str(log_path), "lease_s": lease}
    victim = _spawn(ctx, pg_env.settings.database_url, tmp_path, "victim", **options)
    try:
        _wait_for(lambda: (tmp_path / "ready-victim").exists(), 30, "worker start-up")
        job_id = pg_env.add_job(selfie)
        _wait_for(lambda: pg_env.job(job_id).provider_job_id is not None, 10, "the provider job to start")
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(5)
        killed_at = time.monotonic()
        job = pg_env.job(job_id)
        assert job.status == "processing" and job.locked_by is not None
        dead_owner = job.locked_by
        heir = _spawn(ctx, pg_env.settings.database_url, tmp_path, "heir", **options)
        try:
            _wait_for(lambda: pg_env.job(job_id).status == "done", 20, "the job to complete")
            recovered_s = time.monotonic() - killed_at
        finally:
            heir.terminate()
            heir.join(10)
    finally:
        if victim.is_alive():
            victim.kill()
            victim.join(5)
    assert dead_owner == (tmp_path / "ready-victim").read_text()
    job = pg_env.job(job_id)
    assert job.attempts == 2 and job.locked_by is None
    assert len(pg_env.assets(job_id)) == 1
    entries = _log(log_path)
    assert [m for m, *_ in entries] == ["start", "result"]  # resumed, not started again
    assert entries[0][3] == victim.pid and entries[1][3] == heir.pid
    print(f"\nSIGKILLed worker's job done {recovered_s:.2f} s after the kill (lease {lease} s)")
