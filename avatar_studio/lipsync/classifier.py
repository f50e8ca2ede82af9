"""The live viseme classifier: MFCC frame → soft weights over the 15 OVR visemes, plus calibration.

Why a per-class diagonal Gaussian and not a network: the design notes measured that the classifier
is not the bottleneck — speaker mismatch is (an espeak-trained model falls to chance on real voices)
— so the model must be cheap to *adapt* from a few seconds of the user's voice. Class means and
variances adapt in closed form (MAP: user frames weighted against ``tau`` pseudo-frames of the
default), the whole model is a 15 × 14 table, and one hop costs a few µs.

Features per hop (14 values): MFCC c1..c12 after cepstral mean normalisation, the high-band energy
ratio (fricatives), and the level relative to the running speech level (closures, nasals are quiet).
Uncalibrated, the cepstral mean tracks the speaker (EMA over speech frames, ≈2 s); a calibrated
profile freezes it at the calibration mean so its class means and live features stay in one
coordinate system.

Profiles are ``NAME.npz`` (the arrays) plus ``NAME.json`` (name, date, calibrated visemes) in a folder
the caller chooses (the GUI uses the user's data folder).
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
N_FEATURES = 14
_CMN_ALPHA = 0.995  # ≈2 s of speech frames
_LEVEL_ALPHA = 0.99
_SPEECH_DB = -50.0  # frames below this do not update the running means
_VAR_FLOOR = 1e-3
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
PROFILE_FORMAT = 1


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
    """Per-viseme diagonal Gaussians over the 14 live features; immutable (calibration makes a new one)."""

    means: np.ndarray  # (15, 14)
    variances: np.ndarray  # (15, 14)
    log_prior: np.ndarray  # (15,)
    cmn_init: np.ndarray  # (13,) initial cepstral mean (c0..c12)
    level_init: float  # initial running speech level, dBFS
    temperature: float = 3.0  # posterior = softmax(log-likelihood / temperature): diagonal models are overconfident
    adapt_cmn: bool = True
    calibrated: tuple[str, ...] = ()
    name: str = "default"
    created: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        n = len(OVR_VISEMES)
        shapes = {
            "means": (self.means, (n, N_FEATURES)),
            "variances": (self.variances, (n, N_FEATURES)),
            "log_prior": (self.log_prior, (n,)),
            "cmn_init": (self.cmn_init, (13,)),
        }
        for label, (array, shape) in shapes.items():
            if np.shape(array) != shape or not np.all(np.isfinite(array)):
                raise ProfileError(f"model {label} must be a finite array of shape {shape}, got {np.shape(array)}")
        if np.any(self.variances <= 0):
            raise ProfileError("model variances must be positive")
        if not self.temperature > 0 or not math.isfinite(self.level_init):
            raise ProfileError("model temperature must be positive and level_init finite")
        unknown = [v for v in self.calibrated if v not in OVR_VISEMES]
        if unknown:
            raise ProfileError(f"unknown calibrated viseme(s): {', '.join(unknown)}")

    def __eq__(self, other: object) -> bool:
        """Same numbers and settings (``created`` is ignored: a re-saved model is the same model)."""
        if not isinstance(other, VisemeModel):
            return NotImplemented
        arrays = ("means", "variances", "log_prior", "cmn_init")
        scalars = ("level_init", "temperature", "adapt_cmn", "calibrated", "name")
        return all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays) and all(
            getattr(self, a) == getattr(other, a) for a in scalars
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
                )
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from None
        except (OSError, ValueError, KeyError, EOFError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ProfileError(f"{path}: not a usable lip-sync model ({reason})") from None

    def save_npz(self, path: str | os.PathLike[str]) -> None:
        meta = {
            "format": PROFILE_FORMAT,
            "name": self.name,
            "created": self.created,
            "temperature": self.temperature,
            "adapt_cmn": self.adapt_cmn,
            "calibrated": list(self.calibrated),
            "visemes": list(OVR_VISEMES),
        }
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(
            tmp,
            means=self.means,
            variances=self.variances,
            log_prior=self.log_prior,
            cmn_init=self.cmn_init,
            level_init=np.float64(self.level_init),
            meta=np.array(json.dumps(meta)),
        )
        os.replace(tmp, path)


# -- live classification ---------------------------------------------------------------------------------


class LiveClassifier:
    """Stateful: running cepstral mean and speech level; ``step(frame)`` → posterior over 15 visemes."""

    def __init__(self, model: VisemeModel | None = None) -> None:
        self.model = model or VisemeModel.default()
        m = self.model
        self._inv_var = 1.0 / m.variances
        self._const = -0.5 * np.log(m.variances).sum(axis=1) + m.log_prior
        self._scale = -0.5 / m.temperature
        self._x = np.zeros(N_FEATURES)
        self.reset()

    def reset(self) -> None:
        self._cmn = self.model.cmn_init.copy()
        self._level = self.model.level_init

    def features(self, frame: FrameFeatures) -> np.ndarray:
        """The 14-value feature vector of a frame (updates the running means on speech frames)."""
        x = self._x
        if frame.level_db > _SPEECH_DB:
            if self.model.adapt_cmn:
                self._cmn += (1.0 - _CMN_ALPHA) * (frame.mfcc - self._cmn)
            self._level += (1.0 - _LEVEL_ALPHA) * (frame.level_db - self._level)
        np.subtract(frame.mfcc[1:], self._cmn[1:], out=x[:12])
        x[12] = 10.0 * frame.high_ratio
        x[13] = (frame.level_db - self._level) / 10.0
        return x

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        d = x - self.model.means
        return self._const + (-0.5) * np.einsum("ij,ij->i", d * d, self._inv_var)

    def step(self, frame: FrameFeatures) -> np.ndarray:
        x = self.features(frame)
        d = x - self.model.means
        score = self._scale * np.einsum("ij,ij->i", d * d, self._inv_var) + self._const / self.model.temperature
        score -= score.max()
        p = np.exp(score)
        p /= p.sum()
        return p


# -- calibration -------------------------------------------------------------------------------------------


def take_features(samples: np.ndarray, sample_rate: int, model: VisemeModel, viseme: str) -> np.ndarray:
    """Feature rows of one calibration take, keeping only the frames that show the prompted sound.

    Why trimming: people start late and trail off. For speech prompts the frames within 20 dB of the
    take's loudest 10 % are kept, minus 50 ms at each end of that stretch; for ``sil`` every frame.
    The cepstral mean is fixed at the model's, so rows are in the calibrated model's coordinates.
    """
    fx = FeatureExtractor()
    audio = resample(np.asarray(samples, dtype=np.float64), sample_rate)
    frames = fx.push(audio) + fx.flush()
    if not frames:
        return np.zeros((0, N_FEATURES))
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
    return np.array(rows).reshape(-1, N_FEATURES)


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
    user's. Raises ``ValueError`` if no take has usable frames (all silent, or too short).
    """
    index = {v: i for i, v in enumerate(OVR_VISEMES)}
    means = model.means.copy()
    variances = model.variances.copy()
    offsets: list[np.ndarray] = []
    weights: list[float] = []
    done: list[str] = []
    speech_levels: list[float] = []
    for viseme, samples in takes.items():
        if viseme not in index:
            raise ValueError(f"unknown viseme {viseme!r} in calibration takes")
        rows = take_features(samples, sample_rate, model, viseme)
        if len(rows) < 5:
            continue
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
    return replace(
        model,
        means=means,
        variances=variances,
        adapt_cmn=False,
        calibrated=tuple(v for v in OVR_VISEMES if v in done),
        name=name,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )


# -- profiles ------------------------------------------------------------------------------------------------


def _profile_paths(folder: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    if not _PROFILE_NAME.match(name) or name.endswith("."):
        raise ProfileError(
            f"invalid profile name {name!r}: use 1–64 letters, digits, spaces, '.', '_' or '-', "
            "starting with a letter or digit"
        )
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
