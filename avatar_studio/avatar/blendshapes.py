"""Blendshape names: the ARKit and OVR lists, and how providers' spellings map onto them.

Why a module of its own: the sliders, the lip-sync table, ``inspect`` and the loader all have to
agree on what "``jawOpen``" is. Providers spell the same shape many ways (``eyeBlink_L`` from ARKit's
raw values, ``ARKit_jawOpen`` clips from Didimo, ``viseme_aa`` from Ready Player Me, ``ee`` from the
Avatar SDK legacy heads; see ``design/providers.md`` §4–5), so every name goes through one normaliser
here and the rest of the app only ever sees canonical names:

* the 52 ARKit constant names (``eyeBlinkLeft``, ``jawOpen``, …), and
* ``viseme_<OVR>`` for the 15 Oculus visemes (``viseme_sil``, ``viseme_PP``, …, ``viseme_ou``).

Anything else (identity shapes such as ``NoseWidth``, MetaPerson's ``Laughter``, ``Key 1``) keeps its
raw name: it can still be shown and driven, but nothing assumes what it does.

Pure Python on purpose: the CLI and the table editor use it without numpy or Qt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

ARKIT_52: Final[tuple[str, ...]] = (
    # left eye
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft",
    # right eye
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    # mouth and jaw
    "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    # brows, cheeks, nose
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight",
    # tongue
    "tongueOut",
)  # fmt: skip
"""Apple's ``ARFaceAnchor.BlendShapeLocation`` constant names, in Apple's documented order."""

OVR_VISEMES: Final[tuple[str, ...]] = (
    "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou",
)  # fmt: skip
"""The Oculus/Meta OVR LipSync visemes in enum order (the order lip-sync engines emit them in)."""

VISEME_PREFIX: Final = "viseme_"

VISEME_ALIASES: Final[dict[str, str]] = {
    # the seed's viseme table (spec/seed-api-and-data-model.md)
    "MBP": "PP",
    "FV": "FF",
    "A": "aa",
    "E": "E",
    "I": "ih",
    "O": "oh",
    "U": "ou",
    # Avatar SDK legacy ``visems_17`` (lower case, ``ee`` where OVR has ``E``); Didimo I/O/U are above
    "sil": "sil",
    "pp": "PP",
    "ff": "FF",
    "th": "TH",
    "dd": "DD",
    "kk": "kk",
    "ch": "CH",
    "ss": "SS",
    "nn": "nn",
    "rr": "RR",
    "aa": "aa",
    "ee": "E",
    "ih": "ih",
    "oh": "oh",
    "ou": "ou",
}
"""Alias → OVR viseme. Looked up case-insensitively (see ``canonical_viseme``)."""

REGIONS: Final[tuple[str, ...]] = (
    "brows",
    "eyes",
    "cheeks",
    "nose",
    "jaw",
    "mouth",
    "tongue",
    "visemes",
    "other",
)
"""Face regions in the order the GUI shows its slider groups (top of the face to the bottom)."""

CANONICAL_NAMES: Final[frozenset[str]] = frozenset(ARKIT_52) | frozenset(
    VISEME_PREFIX + v for v in OVR_VISEMES
)
"""Every name the app treats as having a known meaning."""

# Case-insensitive lookups. OVR names are unique case-insensitively, so lower-casing loses nothing.
_ARKIT_BY_KEY: Final = {name.lower(): name for name in ARKIT_52}
_VISEME_BY_KEY: Final = {name.lower(): name for name in OVR_VISEMES} | {
    alias.lower(): target for alias, target in VISEME_ALIASES.items()
}
# Group prefixes providers put in front of a pose name (Didimo clip groups, RPM, VRChat-style tools).
_GROUP_PREFIXES: Final = ("arkit_", "oculus_", "viseme_", "v_")
_SIDE_SUFFIX: Final = re.compile(r"[_.\- ]([LR])$", re.IGNORECASE)
_SEPARATORS: Final = re.compile(r"[_\- ]")
_REGION_BY_PREFIX: Final = (
    ("brow", "brows"),
    ("eye", "eyes"),
    ("cheek", "cheeks"),
    ("nose", "nose"),
    ("jaw", "jaw"),
    ("mouth", "mouth"),
    ("tongue", "tongue"),
)


class BlendshapeMapError(ValueError):
    """A per-asset ``blendshape_map`` is unusable; the message names the offending entry."""


@dataclass(frozen=True)
class ArkitCoverage:
    """How much of the ARKit set (and of the OVR visemes) an avatar can express.

    Kept as names rather than counts so ``inspect`` and the GUI can say *which* shapes are missing:
    "49/52" tells a reviewer nothing about whether the avatar can blink.
    """

    present: tuple[str, ...]
    missing: tuple[str, ...]
    visemes: tuple[str, ...]
    unmapped: tuple[str, ...]

    @property
    def ratio(self) -> float:
        """Share of the 52 ARKit shapes present, in [0, 1]."""
        return len(self.present) / len(ARKIT_52)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``inspect --json`` and reports."""
        return {
            "present": list(self.present),
            "missing": list(self.missing),
            "visemes": list(self.visemes),
            "unmapped": list(self.unmapped),
            "ratio": self.ratio,
        }


