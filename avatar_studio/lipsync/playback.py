"""WAV playback through sounddevice with a clock the mouth animation can follow.

Why a clock and not "start the audio and start a timer": the sound reaches the speaker one output
latency after the callback hands it over (tens of ms with PulseAudio), and a timer drifts from the
sound card's own clock over a long clip. ``position_s`` is computed from PortAudio's DAC timestamps, so
it says which sample is *audible now*.

Why an audio delay: a live lip-sync engine needs look-ahead and processing time, so its mouth shape
for a sound is ready only some tens of ms after the sound was fed to it; delaying the *audio* by the
same amount lines the two up (HeadAudio and others recommend 50–100 ms). The model is:

* the mouth clock (``mouth_position_s``) starts at 0 when playback starts and runs with the sound card;
  feed the engine audio up to it, or show offline visemes at it;
* the audio that is heard lags the mouth clock by ``audio_delay_s``: ``position_s = mouth − delay``.

A negative delay is allowed and makes the mouth lag the sound instead (useful when rendering adds
latency). The output callback only copies samples; all bookkeeping is two integers and a timestamp.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from avatar_studio.lipsync.audio_files import AudioFileError, read_audio
from avatar_studio.lipsync.audio_input import AudioDeviceError, load_sounddevice, resample

__all__ = ["OutputDevice", "PlaybackError", "WavPlayer", "list_output_devices"]


class PlaybackError(AudioDeviceError):
    """Playback is impossible (no output device, unreadable file); the message is for the user."""


_NO_OUTPUT_HINT = (
    "no audio output device: the system reports no speaker or headphones. The lip-sync can still be "
    "reviewed without sound; to hear it, connect an output device or start the sound server (PulseAudio/PipeWire)"
)


class OutputDevice:
    """One playback device as PortAudio lists it."""

    def __init__(self, index: int, name: str, default_sample_rate: float, is_default: bool) -> None:
        self.index = index
        self.name = name
        self.default_sample_rate = default_sample_rate
        self.is_default = is_default

    def __repr__(self) -> str:
        mark = ", default" if self.is_default else ""
        return f"OutputDevice({self.index}, {self.name!r}, {self.default_sample_rate:g} Hz{mark})"


def list_output_devices() -> list[OutputDevice]:
    """Every device with an output channel, the system default marked."""
    sd = load_sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise PlaybackError(f"cannot list audio devices: {exc}") from exc
    try:
        default = int(sd.query_devices(kind="output")["index"])
    except (sd.PortAudioError, ValueError, KeyError, TypeError):
        default = -1
    return [
        OutputDevice(i, str(d["name"]), float(d["default_samplerate"]), i == default)
        for i, d in enumerate(devices)
        if d["max_output_channels"] > 0
    ]


def _resolve_output(device: int | str | None) -> OutputDevice:
    devices = list_output_devices()
    if not devices:
        raise PlaybackError(_NO_OUTPUT_HINT)
    if device is None:
        for d in devices:
            if d.is_default:
                return d
        raise PlaybackError("no default audio output is set; choose one of: " + "; ".join(map(repr, devices)))
    if isinstance(device, int) or str(device).strip().isdigit():
        for d in devices:
            if d.index == int(device):
                return d
        raise PlaybackError(f"there is no audio output with id {device}; available: " + "; ".join(map(repr, devices)))
    matches = [d for d in devices if str(device).lower() in d.name.lower()]
    exact = [d for d in matches if d.name.lower() == str(device).lower()]
    if len(exact) == 1 or len(matches) == 1:
        return (exact or matches)[0]
    raise PlaybackError(
        f"{device!r} does not name exactly one audio output; available: " + "; ".join(map(repr, devices))
    )


class WavPlayer:
    """Play a WAV file (or float32 samples) once, with ``position_s()`` for the mouth to follow.

    ``source`` is a path or ``(samples, sample_rate)``. The file is resampled to the device's rate only
    when the device refuses the file's own rate; positions are always in seconds of the source.
    ``audio_delay_s`` may be changed while playing (the sound jumps by the difference).
    """

    def __init__(
        self,
        source: str | Path | tuple[np.ndarray, int],
        device: int | str | None = None,
        audio_delay_s: float = 0.0,
        block_s: float = 0.01,
    ) -> None:
        self._sd = load_sounddevice()
        if isinstance(source, tuple):
            samples, rate = source
            samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        else:
            try:
                samples, rate = read_audio(source)
            except AudioFileError as exc:
                raise PlaybackError(f"cannot play {exc}") from exc
        self.source_rate = int(rate)
        self.duration_s = len(samples) / self.source_rate
        self.device = _resolve_output(device)
        self.sample_rate = self._pick_rate(self.source_rate)
        self._data = samples if self.sample_rate == self.source_rate else resample(samples, rate, self.sample_rate)
        self._delay = round(audio_delay_s * self.sample_rate)
        self._frames_out = 0  # frames handed to PortAudio since start (the mouth clock, in device frames)
        self._dac_frame = 0  # first frame of the newest buffer …
        self._dac_time = -1.0  # … and the stream time at which it reaches the DAC
        self._done = threading.Event()
        self._started = False
        self._closed = False
        self.status_flags: list[str] = []
        try:
            self._stream = self._sd.OutputStream(
                device=self.device.index,
                samplerate=self.sample_rate,
                channels=1,
                dtype="float32",
                blocksize=max(1, round(block_s * self.sample_rate)),
                callback=self._callback,
                finished_callback=self._done.set,
            )
        except self._sd.PortAudioError as exc:
            raise PlaybackError(f"cannot open the audio output {self.device.name!r}: {exc}") from exc

    def _pick_rate(self, rate: int) -> int:
        for candidate in (rate, round(self.device.default_sample_rate or 48000)):
            try:
                self._sd.check_output_settings(
                    device=self.device.index, channels=1, dtype="float32", samplerate=candidate
                )
                return int(candidate)
            except (self._sd.PortAudioError, ValueError):
                continue
        raise PlaybackError(f"the audio output {self.device.name!r} accepts neither {rate} Hz nor its default rate")

    # -- real-time side: copy samples, remember where they land in time --------------------------------
    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status:
            self.status_flags.append(str(status))
        self._dac_frame = self._frames_out
        self._dac_time = time_info.outputBufferDacTime
        src = self._frames_out - self._delay
        out = outdata[:, 0]
        out.fill(0.0)
        lo, hi = max(src, 0), min(src + frames, len(self._data))
        if hi > lo:
            out[lo - src : hi - src] = self._data[lo:hi]
        self._frames_out += frames
        if src + frames >= len(self._data) and src >= -frames:
            raise self._sd.CallbackStop

    # -- control -----------------------------------------------------------------------------------------
    def start(self) -> WavPlayer:
        if self._closed:
            raise PlaybackError("this player was closed; create a new one")
        try:
            self._stream.start()
        except self._sd.PortAudioError as exc:
            raise PlaybackError(f"the audio output {self.device.name!r} could not be started: {exc}") from exc
        self._started = True
        return self

    def stop(self) -> None:
        with contextlib.suppress(self._sd.PortAudioError):
            self._stream.stop()
        self._done.set()

    def close(self) -> None:
        self.stop()
        if not self._closed:
            self._closed = True
            with contextlib.suppress(self._sd.PortAudioError):
                self._stream.close()

    def __enter__(self) -> WavPlayer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the clip (and the delay) has played out; False on timeout."""
        if not self._done.wait(timeout):
            return False
        # CallbackStop lets PortAudio drain its buffers; the stream is inactive once they are heard.
        deadline = time.monotonic() + max(0.5, 2 * self.output_latency_s)
        while self._stream.active and time.monotonic() < deadline:
            time.sleep(0.005)
        return True

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def audio_delay_s(self) -> float:
        return self._delay / self.sample_rate

    @audio_delay_s.setter
    def audio_delay_s(self, seconds: float) -> None:
        self._delay = round(seconds * self.sample_rate)

    @property
    def output_latency_s(self) -> float:
        return float(self._stream.latency)

    def mouth_position_s(self) -> float:
        """The mouth clock: seconds of output since start, as heard (0 before the first sound)."""
        if not self._started or self._dac_time < 0:
            return 0.0
        try:
            now = self._stream.time if self._stream.active else None
        except self._sd.PortAudioError:  # the stream has just stopped: PortAudio has no clock any more
            now = None
        if now is None:
            return self._frames_out / self.sample_rate if self.finished else self._dac_frame / self.sample_rate
        return max(0.0, self._dac_frame / self.sample_rate + (now - self._dac_time))

    def position_s(self) -> float:
        """Seconds of the source that are audible now, clamped to [0, duration]."""
        return min(self.duration_s, max(0.0, self.mouth_position_s() - self.audio_delay_s))
