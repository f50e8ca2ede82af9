"""The Qt-free core of the mapping-table editor: the editable draft, how it is checked, and its texts.

Why a draft next to ``VisemeTable`` instead of editing a table: a ``VisemeTable`` is valid by
construction, but a QA engineer half-way through typing ``mouthSmileLeft`` holds a table that is not
valid yet, and the editor must keep (and show, and undo) exactly what was typed. The draft is that
state, as plain immutable Python, so snapshots for undo are free and "modified" is a comparison.

Why every check goes through ``VisemeTable.from_json``: the file loader, ``inspect`` and the lip-sync
engine judge tables with it, so the editor can never accept a table the app later refuses, nor refuse
one it accepts, and its messages read the same as the CLI's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from avatar_studio.avatar.blendshapes import ARKIT_52, OVR_VISEMES, VISEME_ALIASES
from avatar_studio.lipsync.viseme_table import VisemeTable, VisemeTableError

DraftEntry = tuple[str, object]
"""(blendshape name as typed, weight as entered): a float from the controls, anything via the API."""

Draft = dict[str, tuple[DraftEntry, ...]]
"""OVR viseme → its entries; visemes the table leaves out are absent (they move nothing)."""

_SIDES: Final = ("Left", "Right")


def draft_of(table: VisemeTable) -> Draft:
    """The draft that shows ``table`` as it is."""
    return {viseme: tuple(table[viseme]) for viseme in table}


def draft_json(draft: Mapping[str, Iterable[DraftEntry]]) -> dict[str, list[list[object]]]:
    """The draft in the table file's JSON form (what ``VisemeTable.from_json`` judges)."""
    return {viseme: [[name, weight] for name, weight in entries] for viseme, entries in draft.items()}


def known_names(morph_names: Iterable[str] | None) -> frozenset[str]:
    """Names an entry may use: the 52 ARKit names, plus whatever the shown avatar has.

    ARKit names stay allowed on an avatar that lacks some of them, because a table is shared across
    avatars: such an entry is a warning (the viseme is listed as not expressible), not an error. Names
    outside ARKit (``Laughter``, ``viseme_aa``) are only known when the avatar has them, so without an
    avatar the check is the same as the file loader's default.
    """
    return frozenset(ARKIT_52).union(morph_names or ())


def entry_names(name: str, known: Collection[str]) -> tuple[str, ...]:
    """The blendshape(s) one entry name drives: itself, or both sides for a side-less pair name."""
    if name in known:
        return (name,)
    sides = tuple(name + side for side in _SIDES)
    return sides if all(side in known for side in sides) else ()


@dataclass(frozen=True)
class DraftCheck:
    """The verdict on a draft.

    ``usable`` holds only the entries that are valid on their own (and not repeats), so the live
    preview and the "cannot express" list keep working while one row is being fixed; ``table`` is the
    whole draft as a table, or None while any problem is left.
    """

    table: VisemeTable | None
    usable: VisemeTable
    problems: tuple[tuple[str, str], ...] = ()
    bad_rows: Mapping[str, frozenset[int]] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.table is not None


def check_draft(draft: Mapping[str, tuple[DraftEntry, ...]], known: Collection[str]) -> DraftCheck:
    """Judge every viseme of ``draft``; problems are ``(viseme, message)`` in OVR order.

    The message text is the table loader's for that viseme (entry indices as in the file). Which rows
    to highlight is found by adding the viseme's entries one by one, so a repeated name marks the
    repeat, not the first use, and one bad row does not hide the others.
    """
    problems: list[tuple[str, str]] = []
    bad_rows: dict[str, frozenset[int]] = {}
    usable: dict[str, list[list[object]]] = {}
    for viseme in sorted(draft, key=OVR_VISEMES.index):
        rows = [[name, weight] for name, weight in draft[viseme]]
        try:
            VisemeTable.from_json({viseme: rows}, known_blendshapes=known)
        except VisemeTableError as exc:
            problems.extend((viseme, text) for text in exc.problems)
        else:
            usable[viseme] = rows
            continue
        good: list[list[object]] = []
        bad: set[int] = set()
        for index, row in enumerate(rows):
            try:
                VisemeTable.from_json({viseme: [*good, row]}, known_blendshapes=known)
            except VisemeTableError:
                bad.add(index)
            else:
                good.append(row)
        bad_rows[viseme] = frozenset(bad)
        usable[viseme] = good
    usable_table = VisemeTable.from_json(usable, known_blendshapes=known)
    return DraftCheck(
        table=None if problems else usable_table,
        usable=usable_table,
        problems=tuple(problems),
        bad_rows=bad_rows,
    )


def new_entry_problem(
    entries: Iterable[DraftEntry], name: str, weight: float, known: Collection[str], viseme: str
) -> str | None:
    """Why ``name`` cannot be added to a viseme that has ``entries`` (None: it can).

    Adding is refused for unknown or repeated names, unlike typing in a row, because the add field is
    where the user picks a name: refusing there costs nothing, while a row is kept as typed until fixed.
    """
    name = name.strip()
    if not name:
        return "Type or pick a blendshape name first."
    try:
        VisemeTable.from_json({viseme: [[name, weight]]}, known_blendshapes=known)
    except VisemeTableError as exc:
        text = exc.problems[0].split(": ", 1)[-1]  # drop "viseme 'PP', entry 0": the entry does not exist yet
        return text[:1].upper() + text[1:]
    new = set(entry_names(name, known))
    for index, (other, _weight) in enumerate(entries):
        clash = new & set(entry_names(str(other).strip(), known))
        if clash:
            return f"{viseme} already uses {', '.join(sorted(clash))} (entry {index})."
    return None


# -- texts ------------------------------------------------------------------------------------------


def viseme_label(viseme: str) -> str:
    """``PP · MBP``: the OVR name with the aliases people know it by (case variants left out)."""
    aliases = [
        alias for alias, target in VISEME_ALIASES.items() if target == viseme and alias.lower() != viseme.lower()
    ]
    return " · ".join([viseme, *aliases])


def summary_text(unexpressible: Mapping[str, list[str]], avatar_loaded: bool) -> str:
    """One line on what the shown avatar cannot express with this table."""
    if not avatar_loaded:
        return (
            f"No avatar shown: names are checked against the {len(ARKIT_52)} ARKit blendshapes; "
            "open an avatar to see which visemes it can express."
        )
    if not unexpressible:
        return f"This avatar can show all {len(OVR_VISEMES)} visemes with this table."
    count = len(unexpressible)
    listed = "; ".join(f"{viseme} (lacks {', '.join(names)})" for viseme, names in unexpressible.items())
    return f"{count} of {len(OVR_VISEMES)} visemes cannot be shown: {listed}"


__all__ = [
    "Draft",
    "DraftCheck",
    "DraftEntry",
    "check_draft",
    "draft_json",
    "draft_of",
    "entry_names",
    "known_names",
    "new_entry_problem",
    "summary_text",
    "viseme_label",
]
