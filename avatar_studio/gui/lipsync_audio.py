"""The lip-sync panel's audio side, without Qt: a pausable clip player, the mic worker, background analysis.

Why these live apart from the panel and import no Qt: everything here runs on, or is shared with,
threads other than the GUI thread. Keeping Qt out means no Qt object is ever touched off the GUI
thread by accident; the panel polls these objects from its display timer instead of receiving
signals, so a worker that outlives a closed panel can never emit into a deleted QObject.

* ``ClipPlayback`` — ``WavPlayer`` plays a clip once from the start; QA needs pause/resume and must
  also be able to review on a machine without any audio output (CI, remote desktops, a laptop whose
  sound server is down). Without an output device it runs the same clock model silently on
  ``time.monotonic`` and says why in ``silent_reason``: the mouth, bars and timeline still move in
  real time, which is what a mapping review needs, and the user is told plainly that nothing will be
  heard instead of being refused.
* ``MicWorker`` — reads the microphone and runs the live engine on its own thread (the engine costs
  ~0.1 ms per 10 ms hop, but a GUI hiccup must never drop audio and a busy engine must never stall
  the GUI). Frames go into a lock-protected ``FrameBox``; the GUI takes the newest one per display
  frame and the rest only for the timeline.
* ``AnalysisJob`` — a whole clip through the engine on a thread (offline pocketsphinx decoding has
  to see the whole file; the live engine over a file is cheap but a long file still takes a moment).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.lipsync.audio_input import SILENCE_DBFS, AudioDeviceError, MicrophoneStream, Recorder
from avatar_studio.lipsync.engine import Frame, LipSyncEngine
from avatar_studio.lipsync.playback import WavPlayer

__all__ = ["AnalysisJob", "ClipPlayback", "FrameBox", "FrameTrack", "MicWorker", "viseme_vector"]

N_VISEMES = len(OVR_VISEMES)


def viseme_vector(frame: Frame) -> np.ndarray:
    """A frame's 15 viseme weights as an array in OVR order (what the bars, timeline and mapping use)."""
    return np.fromiter((frame.visemes.get(v, 0.0) for v in OVR_VISEMES), np.float64, N_VISEMES)


