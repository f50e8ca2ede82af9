"""Service throughput: the REST API under wrk, and the job queue with 1 vs 8 worker processes on PostgreSQL.

What is measured and why:

* **HTTP** (one ``serve`` process, SQLite, no in-process workers): ``GET /avatar/jobs/{id}`` is what
  every client polls while an avatar is being made, so it is the hot path; the issue's goal for it is
  ≥ 2,000 req/s with p99 ≤ 20 ms. ``POST /avatar/jobs`` with a ~200 KB JPEG shows what uploads cost
  (the selfie is decoded, re-encoded without metadata and written to disk per request). The baseline,
  measured in the same run against the same process, is ``GET /health``: no auth and one trivial
  query, i.e. the floor of FastAPI + uvicorn + one database round trip on this machine. The ratio to
  it says how much our own work (token lookup, job and asset queries, upload handling) costs, and
  stays meaningful on a slower machine. wrk runs on the same machine as the server, so the figures
  are for both sharing the CPUs, as in ``design/backend.md`` §4.
* **Queue** (throwaway PostgreSQL cluster): N jobs queued through the real API, then worker
  processes running the real :class:`~avatar_studio.service.worker.Worker` against an instant
  provider, timed from "go" until every job is finished. The baseline is 1 worker process on the
  same cluster; 8 processes show whether ``FOR UPDATE SKIP LOCKED`` claiming scales or serialises.
  Every provider ``start`` appends a line to a file (``O_APPEND``, one write per line), and each
  job's selfie is unique, so a job started twice shows up as a repeated selfie hash: the count of
  duplicates must be 0 (each job run exactly once). Worker start-up (spawn, imports) is excluded:
  the processes report ready and wait for the go signal.

Everything listens on 127.0.0.1 only, every load run is bounded in time and count, and the temporary
folders (uploaded selfies, the database cluster) are removed at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import multiprocessing as mp
import multiprocessing.queues
import multiprocessing.synchronize
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar

from avatar_studio.providers.base import JobOptions, ProviderResult, ProviderStatus, Selfie
from benchmarks.common import print_table, ratio

REPO = Path(__file__).resolve().parent.parent
PROVIDER_NAME = "bench-instant"
HOST = "127.0.0.1"
GOAL_GET_RPS = 2000.0
GOAL_GET_P99_S = 0.020
UPLOAD_TARGET_BYTES = 200_000
OPTIONS_JSON = json.dumps({"output": "glb", "blendshapes": "arkit", "realism": "high"})


# ---------------------------------------------------------------------------------------------- provider


@cache
def _result_glb() -> bytes:
    """A small valid ARKit head, built once per process so the provider itself costs nothing."""
    from avatar_studio.avatar.synthetic import make_arkit_head_glb

    return make_arkit_head_glb(500)


class InstantProvider:
    """A provider that finishes at once: the queue benchmark measures our overhead, not a vendor's.

    With ``start_log`` set, each :meth:`start` appends ``<selfie sha256> <pid>`` to that file in one
    ``write`` on an ``O_APPEND`` descriptor, which is atomic across processes: the duplicate detector.
    """

    name: ClassVar[str] = PROVIDER_NAME
    needs_selfie: ClassVar[bool] = True

    def __init__(self, api_key: str | None = None, start_log: str | None = None) -> None:
        self.start_log = start_log

    def check(self, selfie: Selfie | None, options: JobOptions) -> None:
        """Accept everything: refusals are not what is measured."""

    def start(self, selfie: Selfie | None, options: JobOptions) -> str:
        digest = hashlib.sha256(selfie.data).hexdigest() if selfie is not None else "none"
        if self.start_log:
            fd = os.open(self.start_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{digest} {os.getpid()}\n".encode())
            finally:
                os.close(fd)
        return f"instant-{uuid.uuid4().hex}"

    def poll(self, provider_job_id: str) -> ProviderStatus:
        return ProviderStatus(progress=1.0, done=True)

    def result(self, provider_job_id: str) -> ProviderResult:
        return ProviderResult(glb=_result_glb())


def register_instant_provider(start_log: str | None = None) -> None:
    from avatar_studio.providers.base import register_provider

    register_provider(PROVIDER_NAME, lambda api_key: InstantProvider(api_key, start_log))


# ---------------------------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _all_cpus() -> Iterator[str]:
    """Undo the harness's single-core pin while the service runs, then restore it.

    The other benchmarks pin to one core because they time one GUI-thread call; a server, wrk, a
    database and several worker processes are meant to share the machine, and the children inherit
    the parent's affinity.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield "CPU affinity not available: not changed"
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except OSError:
        yield f"could not widen CPU affinity; running on CPUs {sorted(before)}"
        return
    try:
        yield f"server, load generator, database and workers share CPUs {sorted(os.sched_getaffinity(0))}"
    finally:
        os.sched_setaffinity(0, before)


