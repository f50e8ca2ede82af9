"""Turning per-hop classifier posteriors into mouth motion that looks good: gate, hold, attack/release.

Why each piece (design notes §1.8):

* **Loudness gate.** Every working live system scales the mouth by volume; otherwise room noise
  animates it. The gate opens between ``gate_open_db`` and ``gate_full_db`` above a slowly tracked
  noise floor, so a noisy room raises the threshold instead of leaving the mouth chattering.
* **Minimum hold.** Raw frame decisions change ~13 times a second; a hold reduces that (HeadAudio users
  judged ~120 ms "much better"; the default is shorter because the classifier's forward filter already
  removes one-frame flickers, and a long hold costs accuracy on short phones). The held viseme must
  also be beaten by a margin (hysteresis) so two close scores do not flip back and forth. Decisions are
  made between *mouth shapes* (the scoring classes: the seven consonant visemes T, D, K, CH, S, N, R
  share one shape) by summed posterior, then the best viseme of the winning shape is shown — seven
  small consonant scores should not lose to one middling vowel.
* **Soft weights.** The held viseme gets most of the weight but a share of the raw posterior stays,
  so the mouth blends between neighbours as OVRLipSync's soft output does instead of snapping.
* **Attack/release.** Opening is fast (a plosive release is abrupt), closing is slower (lips ease
  back); both apply to every viseme channel and to the openness, with time constants in ms.

Everything is per 10 ms hop with plain floats and small arrays: the whole step costs a few µs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.lipsync.phonemes import VISEME_CLASS

HOP_S = 0.01
N_VISEMES = len(OVR_VISEMES)
SIL = 0
_SPEAKING_CLASSES = sorted({VISEME_CLASS[v] for v in OVR_VISEMES[1:]})
# (14, n classes) membership of the speaking visemes in the visible mouth shapes (MBP, FV, A … C)
_MEMBER = np.array([[VISEME_CLASS[v] == c for c in _SPEAKING_CLASSES] for v in OVR_VISEMES[1:]], dtype=float)
_CLASS_OF = _MEMBER.argmax(axis=1)


@dataclass(frozen=True)
class SmoothingSettings:
    """Knobs for the live mouth (times in ms, levels in dBFS); defaults are what the tester ships with."""

    min_hold_ms: float = 30.0  # a new dominant mouth shape must wait until the current one was shown this long
    attack_ms: float = 25.0  # time constant for rising weights (mouth opening, viseme fading in)
    release_ms: float = 60.0  # time constant for falling weights (mouth closing, viseme fading out)
    hysteresis: float = 0.1  # posterior margin a challenger needs over the held viseme
    softness: float = 0.3  # share of the raw posterior mixed into the held viseme (0 = hard shapes)
    gate_open_db: float = -50.0  # below this level (or the noise floor + margin) the mouth stays shut
    gate_full_db: float = -25.0  # at and above this level the mouth opens fully
    noise_margin_db: float = 10.0  # the gate opens this far above the tracked noise floor
    noise_rise_db_per_s: float = 1.0  # how fast the noise-floor estimate may rise (it falls at once)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"smoothing setting {f.name} must be a finite number, got {value!r}")
        for name in ("min_hold_ms", "attack_ms", "release_ms", "noise_margin_db", "noise_rise_db_per_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"smoothing setting {name} must be ≥ 0")
        if not 0.0 <= self.softness <= 1.0 or not 0.0 <= self.hysteresis <= 1.0:
            raise ValueError("smoothing settings softness and hysteresis must be between 0 and 1")
        if self.gate_full_db <= self.gate_open_db:
            raise ValueError("gate_full_db must be above gate_open_db")

    def to_json(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SmoothingSettings:
        """Build from a dict; unknown keys are an error (a typo would otherwise be silently ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"unknown smoothing setting(s): {', '.join(unknown)}")
        return cls(**{k: float(v) for k, v in obj.items()})


