"""Microphone input over sounddevice (PortAudio), without Qt: devices, a capture stream, a level meter.

Why the audio callback does nothing but copy into a ring buffer: PortAudio calls it on its real-time
thread with a deadline of one block (a few ms). Anything slower — feature extraction, logging, a Qt
signal, even a lock that the GUI thread may hold — risks dropouts that sound and look like a broken
microphone. Consumers drain the buffer on their own schedule (``read_available``), or pass a
``callback`` which a separate pump thread calls with each new chunk.

Why every failure becomes an ``AudioDeviceError`` with a sentence for a human: the tester sees these
messages in the GUI and the CLI, and "PortAudioError: Error querying device -1" tells nobody that
there is simply no microphone. A device that vanishes mid-stream (USB headset unplugged, PulseAudio
restarted) shows up as a stream that stops, a stream that falls silent, or PortAudio status flags; all
three end in the same error on the next ``read_available``.

Why PortAudio is imported lazily: ``import sounddevice`` raises OSError when the shared library
``libportaudio2`` is missing, and the rest of the lip-sync code (offline analysis, tables) must keep
working on such a machine.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from avatar_studio.lipsync.audio_files import write_wav

__all__ = [
    "AudioDeviceError",
    "InputDevice",
    "MicrophoneStream",
    "Recorder",
    "default_input_device",
    "list_input_devices",
    "load_sounddevice",
    "resample",
    "rms_dbfs",
]

SILENCE_DBFS = -120.0
"""What ``level()`` reports for digital silence (the log of zero is not a number a meter can show)."""

_PORTAUDIO_HINT = (
    "the PortAudio library is not installed, so no microphone or speaker can be used; "
    "install the Debian/Ubuntu package libportaudio2 (apt-get install libportaudio2)"
)
_NO_INPUT_HINT = (
    "no microphone found: the system reports no audio input device. Plug in a microphone, or check that the "
    "sound server (PulseAudio/PipeWire) is running for this user"
)


class AudioDeviceError(RuntimeError):
    """An audio device cannot be used; the message is meant to be shown to the user as is."""


def load_sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio library into an ``AudioDeviceError``."""
    try:
        import sounddevice
    except OSError as exc:  # raised by sounddevice itself when libportaudio is absent
        raise AudioDeviceError(_PORTAUDIO_HINT) from exc
    except ImportError as exc:
        raise AudioDeviceError(f"the Python package sounddevice is not installed ({exc})") from exc
    return sounddevice


@dataclass(frozen=True)
class InputDevice:
    """One capture device as PortAudio lists it."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    default_sample_rate: float
    is_default: bool

    def __str__(self) -> str:
        mark = " (default)" if self.is_default else ""
        return f"{self.index}: {self.name} [{self.host_api}, {self.default_sample_rate:g} Hz]{mark}"


def _query_all(sd: ModuleType) -> list[dict[str, Any]]:
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot list audio devices: {exc}") from exc
    return [dict(d) for d in devices]


def _default_index(sd: ModuleType, kind: str) -> int:
    try:
        return int(sd.query_devices(kind=kind)["index"])
    except (sd.PortAudioError, ValueError, KeyError, TypeError):
        return -1


def list_input_devices() -> list[InputDevice]:
    """Every device with at least one input channel, the system default marked; empty when there are none."""
    sd = load_sounddevice()
    devices = _query_all(sd)
    try:
        apis = [a["name"] for a in sd.query_hostapis()]
    except sd.PortAudioError:
        apis = []
    default = _default_index(sd, "input")
    return [
        InputDevice(
            index=i,
            name=str(d["name"]),
            host_api=apis[d["hostapi"]] if 0 <= d["hostapi"] < len(apis) else "?",
            max_input_channels=int(d["max_input_channels"]),
            default_sample_rate=float(d["default_samplerate"]),
            is_default=i == default,
        )
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]


def _resolve_input(device: int | str | None) -> InputDevice:
    devices = list_input_devices()
    if not devices:
        raise AudioDeviceError(_NO_INPUT_HINT)
    if device is None:
        for d in devices:
            if d.is_default:
                return d
        raise AudioDeviceError("no default microphone is set; choose one of: " + "; ".join(str(d) for d in devices))
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        index = int(device)
        for d in devices:
            if d.index == index:
                return d
        raise AudioDeviceError(
            f"there is no microphone with id {index}; available: " + "; ".join(str(d) for d in devices)
        )
    matches = [d for d in devices if str(device).lower() in d.name.lower()]
    exact = [d for d in matches if d.name.lower() == str(device).lower()]
    if len(exact) == 1 or len(matches) == 1:
        return (exact or matches)[0]
    if not matches:
        raise AudioDeviceError(f"no microphone is called {device!r}; available: " + "; ".join(str(d) for d in devices))
    raise AudioDeviceError(f"{device!r} matches several microphones: " + "; ".join(str(d) for d in matches))


def default_input_device() -> InputDevice:
    """The microphone ``MicrophoneStream()`` would open, or ``AudioDeviceError`` saying why there is none."""
    return _resolve_input(None)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is −3 dBFS); ``SILENCE_DBFS`` for silence."""
    if samples.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(SILENCE_DBFS, 20.0 * math.log10(rms)) if rms > 0 else SILENCE_DBFS