@dataclass(frozen=True)
class FrameTrack:
    """Every frame of an analysed clip: ``times`` (n,) in seconds and ``weights`` (n, 15).

    Kept as arrays rather than ``Frame`` objects so finding the frame for a clock time is one
    ``searchsorted`` and a timeline window is a slice, not a Python loop, on every display frame.
    """

    times: np.ndarray
    weights: np.ndarray

    @classmethod
    def from_frames(cls, frames: list[Frame]) -> FrameTrack:
        times = np.array([f.t for f in frames], dtype=np.float64)
        weights = np.array([viseme_vector(f) for f in frames]).reshape(len(frames), N_VISEMES)
        return cls(times, weights)

    def __len__(self) -> int:
        return len(self.times)

    def index_at(self, t: float) -> int:
        """Index of the newest frame at or before ``t`` (-1 before the first frame)."""
        return int(np.searchsorted(self.times, t, side="right")) - 1

    def window(self, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        lo = int(np.searchsorted(self.times, start, side="left"))
        hi = int(np.searchsorted(self.times, end, side="right"))
        return self.times[lo:hi], self.weights[lo:hi]


# -- playback ------------------------------------------------------------------------------------------


class ClipPlayback:
    """Play float32 mono ``samples`` with pause/resume, audibly if possible, else silently on a clock.

    The clock model is ``WavPlayer``'s: the *mouth clock* runs from 0 and the audio that is heard lags
    it by ``audio_delay_s`` (``position_s = mouth − delay``). Resuming starts a new ``WavPlayer`` on
    the rest of the clip, so the mouth clock is continued through an offset. Resume picks the offset
    so the *audio* continues exactly where it was paused (nothing heard is skipped); the mouth
    replays the last ``delay`` of frames, which is the lesser evil for a reviewer listening closely.
    """

    def __init__(self, samples: np.ndarray, sample_rate: int, audio_delay_s: float = 0.0) -> None:
        self.samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.sample_rate = int(sample_rate)
        self.duration_s = len(self.samples) / self.sample_rate if self.sample_rate else 0.0
        self._delay = float(audio_delay_s)
        self._offset = 0.0  # mouth-clock seconds before the current player / silent run started
        self._paused_mouth = 0.0
        self._player: WavPlayer | None = None
        self._t0: float | None = None  # monotonic start of a silent run
        self.state = "stopped"  # "playing", "paused" or "stopped"
        self.silent_reason: str | None = None
        """Why the last ``play`` is silent (no output device, no PortAudio…); None when it is audible."""

    # -- control ------------------------------------------------------------------------------------------

    def play(self) -> None:
        """Start or resume. Falls back to the silent clock when no audio output can be opened."""
        if self.state == "playing":
            return
        if self.state == "paused":
            heard = max(0.0, self._paused_mouth - self._delay)
            self._offset = min(self.duration_s, max(0.0, heard + min(self._delay, 0.0)))
        else:
            self._offset = 0.0
        start = round(self._offset * self.sample_rate)
        self.silent_reason = None
        self._player = None
        try:
            player = WavPlayer((self.samples[start:], self.sample_rate), audio_delay_s=self._delay)
        except AudioDeviceError as exc:  # PlaybackError is one; so is a missing PortAudio library
            self.silent_reason = str(exc)
        else:
            try:
                self._player = player.start()
            except AudioDeviceError as exc:
                player.close()
                self.silent_reason = str(exc)
        self._t0 = time.monotonic()
        self.state = "playing"

    def pause(self) -> None:
        if self.state != "playing":
            return
        self._paused_mouth = self.mouth_position_s()
        self._close_player()
        self.state = "paused"

    def stop(self) -> None:
        self._close_player()
        self._offset = self._paused_mouth = 0.0
        self.state = "stopped"

    close = stop

    def _close_player(self) -> None:
        player, self._player = self._player, None
        if player is not None:
            player.close()

    # -- clocks -------------------------------------------------------------------------------------------

    @property
    def audible(self) -> bool:
        return self._player is not None

    @property
    def audio_delay_s(self) -> float:
        return self._delay

    @audio_delay_s.setter
    def audio_delay_s(self, seconds: float) -> None:
        self._delay = float(seconds)
        if self._player is not None:
            self._player.audio_delay_s = self._delay

    def mouth_position_s(self) -> float:
        """The mouth clock in seconds of the clip (frozen while paused, 0 when stopped)."""
        if self.state == "paused":
            return self._paused_mouth
        if self.state == "stopped":
            return 0.0
        if self._player is not None:
            return self._offset + self._player.mouth_position_s()
        assert self._t0 is not None
        return self._offset + (time.monotonic() - self._t0)

    def position_s(self) -> float:
        """Seconds of the clip that are audible now (or would be, when silent), clamped to the clip."""
        return min(self.duration_s, max(0.0, self.mouth_position_s() - self._delay))

    @property
    def finished(self) -> bool:
        """Both the mouth and the sound have reached the end of the clip."""
        return self.state == "playing" and self.mouth_position_s() >= self.duration_s + max(0.0, self._delay)


# -- the live microphone ---------------------------------------------------------------------------------


class FrameBox:
    """The hand-over point between the mic worker and the GUI: newest frames, level and error, under a lock.

    Why a box and not a queued Qt signal per frame: frames come every 10 ms, the display every 16 ms;
    a signal per frame would queue 100 events a second that the GUI mostly throws away. The deque is
    bounded so a GUI that stalls (a modal dialog) cannot make it grow without limit.
    """

    def __init__(self, keep: int = 1000) -> None:
        self._lock = threading.Lock()
        self._frames: deque[tuple[float, np.ndarray]] = deque(maxlen=keep)
        self._level = SILENCE_DBFS
        self._error: str | None = None

    def push(self, frames: list[tuple[float, np.ndarray]], level_db: float) -> None:
        with self._lock:
            self._frames.extend(frames)
            self._level = level_db

    def fail(self, message: str) -> None:
        with self._lock:
            self._error = message

    def take(self) -> tuple[list[tuple[float, np.ndarray]], float, str | None]:
        """Everything pushed since the last call, the newest level, and the worker's error if any."""
        with self._lock:
            frames = list(self._frames)
            self._frames.clear()
            return frames, self._level, self._error


class MicWorker(threading.Thread):
    """Reads ``mic`` every hop, records if asked, feeds the engine, fills ``box``; see the module docstring.

    ``replace_engine`` swaps in a new engine (new smoothing or profile) without stopping the mic; the
    timeline continues because frame times are offset by the session time reached so far.
    """

    POLL_S = 0.01

    def __init__(self, mic: MicrophoneStream, engine: LipSyncEngine, box: FrameBox) -> None:
        super().__init__(name="lipsync-mic", daemon=True)
        self.mic = mic
        self.box = box
        self.sample_rate = round(mic.sample_rate)
        self._engine = engine
        self._next_engine: LipSyncEngine | None = None
        self._recorder: Recorder | None = None
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._t_offset = 0.0
        self._last_t = -0.01

    def replace_engine(self, engine: LipSyncEngine) -> None:
        with self._lock:
            self._next_engine = engine

    def set_recorder(self, recorder: Recorder | None) -> None:
        with self._lock:
            self._recorder = recorder

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=2.0)

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.POLL_S):
                try:
                    chunk = self.mic.read_available()
                except AudioDeviceError as exc:
                    self.box.fail(str(exc))
                    return
                with self._lock:
                    if self._next_engine is not None:
                        self._engine, self._next_engine = self._next_engine, None
                        self._t_offset = self._last_t + 0.01
                    if chunk.size and self._recorder is not None:  # under the lock: the GUI may swap it out
                        self._recorder.append(chunk)
                if not chunk.size:
                    continue
                frames = self._engine.feed(chunk, self.sample_rate)
                out = [(f.t + self._t_offset, viseme_vector(f)) for f in frames]
                if out:
                    self._last_t = out[-1][0]
                self.box.push(out, self.mic.level())
        except Exception as exc:  # a bug must reach the user as a message, not kill the thread silently
            self.box.fail(f"the live analysis stopped: {type(exc).__name__}: {exc}")


