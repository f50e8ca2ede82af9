"""An in-process avatar provider the tests control: a real :class:`Provider`, not a mock of our code.

Two ways to drive it:

* **Scripted** (single process): ``FAKE.plan(selfie_bytes, Script(...))`` decides what the provider
  does for the job whose selfie has those bytes — progress steps, an action-URL phase, transient
  failures then success, a permanent failure, garbage GLB bytes, never finishing, or raising a
  non-ProviderError exception. Keying by the selfie makes a scenario follow its job whatever order
  the jobs run in. Every call is recorded in ``FAKE.calls``.
* **Stateless** (any number of processes): without a plan, the provider job id encodes the start
  time, so any process can poll it; it is done ``FAKE_PROVIDER_DELAY_S`` seconds after ``start``.
  With ``FAKE_PROVIDER_LOG`` set, each ``start`` and ``result`` appends one line
  ``<method> <selfie-hash> <provider-job-id> <pid>`` to that file with ``O_APPEND`` (one ``write``
  per line, atomic across processes): the duplicate detector of the multi-process tests.

:func:`run_worker_process` is a ``multiprocessing`` (spawn) target that runs one real worker.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import FrameType
from typing import ClassVar

from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.providers.base import (
    JobOptions,
    ProviderError,
    ProviderResult,
    ProviderStatus,
    Selfie,
    register_provider,
)

NAME = "fake"
NAME_NO_SELFIE = "fake-noselfie"
BLENDSHAPE_MAP = {"eyeBlink_L": "eyeBlinkLeft", "eyeBlink_R": "eyeBlinkRight", "jawOpen": "jawOpen"}


@cache
def sample_glb() -> bytes:
    """A small valid head with ARKit's raw morph names (so the blendshape map matters)."""
    return make_arkit_head_glb(500, texture=False, name_style="arkit_raw")


def selfie_hash(data: bytes | None) -> str:
    return hashlib.sha256(data).hexdigest()[:16] if data is not None else "none"


@dataclass
class Script:
    """What the fake provider does for one job (see the module docstring)."""

    steps: tuple[float, ...] = (0.25, 0.5, 0.75)  # progress of successive polls; the poll after the last is done
    action_url: str | None = None  # reported by the first ``action_polls`` polls
    action_polls: int = 0
    start_errors: list[ProviderError] = field(default_factory=list)  # raised by successive start() calls
    poll_errors: list[ProviderError] = field(default_factory=list)  # raised by successive poll() calls
    fail_message: str | None = None  # permanent failure reported by the first poll
    glb: bytes | None = None  # None: sample_glb()
    blendshape_map: dict[str, str] = field(default_factory=lambda: dict(BLENDSHAPE_MAP))
    never_finish: bool = False
    crash: Exception | None = None  # raised by poll(): a provider bug, not a ProviderError
    delay_s: float = 0.0  # each call sleeps this long
    on_poll: Callable[[int], None] | None = None  # runs at the start of every poll with the poll's index
    on_result: Callable[[], None] | None = None  # runs (once) inside result(), before it returns


@dataclass
class _Job:
    script: Script
    polls: int = 0


class FakeControl:
    """The tests' handle on every fake provider instance in this process."""

    def __init__(self) -> None:
        self.plans: dict[str, Script] = {}
        self.jobs: dict[str, _Job] = {}
        self.calls: list[tuple[str, str]] = []  # (method, selfie hash or provider job id)
        self.lock = threading.Lock()

    def plan(self, selfie: bytes, script: Script) -> Script:
        self.plans[selfie_hash(selfie)] = script
        return script

    def reset(self) -> None:
        with self.lock:
            self.plans.clear()
            self.jobs.clear()
            self.calls.clear()

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)


FAKE = FakeControl()


