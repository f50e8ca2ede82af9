"""Errors a user can meet when opening an avatar file.

Every message is written for the person who opened the file: it says what is wrong and, where
there is one, what to do. The loader never lets a raw ``IndexError``/``struct.error`` escape,
because a reviewer opening a provider's broken GLB must see *why* it cannot be shown.

    AvatarError            base: any avatar file problem (``str(e)`` is the user message)
    ├── BrokenAsset        the file is not valid glTF (truncated, bad chunk, bad JSON, out of range)
    └── UnsupportedAsset   valid glTF that uses something we cannot decode (names the extension)
"""

from __future__ import annotations


class AvatarError(Exception):
    """Base of every avatar-file error; ``str()`` is a one-line message for the user."""


class BrokenAsset(AvatarError):
    """The file is not a readable glTF 2.0 asset."""


class UnsupportedAsset(AvatarError):
    """The asset requires a feature (usually an extension) this build cannot decode."""

    def __init__(self, message: str, extension: str | None = None) -> None:
        super().__init__(message)
        self.extension = extension
