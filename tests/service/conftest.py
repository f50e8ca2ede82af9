"""Service test fixtures: a throwaway PostgreSQL cluster on loopback, and both engines as a parameter.

The cluster is started once per test run by this fixture (initdb + pg_ctl, as the ``postgres``
user when running as root, since initdb refuses root) and removed at the end. Every test that
takes ``db_url`` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.config import Settings
from avatar_studio.providers.base import (
    JobOptions,
    ProviderError,
    ProviderResult,
    ProviderStatus,
    Selfie,
    register_provider,
)
from avatar_studio.service.runner import EmbeddedService


def _pg_bin() -> Path | None:
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    for candidate in reversed(roots):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """``postgresql+psycopg://`` URL of a fresh cluster on 127.0.0.1 (template for per-test databases)."""
    if os.environ.get("AVATAR_STUDIO_TEST_PG_URL"):
        yield os.environ["AVATAR_STUDIO_TEST_PG_URL"]
        return
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.fail("PostgreSQL server binaries not found: run scripts/run-tests, which installs `postgresql`")
    root = Path(tempfile.mkdtemp(prefix="avatar-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = root / "data"
    subprocess.run([*run_as, str(pg_bin / "initdb"), "-D", str(data), "-U", "app", "--auth=trust", "-E", "UTF8",
                    "--locale=C.UTF-8", "-N"], check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off " \
              "-c full_page_writes=off -c max_connections=200"
    subprocess.run([*run_as, str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-s",
                    "-o", options, "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://app@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-s", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


_db_counter = iter(range(1_000_000))


def fresh_pg_database(pg_url: str) -> str:
    """A new empty database in the session cluster, so tests never see each other's rows."""
    import sqlalchemy as sa

    name = f"t{os.getpid()}_{next(_db_counter)}"
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return pg_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def pg_database(pg_url: str) -> str:
    """A fresh, empty PostgreSQL database in the session's cluster."""
    return fresh_pg_database(pg_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL on each engine in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'avatar-studio.db'}"
    return str(request.getfixturevalue("pg_database"))


class ApiTestProvider:
    """A provider standing in for a vendor: refuses 'basic' to exercise the pre-queue check."""

    name: ClassVar[str] = "api-test"
    needs_selfie: ClassVar[bool] = True

    def check(self, selfie: Selfie | None, options: JobOptions) -> None:
        if options.blendshapes == "basic":
            raise ProviderError("this provider only produces ARKit blendshapes; choose 'arkit'")

    def start(self, selfie: Selfie | None, options: JobOptions) -> str:
        return uuid.uuid4().hex

    def poll(self, provider_job_id: str) -> ProviderStatus:
        return ProviderStatus(progress=1.0, done=True)

    def result(self, provider_job_id: str) -> ProviderResult:
        return ProviderResult(glb=make_arkit_head_glb(1500))


register_provider("api-test", lambda _key: ApiTestProvider())


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[EmbeddedService]:
    settings = Settings.from_env(env={}, data_dir=tmp_path / "data").with_(database_url=db_url, provider="api-test")
    with EmbeddedService(settings, workers=0) as svc:
        yield svc


@pytest.fixture
def http(service: EmbeddedService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        yield client