def _log_line(method: str, digest: str, provider_job_id: str) -> None:
    path = os.environ.get("FAKE_PROVIDER_LOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{method} {digest} {provider_job_id} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


class FakeProvider:
    """Implements the Provider protocol; behaviour comes from FAKE's plans or the environment."""

    name: ClassVar[str] = NAME
    needs_selfie: ClassVar[bool] = True

    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key

    def check(self, selfie: Selfie | None, options: JobOptions) -> None:
        if self.needs_selfie and selfie is None:
            raise ProviderError("the fake provider needs a selfie")

    def start(self, selfie: Selfie | None, options: JobOptions) -> str:
        if self.needs_selfie and selfie is None:
            raise ProviderError("the fake provider needs a selfie")
        digest = selfie_hash(selfie.data if selfie else None)
        with FAKE.lock:
            FAKE.calls.append(("start", digest))
            script = FAKE.plans.get(digest)
        if script is not None:
            time.sleep(script.delay_s)
            if script.start_errors:
                raise script.start_errors.pop(0)
        provider_job_id = f"fake-{digest}-{time.time():.6f}-{uuid.uuid4().hex[:8]}"
        if script is not None:
            with FAKE.lock:
                FAKE.jobs[provider_job_id] = _Job(script)
        _log_line("start", digest, provider_job_id)
        return provider_job_id

    def poll(self, provider_job_id: str) -> ProviderStatus:
        with FAKE.lock:
            FAKE.calls.append(("poll", provider_job_id))
            job = FAKE.jobs.get(provider_job_id)
        if job is None:
            return self._stateless_poll(provider_job_id)
        script = job.script
        if script.on_poll is not None:
            script.on_poll(job.polls)
        time.sleep(script.delay_s)
        if script.crash is not None:
            raise script.crash
        if script.poll_errors:
            raise script.poll_errors.pop(0)
        if script.fail_message is not None:
            raise ProviderError(script.fail_message)
        index = job.polls
        job.polls += 1
        url = script.action_url if index < script.action_polls else None
        if script.never_finish:
            return ProviderStatus(progress=min(0.9, 0.1 * (index + 1)), action_url=url)
        if index < len(script.steps):
            return ProviderStatus(progress=script.steps[index], action_url=url)
        return ProviderStatus(progress=1.0, done=True)

    def result(self, provider_job_id: str) -> ProviderResult:
        with FAKE.lock:
            FAKE.calls.append(("result", provider_job_id))
            job = FAKE.jobs.get(provider_job_id)
        _log_line("result", provider_job_id.split("-")[1], provider_job_id)
        if job is None:
            return ProviderResult(glb=sample_glb(), blendshape_map=dict(BLENDSHAPE_MAP))
        script = job.script
        if script.on_result is not None:
            hook, script.on_result = script.on_result, None
            hook()
        return ProviderResult(glb=script.glb if script.glb is not None else sample_glb(),
                              blendshape_map=dict(script.blendshape_map))

    @staticmethod
    def _stateless_poll(provider_job_id: str) -> ProviderStatus:
        try:
            started = float(provider_job_id.split("-")[2])
        except (IndexError, ValueError):
            raise ProviderError(f"the fake provider has no job {provider_job_id!r}") from None
        delay = float(os.environ.get("FAKE_PROVIDER_DELAY_S") or 0)
        elapsed = time.time() - started
        if elapsed >= delay:
            return ProviderStatus(progress=1.0, done=True)
        return ProviderStatus(progress=elapsed / delay)


class FakeProviderNoSelfie(FakeProvider):
    name: ClassVar[str] = NAME_NO_SELFIE
    needs_selfie: ClassVar[bool] = False


def register_fake() -> None:
    register_provider(NAME, FakeProvider)
    register_provider(NAME_NO_SELFIE, FakeProviderNoSelfie)


def run_worker_process(
    db_url: str,
    data_dir: str,
    storage_root: str,
    stop_after_s: float,
    *,
    lease_s: float = 2.0,
    provider_delay_s: float | None = None,
    log_path: str | None = None,
    poll_interval_s: float = 0.02,
    provider_poll_s: float = 0.05,
    ready_path: str | None = None,
) -> None:
    """A ``multiprocessing`` (spawn) target: one real :class:`Worker` with the fake provider.

    Stops after ``stop_after_s`` seconds or on SIGTERM (gracefully: a job in flight is released);
    SIGKILL is the crash the lease is there for. ``ready_path`` is created just before the worker
    starts polling, so a test can wait for every process before it queues work.
    """
    from avatar_studio.config import Settings
    from avatar_studio.service.db import create_engine
    from avatar_studio.service.storage import LocalStorage
    from avatar_studio.service.worker import Worker

    if provider_delay_s is not None:
        os.environ["FAKE_PROVIDER_DELAY_S"] = str(provider_delay_s)
    if log_path is not None:
        os.environ["FAKE_PROVIDER_LOG"] = log_path
    register_fake()
    secret = b"fake-provider-test-secret-32byte"
    settings = Settings(data_dir=Path(data_dir), database_url=db_url, provider=NAME, signing_secret=secret,
                        lease_s=lease_s, poll_interval_s=poll_interval_s, selfie_retention_s=0.0)
    engine = create_engine(db_url)
    stop = threading.Event()

    def _on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_term)
    timer = threading.Timer(stop_after_s, stop.set)
    timer.daemon = True
    timer.start()
    worker = Worker(settings, engine, LocalStorage(Path(storage_root), secret), provider_poll_s=provider_poll_s)
    if ready_path is not None:
        Path(ready_path).write_text(worker.worker_id)
    try:
        worker.run_forever(stop)
    finally:
        timer.cancel()
        engine.dispose()
