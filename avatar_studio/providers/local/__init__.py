"""The built-in offline ``local`` provider: one selfie → a textured head GLB with ARKit morph targets.

No key, no network: MediaPipe's face models (Apache-2.0, in ``resources/face_models/``) run on
``ai-edge-litert``; the head, its texture and the 52 targets are built procedurally
(``design/local-provider.md``). :func:`generate_avatar` is the engine; :class:`LocalProvider` wraps
it in the provider protocol the service's worker drives.
"""

from __future__ import annotations

from avatar_studio.providers.local.generator import generate_avatar, generate_to_file
from avatar_studio.providers.local.provider import LocalProvider

__all__ = ["LocalProvider", "generate_avatar", "generate_to_file"]
