"""Selfie uploads: magic bytes, size and pixel limits, EXIF orientation applied, metadata removed.

Selfies are biometric data. The stored file is a fresh encode of the pixels only, so EXIF, GPS,
XMP, ICC comments and thumbnails never reach storage or a provider; nothing is stored for a
refused upload because validation happens entirely in memory first.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from avatar_studio.providers.base import Selfie
from avatar_studio.service.errors import ApiError

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_SIDE = 64  # a face detector needs some pixels; anything smaller is not a selfie


def sniff(data: bytes) -> str | None:
    if data.startswith(JPEG_MAGIC):
        return "image/jpeg"
    if data.startswith(PNG_MAGIC):
        return "image/png"
    return None


def sanitise_selfie(data: bytes, *, max_bytes: int, max_pixels: int) -> Selfie:
    """Validate and re-encode an uploaded photo; ApiError (413/415/422) says what is wrong."""
    if len(data) > max_bytes:
        raise ApiError(413, "too_large", f"the photo is {len(data) / 1e6:.1f} MB; the limit is "
                       f"{max_bytes / 1e6:.0f} MB", field="file")
    if not data:
        raise ApiError(422, "invalid_image", "the photo file is empty", field="file")
    mime = sniff(data)
    if mime is None:
        raise ApiError(415, "unsupported_media_type", "the photo must be a JPEG or PNG image", field="file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ApiError(413, "too_large", f"the photo has {width}×{height} pixels; the limit is "
                                   f"{max_pixels / 1e6:.0f} megapixels", field="file")
                img.load()
                upright = ImageOps.exif_transpose(img)
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "too_large", "the photo has too many pixels", field="file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ApiError(422, "invalid_image", "the photo cannot be decoded; it may be truncated or corrupt",
                       field="file") from None
    if min(upright.size) < MIN_SIDE:
        raise ApiError(422, "invalid_image", f"the photo is {upright.size[0]}×{upright.size[1]} pixels; "
                       f"at least {MIN_SIDE} on each side is needed", field="file")
    out = io.BytesIO()
    if mime == "image/jpeg":
        upright.convert("RGB").save(out, "JPEG", quality=95)  # no exif=, no icc_profile=: pixels only
    else:
        clean = upright.convert("RGBA" if "A" in upright.getbands() else "RGB")
        clean.save(out, "PNG")
    return Selfie(data=out.getvalue(), mime_type=mime, width=upright.size[0], height=upright.size[1])