def canonical_viseme(name: str) -> str | None:
    """The OVR viseme an alias stands for (``MBP`` → ``PP``, ``ee`` → ``E``, ``viseme_I`` → ``ih``).

    Case-insensitive because assets disagree on case (``pp`` vs ``PP``) and no two OVR visemes differ
    only by case. Returns None for anything that is not a viseme.
    """
    key = name.strip()
    if key.lower().startswith(VISEME_PREFIX):
        key = key[len(VISEME_PREFIX) :]
    return _VISEME_BY_KEY.get(key.lower())


def canonical_name(raw: str) -> str | None:
    """A provider's morph-target name as an ARKit constant name or ``viseme_<OVR>``; None if neither.

    ARKit is tried before visemes so that a side suffix is never mistaken for a viseme; a bare ``E``,
    ``I``, ``O`` or ``U`` (Didimo's Oculus poses) has no ARKit reading and so becomes a viseme.
    """
    core = _strip_prefixes(raw)
    if not core:
        return None
    arkit = _ARKIT_BY_KEY.get(_arkit_key(core))
    if arkit is not None:
        return arkit
    viseme = _VISEME_BY_KEY.get(core.lower())
    return VISEME_PREFIX + viseme if viseme is not None else None


def _strip_prefixes(raw: str) -> str:
    """Drop mesh/group prefixes (``blendShape1.``, ``base/visemes_15.``, ``ARKit_``, ``viseme_``, ``v_``).

    A Blender-style ``.L``/``.R`` side suffix is turned into ``_L``/``_R`` first, so the dot is not
    read as a mesh prefix separator.
    """
    name = raw.strip()
    name = re.sub(r"\.([LR])$", r"_\1", name, flags=re.IGNORECASE)
    name = name.rsplit(".", 1)[-1]
    stripped = True
    while stripped:
        stripped = False
        for prefix in _GROUP_PREFIXES:
            if name.lower().startswith(prefix) and len(name) > len(prefix):
                name = name[len(prefix) :]
                stripped = True
    return name


def _arkit_key(core: str) -> str:
    """Lower-case comparison key with ``_L``/``_R`` spelled out and separators removed.

    ``jawLeft``/``mouthLeft`` need no exception here: they already end in ``Left`` and ARKit never
    gives them an ``_L`` form, so their key is their own name.
    """
    core = _SIDE_SUFFIX.sub(lambda m: "left" if m.group(1) in "Ll" else "right", core)
    return _SEPARATORS.sub("", core).lower()


def _validated_map(blendshape_map: Mapping[str, str] | None) -> dict[str, str]:
    """The map as a plain dict, after checking every value is a canonical name.

    The map comes from a ``jsonb`` column someone edited by hand, so each bad entry is named, with a
    suggestion when the value is merely misspelled.
    """
    if blendshape_map is None:
        return {}
    if not isinstance(blendshape_map, Mapping):
        raise BlendshapeMapError(
            f"blendshape_map must be an object of provider name → canonical name, "
            f"not {type(blendshape_map).__name__}"
        )
    problems = [
        problem for key, value in blendshape_map.items() if (problem := _map_entry_problem(key, value))
    ]
    if problems:
        raise BlendshapeMapError("; ".join(problems))
    return dict(blendshape_map)


def _map_entry_problem(key: object, value: object) -> str | None:
    if not isinstance(key, str) or not isinstance(value, str):
        return f"blendshape_map entry {key!r}: {value!r}: both the key and the value must be strings"
    if value in CANONICAL_NAMES:
        return None
    problem = (
        f"blendshape_map entry {key!r}: {value!r} is not a canonical name "
        f"(one of the 52 ARKit names or viseme_<OVR viseme>)"
    )
    suggestion = canonical_name(value)
    return f"{problem}; did you mean {suggestion!r}?" if suggestion else problem


