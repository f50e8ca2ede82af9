"""Settings of the service and its workers, read once from the environment (the one place for them).

Why a frozen dataclass instead of reading ``os.environ`` where needed: the embedded service, the
standalone server and every worker process must agree on the database, the storage and the URL
signing secret; passing one object around makes that visible and testable.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs

from avatar_studio.secrets import register_secret

APP_DIR_NAME = "avatar-studio"
SECRET_FILE = "signing.key"


def default_data_dir() -> Path:
    """The platform's per-user data folder (``~/.local/share/avatar-studio`` on Linux)."""
    return Path(platformdirs.user_data_dir(APP_DIR_NAME, appauthor=False))


def load_or_create_secret(data_dir: Path) -> bytes:
    """A persistent 32-byte URL-signing secret shared by every process using ``data_dir``.

    A per-process secret would break signed URLs on restart and between processes; the file is
    created atomically with mode 0600 so a concurrent first start cannot write two secrets.
    """
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) < 32:
            raise ValueError(
                f"{path} holds a signing secret shorter than 32 bytes; delete it to make a new one"
            ) from None
        return secret
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    return path.read_bytes()


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run; see the README's environment table."""

    data_dir: Path
    database_url: str
    provider: str = "local"
    provider_api_key: str | None = field(default=None, repr=False)
    storage_bucket: str | None = None  # s3://bucket[/prefix]; None → local folder under data_dir
    public_base_url: str | None = None  # where clients reach this service (for local signed URLs)
    signing_secret: bytes = field(default=b"", repr=False)
    url_ttl_s: int = 3600
    selfie_retention_s: float = 0.0  # keep a selfie this long after its job ends (0: delete at once)
    lease_s: float = 60.0  # a worker must renew its claim within this time, or the job is reclaimed
    max_attempts: int = 5  # transient provider failures retried up to this many runs
    job_deadline_s: float = 1800.0  # a provider job still unfinished after this fails
    poll_interval_s: float = 0.5  # how often an idle worker looks for work
    max_upload_bytes: int = 15 * 1024 * 1024
    max_pixels: int = 40_000_000  # decompression-bomb guard (Pillow's own warning starts at ~89 MP)

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, data_dir: Path | None = None) -> Settings:
        """Read the settings; unset variables take the embedded defaults (SQLite, local storage)."""
        env = os.environ if env is None else env
        folder = Path(env.get("AVATAR_STUDIO_DATA_DIR") or data_dir or default_data_dir()).expanduser().resolve()
        secret_hex = env.get("AVATAR_STUDIO_SIGNING_SECRET")
        if secret_hex:
            try:
                secret = bytes.fromhex(secret_hex)
            except ValueError:
                raise ValueError("AVATAR_STUDIO_SIGNING_SECRET must be hex (64 hex digits = 32 bytes)") from None
            if len(secret) < 32:
                raise ValueError("AVATAR_STUDIO_SIGNING_SECRET must hold at least 32 bytes (64 hex digits)")
        else:
            secret = load_or_create_secret(folder)
        register_secret(env.get("PROVIDER_API_KEY"))
        register_secret(secret_hex)
        return cls(
            data_dir=folder,
            database_url=env.get("DATABASE_URL") or f"sqlite:///{folder / 'avatar-studio.db'}",
            provider=env.get("PROVIDER") or "local",
            provider_api_key=env.get("PROVIDER_API_KEY") or None,
            storage_bucket=env.get("STORAGE_BUCKET") or None,
            public_base_url=(env.get("AVATAR_STUDIO_PUBLIC_URL") or "").rstrip("/") or None,
            signing_secret=secret,
            selfie_retention_s=_number(env, "AVATAR_STUDIO_SELFIE_RETENTION", 0.0),
            lease_s=_number(env, "AVATAR_STUDIO_LEASE", 60.0),
            job_deadline_s=_number(env, "AVATAR_STUDIO_JOB_DEADLINE", 1800.0),
        )

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests, and the embedded server once it knows its port)."""
        return replace(self, **changes)  # type: ignore[arg-type]
