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

Decoder settings: allphone with the phone LM at ``LANGUAGE_WEIGHT``, and **batch** cepstral mean
normalisation over the whole recording (fed in one call). The benchmark's raw baseline uses live CMN,
which starts from pocketsphinx's built-in initial mean (40, 3, −1) and needs about a second of speech
to converge — a fresh decoder per file (as this mode had) lost ≈7 points of frame accuracy on the
tuning split to that, plus ≈3 more to taking a pocketsphinx frame's start instead of its window centre
(12.8 ms later) as its time. Batch CMN has no warm-up and a file is available whole offline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.lipsync.features import SAMPLE_RATE
from avatar_studio.lipsync.phonemes import arpabet_viseme

ANTICIPATION_S = 0.04
ANTICIPATION_WEIGHT = 0.35  # the next lip shape's share while it is anticipated: visible, but not the arg-max
BLEND_SIGMA_S = 0.02
SILENT_PHONE_DB = -55.0
LANGUAGE_WEIGHT = 2.0  # the value measured in the design notes (Rhubarb uses 0.8; higher = fewer, longer phones)
# pocketsphinx frame f analyses the 25.6 ms window starting at f × 10 ms: its centre is 12.8 ms later
PS_FRAME_CENTRE_S = 0.0128
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
        cmn="batch", samprate=SAMPLE_RATE, loglevel="FATAL",
    )  # fmt: skip


def decode_phones(audio: np.ndarray) -> list[Segment]:
    """ARPAbet phone segments of 16 kHz mono float audio in [-1, 1].

    Start and end are the times (seconds) of the centres of the phone's first and one-past-last
    pocketsphinx frames, so a phone covers the times its frames describe.
    """
    dec = _decoder()
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()
    dec.start_utt()  # type: ignore[attr-defined]
    # one call with full_utt=True: batch CMN then normalises with the whole recording's cepstral mean
    dec.process_raw(pcm, False, True)  # type: ignore[attr-defined]
    dec.end_utt()  # type: ignore[attr-defined]
    segments = dec.seg() or []  # type: ignore[attr-defined]
    c = PS_FRAME_CENTRE_S
    return [(s.word, s.start_frame * 0.01 + c, (s.end_frame + 1) * 0.01 + c) for s in segments]


def segment_weights(segments: Sequence[Segment], n_frames: int, levels_db: np.ndarray | None = None) -> np.ndarray:
    """(n_frames, 15) viseme weights from phone segments, with anticipation, gating and cross-fades.

    Frame ``k`` takes the phone at its time ``k × 10 ms`` (``Frame.t``). Unknown labels count as sil.
    Anticipation and cross-fades only *add* weight next to a change: the viseme with the most weight
    stays the phone being spoken, so the shapes lead without moving the timing.
    """
    labels = np.zeros(n_frames, dtype=int)
    for phone, start, end in segments:
        viseme = arpabet_viseme(phone) or "sil"
        first = max(0, int(np.ceil(start / 0.01 - 1e-9)))
        last = min(n_frames, int(np.ceil(end / 0.01 - 1e-9)))
        if last <= first:
            continue
        if levels_db is not None and viseme != "sil" and float(np.max(levels_db[first:last])) < SILENT_PHONE_DB:
            viseme = "sil"
        labels[first:last] = _INDEX[viseme]
    onehot = np.zeros((n_frames, len(OVR_VISEMES)))
    onehot[np.arange(n_frames), labels] = 1.0
    weights = _gaussian_blend(onehot, BLEND_SIGMA_S / 0.01)
    # lips close or round before the sound (Rhubarb's plosive pre-closure, TalkingHead's 60 ms lead)
    lead = round(ANTICIPATION_S / 0.01)
    for k in range(1, n_frames):
        viseme = OVR_VISEMES[labels[k]]
        if labels[k] != labels[k - 1] and viseme in _LIP_VISEMES:
            for j in range(max(0, k - lead), k):
                if OVR_VISEMES[labels[j]] in _LIP_VISEMES:
                    continue
                ramp = ANTICIPATION_WEIGHT * (j - (k - lead) + 1) / lead
                weights[j] *= 1.0 - ramp
                weights[j, labels[k]] += ramp
    # the cross-fade must not hand the arg-max to a neighbour: keep the spoken viseme on top
    top = weights[np.arange(n_frames), labels]
    rival = np.max(np.where(np.eye(len(OVR_VISEMES), dtype=bool)[labels], -1.0, weights), axis=1) if n_frames else top
    short = top <= rival
    if np.any(short):
        weights[short, labels[short]] = rival[short] + 1e-3
        weights[short] /= weights[short].sum(axis=1, keepdims=True)
    return weights


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
