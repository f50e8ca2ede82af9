"""The live viseme classifier: audio frames → soft weights over the 15 OVR visemes, plus calibration.

Two parts, one ``VisemeModel``:

* **A small network** (numpy MLP, 2 hidden ReLU layers) over a window of frames: the 26-band log-mel
  spectrum after a running mean normalisation, the level (absolute and relative to the running speech
  level) and the high-band ratio, for frames ``t-8 … t+2`` (``CONTEXT``). Two frames of look-ahead put
  the engine's latency at 37.5 ms + one hop; the past frames carry the trajectory (deltas) for free.
  It is trained on many espeak-ng voices, rates and noise/reverb conditions (``train_defaults.py``), so
  it does not need a speaker's calibration to be useful. Its posterior goes through a causal forward
  filter (an HMM with a "stay" probability), which removes one-frame flickers without adding delay.
* **A per-viseme diagonal Gaussian back-end** over 14 values (MFCC c1..c12 after cepstral mean
  normalisation, the high-band ratio and the relative level) — the part calibration adapts. The design
  notes measured that speaker mismatch, not the classifier, is the bottleneck, so calibration must work
  from a few seconds of the user's voice: class means and variances adapt in closed form (MAP: user
  frames weighted against ``tau`` pseudo-frames of the default). A calibrated model mixes the two
  posteriors per viseme: ``(1 − trust) × network + trust × calibrated Gaussian``, where ``trust`` for
  a viseme is the share of its calibration take the network got *wrong* (clamped to 5–95 %; visemes
  without a take use the mean). So calibration overrides the network exactly where the network does
  not understand this user, and barely touches it where it does: measured on the tuning split, a
  likelihood-ratio fusion instead cost 40 points on a voice the network already knew, the mixture
  with trust from the takes less than one.

Profiles are ``NAME.npz`` (the arrays) plus ``NAME.json`` (name, date, calibrated visemes) in a folder
the caller chooses (the GUI uses the user's data folder). Profiles of format 1 (Gaussian-only, before
the network) are refused with a ``ProfileError`` asking for a recalibration.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.lipsync.features import FeatureExtractor, FrameFeatures, resample
from avatar_studio.resources import resource_path

DEFAULT_MODEL = "lipsync/live_model.npz"
N_FEATURES = 14  # the Gaussian back-end's features
N_MELS = 26
FRAME_DIM = N_MELS + 3  # the network's per-frame features: normalised log-mel, two levels, high-band ratio
CONTEXT: tuple[int, ...] = (-8, -5, -3, -2, -1, 0, 1, 2)  # frames (relative to t) the network sees
LOOKAHEAD_FRAMES = max(CONTEXT)
_CMN_ALPHA = 0.995  # ≈2 s of speech frames
_LEVEL_ALPHA = 0.99
_SPEECH_DB = -50.0  # frames below this do not update the running means
_VAR_FLOOR = 1e-3
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
PROFILE_FORMAT = 2
_NET_ARRAYS = ("in_mean", "in_scale", "w1", "b1", "w2", "b2", "w3", "b3")


class ProfileError(ValueError):
    """A calibration profile that cannot be loaded or saved; the message says which and why."""


@dataclass(frozen=True)
class CalibrationPrompt:
    """One step of the guided recording: what to say, for how long, and which viseme it teaches."""

    viseme: str
    text: str
    seconds: float


CALIBRATION_PROMPTS: tuple[CalibrationPrompt, ...] = (
    CalibrationPrompt("sil", "Stay quiet (room noise)", 1.5),
    CalibrationPrompt("aa", 'Hold "aah", as in "father"', 1.5),
    CalibrationPrompt("E", 'Hold "eh", as in "bed"', 1.5),
    CalibrationPrompt("ih", 'Hold "ee", as in "see"', 1.5),
    CalibrationPrompt("oh", 'Hold "oh", as in "go"', 1.5),
    CalibrationPrompt("ou", 'Hold "oo", as in "food"', 1.5),
    CalibrationPrompt("PP", 'Hum "mmm" with your lips closed', 1.0),
    CalibrationPrompt("FF", 'Hold "fff", as in "fish"', 1.0),
    CalibrationPrompt("SS", 'Hold "sss", as in "sun"', 1.0),
    CalibrationPrompt("CH", 'Hold "shh", as in "shoe"', 1.0),
    CalibrationPrompt("nn", 'Hold "nnn", as in "no"', 1.0),
    CalibrationPrompt("RR", 'Hold "rrr", as in "red"', 1.0),
)
"""The guided calibration script (≈15 s): vowels, closures and fricatives, each its own short take."""


@dataclass(frozen=True, eq=False)
class VisemeModel:
    """The live model: the network, its forward filter and the Gaussian back-end; immutable.

    ``means``/``variances`` are the (possibly calibrated) Gaussian back-end, ``base_means``/
    ``base_variances`` the uncalibrated one it started from (None = same as ``means``/``variances``).
    ``net`` holds the network arrays (``_NET_ARRAYS`` order; empty = Gaussian back-end only).
    """

    means: np.ndarray  # (15, 14)
    variances: np.ndarray  # (15, 14)
    log_prior: np.ndarray  # (15,)
    cmn_init: np.ndarray  # (13,) initial cepstral mean (c0..c12)
    level_init: float  # initial running speech level, dBFS
    temperature: float = (
        3.0  # Gaussian posterior = softmax(log-likelihood / temperature): diagonal models are overconfident
    )
    adapt_cmn: bool = True
    calibrated: tuple[str, ...] = ()
    name: str = "default"
    created: str = field(default="", compare=False)
    mel_init: np.ndarray | None = None  # (26,) initial log-mel mean of the network's input normalisation
    net: tuple[np.ndarray, ...] = ()
    base_means: np.ndarray | None = None
    base_variances: np.ndarray | None = None
    stay: float = 0.0  # forward filter: probability of keeping the previous frame's viseme (0 = off)
    trust: np.ndarray | None = None  # (15,) calibrated models: weight of the Gaussian back-end per viseme

    def __post_init__(self) -> None:
        n = len(OVR_VISEMES)
        shapes = {
            "means": (self.means, (n, N_FEATURES)),
            "variances": (self.variances, (n, N_FEATURES)),
            "log_prior": (self.log_prior, (n,)),
            "cmn_init": (self.cmn_init, (13,)),
        }
        if self.base_means is not None:
            shapes["base_means"] = (self.base_means, (n, N_FEATURES))
        if self.base_variances is not None:
            shapes["base_variances"] = (self.base_variances, (n, N_FEATURES))
        if self.trust is not None:
            shapes["trust"] = (self.trust, (n,))
        if self.net:
            if len(self.net) != len(_NET_ARRAYS) or self.mel_init is None:
                raise ProfileError(f"model network must have {len(_NET_ARRAYS)} arrays and a mel_init")
            d = FRAME_DIM * len(CONTEXT)
            w1, w2, w3 = self.net[2], self.net[4], self.net[6]
            shapes.update(
                {
                    "mel_init": (self.mel_init, (N_MELS,)),
                    "in_mean": (self.net[0], (d,)),
                    "in_scale": (self.net[1], (d,)),
                    "w1": (w1, (d, np.shape(w1)[-1])),
                    "b1": (self.net[3], (np.shape(w1)[-1],)),
                    "w2": (w2, (np.shape(w1)[-1], np.shape(w2)[-1])),
                    "b2": (self.net[5], (np.shape(w2)[-1],)),
                    "w3": (w3, (np.shape(w2)[-1], n)),
                    "b3": (self.net[7], (n,)),
                }
            )
        for label, (array, shape) in shapes.items():
            if np.shape(array) != shape or not np.all(np.isfinite(array)):
                raise ProfileError(f"model {label} must be a finite array of shape {shape}, got {np.shape(array)}")
        if np.any(self.variances <= 0) or (self.base_variances is not None and np.any(self.base_variances <= 0)):
            raise ProfileError("model variances must be positive")
        if not self.temperature > 0 or not math.isfinite(self.level_init):
            raise ProfileError("model temperature must be positive and level_init finite")
        if not 0.0 <= self.stay < 1.0 or (self.trust is not None and not np.all((self.trust >= 0) & (self.trust <= 1))):
            raise ProfileError("model stay must be in [0, 1) and trust in [0, 1]")
        unknown = [v for v in self.calibrated if v not in OVR_VISEMES]
        if unknown:
            raise ProfileError(f"unknown calibrated viseme(s): {', '.join(unknown)}")

    def __eq__(self, other: object) -> bool:
        """Same numbers and settings (``created`` is ignored: a re-saved model is the same model)."""
        if not isinstance(other, VisemeModel):
            return NotImplemented
        arrays = ("means", "variances", "log_prior", "cmn_init", "mel_init", "base_means", "base_variances", "trust")
        scalars = ("level_init", "temperature", "adapt_cmn", "calibrated", "name", "stay")

        def same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
            return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))

        return (
            all(same(getattr(self, a), getattr(other, a)) for a in arrays)
            and len(self.net) == len(other.net)
            and all(np.array_equal(a, b) for a, b in zip(self.net, other.net, strict=True))
            and all(getattr(self, a) == getattr(other, a) for a in scalars)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: not hashable

    # -- files ----------------------------------------------------------------------------------------

    @classmethod
    def default(cls) -> VisemeModel:
        """The shipped model (``resources/lipsync/live_model.npz``, trained on espeak-ng speech)."""
        return cls.load_npz(resource_path(DEFAULT_MODEL))

    @classmethod
    def load_npz(cls, path: str | os.PathLike[str]) -> VisemeModel:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
                if meta.get("format", 1) < PROFILE_FORMAT or "w1" not in z.files:
                    raise ProfileError(
                        f"{path}: this lip-sync profile was made by an older version of Avatar Studio "
                        "(before the live network); recalibrate to make a new one"
                    )
                if meta.get("format", 1) > PROFILE_FORMAT:
                    raise ProfileError(f"{path}: made by a newer version of Avatar Studio (format {meta['format']})")

                def opt(key: str) -> np.ndarray | None:
                    return np.array(z[key], dtype=np.float64) if key in z.files else None

                return cls(
                    means=np.array(z["means"], dtype=np.float64),
                    variances=np.array(z["variances"], dtype=np.float64),
                    log_prior=np.array(z["log_prior"], dtype=np.float64),
                    cmn_init=np.array(z["cmn_init"], dtype=np.float64),
                    level_init=float(z["level_init"]),
                    temperature=float(meta.get("temperature", 3.0)),
                    adapt_cmn=bool(meta.get("adapt_cmn", True)),
                    calibrated=tuple(meta.get("calibrated", ())),
                    name=str(meta.get("name", path.stem)),
                    created=str(meta.get("created", "")),
                    mel_init=opt("mel_init"),
                    net=tuple(np.array(z[k], dtype=np.float64) for k in _NET_ARRAYS),
                    base_means=opt("base_means"),
                    base_variances=opt("base_variances"),
                    stay=float(meta.get("stay", 0.0)),
                    trust=opt("trust"),
                )
        except ProfileError as exc:
            message = str(exc)
            raise ProfileError(message if message.startswith(str(path)) else f"{path}: {message}") from None
        except (OSError, ValueError, KeyError, EOFError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ProfileError(f"{path}: not a usable lip-sync model ({reason})") from None

    def save_npz(self, path: str | os.PathLike[str]) -> None:
        if not self.net:
            raise ProfileError("a model without its network cannot be saved (train it with train_defaults.py)")
        meta = {
            "format": PROFILE_FORMAT,
            "name": self.name,
            "created": self.created,
            "temperature": self.temperature,
            "adapt_cmn": self.adapt_cmn,
            "calibrated": list(self.calibrated),
            "visemes": list(OVR_VISEMES),
            "context": list(CONTEXT),
            "stay": self.stay,
        }
        arrays = {k: np.asarray(a, np.float32) for k, a in zip(_NET_ARRAYS, self.net, strict=True)}
        for key in ("mel_init", "base_means", "base_variances", "trust"):
            value = getattr(self, key)
            if value is not None:
                arrays[key] = value
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(
            tmp,
            means=self.means,
            variances=self.variances,
            log_prior=self.log_prior,
            cmn_init=self.cmn_init,
            level_init=np.float64(self.level_init),
            meta=np.array(json.dumps(meta)),
            **arrays,
        )
        os.replace(tmp, path)


# -- live classification ---------------------------------------------------------------------------------


class LiveClassifier:
    """Stateful: running means, the network's frame window and the forward filter.

    ``step(frame)`` takes the newest frame and returns the posterior over the 15 visemes of the frame
    ``LOOKAHEAD_FRAMES`` hops earlier (the network needs that much look-ahead); ``delayed_level_db`` is
    that frame's level. The first ``LOOKAHEAD_FRAMES`` results describe frames before the stream (the
    engine drops them); ``flush()`` returns the posteriors of the last frames at the end of a stream.
    Gaussian-only models (no network) have no delay.
    """

    def __init__(self, model: VisemeModel | None = None) -> None:
        self.model = model or VisemeModel.default()
        m = self.model
        self._inv_var = 1.0 / m.variances
        self._const = -0.5 * np.log(m.variances).sum(axis=1) + m.log_prior
        self._scale = -0.5 / m.temperature
        self._x = np.zeros(N_FEATURES)
        self.delay = LOOKAHEAD_FRAMES if m.net else 0
        self._mix = bool(m.net) and m.trust is not None and bool(np.any(m.trust > 0))
        if m.net:
            in_mean, in_scale, w1, b1, w2, b2, w3, b3 = m.net
            # fold the input normalisation into the first layer: (x − μ)/σ · W1 = x · (W1/σ) − (μ/σ) · W1
            self._w1 = w1 / in_scale[:, None]
            self._b1 = b1 - (in_mean / in_scale) @ w1
            self._w2, self._b2, self._w3, self._b3 = w2, b2, w3, b3
            span = max(CONTEXT) - min(CONTEXT) + 1
            self._span = span
            self._taps = np.array([c - min(CONTEXT) for c in CONTEXT])
            self._ring = np.zeros((span, FRAME_DIM))
            self._levels = np.zeros(span)
            self._gfeat = np.zeros((span, N_FEATURES))
        self.reset()

    def reset(self) -> None:
        self._cmn = self.model.cmn_init.copy()
        self._level = self.model.level_init
        self._mel_mean = self.model.mel_init.copy() if self.model.mel_init is not None else None
        self._filled = 0
        self._alpha = np.full(len(OVR_VISEMES), 1.0 / len(OVR_VISEMES))
        self._last_level = -120.0
        self.delayed_level_db = -120.0

    def features(self, frame: FrameFeatures) -> np.ndarray:
        """The back-end's 14-value feature vector of a frame (updates the running means on speech frames)."""
        x = self._x
        if frame.level_db > _SPEECH_DB:
            if self.model.adapt_cmn:
                self._cmn += (1.0 - _CMN_ALPHA) * (frame.mfcc - self._cmn)
            self._level += (1.0 - _LEVEL_ALPHA) * (frame.level_db - self._level)
        np.subtract(frame.mfcc[1:], self._cmn[1:], out=x[:12])
        x[12] = 10.0 * frame.high_ratio
        x[13] = (frame.level_db - self._level) / 10.0
        return x

    def frame_vector(self, frame: FrameFeatures, out: np.ndarray | None = None) -> np.ndarray:
        """The network's per-frame input (call after ``features``, which updates the running level)."""
        assert self._mel_mean is not None and frame.logmel is not None
        v = np.empty(FRAME_DIM) if out is None else out
        if frame.level_db > _SPEECH_DB:
            self._mel_mean += (1.0 - _CMN_ALPHA) * (frame.logmel - self._mel_mean)
        np.subtract(frame.logmel, self._mel_mean, out=v[:N_MELS])
        v[N_MELS] = (frame.level_db - self._level) / 10.0
        v[N_MELS + 1] = (max(frame.level_db, -100.0) + 40.0) / 20.0
        v[N_MELS + 2] = 10.0 * frame.high_ratio
        return v

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        d = x - self.model.means
        return self._const + (-0.5) * np.einsum("ij,ij->i", d * d, self._inv_var)

    def _gaussian_posterior(self, x: np.ndarray) -> np.ndarray:
        d = x - self.model.means
        score = self._scale * np.einsum("ij,ij->i", d * d, self._inv_var) + self._const / self.model.temperature
        score -= score.max()
        p = np.exp(score)
        p /= p.sum()
        return p

    def network_log_posterior(self, window: np.ndarray) -> np.ndarray:
        """Log-posterior over the 15 visemes from a flattened window (``len(CONTEXT)`` × ``FRAME_DIM``)."""
        h = window @ self._w1 + self._b1
        np.maximum(h, 0.0, out=h)
        h = h @ self._w2 + self._b2
        np.maximum(h, 0.0, out=h)
        z = h @ self._w3 + self._b3
        z -= z.max()
        return z - math.log(float(np.exp(z).sum()))

    def step(self, frame: FrameFeatures) -> np.ndarray:
        x = self.features(frame)
        if not self.model.net:
            self.delayed_level_db = frame.level_db
            return self._gaussian_posterior(x)
        span = self._span
        if self._filled == 0:  # before the stream: repeat the first frame
            self._ring[:] = self.frame_vector(frame)
            self._levels[:] = frame.level_db
            self._gfeat[:] = x
        else:
            self._ring[:-1] = self._ring[1:]
            self._levels[:-1] = self._levels[1:]
            self._gfeat[:-1] = self._gfeat[1:]
            self.frame_vector(frame, self._ring[-1])
            self._levels[-1] = frame.level_db
            self._gfeat[-1] = x
        self._filled += 1
        return self._posterior(span - 1 - self.delay)

    def flush(self) -> list[np.ndarray]:
        """Posteriors of the last ``delay`` frames, as if the final frame were held (end of a stream)."""
        out = []
        for _ in range(self.delay if self._filled else 0):
            self._ring[:-1] = self._ring[1:]
            self._levels[:-1] = self._levels[1:]
            self._gfeat[:-1] = self._gfeat[1:]
            out.append(self._posterior(self._span - 1 - self.delay))
        return out

    def _posterior(self, target: int) -> np.ndarray:
        window = self._ring[self._taps].reshape(-1)
        p = np.exp(self.network_log_posterior(window))
        if self._mix:
            trust = self.model.trust
            assert trust is not None
            p = (1.0 - trust) * p + trust * self._gaussian_posterior(self._gfeat[target])
        stay = self.model.stay
        if stay > 0:
            p *= stay * self._alpha + (1.0 - stay) / len(p)
        p /= p.sum()
        self._alpha = p
        self.delayed_level_db = float(self._levels[target])
        return p


