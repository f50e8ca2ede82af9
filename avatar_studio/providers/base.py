"""The provider interface: selfie + options → provider job → progress → GLB bytes + blendshape map.

Why this shape: every vendor's flow is create, poll, download (``design/providers.md``), and a job
can outlive the worker process that started it. So the worker stores ``provider_job_id`` after
:meth:`Provider.start` and can resume with :meth:`Provider.poll` from any process; :meth:`result`
is only called once the provider reports done. Failures are :class:`ProviderError` with a message
written for the user and a ``transient`` flag the worker uses to decide between retry and error.

Implementations register a factory by name (:func:`register_provider`); packages can also declare
the ``avatar_studio.providers`` entry point group, loaded on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import ClassVar, Literal, Protocol

BLENDSHAPE_SETS = ("arkit", "basic")


@dataclass(frozen=True)
class JobOptions:
    """The spec's job options; defaults apply to absent fields."""

    output: Literal["glb"] = "glb"
    blendshapes: Literal["arkit", "basic"] = "arkit"
    realism: Literal["high"] = "high"


@dataclass(frozen=True)
class Selfie:
    """The uploaded photo after sanitising: re-encoded, EXIF orientation applied, no metadata."""

    data: bytes = field(repr=False)
    mime_type: str  # image/jpeg or image/png
    width: int
    height: int


@dataclass(frozen=True)
class ProviderStatus:
    """One poll: progress in [0, 1], whether the result is ready, and where the user must act."""

    progress: float
    done: bool = False
    action_url: str | None = None


@dataclass(frozen=True)
class ProviderResult:
    glb: bytes = field(repr=False)
    blendshape_map: dict[str, str] = field(default_factory=dict)  # provider name → canonical name


class ProviderError(Exception):
    """A provider failure; ``str()`` is the message shown to the user as the job's ``error``."""

    def __init__(self, message: str, *, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class Provider(Protocol):
    """What the worker needs from a provider. Methods block; the worker calls them off the event loop."""

    name: ClassVar[str]
    needs_selfie: ClassVar[bool]

    def check(self, selfie: Selfie | None, options: JobOptions) -> None:
        """Refuse, before a job is queued, a request this provider cannot serve (raise ProviderError)."""

    def start(self, selfie: Selfie | None, options: JobOptions) -> str:
        """Create the provider-side job; return its id (stored, so any worker can resume it)."""

    def poll(self, provider_job_id: str) -> ProviderStatus:
        """Report progress; ``done=True`` once :meth:`result` can be called."""

    def result(self, provider_job_id: str) -> ProviderResult:
        """Download the finished avatar as GLB bytes with its blendshape name map.

        Adapters holding connections also offer ``close()``; the worker calls it after each job.
        """


ProviderFactory = Callable[[str | None], Provider]  # called with the API key (None when unset)

_registry: dict[str, ProviderFactory] = {}
_entry_points_loaded = False

# The providers that ship with Avatar Studio, imported on first use (each module is heavy: httpx
# adapters, or the face-landmark runtime of ``local``). The class is called with the API key.
BUILTIN_PROVIDERS = {
    "local": "avatar_studio.providers.local:LocalProvider",
    "avatar-sdk": "avatar_studio.providers.avatar_sdk:AvatarSdkProvider",
    "in3d": "avatar_studio.providers.in3d:In3dProvider",
    "didimo": "avatar_studio.providers.didimo:DidimoProvider",
}


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Make ``name`` usable as ``PROVIDER`` or as a job's ``provider`` field."""
    _registry[name] = factory


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for name, target in BUILTIN_PROVIDERS.items():
        if name not in _registry and importlib.util.find_spec(target.split(":")[0]) is not None:
            _registry[name] = _lazy(target)
    for ep in entry_points(group="avatar_studio.providers"):
        if ep.name not in _registry:
            _registry[ep.name] = ep.load()


def _lazy(target: str) -> ProviderFactory:
    def factory(api_key: str | None) -> Provider:
        module, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            raise ProviderError(f"this provider cannot run here: {exc}") from None
        return cls(api_key)

    return factory


def available_providers() -> list[str]:
    _load_entry_points()
    return sorted(_registry)


def create_provider(name: str, api_key: str | None) -> Provider:
    """A provider instance; unknown names raise ProviderError naming the ones that exist."""
    _load_entry_points()
    factory = _registry.get(name)
    if factory is None:
        known = ", ".join(sorted(_registry)) or "none"
        raise ProviderError(f"unknown provider {name!r} (available: {known})")
    return factory(api_key)