def _claims(raw_names: Iterable[str], mapping: Mapping[str, str]) -> dict[str, list[tuple[int, str]]]:
    """Canonical name → [(rank, raw)] sorted best first; rank 0 = explicit map, 1 = already canonical,
    2 = normalised. Ties keep input order (``sorted`` is stable)."""
    claims: dict[str, list[tuple[int, str]]] = {}
    for raw in dict.fromkeys(raw_names):
        if raw in mapping:
            claims.setdefault(mapping[raw], []).append((0, raw))
        elif raw in CANONICAL_NAMES:
            claims.setdefault(raw, []).append((1, raw))
        elif (canonical := canonical_name(raw)) is not None:
            claims.setdefault(canonical, []).append((2, raw))
    return {name: sorted(entries, key=lambda e: e[0]) for name, entries in claims.items()}


def resolve_names(
    raw_names: Iterable[str], blendshape_map: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Raw morph-target names of ONE mesh → the names the app uses.

    An explicit ``blendshape_map`` entry wins, else ``canonical_name``, else the raw name unchanged.

    Call it once per mesh. Across meshes, equal results are intended to be unified by the loader (the
    head's and the teeth's ``jawOpen`` are one slider). Within one mesh, two targets resolving to the
    same name would be driven twice by one slider, so the result is kept one-to-one: the best claim
    keeps the canonical name (explicit map entry, then a raw name already spelled canonically, then
    the first in input order) and the others keep their raw names. ``name_collisions`` reports those
    cases so the loader can warn. Raises ``BlendshapeMapError`` when the map itself makes the result
    ambiguous: two map entries naming the same target, or a map entry taking a name that another
    target of the mesh literally has.
    """
    mapping = _validated_map(blendshape_map)
    names = list(dict.fromkeys(raw_names))
    resolved = {raw: raw for raw in names}
    for canonical, entries in _claims(names, mapping).items():
        _check_claims(canonical, entries, resolved, mapping)
        resolved[entries[0][1]] = canonical
    return resolved


def _check_claims(
    canonical: str, entries: list[tuple[int, str]], resolved: Mapping[str, str], mapping: Mapping[str, str]
) -> None:
    explicit = [raw for rank, raw in entries if rank == 0]
    if len(explicit) > 1:
        listed = ", ".join(repr(raw) for raw in explicit)
        raise BlendshapeMapError(
            f"blendshape_map maps {listed} to {canonical!r}; within one mesh only one target may have it"
        )
    literal_stays = canonical in resolved and canonical not in mapping
    if explicit and literal_stays and canonical != explicit[0]:
        raise BlendshapeMapError(
            f"blendshape_map entry {explicit[0]!r}: {canonical!r}: this mesh also has a target literally "
            f"named {canonical!r}; map that one to another canonical name or drop the entry"
        )


def name_collisions(
    raw_names: Iterable[str], blendshape_map: Mapping[str, str] | None = None
) -> dict[str, tuple[str, ...]]:
    """Canonical name → raw names of ONE mesh that compete for it (winner first); only real collisions.

    ``resolve_names`` settles these silently so loading never fails on a legacy duplicate; this is
    what the loader turns into an ``Avatar.warnings`` line.
    """
    mapping = _validated_map(blendshape_map)
    return {
        canonical: tuple(raw for _, raw in entries)
        for canonical, entries in _claims(raw_names, mapping).items()
        if len(entries) > 1
    }


def coverage(names: Iterable[str]) -> ArkitCoverage:
    """Which ARKit shapes and OVR visemes a set of already-resolved morph names covers."""
    ordered = list(dict.fromkeys(names))
    present_set = set(ordered)
    return ArkitCoverage(
        present=tuple(n for n in ARKIT_52 if n in present_set),
        missing=tuple(n for n in ARKIT_52 if n not in present_set),
        visemes=tuple(VISEME_PREFIX + v for v in OVR_VISEMES if VISEME_PREFIX + v in present_set),
        unmapped=tuple(n for n in ordered if n not in CANONICAL_NAMES),
    )


def region_of(name: str) -> str:
    """Face region of a morph name, for grouping sliders; raw spellings are normalised first.

    ARKit names start with their region (``browInnerUp``, ``cheekPuff``, ``mouthClose``), which is why
    a prefix test suffices; anything unrecognised goes to ``"other"`` rather than being guessed.
    """
    canonical = name if name in CANONICAL_NAMES else canonical_name(name)
    if canonical is None:
        return "other"
    if canonical.startswith(VISEME_PREFIX):
        return "visemes"
    for prefix, region in _REGION_BY_PREFIX:
        if canonical.startswith(prefix):
            return region
    return "other"