def _coefficient(time_ms: float) -> float:
    """One-pole smoothing factor per 10 ms hop for a time constant (0 ms = follow instantly)."""
    return 1.0 if time_ms <= 0 else 1.0 - math.exp(-HOP_S * 1000.0 / time_ms)


class Smoother:
    """Stateful per-hop smoothing; ``step(posterior, level_db)`` → 15 viseme weights summing to 1.

    ``posterior`` is the classifier's distribution over the 15 OVR visemes (index 0 = sil). The result
    is ``[1 − openness, openness × shape]`` where ``shape`` is the held, softened, attack/release-
    smoothed distribution over the 14 speaking visemes.
    """

    def __init__(self, settings: SmoothingSettings | None = None) -> None:
        self.settings = settings or SmoothingSettings()
        s = self.settings
        self._attack = _coefficient(s.attack_ms)
        self._release = _coefficient(s.release_ms)
        self._hold_frames = round(s.min_hold_ms / (HOP_S * 1000.0))
        self._noise_rise = s.noise_rise_db_per_s * HOP_S
        self.reset()

    def reset(self) -> None:
        self._shape = np.zeros(N_VISEMES - 1)
        self._current = -1  # held speaking viseme (index into the 14), -1 before the first one
        self._held = 0
        self._openness = 0.0
        self._noise_floor = -90.0
        self._out = np.zeros(N_VISEMES)

    @property
    def current(self) -> str | None:
        """The held speaking viseme, or None before speech."""
        return OVR_VISEMES[self._current + 1] if self._current >= 0 else None

    def gate(self, level_db: float) -> float:
        """Loudness → target openness in [0, 1]; also updates the noise-floor estimate."""
        s = self.settings
        if level_db < self._noise_floor:
            self._noise_floor = level_db
        else:
            self._noise_floor += self._noise_rise
        low = max(s.gate_open_db, self._noise_floor + s.noise_margin_db)
        full = max(s.gate_full_db, low + 1.0)
        return min(1.0, max(0.0, (level_db - low) / (full - low)))

    def step(self, posterior: np.ndarray, level_db: float) -> np.ndarray:
        s = self.settings
        speech = 1.0 - float(posterior[SIL])
        dist = posterior[1:] / speech if speech > 1e-9 else np.full(N_VISEMES - 1, 1.0 / (N_VISEMES - 1))
        target_open = self.gate(level_db) * min(1.0, speech * 1.5)

        cls = dist @ _MEMBER
        best_cls = int(np.argmax(cls))
        best = int(np.argmax(np.where(best_cls == _CLASS_OF, dist, -1.0)))
        # with the mouth (nearly) closed the next shape may start at once: nothing visible is cut short
        closed = self._current < 0 or self._openness < 0.05
        if self._current >= 0 and _CLASS_OF[self._current] == best_cls:
            self._current = best  # same mouth shape: follow the best viseme within it without a hold
        else:
            cur = cls[_CLASS_OF[self._current]] if self._current >= 0 else 0.0
            held_enough = self._held >= self._hold_frames and cls[best_cls] >= cur + s.hysteresis
            if closed or held_enough:
                self._current, self._held = best, 0
        self._held += 1

        target = dist * s.softness
        target[self._current] += 1.0 - s.softness
        shape = self._shape
        rising = target > shape
        shape += np.where(rising, self._attack, self._release) * (target - shape)
        total = shape.sum()
        shape_n = shape / total if total > 1e-9 else target.copy()
        # the fade-out of the previous shape must not outweigh the one now held: the mouth cross-fades,
        # but the dominant viseme is the current decision (otherwise the release time becomes lag)
        rival = float(np.max(np.where(np.arange(len(shape_n)) == self._current, -1.0, shape_n)))
        if shape_n[self._current] <= rival:
            shape_n[self._current] = rival + 0.02
            shape_n /= shape_n.sum()

        k = self._attack if target_open > self._openness else self._release
        self._openness += k * (target_open - self._openness)

        out = self._out
        out[SIL] = 1.0 - self._openness
        np.multiply(shape_n, self._openness, out=out[1:])
        return out.copy()
