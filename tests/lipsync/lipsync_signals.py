"""Synthetic test signals for the lip-sync tests: a vowel-like buzz and a fricative-like hiss.

Why synthetic: they are deterministic, need no fixtures on disk, and their spectra are unambiguous
(voiced harmonics with low formants vs band-limited noise above 4 kHz).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, lfilter, sosfilt


def vowel(seconds: float, rate: int, formants: tuple[float, ...] = (700.0, 1200.0, 2600.0), f0: float = 120.0,
          peak: float = 0.3) -> np.ndarray:
    """A pulse train at ``f0`` through resonators at ``formants`` (an "ah"-like vowel by default)."""
    n = int(seconds * rate)
    x = np.zeros(n)
    x[:: int(rate / f0)] = 1.0
    for f in formants:
        r = np.exp(-np.pi * 90.0 / rate)
        x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / rate), r * r], x)
    return peak * x / np.abs(x).max()


def hiss(seconds: float, rate: int, peak: float = 0.2, seed: int = 0) -> np.ndarray:
    """White noise band-passed to 4–7.5 kHz (an "sss"-like fricative)."""
    noise = np.random.default_rng(seed).standard_normal(int(seconds * rate))
    sos = butter(4, [4000, min(7500, rate / 2 - 100)], btype="band", fs=rate, output="sos")
    y = sosfilt(sos, noise)
    return peak * y / np.abs(y).max()