def noise_jpeg(target_bytes: int = UPLOAD_TARGET_BYTES, size: tuple[int, int] = (640, 640)) -> bytes:
    """A selfie-sized JPEG of ~``target_bytes``: a gradient plus noise, bisected on the noise level.

    Why not pure noise: a real 200 KB selfie has about this many pixels, and the upload handler's
    cost (decode, re-encode) grows with pixels, not bytes. The noise keeps JPEG from shrinking it.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(20261127)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 200 / w + 30, yy * 180 / h + 40, (xx + yy) * 90 / (w + h) + 80], axis=-1)
    noise = rng.standard_normal((h, w, 3))
    low, high, best = 0.0, 80.0, b""
    for _ in range(12):
        sigma = (low + high) / 2
        pixels = np.clip(base + sigma * noise, 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=90)
        best = out.getvalue()
        if abs(len(best) - target_bytes) < target_bytes * 0.03:
            break
        low, high = (sigma, high) if len(best) < target_bytes else (low, sigma)
    return best


def tiny_jpeg(seed: int) -> bytes:
    """A unique 64×64 noise JPEG (the smallest selfie the API accepts): one per queued job."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def multipart_body(jpeg: bytes) -> tuple[bytes, str]:
    """The ``POST /avatar/jobs`` body a client sends (file + options), and its Content-Type."""
    boundary = f"avatarbench{uuid.uuid4().hex}"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"selfie.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    tail = (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"options\"\r\n\r\n{OPTIONS_JSON}\r\n"
            f"--{boundary}--\r\n").encode()
    return head + jpeg + tail, f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    p50_s: float
    p99_s: float
    bad_status: int  # wrk's "Non-2xx or 3xx responses" (status ≥ 400)
    socket_errors: int
    raw: str


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"unexpected wrk time {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Read req/s, the 50th/99th latency percentiles and the error counts from ``wrk --latency``."""
    def grab(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return match

    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests=int(grab(r"^\s*(\d+) requests in")[1]),
        rps=float(grab(r"^Requests/sec:\s*([\d.]+)")[1]),
        p50_s=_seconds(grab(r"^\s*50%\s+(\S+)")[1]),
        p99_s=_seconds(grab(r"^\s*99%\s+(\S+)")[1]),
        bad_status=int(bad[1]) if bad else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        raw=output,
    )


def ensure_wrk() -> tuple[str | None, str]:
    """wrk's path, installing the Debian package when running as root; else None and why."""
    found = shutil.which("wrk")
    if found:
        return found, ""
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "wrk is not installed (Debian: `apt-get install wrk`, as root); skipping the HTTP benchmark"
    print("installing wrk (apt-get install -y --no-install-recommends wrk) ...", flush=True)
    install = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(install, capture_output=True, text=True, timeout=300, env=env)
    if done.returncode != 0:  # a fresh image may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=300, env=env)
        done = subprocess.run(install, capture_output=True, text=True, timeout=300, env=env)
    found = shutil.which("wrk")
    if not found:
        return None, f"installing wrk failed ({done.stderr.strip()[-200:]}); skipping the HTTP benchmark"
    return found, "wrk was installed with apt-get for this run"


def run_wrk(wrk: str, url: str, seconds: int, *, header: str | None = None, script: Path | None = None,
            connections: int = 16) -> WrkResult:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if header:
        cmd += ["-H", header]
    if script:
        cmd += ["-s", str(script)]
    done = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


