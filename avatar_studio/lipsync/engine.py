"""The lip-sync engine: audio in (any rate, any chunk size), one ``Frame`` per 10 ms out.

One interface, two modes:

* ``live`` — causal, for the microphone: each hop's features → classifier (a small network over a
  window of frames, optionally calibrated) → gate, hold and attack/release smoothing. A frame for time
  ``t`` is emitted once audio up to ``t + LIVE_LOOKAHEAD_S`` has arrived (the analysis window's right
  half plus two hops the network looks ahead), within the 60 ms budget.
* ``offline`` — for files: pocketsphinx phone decoding of the whole recording, then coarticulated
  soft weights (``offline.py``). ``feed`` only buffers; ``finish`` decodes and returns every frame.

Why the viseme → blendshape step is a matrix product here instead of ``VisemeTable.blendshapes``: it
is the same arithmetic (sum of weight × entry, clamped to [0, 1]) but runs once per hop, and the
per-entry Python loop would be a third of the live CPU budget.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.lipsync.audio_files import read_audio
from avatar_studio.lipsync.classifier import LOOKAHEAD_FRAMES, LiveClassifier, VisemeModel
from avatar_studio.lipsync.features import (
    HOP,
    SAMPLE_RATE,
    WINDOW_LAG,
    FeatureExtractor,
    FrameFeatures,
    Resampler,
    extract_all,
    resample,
)
from avatar_studio.lipsync.offline import decode_phones, segment_weights
from avatar_studio.lipsync.smoothing import Smoother, SmoothingSettings
from avatar_studio.lipsync.viseme_table import VisemeTable

Mode = Literal["live", "offline"]
FRAME_RATE = 100
# audio after t needed for the frame at t: the analysis window's right half (17.5 ms) plus the two
# frames of look-ahead the live network sees (20 ms) = 37.5 ms; with one hop of buffering, 47.5 ms.
LIVE_LOOKAHEAD_S = (WINDOW_LAG + LOOKAHEAD_FRAMES * HOP) / SAMPLE_RATE
assert LIVE_LOOKAHEAD_S <= 0.060


@dataclass(frozen=True)
class Frame:
    """One 10 ms step: ``t`` in seconds, weights of all 15 visemes, and the table's blendshape weights."""

    t: float
    visemes: dict[str, float]
    blendshapes: dict[str, float]


