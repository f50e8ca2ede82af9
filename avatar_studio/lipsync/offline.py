"""Offline mode: pocketsphinx phone decoding of a whole recording → per-frame viseme weights.

Why phone recognition here and not the live classifier: offline we may look at the whole file, and
the design notes measured pocketsphinx's allphone decoder (the wheel ships its English model) at
68.6 % 9-class frame accuracy on real human speech, far above what a frame classifier reaches on an
unknown voice. It is Rhubarb's approach, with Rhubarb's lesson on coarticulation applied to soft
weights instead of hard shapes:

* lip visemes (PP, FF, ou, oh) start ``ANTICIPATION_S`` early — lips close or round before the sound
  (Rhubarb's plosive pre-closure, TalkingHead's 60 ms lead);
* every change is cross-faded with a symmetric Gaussian (``BLEND_SIGMA_S``), which a non-causal mode
  can afford and which reads as coarticulation rather than lag;
* phones whose loudest frame is below the silence level are shown as ``sil`` (pocketsphinx labels
  some room noise as phones).

Audio is fed in 10 ms chunks: the notes found that feeding a whole utterance in one call labelled its
first half second as silence.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.lipsync.features import HOP, SAMPLE_RATE
from avatar_studio.lipsync.phonemes import arpabet_viseme

ANTICIPATION_S = 0.04
BLEND_SIGMA_S = 0.02
SILENT_PHONE_DB = -55.0
LANGUAGE_WEIGHT = 2.0  # the value measured in the design notes (Rhubarb uses 0.8; higher = fewer, longer phones)

Segment = tuple[str, float, float]  # phone, start s, end s
_LIP_VISEMES = frozenset({"PP", "FF", "ou", "oh"})
_INDEX = {v: i for i, v in enumerate(OVR_VISEMES)}


class OfflineUnavailable(RuntimeError):
    """pocketsphinx (or its model) is missing; the message says how to install it."""


def _decoder() -> object:
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError as exc:
        raise OfflineUnavailable(
            f"offline mode needs pocketsphinx ({exc}); install it with `pip install pocketsphinx`"
        ) from None
    model = get_model_path("en-us")
    hmm = os.path.join(model, "en-us")
    phone_lm = os.path.join(model, "en-us-phone.lm.bin")
    if not (os.path.isdir(hmm) and os.path.isfile(phone_lm)):
        raise OfflineUnavailable(f"pocketsphinx's English model is missing (looked in {model})")
    return Decoder(
        hmm=hmm, allphone=phone_lm, lw=LANGUAGE_WEIGHT, beam=1e-20, pbeam=1e-20,
        cmn="live", samprate=SAMPLE_RATE, loglevel="FATAL",
    )  # fmt: skip


def decode_phones(audio: np.ndarray) -> list[Segment]:
    """ARPAbet phone segments (start/end in seconds) of 16 kHz mono float audio in [-1, 1]."""
    dec = _decoder()
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()
    step = 2 * HOP
    dec.start_utt()  # type: ignore[attr-defined]
    for i in range(0, len(pcm), step):
        dec.process_raw(pcm[i : i + step], False, False)  # type: ignore[attr-defined]
    dec.end_utt()  # type: ignore[attr-defined]
    segments = dec.seg() or []  # type: ignore[attr-defined]
    return [(s.word, s.start_frame * 0.01, (s.end_frame + 1) * 0.01) for s in segments]


def segment_weights(segments: Sequence[Segment], n_frames: int, levels_db: np.ndarray | None = None) -> np.ndarray:
    """(n_frames, 15) viseme weights from phone segments, with anticipation, gating and cross-fades.

    Frame ``k`` takes the phone under its centre (``k × 10 ms + 5 ms``). Unknown labels count as sil.
    """
    labels = np.zeros(n_frames, dtype=int)
    for phone, start, end in segments:
        viseme = arpabet_viseme(phone) or "sil"
        first = max(0, int(np.ceil((start - 0.005) / 0.01 - 1e-9)))
        last = min(n_frames, int(np.ceil((end - 0.005) / 0.01 - 1e-9)))
        if last <= first:
            continue
        if levels_db is not None and viseme != "sil" and float(np.max(levels_db[first:last])) < SILENT_PHONE_DB:
            viseme = "sil"
        labels[first:last] = _INDEX[viseme]
        if viseme in _LIP_VISEMES:
            lead = round(ANTICIPATION_S / 0.01)
            early = max(0, first - lead)
            # take over only the tail of a neighbour that is not itself a lip shape
            for k in range(first - 1, early - 1, -1):
                if OVR_VISEMES[labels[k]] in _LIP_VISEMES:
                    break
                labels[k] = _INDEX[viseme]
    onehot = np.zeros((n_frames, len(OVR_VISEMES)))
    onehot[np.arange(n_frames), labels] = 1.0
    return _gaussian_blend(onehot, BLEND_SIGMA_S / 0.01)


def _gaussian_blend(weights: np.ndarray, sigma_frames: float) -> np.ndarray:
    if len(weights) == 0 or sigma_frames <= 0:
        return weights
    radius = max(1, int(3 * sigma_frames))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    k /= k.sum()
    padded = np.pad(weights, ((radius, radius), (0, 0)), mode="edge")
    out = np.empty_like(weights)
    for c in range(weights.shape[1]):
        out[:, c] = np.convolve(padded[:, c], k, mode="valid")
    out /= out.sum(axis=1, keepdims=True)
    return out