# ---------------------------------------------------------------------------------------------- HTTP


LAUNCHER = """\
# Started by benchmarks/bench_service.py: `avatar-studio serve --workers 0`, plus a provider the API accepts.
import sys

sys.path.insert(0, {repo!r})
from avatar_studio.config import Settings
from avatar_studio.service.runner import serve
from benchmarks.bench_service import register_instant_provider

register_instant_provider()
serve(Settings.from_env(), {host!r}, int(sys.argv[1]), workers=0)
"""

_LOG_PROBLEMS = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception", re.IGNORECASE)


@contextlib.contextmanager
def _server(folder: Path) -> Iterator[tuple[str, Path]]:
    """One ``serve`` process on a free loopback port, SQLite in ``folder``; yields (base URL, log path)."""
    import httpx

    launcher = folder / "launcher.py"
    launcher.write_text(LAUNCHER.format(repo=str(REPO), host=HOST))
    data_dir = folder / "data"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STORAGE_BUCKET",
                                                             "AVATAR_STUDIO_PUBLIC_URL")}
    env.update(AVATAR_STUDIO_DATA_DIR=str(data_dir), PROVIDER=PROVIDER_NAME, PYTHONUNBUFFERED="1")
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(launcher), str(port)], cwd=folder, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /health within 60 s")
            time.sleep(0.1)
        yield base, log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _count_jobs(db_path: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return int(conn.execute("SELECT count(*) FROM avatar_jobs").fetchone()[0])


def _settled_job_count(db_path: Path, quiet_s: float = 0.5, limit_s: float = 15.0) -> int:
    """The job count once the server has finished the requests wrk left in flight (stable for ``quiet_s``).

    Why wait: wrk stops with up to 16 uploads still being processed; they would land in the next
    timed run otherwise, both in its load and in the count of jobs it created.
    """
    count, since, deadline = _count_jobs(db_path), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _count_jobs(db_path)
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return count


def run_http(quick: bool) -> None:
    import httpx

    wrk, note = ensure_wrk()
    if wrk is None:
        print(f"\n== Service HTTP: skipped\n   {note}")
        return
    seconds = 3 if quick else 10
    jpeg = noise_jpeg()
    body, content_type = multipart_body(jpeg)
    folder = Path(tempfile.mkdtemp(prefix="avatar-bench-http-"))
    try:
        with _server(folder) as (base, log_path):
            with httpx.Client(base_url=base, timeout=30) as client:
                user = client.post("/users", json={"ageConfirmed": True, "consentSelfie": True})
                user.raise_for_status()
                token = user.json()["token"]
                auth = {"Authorization": f"Bearer {token}"}
                created = client.post("/avatar/jobs", content=body, headers={**auth, "Content-Type": content_type})
                if created.status_code != 202:
                    raise RuntimeError(f"seeding a job failed: {created.status_code} {created.text}")
                job_id = created.json()["jobId"]
                if client.get(f"/avatar/jobs/{job_id}", headers=auth).status_code != 200:
                    raise RuntimeError("the seeded job cannot be read back")
            (folder / "body.bin").write_bytes(body)
            script = folder / "post.lua"
            script.write_text(textwrap.dedent(f"""\
                local f = assert(io.open({json.dumps(str(folder / "body.bin"))}, "rb"))
                wrk.method = "POST"
                wrk.body = f:read("*a")
                f:close()
                wrk.headers["Content-Type"] = {json.dumps(content_type)}
                wrk.headers["Authorization"] = {json.dumps("Bearer " + token)}
                """))
            header = f"Authorization: Bearer {token}"
            cases = [
                ("GET /health (baseline)", f"{base}/health", None, None),
                ("GET /avatar/jobs/{id}", f"{base}/avatar/jobs/{job_id}", header, None),
                (f"POST /avatar/jobs ({len(jpeg) / 1000:.0f} KB JPEG)", f"{base}/avatar/jobs", None, script),
            ]
            db_path = folder / "data" / "avatar-studio.db"
            results: dict[str, WrkResult] = {}
            jobs_before = 0
            for label, url, hdr, lua in cases:
                run_wrk(wrk, url, 1, header=hdr, script=lua)  # warm-up: first-call imports, caches, pools
                jobs_before = _settled_job_count(db_path)
                results[label] = run_wrk(wrk, url, seconds, header=hdr, script=lua)
        log_text = log_path.read_text(errors="replace")
        problems = [line for line in log_text.splitlines() if _LOG_PROBLEMS.search(line)]
        posted = _count_jobs(db_path) - jobs_before
        uploaded = sum(p.stat().st_size for p in (folder / "data" / "storage").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    base_rps = results[cases[0][0]].rps
    rows = [[label, f"{r.rps:,.0f}", f"{r.p50_s * 1e3:.2f}", f"{r.p99_s * 1e3:.2f}", ratio(r.rps, base_rps),
             f"{r.requests:,}", str(r.bad_status), str(r.socket_errors)] for label, r in results.items()]
    get = results[cases[1][0]]
    post = results[cases[2][0]]
    met = get.rps >= GOAL_GET_RPS and get.p99_s <= GOAL_GET_P99_S
    goal = (f"goal {'met' if met else 'missed'}: GET job {get.rps:,.0f} req/s (≥ {GOAL_GET_RPS:,.0f}) and "
            f"p99 {get.p99_s * 1e3:.1f} ms (≤ {GOAL_GET_P99_S * 1e3:.0f} ms)")
    all_ok = all(r.bad_status == 0 and r.socket_errors == 0 for r in results.values())
    notes = [
        f"wrk -t1 -c16 -d{seconds}s --latency (after a 1 s warm-up each); one `serve --workers 0` process, SQLite WAL",
        "ratio = req/s over GET /health's in this run (higher is better)",
        goal,
        "every response 2xx" if all_ok else "NOT every response was 2xx: see the non-2xx and socket-error columns",
        f"server log: {'no errors' if not problems else f'{len(problems)} suspicious line(s), first: {problems[0]}'}",
        f"POST side effects: {posted:,} jobs created in the timed run (wrk counted {post.requests:,} answers; up to 16 "
        f"still in flight at the end also land); {uploaded / 1e6:.0f} MB of selfies written in all, then deleted",
    ]
    if note:
        notes.append(note)
    print_table("Service HTTP: req/s and latency vs GET /health",
                ["endpoint", "req/s", "p50 ms", "p99 ms", "vs health", "requests", "non-2xx", "sock err"],
                rows, notes)


# ---------------------------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                      if p.parent.name.isdigit() else 0)
    for folder in reversed(versions):
        if (folder / "initdb").exists():
            return folder
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class ClusterUnavailable(Exception):
    """No throwaway PostgreSQL cluster could be started (binaries missing, initdb or pg_ctl failed)."""


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    """A throwaway cluster on 127.0.0.1 (as the ``postgres`` user when root: initdb refuses root)."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        raise ClusterUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    root = Path(tempfile.mkdtemp(prefix="avatar-bench-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    started = False
    try:
        try:
            subprocess.run([*run_as, str(pg_bin / "initdb"), "-D", str(data), "-U", "app", "--auth=trust", "-E",
                            "UTF8", "--locale=C.UTF-8", "-N"], check=True, capture_output=True, timeout=120)
            options = (f"-c listen_addresses={HOST} -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=200")
            subprocess.run([*run_as, str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-s",
                            "-o", options, "start"], check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) \
                and exc.stderr else str(exc)
            raise ClusterUnavailable(detail) from None
        started = True
        yield f"postgresql+psycopg://app@{HOST}:{port}/postgres"
    finally:
        if started:
            subprocess.run([*run_as, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-s", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def _fresh_database(admin_url: str, name: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


# ---------------------------------------------------------------------------------------------- queue


def _worker_process(db_url: str, data_dir: str, start_log: str, log_file: str, ready: multiprocessing.queues.Queue,
                    go: multiprocessing.synchronize.Event, stop: multiprocessing.synchronize.Event,
                    max_s: float) -> None:
    """A spawned worker process: the real Worker, the instant provider, started by ``go``, ended by ``stop``.

    Bounded by ``max_s`` whatever the parent does, so a stuck run cannot leave processes behind.
    """
    from avatar_studio.config import Settings
    from avatar_studio.service.db import create_engine
    from avatar_studio.service.storage import storage_from_settings
    from avatar_studio.service.worker import Worker

    logging.basicConfig(filename=log_file, level=logging.WARNING)
    register_instant_provider(start_log)
    _result_glb()  # built before "ready", so the first job does not pay for it
    settings = Settings.from_env(env={"DATABASE_URL": db_url, "PROVIDER": PROVIDER_NAME},
                                 data_dir=Path(data_dir)).with_(poll_interval_s=0.05)
    engine = create_engine(db_url)
    with engine.connect():  # open the pool's first connection before timing
        pass
    local_stop = threading.Event()

    def _watch() -> None:
        stop.wait(max_s)
        local_stop.set()

    threading.Thread(target=_watch, daemon=True).start()
    worker = Worker(settings, engine, storage_from_settings(settings), provider_poll_s=0.0)
    ready.put(worker.worker_id)
    if go.wait(max_s):
        worker.run_forever(local_stop)
    engine.dispose()


@dataclass(frozen=True)
class QueueRun:
    workers: int
    jobs: int
    wall_s: float | None  # None: not every job finished within the time limit
    enqueue_s: float
    done: int
    error: int
    unfinished: int
    starts: int
    duplicate_starts: int
    duplicate_assets: int
    per_worker: tuple[int, ...]
    log_problems: int

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s if self.wall_s else 0.0


def _enqueue(db_url: str, data_dir: Path, selfies: list[bytes]) -> float:
    """Queue one job per selfie through the real API (EmbeddedService, no workers); returns seconds."""
    import httpx

    from avatar_studio.config import Settings
    from avatar_studio.service.runner import EmbeddedService

    settings = Settings.from_env(env={"DATABASE_URL": db_url, "PROVIDER": PROVIDER_NAME}, data_dir=data_dir)
    with EmbeddedService(settings, workers=0) as service, httpx.Client(base_url=service.base_url, timeout=30) as http:
        user = http.post("/users", json={"ageConfirmed": True, "consentSelfie": True})
        user.raise_for_status()
        auth = {"Authorization": f"Bearer {user.json()['token']}"}
        start = time.perf_counter()
        for i, jpeg in enumerate(selfies):
            answer = http.post("/avatar/jobs", headers=auth, data={"options": OPTIONS_JSON},
                               files={"file": (f"selfie-{i}.jpg", jpeg, "image/jpeg")})
            if answer.status_code != 202:
                raise RuntimeError(f"queueing job {i} failed: {answer.status_code} {answer.text}")
        return time.perf_counter() - start


def _queue_run(admin_url: str, folder: Path, workers: int, selfies: list[bytes], timeout_s: float) -> QueueRun:
    import sqlalchemy as sa

    from avatar_studio.service.db import create_engine

    run_dir = folder / f"w{workers}"
    run_dir.mkdir()
    db_url = _fresh_database(admin_url, f"bench_w{workers}")
    enqueue_s = _enqueue(db_url, run_dir / "data", selfies)
    start_log = run_dir / "starts.log"
    ctx = mp.get_context("spawn")
    ready, go, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=_worker_process, name=f"bench-worker-{i}",
                         args=(db_url, str(run_dir / "data"), str(start_log), str(run_dir / f"worker-{i}.log"),
                               ready, go, stop, timeout_s + 120))
             for i in range(workers)]
    engine = create_engine(db_url)
    count_finished = sa.text("SELECT count(*) FROM avatar_jobs WHERE status IN ('done', 'error')")
    wall_s: float | None = None
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=120)
        with engine.connect() as conn:
            conn.execute(count_finished)
        go.set()
        start = time.perf_counter()
        deadline = start + timeout_s
        with engine.connect() as conn:
            while time.perf_counter() < deadline:
                if conn.execute(count_finished).scalar_one() >= len(selfies):
                    wall_s = time.perf_counter() - start
                    break
                conn.commit()
                time.sleep(0.005)
    finally:
        stop.set()
        go.set()
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
    with engine.connect() as conn:
        by_status = dict(conn.execute(sa.text("SELECT status, count(*) FROM avatar_jobs GROUP BY status")).all())
        dup_assets = conn.execute(sa.text("SELECT count(*) FROM (SELECT job_id FROM avatar_assets GROUP BY job_id "
                                          "HAVING count(*) > 1) d")).scalar_one()
    engine.dispose()
    lines = start_log.read_text().split() if start_log.exists() else []
    digests, pids = lines[0::2], lines[1::2]
    log_problems = sum(1 for p in run_dir.glob("worker-*.log") for line in p.read_text(errors="replace").splitlines()
                       if _LOG_PROBLEMS.search(line))
    return QueueRun(
        workers=workers, jobs=len(selfies), wall_s=wall_s, enqueue_s=enqueue_s,
        done=by_status.get("done", 0), error=by_status.get("error", 0),
        unfinished=by_status.get("queued", 0) + by_status.get("processing", 0),
        starts=len(digests), duplicate_starts=len(digests) - len(set(digests)), duplicate_assets=int(dup_assets),
        per_worker=tuple(sorted(Counter(pids).values(), reverse=True)), log_problems=log_problems,
    )


def run_queue(quick: bool) -> None:
    jobs = 100 if quick else 400
    timeout_s = 60.0 if quick else 180.0
    register_instant_provider()  # the API process (this one) must know the provider to accept jobs
    folder = Path(tempfile.mkdtemp(prefix="avatar-bench-queue-"))
    runs: list[QueueRun] = []
    try:
        with _postgres() as admin_url:
            for workers in (1, 8):
                selfies = [tiny_jpeg(workers * 1_000_000 + i) for i in range(jobs)]
                runs.append(_queue_run(admin_url, folder, workers, selfies, timeout_s))
    except ClusterUnavailable as exc:
        print(f"\n== Service queue: skipped\n   could not start a throwaway PostgreSQL cluster: {exc}")
        return
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    baseline = runs[0].jobs_per_s
    rows = []
    for r in runs:
        rows.append([
            f"{r.workers} worker process{'es' if r.workers > 1 else ''}{' (baseline)' if r is runs[0] else ''}",
            str(r.jobs), f"{r.wall_s:.2f}" if r.wall_s else f">{timeout_s:.0f}", f"{r.jobs_per_s:,.0f}",
            ratio(r.jobs_per_s, baseline), str(r.done), str(r.error), str(r.unfinished), str(r.starts),
            str(r.duplicate_starts + r.duplicate_assets),
            f"{min(r.per_worker)}–{max(r.per_worker)}" if r.per_worker else "-",
        ])
    notes = [
        "PostgreSQL 15 throwaway cluster (fsync off); a fresh database per run; jobs queued through POST /avatar/jobs",
        "wall = from 'go' (workers spawned, imported, connected) until every job is done or error",
        "duplicates = extra provider start() calls for the same job (unique selfie per job) + jobs with >1 asset",
        f"queueing {jobs} jobs through the API took {runs[0].enqueue_s:.2f} s / {runs[1].enqueue_s:.2f} s "
        f"({jobs / runs[0].enqueue_s:,.0f} / {jobs / runs[1].enqueue_s:,.0f} jobs/s, one client)",
        "worker logs: " + ("no errors" if not any(r.log_problems for r in runs)
                           else ", ".join(f"{r.workers} workers: {r.log_problems} error line(s)" for r in runs)),
        "each job: claim, selfie read, provider start/poll/result, GLB check (500-vertex head), asset stored, "
        "done, selfie deleted: ~5 transactions",
    ]
    print_table("Service queue: jobs/s with 8 worker processes vs 1 (PostgreSQL)",
                ["workers", "jobs", "wall s", "jobs/s", "vs 1", "done", "error", "left", "starts", "dups",
                 "per worker"], rows, notes)


def run(quick: bool = False) -> None:
    with _all_cpus() as cpus:
        print(f"\nservice benchmarks: {cpus}")
        run_http(quick)
        run_queue(quick)