# -- background analysis of a whole clip ------------------------------------------------------------------


class AnalysisJob(threading.Thread):
    """``engine.analyze(samples, rate)`` on a thread; the GUI polls ``done`` and reads ``track``/``error``.

    ``key`` identifies what was analysed (clip, mode, engine settings) so a result that arrives after
    the user changed any of them is recognised as stale and dropped. There is no way to interrupt
    pocketsphinx mid-decode, so ``cancel`` only marks the result as unwanted; ``shutdown`` joins.
    """

    def __init__(self, engine: LipSyncEngine, samples: np.ndarray, sample_rate: int, key: object) -> None:
        super().__init__(name="lipsync-analysis", daemon=True)
        self.engine = engine
        self.samples = samples
        self.sample_rate = sample_rate
        self.key = key
        self.track: FrameTrack | None = None
        self.error: str | None = None
        self.cancelled = False
        self._done = threading.Event()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        self.cancelled = True

    def run(self) -> None:
        try:
            self.track = FrameTrack.from_frames(self.engine.analyze(self.samples, self.sample_rate))
        except Exception as exc:  # OfflineUnavailable, a broken profile…: shown in the panel
            self.error = str(exc) or type(exc).__name__
        finally:
            self._done.set()

    def finish(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(RuntimeError):  # never started
            self.join(timeout)
