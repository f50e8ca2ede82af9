"""``LocalProvider``: the offline generator behind the provider protocol (``PROVIDER=local``).

Why the work happens in :meth:`LocalProvider.start`: the worker may call ``poll``/``result`` from
another process than ``start`` (a restarted worker resumes from the stored ``provider_job_id``), and
generation takes well under a second, so there is nothing to gain from a background thread that a
crash would lose. ``start`` writes the GLB to a cache folder under the returned id; ``poll`` reports
done when the file is there; ``result`` reads and removes it.

A missing file (the job was started on another machine, or the cache was cleared) is a permanent
error, not a transient one: the worker keeps ``provider_job_id`` across retries, so retrying would
only poll the same missing file again; the user is told to submit the photo again instead.

Cache folder: ``$AVATAR_STUDIO_LOCAL_PROVIDER_DIR``, else ``$AVATAR_STUDIO_DATA_DIR/local-provider``,
else a per-user folder in the system temp directory. Files older than a day are pruned by ``start``
(results nobody collected, e.g. a job cancelled between ``start`` and ``result``).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import ClassVar

from avatar_studio.providers.base import (
    BLENDSHAPE_SETS,
    JobOptions,
    ProviderError,
    ProviderResult,
    ProviderStatus,
    Selfie,
)

SUBDIVISIONS = 1  # ~2,900 vertices, ~0.6 MB: the study's default (design/local-provider.md §4.8)
STALE_AFTER_S = 24 * 3600
_ID = re.compile(r"^local-[0-9a-f]{32}$")
GONE = (
    "the avatar generated on this computer is no longer available (it was made by another worker "
    "machine or its cache was cleared); please submit the photo again"
)


def cache_dir() -> Path:
    """Where finished GLBs wait for :meth:`LocalProvider.result`."""
    explicit = os.environ.get("AVATAR_STUDIO_LOCAL_PROVIDER_DIR")
    if explicit:
        return Path(explicit)
    data_dir = os.environ.get("AVATAR_STUDIO_DATA_DIR")
    if data_dir:
        return Path(data_dir) / "local-provider"
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"avatar-studio-local-provider-{user}"


class LocalProvider:
    """Offline provider: no key, no network; the avatar is ready when :meth:`start` returns."""

    name: ClassVar[str] = "local"
    needs_selfie: ClassVar[bool] = True
    poll_interval_s: ClassVar[float] = 0.1

    def __init__(self, api_key: str | None = None) -> None:
        del api_key  # nothing to authenticate against; accepted so the factory signature fits

    def check(self, selfie: Selfie | None, options: JobOptions) -> None:
        """Refuse a job without a photo or with options this generator does not offer."""
        if selfie is None:
            raise ProviderError("the local avatar generator needs a selfie: attach a photo of your face")
        if options.output != "glb":
            raise ProviderError(f"the local avatar generator only writes GLB files, not {options.output!r}")
        if options.blendshapes not in BLENDSHAPE_SETS:
            raise ProviderError(
                f"the local avatar generator offers the blendshape sets {', '.join(BLENDSHAPE_SETS)}, "
                f"not {options.blendshapes!r}"
            )
        from avatar_studio.providers.local.landmarks import model_files

        try:
            model_files()
        except FileNotFoundError as exc:
            raise ProviderError(f"the local avatar generator is not installed completely: {exc}") from None

    def start(self, selfie: Selfie | None, options: JobOptions) -> str:
        """Generate the GLB now and park it in the cache folder; returns its id."""
        self.check(selfie, options)
        assert selfie is not None  # check() refused None
        from avatar_studio.providers.local.generator import generate_avatar

        glb = generate_avatar(selfie.data, blendshapes=options.blendshapes, subdivisions=SUBDIVISIONS)
        folder = cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _prune(folder)
            job_id = f"local-{uuid.uuid4().hex}"
            fd, tmp = tempfile.mkstemp(prefix=f".{job_id}.", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(glb)
                os.replace(tmp, folder / f"{job_id}.glb")
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:  # a full disk can clear up: let the worker retry
            raise ProviderError(f"the generated avatar could not be stored locally: {exc}", transient=True) from None
        return job_id

    def poll(self, provider_job_id: str) -> ProviderStatus:
        if _path(provider_job_id).is_file():
            return ProviderStatus(progress=1.0, done=True)
        raise ProviderError(GONE)

    def result(self, provider_job_id: str) -> ProviderResult:
        path = _path(provider_job_id)
        try:
            glb = path.read_bytes()
        except FileNotFoundError:
            raise ProviderError(GONE) from None
        path.unlink(missing_ok=True)
        return ProviderResult(glb=glb, blendshape_map={})


def _path(provider_job_id: str) -> Path:
    if not isinstance(provider_job_id, str) or not _ID.match(provider_job_id):
        raise ProviderError(f"not a local provider job id: {provider_job_id!r}")
    return cache_dir() / f"{provider_job_id}.glb"


def _prune(folder: Path) -> None:
    cutoff = time.time() - STALE_AFTER_S
    for entry in folder.glob("*.glb"):
        try:
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
        except OSError:
            continue