# -- calibration -------------------------------------------------------------------------------------------


def take_features(samples: np.ndarray, sample_rate: int, model: VisemeModel, viseme: str) -> np.ndarray:
    """Feature rows of one calibration take, keeping only the frames that show the prompted sound.

    Why trimming: people start late and trail off. For speech prompts the frames within 20 dB of the
    take's loudest 10 % are kept, minus 50 ms at each end of that stretch; for ``sil`` every frame.
    The cepstral mean is fixed at the model's, so rows are in the calibrated model's coordinates.
    """
    return _take(samples, sample_rate, model, viseme)[0]


def _take(
    samples: np.ndarray, sample_rate: int, model: VisemeModel, viseme: str
) -> tuple[np.ndarray, list[FrameFeatures], np.ndarray]:
    """``take_features`` rows, plus all frames of the take and the mask of the kept ones."""
    fx = FeatureExtractor()
    audio = resample(np.asarray(samples, dtype=np.float64), sample_rate)
    frames = fx.push(audio) + fx.flush()
    if not frames:
        return np.zeros((0, N_FEATURES)), [], np.zeros(0, dtype=bool)
    frozen = replace(model, adapt_cmn=False)
    clf = LiveClassifier(frozen)
    levels = np.array([f.level_db for f in frames])
    if viseme == "sil":
        keep = np.ones(len(frames), dtype=bool)
    else:
        loud = float(np.percentile(levels, 90))
        keep = levels > max(loud - 20.0, _SPEECH_DB)
        idx = np.flatnonzero(keep)
        if len(idx):
            keep[:] = False
            keep[idx[0] + 5 : idx[-1] - 4] = True
    clf._level = float(np.median(levels[keep])) if keep.any() else model.level_init
    rows = [clf.features(f).copy() for f, k in zip(frames, keep, strict=True) if k]
    return np.array(rows).reshape(-1, N_FEATURES), frames, keep


