"""Audio front end: streaming resampling to 16 kHz, 10 ms framing, log-mel and MFCC features.

Why streaming everywhere (also for files): the live engine receives microphone callbacks of any size
at the device's rate (44.1 or 48 kHz usually), and the same code must give the same frames whether
audio arrives in one piece or 7 samples at a time — otherwise a file analysed from the command line
would not show what the microphone tester shows. So the resampler is a stateful polyphase FIR, and
the feature extractor computes exactly one frame per 160-sample hop with preallocated buffers (no
per-hop allocation beyond numpy's small temporaries: GC pauses would show up as mouth stutter).

Frame ``k`` describes the audio around ``t = k × 10 ms``: its 25 ms Hamming window is centred on the
middle of the hop, ``t + 5 ms``, so it is available once audio up to ``t + 17.5 ms`` has arrived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import firwin

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms
WINDOW = 400  # 25 ms
NFFT = 512
N_MELS = 26
N_MFCC = 13  # c0..c12
PRE_EMPHASIS = 0.97
FMIN, FMAX = 100.0, 7600.0
WINDOW_LEAD = WINDOW // 2 - HOP // 2  # samples of the window before the hop start (120)
WINDOW_LAG = WINDOW // 2 + HOP // 2  # samples after the hop start the window needs (280 = 17.5 ms)
_LOG_FLOOR = 1e-10


class Resampler:
    """Stateful polyphase resampler from ``rate`` to 16 kHz (a pass-through at 16 kHz).

    The anti-alias filter is a Kaiser-windowed sinc with ten zero crossings per side at the lower of
    the two rates, the same design ``scipy.signal.resample_poly`` uses, so a file resampled here and
    one resampled with ``resample_poly`` match to within filter ripple. The filter's delay is
    removed (the first output samples are dropped), so output sample ``n`` is at ``n / 16000`` s,
    exactly as the input's time axis: frame times do not depend on the device's rate.
    """

    def __init__(self, rate: int, target: int = SAMPLE_RATE) -> None:
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        g = math.gcd(rate, target)
        self.rate = rate
        self.up, self.down = target // g, rate // g
        self._passthrough = self.up == self.down
        if self._passthrough:
            return
        max_rate = max(self.up, self.down)
        half = 10 * max_rate
        taps = firwin(2 * half + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
        # leading zeros make the delay a whole number of output samples, so it can be dropped exactly
        pre = (self.down - half % self.down) % self.down
        taps = np.concatenate((np.zeros(pre), taps))
        per_phase = -(-len(taps) // self.up)
        padded = np.zeros(per_phase * self.up)
        padded[: len(taps)] = taps
        # phases[p, j] = h[p + j·up]: output n uses input i = (n·down) // up with phase (n·down) % up
        self._phases = np.ascontiguousarray(padded.reshape(per_phase, self.up).T)
        self._taps = per_phase
        self._delay = (half + pre) // self.down  # output samples of filter delay, dropped at the start
        self._history = np.zeros(per_phase - 1)  # the last input samples the next outputs still need
        self._consumed = 0  # input samples seen
        self._produced = 0  # output samples computed (including the dropped delay)
        self._to_drop = self._delay
        self._offsets = np.arange(per_phase)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk; returns the output samples that are now fully determined."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if self._passthrough:
            return x
        buf = np.concatenate((self._history, x))
        base = self._consumed - len(self._history)  # absolute index of buf[0]
        self._consumed += len(x)
        # output n is ready when its newest input (n·down)//up has arrived
        last_ready = (self._consumed * self.up - 1) // self.down
        n = np.arange(self._produced, last_ready + 1)
        out = np.empty(0)
        if len(n):
            pos = n * self.down
            newest = pos // self.up - base  # index in buf of the newest input each output uses
            windows = buf[np.maximum(newest[:, None] - self._offsets[None, :], 0)]
            windows[(newest[:, None] - self._offsets[None, :]) < 0] = 0.0  # before the stream started
            out = np.einsum("ij,ij->i", windows, self._phases[pos % self.up])
            self._produced = int(last_ready) + 1
        keep = self._taps - 1
        self._history = buf[-keep:] if len(buf) >= keep else np.concatenate((np.zeros(keep - len(buf)), buf))
        if self._to_drop:
            dropped = min(self._to_drop, len(out))
            self._to_drop -= dropped
            out = out[dropped:]
        return out

    def flush(self) -> np.ndarray:
        """Push zeros through so the last real samples come out (end of a file)."""
        if self._passthrough:
            return np.zeros(0)
        pad = -(-(self._delay + 1) * self.down // self.up) + self._taps
        return self.process(np.zeros(pad))


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """A whole signal at 16 kHz (for file analysis; same result as streaming through ``Resampler``)."""
    if rate == SAMPLE_RATE:
        return np.asarray(samples, dtype=np.float64)
    r = Resampler(rate)
    expected = -(-len(samples) * r.up // r.down)
    out = np.concatenate((r.process(samples), r.flush()))
    return out[:expected]


def mel_filterbank(n_mels: int = N_MELS, nfft: int = NFFT, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), shape (n_mels, nfft // 2 + 1)."""

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(FMIN), mel(FMAX), n_mels + 2))
    freqs = np.linspace(0.0, rate / 2, nfft // 2 + 1)
    bank = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        bank[m] = np.maximum(0.0, np.minimum(rising, falling))
    return bank


def dct_matrix(n_out: int = N_MFCC, n_in: int = N_MELS) -> np.ndarray:
    """Orthonormal DCT-II rows, shape (n_out, n_in)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * math.sqrt(2.0 / n_in)
    m[0] /= math.sqrt(2.0)
    return m


@dataclass(frozen=True)
class FrameFeatures:
    """One hop's features: ``mfcc`` (c0..c12 of the log-mel spectrum), level in dBFS, high-band ratio.

    ``logmel`` is the full 26-band log-mel spectrum the MFCCs are computed from (the live network's input).
    """

    mfcc: np.ndarray
    level_db: float
    high_ratio: float
    logmel: np.ndarray | None = None


class FeatureExtractor:
    """16 kHz samples in, one ``FrameFeatures`` per 10 ms hop out (streaming, chunk-size independent).

    ``push`` returns the frames completed by the new samples; the ``mfcc`` arrays are fresh copies
    so callers may keep them. The level is the RMS of the un-emphasised window in dBFS (full-scale
    sine = −3 dB); ``high_ratio`` is the share of spectral energy above 3.5 kHz, which separates
    fricatives (s, f, sh: mostly high) from vowels (mostly below 1 kHz) even with a foreign voice.
    """

    def __init__(self) -> None:
        self._mel = mel_filterbank()
        self._dct = dct_matrix()
        self._window = np.hamming(WINDOW)
        self._buffer = np.zeros(WINDOW)  # raw samples of the current window
        self._filled = WINDOW_LEAD  # leading zeros stand in for audio before the stream started
        self._last_raw = 0.0
        self._frame_in = np.zeros(NFFT)
        self._high_bin = int(3500 * NFFT / SAMPLE_RATE)
        self.frames_out = 0
        self._audio_in = 0  # audio samples pushed (flush's padding excluded)

    def push(self, samples: np.ndarray) -> list[FrameFeatures]:
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        self._audio_in += len(x)
        out: list[FrameFeatures] = []
        i = 0
        while i < len(x):
            take = min(WINDOW - self._filled, len(x) - i)
            self._buffer[self._filled : self._filled + take] = x[i : i + take]
            self._filled += take
            i += take
            if self._filled == WINDOW:
                out.append(self._frame())
                self._buffer[:-HOP] = self._buffer[HOP:]
                self._filled = WINDOW - HOP
        return out

    def _frame(self) -> FrameFeatures:
        buf = self._buffer
        frame = self._frame_in
        # pre-emphasis inside the window; the sample before the window is the hop that slid out
        frame[0] = buf[0] - PRE_EMPHASIS * self._last_raw
        np.subtract(buf[1:], PRE_EMPHASIS * buf[:-1], out=frame[1:WINDOW])
        self._last_raw = buf[HOP - 1]
        frame[:WINDOW] *= self._window
        power = np.abs(np.fft.rfft(frame)) ** 2
        total = power.sum()
        high = power[self._high_bin :].sum()
        logmel = np.log(self._mel @ power + _LOG_FLOOR)
        mfcc = self._dct @ logmel
        rms = math.sqrt(float(np.dot(buf, buf)) / WINDOW)
        level_db = 20.0 * math.log10(rms + 1e-7)
        self.frames_out += 1
        return FrameFeatures(mfcc, level_db, float(high / total) if total > 1e-12 else 0.0, logmel)

    def flush(self) -> list[FrameFeatures]:
        """Zero-pad so every hop that received audio yields a frame (end of a file)."""
        hops = -(-self._audio_in // HOP)
        needed = max(0, (hops - 1) * HOP + WINDOW_LAG - self._audio_in) if hops else 0
        frames = self.push(np.zeros(needed)) if needed else []
        self._audio_in -= needed
        return frames


def extract_all(samples: np.ndarray, rate: int = SAMPLE_RATE) -> list[FrameFeatures]:
    """Every frame of a whole signal (resampled to 16 kHz first); same frames as streaming."""
    fx = FeatureExtractor()
    frames = fx.push(resample(samples, rate))
    return frames + fx.flush()
