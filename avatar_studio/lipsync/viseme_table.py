"""The viseme table: which ARKit blendshapes, at which weights, form each OVR viseme.

Why a validated type instead of a dict: the table is a JSON file QA people edit by hand, and a typo
(``mouthSmile_L``, a weight of ``8`` instead of ``0.8``) would otherwise show up only as a mouth that
silently does not move. Every problem is collected and reported with the viseme and entry index, so
one run of ``load`` lists everything to fix.

File format (the seed's, loaded as-is)::

    {"MBP": [["mouthClose", 1.0]], "A": [["jawOpen", 0.8], ["mouthFunnel", 0.2]], ...}

Keys may be OVR names or aliases (``MBP``, ``A``, ``ee``, ``viseme_aa``, …, see
``avatar.blendshapes.VISEME_ALIASES``); they are stored, saved and iterated as OVR names in OVR order.
There is no versioned wrapper object: the plain form is what the seed and existing tools write, and a
future format can be told apart by its keys (no viseme is called ``version``).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import stat
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatar_studio.avatar.blendshapes import ARKIT_52, OVR_VISEMES, canonical_name, canonical_viseme
from avatar_studio.resources import resource_path

Entry = tuple[str, float]

_OVR_INDEX = {name: i for i, name in enumerate(OVR_VISEMES)}
_SIDES = ("Left", "Right")
_UNKNOWN_VISEME = (
    f"unknown viseme name; expected one of {', '.join(OVR_VISEMES)} or an alias such as MBP, FV, A, I, O, U"
)


@dataclass(frozen=True)
class _Problem:
    viseme: str | None
    entry: int | None
    text: str

    def __str__(self) -> str:
        if self.viseme is None:
            return self.text
        where = f"viseme {self.viseme!r}" + (f", entry {self.entry}" if self.entry is not None else "")
        return f"{where}: {self.text}"


class VisemeTableError(ValueError):
    """A viseme table that cannot be used; ``problems`` lists every problem found, in file order.

    ``viseme`` and ``entry`` locate the first problem (``entry`` is the index in that viseme's list,
    or None when the problem is with the viseme itself or the whole file), so an editor can jump there.
    """

    def __init__(self, problems: list[_Problem], source: str = "") -> None:
        first = problems[0]
        message = str(first) + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        super().__init__(f"{source}: {message}" if source else message)
        self.problems: list[str] = [str(p) for p in problems]
        self.viseme: str | None = first.viseme
        self.entry: int | None = first.entry
        self.source = source


class VisemeTable(Mapping[str, list[Entry]]):
    """OVR viseme → [(blendshape, weight), …]; immutable and valid by construction.

    Visemes the table leaves out are allowed (the seed's table has 6 of 15); they simply move no
    blendshape. Lookups accept aliases, so ``table["MBP"]`` is ``table["PP"]``.
    """

    def __init__(
        self,
        entries: Mapping[str, Iterable[Any]] | None = None,
        *,
        known_blendshapes: Collection[str] | None = None,
    ) -> None:
        self._entries = _validated(entries if entries is not None else {}, known_blendshapes, [], "")

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def from_json(cls, obj: object, *, known_blendshapes: Collection[str] | None = None) -> VisemeTable:
        """Build from a parsed JSON object; ``known_blendshapes`` defaults to the 52 ARKit names."""
        return cls._from_parsed(obj, known_blendshapes, [], source="")

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, known_blendshapes: Collection[str] | None = None
    ) -> VisemeTable:
        """Read a table file; every problem (JSON syntax included) is a ``VisemeTableError`` naming it."""
        path = Path(path)
        duplicates: list[tuple[dict[str, Any], str]] = []
        try:
            text = path.read_bytes().decode("utf-8-sig")
            obj = json.loads(text, object_pairs_hook=_dict_noting_duplicates(duplicates))
        except UnicodeDecodeError as exc:
            raise VisemeTableError(
                [_Problem(None, None, f"not UTF-8 text ({exc.reason})")], str(path)
            ) from exc
        except json.JSONDecodeError as exc:
            problem = _Problem(None, None, f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}")
            raise VisemeTableError([problem], str(path)) from exc
        repeated = [_duplicate_problem(key, top_level=where is obj) for where, key in duplicates]
        return cls._from_parsed(obj, known_blendshapes, repeated, source=str(path))

    @classmethod
    def default(cls) -> VisemeTable:
        """The app's shipped table (``resources/viseme_table.json``)."""
        return cls.load(resource_path("viseme_table.json"))

    @classmethod
    def _from_parsed(
        cls, obj: object, known: Collection[str] | None, earlier: list[_Problem], source: str
    ) -> VisemeTable:
        # Bypasses __init__ only because ``obj`` may be any JSON value, not just a mapping.
        table = cls.__new__(cls)
        table._entries = _validated(obj, known, earlier, source)
        return table

    # -- Mapping --------------------------------------------------------------------------------------

    def __getitem__(self, viseme: str) -> list[Entry]:
        return list(self._entries[_require_viseme(viseme)])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"VisemeTable({self.to_json()!r})"

    # -- output ---------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, list[list[str | float]]]:
        """The JSON object form, keys in OVR order (what ``save`` writes)."""
        return {
            viseme: [[name, weight] for name, weight in entries] for viseme, entries in self._entries.items()
        }

    def dumps(self) -> str:
        """Pretty JSON text with one ``[blendshape, weight]`` pair per line, so diffs stay readable."""
        blocks = []
        for viseme, entries in self._entries.items():
            key = json.dumps(viseme)
            if not entries:
                blocks.append(f"  {key}: []")
                continue
            pairs = ",\n".join(f"    [{json.dumps(name)}, {json.dumps(weight)}]" for name, weight in entries)
            blocks.append(f"  {key}: [\n{pairs}\n  ]")
        return "{\n" + ",\n".join(blocks) + "\n}\n" if blocks else "{}\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table atomically: the old file is either fully replaced or left untouched.

        The text is produced before the disk is touched, then written to a temporary file in the same
        folder (``os.replace`` is only atomic within one file system) and swapped in.
        """
        _atomic_write_text(Path(path), self.dumps())

    # -- use ------------------------------------------------------------------------------------------

    @property
    def blendshape_names(self) -> tuple[str, ...]:
        """Every blendshape the table drives, in first-use order."""
        return tuple(dict.fromkeys(name for entries in self._entries.values() for name, _ in entries))

    def blendshapes(self, viseme_weights: Mapping[str, float]) -> dict[str, float]:
        """Blend several active visemes into blendshape weights (soft mapping).

        Each blendshape gets the sum of viseme weight × entry weight, clamped to [0, 1]; negative (or
        NaN) viseme weights count as 0. Every blendshape the table uses is in the result, 0.0 when
        idle, so a driver that applies the result each frame also releases last frame's shapes.
        Unknown viseme names raise ``KeyError``; known visemes the table leaves out contribute nothing.
        """
        totals = dict.fromkeys(self.blendshape_names, 0.0)
        for key, raw_weight in viseme_weights.items():
            viseme = _require_viseme(key)
            weight = float(raw_weight)
            if not weight > 0.0:
                continue
            for name, entry_weight in self._entries.get(viseme, ()):
                totals[name] += weight * entry_weight
        return {name: min(1.0, total) for name, total in totals.items()}

    def unexpressible(self, morph_names: Iterable[str]) -> dict[str, list[str]]:
        """Viseme → the blendshapes it uses that the avatar lacks; visemes missing nothing are left out.

        A viseme listed here may still be *partly* expressible (some of its shapes exist): the list is
        returned either way so ``inspect`` can say "partly" or "not at all" by comparing with the table.
        """
        available = set(morph_names)
        missing = {
            viseme: [name for name, _ in entries if name not in available]
            for viseme, entries in self._entries.items()
        }
        return {viseme: names for viseme, names in missing.items() if names}

    def expressible(self, morph_names: Iterable[str]) -> tuple[str, ...]:
        """Visemes (OVR order) whose blendshapes the avatar all has; an empty viseme (``sil``) counts."""
        lacking = self.unexpressible(morph_names)
        return tuple(viseme for viseme in self._entries if viseme not in lacking)


# -- parsing and validation ---------------------------------------------------------------------------


def _validated(
    obj: object, known: Collection[str] | None, earlier: list[_Problem], source: str
) -> dict[str, tuple[Entry, ...]]:
    """Parsed entries, or ``VisemeTableError`` listing ``earlier`` problems and every new one."""
    parsed, problems = _parse_table(obj, frozenset(ARKIT_52 if known is None else known))
    problems = earlier + problems
    if problems:
        raise VisemeTableError(problems, source)
    return parsed


def _require_viseme(name: str) -> str:
    viseme = canonical_viseme(name) if isinstance(name, str) else None
    if viseme is None:
        raise KeyError(f"unknown viseme {name!r}; expected one of {', '.join(OVR_VISEMES)} or an alias")
    return viseme


def _dict_noting_duplicates(duplicates: list[tuple[dict[str, Any], str]]) -> Any:
    """``object_pairs_hook`` that records (object, key) for repeated keys, which ``json`` silently drops."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append((result, key))
            result[key] = value
        return result

    return hook


def _duplicate_problem(key: str, *, top_level: bool) -> _Problem:
    if top_level:
        return _Problem(key, None, "appears twice; only the last one would be used")
    return _Problem(None, None, f"key {key!r} appears twice in one object")


def _parse_table(obj: object, known: frozenset[str]) -> tuple[dict[str, tuple[Entry, ...]], list[_Problem]]:
    """Validated entries keyed by OVR name in OVR order, plus every problem found."""
    if not isinstance(obj, Mapping):
        shape = _Problem(None, None, f"a viseme table must be a JSON object, not {_json_type(obj)}")
        return {}, [shape]
    problems: list[_Problem] = []
    parsed: dict[str, tuple[Entry, ...]] = {}
    spelled: dict[str, str] = {}
    for key, raw_entries in obj.items():
        viseme = canonical_viseme(key) if isinstance(key, str) else None
        if viseme is None:
            problems.append(_Problem(str(key), None, _UNKNOWN_VISEME))
        elif viseme in spelled:
            text = f"{key!r} and {spelled[viseme]!r} are both the viseme {viseme!r}; keep one"
            problems.append(_Problem(str(key), None, text))
        entries = _parse_entries(str(key), raw_entries, known, problems)
        if viseme is not None and viseme not in spelled:
            spelled[viseme] = key
            parsed[viseme] = entries
    ordered = dict(sorted(parsed.items(), key=lambda item: _OVR_INDEX[item[0]]))
    return ordered, problems


def _parse_entries(
    viseme: str, raw: object, known: frozenset[str], problems: list[_Problem]
) -> tuple[Entry, ...]:
    if not isinstance(raw, list | tuple):
        text = f"must be a list of [blendshape, weight] pairs, not {_json_type(raw)}"
        problems.append(_Problem(viseme, None, text))
        return ()
    entries: list[Entry] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(raw):
        for name, weight in _parse_entry(viseme, index, item, known, problems):
            if name in first_index:
                text = f"blendshape {name!r} already appears in entry {first_index[name]}"
                problems.append(_Problem(viseme, index, text))
                continue
            first_index[name] = index
            entries.append((name, weight))
    return tuple(entries)


def _parse_entry(
    viseme: str, index: int, item: object, known: frozenset[str], problems: list[_Problem]
) -> list[Entry]:
    """The entry as one or more (name, weight) pairs (a side-less pair name expands to both sides)."""

    def fail(text: str) -> list[Entry]:
        problems.append(_Problem(viseme, index, text))
        return []

    if not isinstance(item, list | tuple) or len(item) != 2:
        return fail(f"expected a [blendshape, weight] pair, got {_short(item)}")
    name, weight = item
    if not isinstance(name, str):
        return fail(f"blendshape name must be a string, got {_short(name)}")
    weight_problem = _weight_problem(weight)
    names = _expand_name(name, known)
    if names is None:
        fail(_unknown_blendshape_text(name, known))
    if weight_problem is not None:
        fail(weight_problem)
    if names is None or weight_problem is not None:
        return []
    return [(n, float(weight)) for n in names]


def _weight_problem(weight: object) -> str | None:
    # bool is an int in Python, but ``true`` in a table is a typo, not a weight of 1.
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        return f"weight {_short(weight)} is not a number"
    if math.isnan(weight):
        return "weight is NaN"
    if not 0.0 <= weight <= 1.0:
        return f"weight {weight!r} is outside [0, 1]"
    return None


def _expand_name(name: str, known: frozenset[str]) -> tuple[str, ...] | None:
    """The known blendshape(s) a table name stands for, or None if it is unknown.

    Names match exactly. One deliberate exception: a side-less name whose ``…Left`` and ``…Right``
    both exist (the seed's ``mouthSmile``) means both sides at the same weight; ARKit has no
    side-less smile, and dropping the entry would leave the seed's ``E`` without its smile.
    """
    if name in known:
        return (name,)
    sides = tuple(name + side for side in _SIDES)
    return sides if all(side in known for side in sides) else None


def _unknown_blendshape_text(name: str, known: frozenset[str]) -> str:
    text = f"unknown blendshape {name!r}"
    suggestion = canonical_name(name)
    if suggestion is not None and suggestion in known:
        return f"{text}; did you mean {suggestion!r}?"
    return text


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    for kind, label in names.items():
        if isinstance(value, kind):
            return label
    return "a number" if isinstance(value, int | float) else type(value).__name__


def _short(value: object, limit: int = 60) -> str:
    text = (
        json.dumps(value) if isinstance(value, str | int | float | list | dict | type(None)) else repr(value)
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- file writing -------------------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary sibling and ``os.replace``.

    The temporary file is created with ``os.open(..., 0o666)`` so the umask applies as for any new
    file (``tempfile`` would make it 0600); an existing file's mode is kept. On any failure the
    temporary file is removed and the original is untouched.
    """
    data = text.encode("utf-8")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
