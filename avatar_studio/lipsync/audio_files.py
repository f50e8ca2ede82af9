"""Reading WAV (and FLAC) files, and writing WAV for recordings, tests and calibration takes.

Why our own RIFF reader instead of ``wave``: Python 3.11's ``wave`` refuses 32-bit float files
(format 3) and WAVE_FORMAT_EXTENSIBLE headers, which is what most DAWs and browsers write, and its
errors (``unknown format: 3``) do not tell a user what to do. The reader walks the chunks itself, so a
truncated file (a recorder that crashed before fixing the sizes) still reads up to where the data
stops, and anything unusable is one ``AudioFileError`` sentence naming the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


class AudioFileError(ValueError):
    """An audio file that cannot be used; the message names the file and the reason."""


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Samples as float32 mono in [-1, 1] (channels averaged) and the sample rate.

    Supports PCM 8 (unsigned), 16, 24 and 32-bit, IEEE float 32/64-bit, plain and EXTENSIBLE headers.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudioFileError(f"{path}: {exc.strerror or exc}") from None
    try:
        return _parse(data)
    except AudioFileError as exc:
        raise AudioFileError(f"{path}: {exc}") from None


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Like :func:`read_wav`, and FLAC too: what the app and ``lipsync analyze`` accept.

    Why FLAC goes through soundfile (libsndfile, bundled in its wheel): FLAC is a real codec (LPC and
    Rice coding); writing a decoder would be a project of its own, while libsndfile's is the one audio
    tools on every platform use. Told apart by content, not suffix, so a renamed file still opens.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise AudioFileError(f"{path}: {exc.strerror or exc}") from None
    if magic != b"fLaC":
        return read_wav(path)
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError) as exc:  # LibsndfileError is a RuntimeError
        raise AudioFileError(f"{path}: not a readable FLAC file ({exc})") from None
    if samples.size == 0:
        raise AudioFileError(f"{path}: the FLAC file contains no audio")
    return samples.mean(axis=1, dtype=np.float32), int(rate)


def _parse(data: bytes) -> tuple[np.ndarray, int]:
    if len(data) < 12 or data[8:12] != b"WAVE" or data[:4] not in (b"RIFF", b"RIFX", b"RF64"):
        if data[:4] == b"fLaC":
            raise AudioFileError("FLAC is not supported; convert to WAV (e.g. `sox in.flac out.wav`)")
        if data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
            raise AudioFileError("MP3 is not supported; convert to WAV (e.g. `ffmpeg -i in.mp3 out.wav`)")
        raise AudioFileError("not a WAV file (no RIFF/WAVE header)")
    if data[:4] == b"RIFX":
        raise AudioFileError("big-endian WAV (RIFX) is not supported")
    fmt: tuple[int, int, int, int] | None = None
    samples: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]  # shorter than `size` when the file was cut off
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(body)
        elif chunk_id == b"data":
            samples = body
            if fmt is not None:
                break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise AudioFileError("broken WAV file: no 'fmt ' chunk")
    if samples is None:
        raise AudioFileError("broken WAV file: no 'data' chunk")
    code, channels, rate, bits = fmt
    width = bits // 8
    frame = width * channels
    usable = len(samples) - len(samples) % frame
    raw = samples[:usable]
    if code == _FLOAT:
        if bits not in (32, 64):
            raise AudioFileError(f"{bits}-bit float samples are not supported (32 or 64 only)")
        values = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    elif bits == 8:
        values = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        values = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        values = ints.astype(np.float32) / float(1 << 23)
    elif bits == 32:
        values = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    else:
        raise AudioFileError(f"{bits}-bit PCM samples are not supported (8, 16, 24 or 32 only)")
    values = values.reshape(-1, channels)
    mono = values[:, 0] if channels == 1 else values.mean(axis=1, dtype=np.float32)
    if not np.all(np.isfinite(mono)):
        raise AudioFileError("the file contains NaN or infinite samples")
    return np.ascontiguousarray(mono, dtype=np.float32), rate


def _parse_fmt(body: bytes) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise AudioFileError("broken WAV file: 'fmt ' chunk is too short")
    code, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if code == _EXTENSIBLE:
        if len(body) < 40:
            raise AudioFileError("broken WAV file: EXTENSIBLE 'fmt ' chunk is too short")
        (code,) = struct.unpack_from("<H", body, 24)  # first two bytes of the sub-format GUID
    if code not in (_PCM, _FLOAT):
        raise AudioFileError(f"compressed WAV (format code {code}) is not supported; save as PCM or float WAV")
    if channels < 1 or rate < 1 or bits < 8 or bits % 8:
        raise AudioFileError(f"broken WAV header ({channels} channels, {rate} Hz, {bits} bits)")
    return code, channels, rate, bits


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Write mono float samples in [-1, 1] as 16-bit PCM (what calibration takes and test fixtures use)."""
    clipped = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 32767 / 32768)
    pcm = np.round(clipped * 32768.0).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, _PCM, 1, sample_rate, sample_rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", len(pcm))
    Path(path).write_bytes(header + pcm + (b"\0" if len(pcm) & 1 else b""))
