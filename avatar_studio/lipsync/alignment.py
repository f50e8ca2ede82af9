"""Reading reference phone alignments: Praat TextGrids (long or short text format) and plain tables.

Why both: forced aligners (Montreal Forced Aligner, Praat by hand) write TextGrids; the espeak-ng
harness and people typing a reference write a table, one ``phone start end`` per line. Both become
``[(phone, start_s, end_s)]`` sorted by start, and every problem is one ``AlignmentError`` sentence
with the file and line so a broken reference is fixed in one go.

Table rules: blank lines and ``#`` comments (a ``#`` at the start of a word) are skipped; columns are
separated by tabs or spaces;
``phone start end`` or ``start end phone`` (whichever has two numbers); times are seconds, unless
every time is a whole number and the largest is ≥ 100 — then they are milliseconds (espeak timings
are printed in ms; no phone alignment is 100 s long). A first line that is not a row is a header.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

Segment = tuple[str, float, float]
_COMMENT = re.compile(r"(^|\s)#.*$")  # "#" starts a comment only at a word start: espeak has "t#", "a#"


class AlignmentError(ValueError):
    """A reference alignment that cannot be used; the message names the file (and line) and the reason."""


def read_alignment(path: str | os.PathLike[str], tier: str | None = None) -> list[Segment]:
    """Phone segments from a TextGrid (the ``tier`` named, else a tier called phones/phone) or a table."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AlignmentError(f"{path}: {exc.strerror or exc}") from None
    text = _decode(raw, path)
    try:
        if "ooTextFile" in text[:200] or text.lstrip().startswith("File type"):
            segments = parse_textgrid(text, tier)
        else:
            segments = parse_table(text)
    except AlignmentError as exc:
        raise AlignmentError(f"{path}: {exc}") from None
    if not segments:
        raise AlignmentError(f"{path}: no phone segments found")
    return segments


def _decode(raw: bytes, path: Path) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AlignmentError(f"{path}: not UTF-8 or UTF-16 text") from None


def parse_table(text: str) -> list[Segment]:
    rows: list[tuple[int, str, float, float]] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = _COMMENT.sub("", line).strip()
        if not stripped:
            continue
        parts = stripped.split()
        parsed = _row(parts)
        if parsed is None:
            if not rows and number == _first_content_line(text):
                continue  # a header such as "phone start end"
            raise AlignmentError(f"line {number}: expected 'phone start end', got {line.strip()!r}")
        phone, start, end = parsed
        if end < start:
            raise AlignmentError(f"line {number}: end {end} is before start {start}")
        rows.append((number, phone, start, end))
    times = [t for _, _, s, e in rows for t in (s, e)]
    scale = 0.001 if times and all(float(t).is_integer() for t in times) and max(times) >= 100 else 1.0
    return sorted(((p, s * scale, e * scale) for _, p, s, e in rows), key=lambda seg: seg[1])


def _first_content_line(text: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if _COMMENT.sub("", line).strip():
            return number
    return 0


def _row(parts: list[str]) -> tuple[str, float, float] | None:
    if len(parts) < 2:
        return None
    nums = [_number(p) for p in parts]
    if len(parts) >= 3 and nums[1] is not None and nums[2] is not None:
        return parts[0], nums[1], nums[2]  # espeak's "0" and "3" are phones, so a numeric label is fine
    if len(parts) >= 3 and nums[0] is not None and nums[1] is not None and nums[2] is None:
        return parts[2], nums[0], nums[1]
    if len(parts) == 2 and nums[0] is not None and nums[1] is not None:
        return "", nums[0], nums[1]  # an empty label (silence) with only times
    return None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


# -- TextGrid --------------------------------------------------------------------------------------------

# Strings ("" escapes a quote), numbers, and the <exists> flag; "[1]" item/interval indexes are removed first.
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|(?<![\w.])(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)(?![\w.])|<(exists|absent)>')
_INDEX = re.compile(r"\[\s*\d*\s*\]")


def parse_textgrid(text: str, tier: str | None = None) -> list[Segment]:
    tokens: list[str | float] = []
    for match in _TOKEN.finditer(_INDEX.sub(" ", text)):
        string, number, flag = match.groups()
        if string is not None:
            tokens.append(string.replace('""', '"'))
        elif number is not None:
            tokens.append(float(number))
        else:
            tokens.append(f"<{flag}>")
    pos = 0

    def take(kind: type) -> str | float:
        nonlocal pos
        if pos >= len(tokens):
            raise AlignmentError("TextGrid ends too early")
        value = tokens[pos]
        pos += 1
        if kind is float and not isinstance(value, float):
            raise AlignmentError(f"broken TextGrid: expected a number, found {value!r}")
        if kind is str and not isinstance(value, str):
            raise AlignmentError(f"broken TextGrid: expected a string, found {value!r}")
        return value

    if take(str) != "ooTextFile" or take(str) != "TextGrid":
        raise AlignmentError("not a Praat TextGrid text file")
    take(float)
    take(float)
    if take(str) != "<exists>":
        return []
    n_tiers = int(take(float))
    tiers: dict[str, list[Segment]] = {}
    for _ in range(n_tiers):
        kind, name = take(str), str(take(str))
        take(float)
        take(float)
        count = int(take(float))
        segments: list[Segment] = []
        for _ in range(count):
            if kind == "IntervalTier":
                start, end, label = float(take(float)), float(take(float)), str(take(str))
                segments.append((label, start, end))
            else:  # TextTier (points): not an alignment, skipped
                take(float)
                take(str)
        if kind == "IntervalTier":
            tiers.setdefault(name, segments)
    if not tiers:
        raise AlignmentError("the TextGrid has no interval tier")
    if tier is not None:
        if tier not in tiers:
            raise AlignmentError(f"no tier named {tier!r} (tiers: {', '.join(tiers)})")
        return tiers[tier]
    for candidate in tiers:
        if candidate.lower() in ("phones", "phone", "phonemes", "phoneme", "segments"):
            return tiers[candidate]
    if len(tiers) == 1:
        return next(iter(tiers.values()))
    raise AlignmentError(f"cannot tell which tier holds the phones (tiers: {', '.join(tiers)}); name it 'phones'")