class LipSyncEngine:
    """Streaming lip sync; see the module docstring for the two modes."""

    def __init__(
        self,
        table: VisemeTable | None = None,
        mode: Mode = "live",
        settings: SmoothingSettings | None = None,
        profile: VisemeModel | None = None,
    ) -> None:
        if mode not in ("live", "offline"):
            raise ValueError(f"mode must be 'live' or 'offline', not {mode!r}")
        self.table = table if table is not None else VisemeTable.default()
        self.mode: Mode = mode
        self.settings = settings or SmoothingSettings()
        self.profile = profile
        self._names = self.table.blendshape_names
        column = {name: j for j, name in enumerate(self._names)}
        self._matrix = np.zeros((len(OVR_VISEMES), len(self._names)))
        for i, viseme in enumerate(OVR_VISEMES):
            for name, weight in self.table.get(viseme, ()):
                self._matrix[i, column[name]] += weight
        self._classifier = LiveClassifier(profile) if mode == "live" else None
        self.reset()

    def reset(self) -> None:
        """Start a new stream (time back to 0, smoothing and running means cleared)."""
        self._fx = FeatureExtractor()
        self._smoother = Smoother(self.settings)
        if self._classifier is not None:
            self._classifier.reset()
        self._resampler: Resampler | None = None
        self._offline_chunks: list[np.ndarray] = []
        self._frames_out = 0
        # the classifier's first results describe frames before the stream (its look-ahead fills up)
        self._skip = self._classifier.delay if self._classifier is not None else 0

    # -- streaming ----------------------------------------------------------------------------------------

    def feed(self, pcm: np.ndarray, sample_rate: int) -> list[Frame]:
        """Add audio (int16 or float in [-1, 1]; mono, or (n, channels) which is averaged).

        Live mode returns the frames completed by this chunk; offline mode buffers and returns [].
        A change of ``sample_rate`` mid-stream starts a new resampler (the timeline continues).
        """
        audio = _as_mono_float(pcm)
        if self._resampler is None or self._resampler.rate != sample_rate:
            self._resampler = Resampler(sample_rate)
        audio16 = self._resampler.process(audio)
        if self.mode == "offline":
            self._offline_chunks.append(audio16)
            return []
        return self._live_frames(self._fx.push(audio16))

    def finish(self) -> list[Frame]:
        """End of the stream: live mode returns the last frames, offline mode decodes and returns all."""
        tail = self._resampler.flush() if self._resampler is not None else np.zeros(0)
        if self.mode == "live":
            assert self._classifier is not None
            frames = self._live_frames(self._fx.push(tail) + self._fx.flush())
            for posterior in self._classifier.flush():
                frames.append(self._frame(self._smoother.step(posterior, self._classifier.delayed_level_db)))
            return frames
        audio = np.concatenate([*self._offline_chunks, tail]) if self._offline_chunks else tail
        self._offline_chunks = []
        return self._offline_frames(audio)

    def analyze(self, samples: np.ndarray, sample_rate: int) -> list[Frame]:
        """All frames of a whole signal, one per 10 ms hop that contains audio."""
        self.reset()
        audio = _as_mono_float(samples)
        n_frames = -(-len(audio) * SAMPLE_RATE // sample_rate // HOP) if len(audio) else 0
        if self.mode == "offline":
            frames = self._offline_frames(resample(audio, sample_rate))
        else:
            frames = self.feed(audio, sample_rate) + self.finish()
        self.reset()
        return frames[:n_frames]

    def analyze_file(self, path: str | os.PathLike[str]) -> list[Frame]:
        """Frames of a WAV or FLAC file (``AudioFileError`` for unreadable files)."""
        samples, rate = read_audio(path)
        return self.analyze(samples, rate)

    # -- internals ------------------------------------------------------------------------------------------

    def _live_frames(self, features: list[FrameFeatures]) -> list[Frame]:
        clf = self._classifier
        assert clf is not None
        frames = []
        for f in features:
            posterior = clf.step(f)
            if self._skip:
                self._skip -= 1
                continue
            frames.append(self._frame(self._smoother.step(posterior, clf.delayed_level_db)))
        return frames

    def _frame(self, weights: np.ndarray) -> Frame:
        t = self._frames_out / FRAME_RATE
        self._frames_out += 1
        shapes = np.minimum(weights @ self._matrix, 1.0)
        return Frame(
            round(t, 2),
            dict(zip(OVR_VISEMES, weights.tolist(), strict=True)),
            dict(zip(self._names, shapes.tolist(), strict=True)),
        )

    def _offline_frames(self, audio16: np.ndarray) -> list[Frame]:
        features = extract_all(audio16)
        n_frames = -(-len(audio16) // HOP)
        levels = np.array([f.level_db for f in features[:n_frames]])
        segments = decode_phones(audio16) if len(audio16) else []
        weights = segment_weights(segments, n_frames, levels)
        return [self._frame(row) for row in weights]


def _as_mono_float(pcm: np.ndarray) -> np.ndarray:
    a = np.asarray(pcm)
    if a.dtype == np.int16:
        a = a.astype(np.float64) / 32768.0
    elif a.dtype.kind in "iu":
        raise ValueError(f"integer audio must be int16, got {a.dtype}")
    else:
        a = a.astype(np.float64, copy=False)
    if a.ndim == 2:
        a = a.mean(axis=1)
    elif a.ndim != 1:
        raise ValueError(f"audio must be 1-D (mono) or 2-D (samples × channels), got shape {a.shape}")
    return a
