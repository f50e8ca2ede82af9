"""Avatar providers: the interface the job worker calls, and the registry of implementations."""

from avatar_studio.providers.base import (
    JobOptions,
    Provider,
    ProviderError,
    ProviderResult,
    ProviderStatus,
    Selfie,
    available_providers,
    create_provider,
    register_provider,
)

__all__ = [
    "JobOptions",
    "Provider",
    "ProviderError",
    "ProviderResult",
    "ProviderStatus",
    "Selfie",
    "available_providers",
    "create_provider",
    "register_provider",
]