def resample(samples: np.ndarray, from_rate: float, to_rate: float) -> np.ndarray:
    """Polyphase resampling to another rate (devices run at 44.1/48 kHz; the analysis wants 16 kHz)."""
    if round(from_rate) == round(to_rate):
        return samples.astype(np.float32, copy=False)
    from fractions import Fraction

    from scipy.signal import resample_poly

    ratio = Fraction(round(to_rate), round(from_rate))
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


class MicrophoneStream:
    """Capture float32 mono audio from a microphone at the device's own rate.

    ``device`` is None (system default), an index from ``list_input_devices`` or part of a device name.
    ``sample_rate`` defaults to the device's default rate, which avoids a second resampler inside
    PortAudio/ALSA; a rate the device refuses falls back to its default (``rate_note`` says so).
    ``callback(chunk, t_s)``, if given, is called on a pump thread — never the audio thread — with each
    new chunk and the stream time (s) of its first sample; it then owns the data (``read_available``
    returns nothing). Without it, poll ``read_available()``.

    The ring buffer keeps ``buffer_s`` seconds; a consumer that falls further behind loses the oldest
    audio (counted in ``dropped_samples``) rather than blocking the audio thread.
    """

    STALL_S = 1.0
    """A running stream that delivers nothing for this long is treated as a vanished device."""

    def __init__(
        self,
        device: int | str | None = None,
        callback: Callable[[np.ndarray, float], None] | None = None,
        sample_rate: float | None = None,
        block_s: float = 0.01,
        buffer_s: float = 10.0,
    ) -> None:
        self._sd = load_sounddevice()
        self.device = _resolve_input(device)
        self.rate_note = ""
        self.sample_rate = self._pick_rate(sample_rate)
        self.block_size = max(1, round(self.sample_rate * block_s))
        self._ring = np.zeros(max(int(self.sample_rate * buffer_s), 4 * self.block_size), dtype=np.float32)
        self._written = 0  # total samples ever written (only the audio thread changes it)
        self._read = 0  # total samples handed to the consumer
        self.dropped_samples = 0
        self._status_flags: list[str] = []
        self._finished = False
        self._last_callback = 0.0
        self._started = False
        self._closed = False
        self._user_callback = callback
        self._pump: threading.Thread | None = None
        self._pump_stop = threading.Event()
        self.error: AudioDeviceError | None = None
        try:
            self._stream = self._sd.InputStream(
                device=self.device.index,
                samplerate=self.sample_rate,
                channels=1,
                dtype="float32",
                blocksize=self.block_size,
                callback=self._audio_callback,
                finished_callback=self._on_finished,
            )
        except self._sd.PortAudioError as exc:
            raise AudioDeviceError(f"cannot open the microphone {self.device.name!r}: {exc}") from exc

    def _pick_rate(self, wanted: float | None) -> float:
        default = self.device.default_sample_rate or 48000.0
        rate = float(wanted or default)
        try:
            self._sd.check_input_settings(device=self.device.index, channels=1, dtype="float32", samplerate=rate)
            return rate
        except (self._sd.PortAudioError, ValueError) as exc:
            if rate == default:
                raise AudioDeviceError(f"the microphone {self.device.name!r} cannot be opened: {exc}") from exc
            self.rate_note = f"{rate:g} Hz is not supported by {self.device.name!r}; using its default {default:g} Hz"
            return float(default)

    # -- the real-time side: copy, note the time, nothing else -----------------------------------------
    def _audio_callback(self, indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        if status:
            self._status_flags.append(str(status))
        ring, size = self._ring, len(self._ring)
        start = self._written % size
        first = min(frames, size - start)
        ring[start : start + first] = indata[:first, 0]
        if first < frames:
            ring[: frames - first] = indata[first:frames, 0]
        self._written += frames
        self._last_callback = time.monotonic()

    def _on_finished(self) -> None:
        self._finished = True

    # -- the consumer side --------------------------------------------------------------------------------
    def start(self) -> MicrophoneStream:
        if self._closed:
            raise AudioDeviceError("this microphone stream was closed; open a new one")
        try:
            self._stream.start()
        except self._sd.PortAudioError as exc:
            raise AudioDeviceError(f"the microphone {self.device.name!r} could not be started: {exc}") from exc
        self._started = True
        self._finished = False
        self._last_callback = time.monotonic()
        if self._user_callback is not None and self._pump is None:
            self._pump_stop.clear()
            self._pump = threading.Thread(target=self._run_pump, name="mic-pump", daemon=True)
            self._pump.start()
        return self

    def stop(self) -> None:
        """Stop capturing; audio already buffered can still be read."""
        self._started = False
        self._pump_stop.set()
        if self._pump is not None and self._pump is not threading.current_thread():
            self._pump.join(timeout=2.0)
        self._pump = None
        with contextlib.suppress(self._sd.PortAudioError):
            self._stream.stop()

    def close(self) -> None:
        self.stop()
        if not self._closed:
            self._closed = True
            with contextlib.suppress(self._sd.PortAudioError):
                self._stream.close()

    def __enter__(self) -> MicrophoneStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._started and self.error is None

    @property
    def samples_captured(self) -> int:
        return self._written

    @property
    def latency_s(self) -> float:
        """PortAudio's input latency estimate (time from the microphone to the callback)."""
        return float(self._stream.latency)

    def check(self) -> None:
        """Raise ``AudioDeviceError`` if the device has disappeared or failed since the last check."""
        if self.error is not None:
            raise self.error
        if not self._started:
            return
        problem = ""
        if self._finished or not self._stream.active:
            problem = "the stream stopped by itself"
        elif time.monotonic() - self._last_callback > self.STALL_S:
            problem = f"no audio arrived for {time.monotonic() - self._last_callback:.1f} s"
        if problem:
            flags = f" (PortAudio reported: {', '.join(sorted(set(self._status_flags)))})" if self._status_flags else ""
            self.error = AudioDeviceError(
                f"the microphone {self.device.name!r} stopped delivering audio — {problem}{flags}. "
                "It may have been unplugged or the sound server restarted; choose the microphone again to continue."
            )
            self._started = False
            raise self.error

    def status_flags(self) -> list[str]:
        """PortAudio status messages seen so far (input overflow etc.), then cleared."""
        flags, self._status_flags = self._status_flags, []
        return flags

    def read_available(self) -> np.ndarray:
        """Everything captured since the last call, as float32 mono; raises if the device went away.

        Audio still in the buffer is returned first, so the last words before a failure are not lost;
        the error is raised on the following call.
        """
        written = self._written
        size = len(self._ring)
        if written - self._read > size:
            self.dropped_samples += written - self._read - size
            self._read = written - size
        count = written - self._read
        if count == 0:
            self.check()
            return np.zeros(0, dtype=np.float32)
        start = self._read % size
        first = min(count, size - start)
        out = np.empty(count, dtype=np.float32)
        out[:first] = self._ring[start : start + first]
        out[first:] = self._ring[: count - first]
        # The writer may have lapped us while we copied (a consumer stalled for ~buffer_s): drop what it overwrote.
        overrun = self._written - self._read - size
        if overrun > 0:
            out = out[overrun:]
            self.dropped_samples += overrun
        self._read = written
        return out

    def level(self, window_s: float = 0.05) -> float:
        """RMS level (dBFS) of the newest ``window_s`` of audio, for an input meter; does not consume audio."""
        n = min(max(1, round(window_s * self.sample_rate)), len(self._ring), self._written)
        if n <= 0:
            return SILENCE_DBFS
        end = self._written % len(self._ring)
        idx = np.arange(end - n, end) % len(self._ring)
        return rms_dbfs(self._ring[idx])

    def _run_pump(self) -> None:
        assert self._user_callback is not None
        consumed = 0
        while not self._pump_stop.wait(self.block_size / self.sample_rate):
            try:
                chunk = self.read_available()
            except AudioDeviceError:
                return
            if chunk.size:
                self._user_callback(chunk, consumed / self.sample_rate)
                consumed += chunk.size


class Recorder:
    """Keeps a microphone session's audio so it can be saved as WAV and replayed for review.

    Why a separate object and not a flag on the stream: recording is a consumer decision (the tester
    presses Record while the live view keeps running), and it must never add work to the audio thread.
    """

    def __init__(self, sample_rate: float, max_s: float = 600.0) -> None:
        self.sample_rate = float(sample_rate)
        self.max_samples = int(max_s * sample_rate)
        self._chunks: list[np.ndarray] = []
        self._count = 0
        self.truncated = False

    def append(self, samples: np.ndarray) -> None:
        """Add audio (float32 mono); beyond ``max_s`` the rest is ignored and ``truncated`` is set."""
        room = self.max_samples - self._count
        if room <= 0:
            self.truncated = self.truncated or samples.size > 0
            return
        if samples.size > room:
            samples = samples[:room]
            self.truncated = True
        self._chunks.append(np.asarray(samples, dtype=np.float32).copy())
        self._count += samples.size

    @property
    def duration_s(self) -> float:
        return self._count / self.sample_rate

    def samples(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    def clear(self) -> None:
        self._chunks, self._count, self.truncated = [], 0, False

    def save(self, path: str | Path) -> Path:
        """Write 16-bit mono WAV at the capture rate (what ``audio_files.read_wav`` and WAV playback load)."""
        path = Path(path)
        write_wav(path, self.samples(), round(self.sample_rate))
        return path

    def chunks(self, hop_s: float = 0.01) -> Iterator[np.ndarray]:
        """Replay the session in hops of ``hop_s`` (as the microphone delivered it) to re-run the analysis."""
        data = self.samples()
        hop = max(1, round(hop_s * self.sample_rate))
        for i in range(0, len(data), hop):
            yield data[i : i + hop]
