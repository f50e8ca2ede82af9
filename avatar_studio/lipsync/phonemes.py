"""Phone → viseme mapping and the 9 scoring classes, for ARPAbet, espeak-ng mnemonics and IPA.

Why three phone sets: pocketsphinx (offline mode) and Montreal-Forced-Aligner TextGrids speak ARPAbet,
espeak-ng (our timing oracle and training source) speaks its own ASCII mnemonics or IPA, and a
reference alignment a QA person types by hand can be any of them. Everything is funnelled through
ARPAbet so there is exactly one viseme table to review.

The viseme choices follow the scoring classes of the issue (sil, MBP, FV, A, E, I, O, U, C), so a
perfect phone recogniser scores 100 % after the viseme → class collapse: ER and AX are the ``E``
viseme (class E), W is ``ou`` (class U), Y is ``ih`` (class I).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal

from avatar_studio.avatar.blendshapes import OVR_VISEMES

PhoneSet = Literal["arpabet", "espeak", "ipa"]

SCORING_CLASSES: Final[tuple[str, ...]] = ("sil", "MBP", "FV", "A", "E", "I", "O", "U", "C")
"""The 9 classes frames are scored in (issue: sil, MBP, FV, A, E, I, O, U, C = other consonants)."""

VISEME_CLASS: Final[dict[str, str]] = {
    "sil": "sil", "PP": "MBP", "FF": "FV", "aa": "A", "E": "E", "ih": "I", "oh": "O", "ou": "U",
    "TH": "C", "DD": "C", "kk": "C", "CH": "C", "SS": "C", "nn": "C", "RR": "C",
}  # fmt: skip
"""OVR viseme → scoring class."""

ARPABET_VISEME: Final[dict[str, str]] = {
    "SIL": "sil",
    "P": "PP", "B": "PP", "M": "PP",
    "F": "FF", "V": "FF",
    "TH": "TH", "DH": "TH",
    "T": "DD", "D": "DD", "DX": "DD",
    "K": "kk", "G": "kk", "NG": "kk", "HH": "kk",
    "CH": "CH", "JH": "CH", "SH": "CH", "ZH": "CH",
    "S": "SS", "Z": "SS",
    "N": "nn", "L": "nn", "EL": "nn", "EN": "nn", "EM": "PP",
    "R": "RR",
    "AA": "aa", "AE": "aa", "AH": "aa", "AY": "aa", "AW": "aa",
    "EH": "E", "EY": "E", "ER": "E", "AX": "E", "AXR": "E",
    "IY": "ih", "IH": "ih", "Y": "ih", "IX": "ih",
    "AO": "oh", "OW": "oh", "OY": "oh",
    "UW": "ou", "UH": "ou", "W": "ou", "UX": "ou",
}  # fmt: skip
"""ARPAbet (stress digits stripped, upper case) → OVR viseme."""

# Labels aligners and recognisers use for "no speech" (pocketsphinx fillers, MFA's sp/spn, Praat's empty).
_SILENCE_LABELS: Final = frozenset(
    {"", "sil", "sp", "spn", "pau", "silence", "<sil>", "<s>", "</s>", "_", "_:", "_!", "||", "|", "#", "(pause)"}
)

# espeak-ng ASCII mnemonics (English voices) → ARPAbet.
ESPEAK_ARPABET: Final[dict[str, str]] = {
    "p": "P", "b": "B", "m": "M", "f": "F", "v": "V", "T": "TH", "D": "DH", "t": "T", "d": "D",
    "t#": "T", "d#": "D", "*": "DX", "k": "K", "g": "G", "N": "NG", "h": "HH", "x": "HH", "?": "T",
    "tS": "CH", "dZ": "JH", "S": "SH", "Z": "ZH", "s": "S", "z": "Z", "n": "N", "l": "L", "L": "L",
    "r": "R", "r-": "R", "w": "W", "j": "Y", "W": "W", "l/": "L", "l/2": "L", "n-": "N", "m-": "M",
    "a": "AE", "a#": "AH", "A:": "AA", "A@": "AA", "A": "AA", "aa": "AA", "0": "AA", "V": "AH",
    "@": "AX", "@2": "AX", "@5": "AX", "@L": "L", "3": "ER", "3:": "ER", "a2": "AX", "I2": "IH", "I#": "IH",
    "e": "EH", "E": "EH", "e@": "EH", "eI": "EY", "E2": "EH", "E@": "EH",
    "i": "IY", "i:": "IY", "I": "IH", "i@": "IY", "i@3": "IY", "IR": "IY",
    "O:": "AO", "O": "AO", "O@": "AO", "o@": "AO", "oU": "OW", "o": "OW", "OI": "OY", "O2": "AO", "0@": "AO",
    "u:": "UW", "U": "UH", "U@": "UH", "u": "UW", "aI": "AY", "aU": "AW", "aI@": "AY", "aI3": "AY", "aU@": "AW",
}  # fmt: skip

# IPA (as espeak-ng and MFA's IPA models write it) → ARPAbet; diacritics are stripped before lookup.
IPA_ARPABET: Final[dict[str, str]] = {
    "p": "P", "b": "B", "m": "M", "f": "F", "v": "V", "θ": "TH", "ð": "DH", "t": "T", "d": "D",
    "ɾ": "DX", "k": "K", "ɡ": "G", "g": "G", "ŋ": "NG", "h": "HH", "x": "HH", "ʔ": "T",
    "tʃ": "CH", "t͡ʃ": "CH", "dʒ": "JH", "d͡ʒ": "JH", "ʃ": "SH", "ʒ": "ZH", "s": "S", "z": "Z",
    "n": "N", "l": "L", "ɫ": "L", "r": "R", "ɹ": "R", "ɻ": "R", "w": "W", "j": "Y", "ʍ": "W",
    "a": "AE", "æ": "AE", "ɐ": "AH", "ɑ": "AA", "ɒ": "AA", "ʌ": "AH", "ə": "AX", "ɚ": "ER", "ɜ": "ER", "ɝ": "ER",
    "e": "EH", "ɛ": "EH", "eɪ": "EY", "i": "IY", "ɪ": "IH", "ᵻ": "IH", "ɨ": "IH",
    "ɔ": "AO", "o": "OW", "oʊ": "OW", "əʊ": "OW", "ɔɪ": "OY", "u": "UW", "ʊ": "UH", "ɯ": "UW",
    "aɪ": "AY", "aʊ": "AW", "ɑɪ": "AY", "ɪə": "IY", "eə": "EH", "ʊə": "UH", "ɛə": "EH",
}  # fmt: skip

_ARPABET_STRESS = re.compile(r"[012]$")
_ESPEAK_MARKS = str.maketrans("", "", "'," + "%=")
_IPA_MARKS = str.maketrans("", "", "ˈˌːˑ̩̯̃ʰʲʷ̥͡.")


def arpabet_viseme(phone: str) -> str | None:
    """OVR viseme of an ARPAbet phone (``AH0``, ``sh``, ``+NSN+`` …); None if it is not ARPAbet."""
    label = phone.strip()
    if label.lower() in _SILENCE_LABELS or (label.startswith("+") and label.endswith("+")):
        return "sil"
    return ARPABET_VISEME.get(_ARPABET_STRESS.sub("", label.upper()))


def espeak_viseme(phone: str) -> str | None:
    """OVR viseme of an espeak-ng ASCII mnemonic (stress marks allowed); None if unknown."""
    label = phone.strip()
    if label.lower() in _SILENCE_LABELS:
        return "sil"
    core = label.translate(_ESPEAK_MARKS)
    arpa = ESPEAK_ARPABET.get(core) or ESPEAK_ARPABET.get(core.rstrip(":"))
    return ARPABET_VISEME[arpa] if arpa else None


def ipa_viseme(phone: str) -> str | None:
    """OVR viseme of an IPA phone (length and stress marks allowed); None if unknown."""
    label = phone.strip()
    if label.lower() in _SILENCE_LABELS:
        return "sil"
    core = label.translate(_IPA_MARKS)
    arpa = IPA_ARPABET.get(core)
    if arpa is None and core:
        arpa = IPA_ARPABET.get(core[0])  # a diphthong or affricate we do not list: its first part
    return ARPABET_VISEME[arpa] if arpa else None


_BY_SET = {"arpabet": arpabet_viseme, "espeak": espeak_viseme, "ipa": ipa_viseme}


def detect_phoneset(labels: Iterable[str]) -> PhoneSet:
    """The phone set that knows the most labels, ARPAbet winning ties (``T`` is θ in espeak, t in ARPAbet).

    Why count rather than sniff one label: real alignments mix in silence markers and a stray noise
    label, so the set that explains most of the file is the right one.
    """
    distinct = {label.strip() for label in labels} - {""}
    best: PhoneSet = "arpabet"
    best_known = -1
    for name in ("arpabet", "espeak", "ipa"):
        known = sum(_BY_SET[name](label) is not None for label in distinct)
        if known > best_known:
            best, best_known = name, known  # type: ignore[assignment]
    return best


def phone_viseme(phone: str, phoneset: PhoneSet = "arpabet") -> str:
    """OVR viseme for ``phone``; an unknown label raises ``KeyError`` naming it and the phone set."""
    viseme = _BY_SET[phoneset](phone)
    if viseme is None:
        raise KeyError(f"unknown {phoneset} phone {phone!r}")
    return viseme


def phone_class(phone: str, phoneset: PhoneSet = "arpabet") -> str:
    """Scoring class (one of ``SCORING_CLASSES``) of a phone."""
    return VISEME_CLASS[phone_viseme(phone, phoneset)]


def viseme_class(viseme: str) -> str:
    """Scoring class of an OVR viseme (``KeyError`` for anything else)."""
    return VISEME_CLASS[viseme]


assert set(VISEME_CLASS) == set(OVR_VISEMES)
assert set(ARPABET_VISEME.values()) <= set(OVR_VISEMES)