def _network_misses(model: VisemeModel, frames: list[FrameFeatures], keep: np.ndarray, viseme: str) -> float:
    """Share of a take's kept frames the (uncalibrated) network puts in another mouth shape than ``viseme``."""
    from avatar_studio.lipsync.phonemes import VISEME_CLASS

    clf = LiveClassifier(replace(model, stay=0.0, trust=None))
    posts = [clf.step(f) for f in frames][clf.delay :] + clf.flush()
    shape = np.array([VISEME_CLASS[v] == VISEME_CLASS[viseme] for v in OVR_VISEMES])
    hits = [bool(shape[int(np.argmax(p))]) for p, k in zip(posts, keep, strict=True) if k]
    return 1.0 - float(np.mean(hits)) if hits else 0.5


def calibrate(
    model: VisemeModel,
    takes: Mapping[str, np.ndarray],
    sample_rate: int,
    *,
    tau: float = 10.0,
    name: str = "calibrated",
) -> VisemeModel:
    """A new model adapted to the user's voice from prompted takes (viseme → mono samples).

    MAP adaptation: each recorded viseme's mean and variance move towards the user's frames, weighted
    ``n / (n + tau)`` (a 1.5 s take has ~100 frames, so the user's voice dominates). Visemes without a
    take shift by the average offset of the recorded ones — the speaker's overall vocal-tract and
    microphone difference — so the model stays consistent. The running speech level starts at the
    user's. For a model with a network, each take is also run through the network: the share of its
    frames the network gets wrong becomes that viseme's ``trust`` in the calibrated back-end (module
    docstring). Raises ``ValueError`` if no take has usable frames (all silent, or too short).
    """
    index = {v: i for i, v in enumerate(OVR_VISEMES)}
    means = model.means.copy()
    variances = model.variances.copy()
    offsets: list[np.ndarray] = []
    weights: list[float] = []
    done: list[str] = []
    misses: dict[str, float] = {}
    speech_levels: list[float] = []
    for viseme, samples in takes.items():
        if viseme not in index:
            raise ValueError(f"unknown viseme {viseme!r} in calibration takes")
        rows, frames, keep = _take(samples, sample_rate, model, viseme)
        if len(rows) < 5:
            continue
        if model.net:
            misses[viseme] = _network_misses(model, frames, keep, viseme)
        i = index[viseme]
        n = len(rows)
        user_mean = rows.mean(axis=0)
        user_var = rows.var(axis=0)
        new_mean = (n * user_mean + tau * model.means[i]) / (n + tau)
        user_part = n * (user_var + (user_mean - new_mean) ** 2)
        prior_part = tau * (model.variances[i] + (model.means[i] - new_mean) ** 2)
        new_var = (user_part + prior_part) / (n + tau)
        means[i], variances[i] = new_mean, np.maximum(new_var, _VAR_FLOOR)
        done.append(viseme)
        if viseme != "sil":
            offsets.append(new_mean - model.means[i])
            weights.append(float(n))
            speech_levels.append(float(np.median(rows[:, 13])))
    if not done:
        raise ValueError("no usable calibration audio: every take was silent or shorter than 0.1 s")
    if offsets:
        shift = np.average(np.array(offsets), axis=0, weights=weights)
        shift[13] = 0.0  # relative level is already relative
        for viseme, i in index.items():
            if viseme not in done and viseme != "sil":
                means[i] = model.means[i] + shift
    trust = None
    if misses:
        clamped = {v: min(0.95, max(0.05, m)) for v, m in misses.items()}
        fallback = float(np.mean([m for v, m in clamped.items() if v != "sil"] or [0.05]))
        trust = np.array([clamped.get(v, fallback) for v in OVR_VISEMES])
    return replace(
        model,
        trust=trust,
        means=means,
        variances=variances,
        base_means=model.base_means if model.base_means is not None else model.means,
        base_variances=model.base_variances if model.base_variances is not None else model.variances,
        adapt_cmn=False,
        calibrated=tuple(v for v in OVR_VISEMES if v in done),
        name=name,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )


# -- profiles ------------------------------------------------------------------------------------------------


def check_profile_name(name: str) -> None:
    """Raise ``ProfileError`` unless ``name`` can name a profile file (what a name field validates).

    Why so strict: the name becomes a file name in the profiles folder, so it must not carry a path
    separator, a leading dot or a trailing dot that some file systems drop.
    """
    if not _PROFILE_NAME.match(name) or name.endswith("."):
        raise ProfileError(
            f"invalid profile name {name!r}: use 1–64 letters, digits, spaces, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _profile_paths(folder: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    check_profile_name(name)
    folder = Path(folder)
    return folder / f"{name}.npz", folder / f"{name}.json"


def save_profile(model: VisemeModel, folder: str | os.PathLike[str], name: str | None = None) -> Path:
    """Save ``model`` as profile ``name`` (default: its own name) in ``folder``; returns the NPZ path."""
    name = name or model.name
    npz, meta = _profile_paths(folder, name)
    Path(folder).mkdir(parents=True, exist_ok=True)
    model = replace(model, name=name)
    model.save_npz(npz)
    info = {"format": PROFILE_FORMAT, "name": name, "created": model.created, "calibrated": list(model.calibrated)}
    tmp = meta.with_name(f".{meta.name}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, meta)
    return npz


def load_profile(folder: str | os.PathLike[str], name: str) -> VisemeModel:
    """Load profile ``name`` from ``folder``; ``ProfileError`` if it is missing or broken."""
    npz, _meta = _profile_paths(folder, name)
    if not npz.is_file():
        raise ProfileError(f"no lip-sync profile named {name!r} in {folder}")
    return VisemeModel.load_npz(npz)


def list_profiles(folder: str | os.PathLike[str]) -> list[dict[str, object]]:
    """Profiles in ``folder`` (name, created, calibrated visemes), sorted by name; [] if the folder is absent."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for npz in sorted(folder.glob("*.npz")):
        if npz.name.startswith(".") or not _PROFILE_NAME.match(npz.stem):
            continue
        info: dict[str, object] = {"name": npz.stem, "created": "", "calibrated": []}
        sidecar = npz.with_suffix(".json")
        try:
            loaded = json.loads(sidecar.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                info.update({k: loaded[k] for k in ("created", "calibrated") if k in loaded})
        except (OSError, ValueError):
            pass  # the NPZ is the profile; a missing or damaged sidecar only loses the listing details
        found.append(info)
    return found


def delete_profile(folder: str | os.PathLike[str], name: str) -> None:
    npz, meta = _profile_paths(folder, name)
    npz.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)
