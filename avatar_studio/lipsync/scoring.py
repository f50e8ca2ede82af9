"""Scoring engine output against a reference phone alignment, per 10 ms frame, in 9 viseme classes.

Why 9 classes and not 15 visemes: a viewer sees lips closed (MBP), lip-to-teeth (FV), the vowel
shapes and "some other consonant"; the distinctions inside C (t vs k vs n) are barely visible, and a
15-way score would mostly measure them. The coarse 4-way score (closed / FV / vowel / other) is what
the design notes found to track perceived quality; both are reported.

Frame ``k`` (time ``k × 10 ms``) is scored against the reference phone under its centre
(``k × 10 ms + 5 ms``); frames outside every segment are ``sil``. The predicted class is that of the
frame's heaviest viseme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avatar_studio.lipsync.engine import Frame
from avatar_studio.lipsync.phonemes import SCORING_CLASSES, PhoneSet, detect_phoneset, phone_class, viseme_class

Segment = tuple[str, float, float]
_COARSE = {"sil": "other", "MBP": "closed", "FV": "FV", "A": "vowel", "E": "vowel", "I": "vowel", "O": "vowel",
           "U": "vowel", "C": "other"}  # fmt: skip


@dataclass(frozen=True)
class Score:
    """Frame accuracy, 4-way accuracy and the confusion matrix (rows = reference, columns = predicted)."""

    frames: int
    accuracy: float
    coarse_accuracy: float
    confusion: np.ndarray  # (9, 9) counts in SCORING_CLASSES order
    phoneset: str
    unknown_phones: tuple[str, ...]

    @property
    def recall(self) -> dict[str, float | None]:
        totals = self.confusion.sum(axis=1)
        return {c: (float(self.confusion[i, i] / totals[i]) if totals[i] else None)
                for i, c in enumerate(SCORING_CLASSES)}  # fmt: skip

    def to_json(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "accuracy": round(self.accuracy, 4),
            "coarse_accuracy": round(self.coarse_accuracy, 4),
            "classes": list(SCORING_CLASSES),
            "confusion": self.confusion.astype(int).tolist(),
            "recall": {k: (round(v, 4) if v is not None else None) for k, v in self.recall.items()},
            "phoneset": self.phoneset,
            "unknown_phones": list(self.unknown_phones),
        }

    def render(self) -> str:
        """Plain-text report: accuracy lines, then the confusion matrix with per-class recall."""
        lines = [
            f"frames: {self.frames}",
            f"frame accuracy (9 classes): {100 * self.accuracy:.1f} %",
            f"coarse accuracy (closed/FV/vowel/other): {100 * self.coarse_accuracy:.1f} %",
            f"reference phone set: {self.phoneset}",
        ]
        if self.unknown_phones:
            lines.append(f"unknown reference phones (scored as sil): {', '.join(self.unknown_phones)}")
        width = 6
        lines.append("")
        lines.append("ref \\ pred".ljust(11) + "".join(c.rjust(width) for c in SCORING_CLASSES) + "  recall")
        for i, c in enumerate(SCORING_CLASSES):
            recall = self.recall[c]
            cells = "".join(str(int(v)).rjust(width) for v in self.confusion[i])
            lines.append(c.ljust(11) + cells + ("  " + f"{100 * recall:.0f} %" if recall is not None else "  -"))
        return "\n".join(lines)


def reference_classes(
    segments: Sequence[Segment], n_frames: int, phoneset: PhoneSet | None = None
) -> tuple[list[str], str, tuple[str, ...]]:
    """Reference class per frame, the phone set used, and the labels it did not know (scored as sil)."""
    chosen: PhoneSet = phoneset or detect_phoneset(p for p, _, _ in segments)
    classes = ["sil"] * n_frames
    unknown: set[str] = set()
    for phone, start, end in segments:
        try:
            cls = phone_class(phone, chosen)
        except KeyError:
            unknown.add(phone)
            continue
        first = max(0, int(np.ceil((start - 0.005) / 0.01 - 1e-9)))
        last = min(n_frames, int(np.ceil((end - 0.005) / 0.01 - 1e-9)))
        for k in range(first, last):
            classes[k] = cls
    return classes, chosen, tuple(sorted(unknown))


def score_frames(frames: Sequence[Frame], segments: Sequence[Segment], phoneset: PhoneSet | None = None) -> Score:
    ref, chosen, unknown = reference_classes(segments, len(frames), phoneset)
    pred = [viseme_class(max(f.visemes, key=f.visemes.__getitem__)) for f in frames]
    return score_classes(ref, pred, chosen, unknown)


def score_classes(
    reference: Sequence[str], predicted: Sequence[str], phoneset: str = "", unknown: tuple[str, ...] = ()
) -> Score:
    index = {c: i for i, c in enumerate(SCORING_CLASSES)}
    confusion = np.zeros((len(SCORING_CLASSES), len(SCORING_CLASSES)), dtype=np.int64)
    for r, p in zip(reference, predicted, strict=True):
        confusion[index[r], index[p]] += 1
    n = len(reference)
    correct = int(np.trace(confusion))
    coarse = sum(_COARSE[r] == _COARSE[p] for r, p in zip(reference, predicted, strict=True))
    return Score(n, correct / n if n else 0.0, coarse / n if n else 0.0, confusion, phoneset, unknown)
