"""``avatar-studio serve`` and ``avatar-studio worker`` as real processes: start, answer, stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "avatar_studio", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STORAGE_BUCKET", "PROVIDER")}
    return {**env, "AVATAR_STUDIO_DATA_DIR": str(tmp_path / "data"), **extra}


def _wait_for_url(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        match = re.search(r"avatar service on (http://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError("serve did not report its address")


def test_serve_answers_and_stops_cleanly(tmp_path: Path, pg_database: str) -> None:
    proc = _start(["serve", "--port", "0", "--workers", "1"], _env(tmp_path, DATABASE_URL=pg_database))
    try:
        url = _wait_for_url(proc)
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["status"] == "ok" and health["database"] == "ok"
        token = httpx.post(f"{url}/users", json={"ageConfirmed": True, "consentSelfie": True}).json()["token"]
        assert httpx.get(f"{url}/avatar/jobs", headers={"Authorization": f"Bearer {token}"}).json()["total"] == 0
        assert (tmp_path / "data" / "signing.key").stat().st_mode & 0o777 == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_serve_reports_a_busy_port_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "avatar_studio", "serve", "--port", str(port)],
                                env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_worker_runs_until_sigterm(tmp_path: Path) -> None:
    proc = _start(["worker", "--concurrency", "2"], _env(tmp_path))
    try:
        time.sleep(2.0)
        assert proc.poll() is None, "the worker keeps running while there is nothing to do"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert (tmp_path / "data" / "avatar-studio.db").exists(), "the worker migrated the embedded database"
