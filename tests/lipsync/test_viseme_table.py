"""The viseme table: the seed's format, validation messages, atomic save, soft mapping, default table."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from avatar_studio.avatar.blendshapes import ARKIT_52, OVR_VISEMES
from avatar_studio.lipsync.viseme_table import VisemeTable, VisemeTableError
from avatar_studio.resources import resource_path

# Literally the example from spec/seed-api-and-data-model.md ("Blendshape/Viseme Mapping").
SEED_JSON = """
{
  "MBP": [ ["mouthClose", 1.0] ],
  "A":   [ ["jawOpen", 0.8], ["mouthFunnel", 0.2] ],
  "E":   [ ["mouthSmile", 0.6], ["jawOpen", 0.2] ],
  "O":   [ ["mouthPucker", 0.9], ["jawOpen", 0.3] ],
  "U":   [ ["mouthPucker", 0.8] ],
  "FV":  [ ["mouthFunnel", 0.6] ]
}
"""


def _error(obj: object, **kwargs: object) -> VisemeTableError:
    with pytest.raises(VisemeTableError) as info:
        VisemeTable.from_json(obj, **kwargs)  # type: ignore[arg-type]
    return info.value


# -- the seed's format ---------------------------------------------------------------------------------


def test_seed_table_loads_as_is_and_uses_ovr_names(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text(SEED_JSON, encoding="utf-8")
    table = VisemeTable.load(path)
    assert list(table) == ["PP", "FF", "aa", "E", "oh", "ou"]  # OVR order, not file order
    assert table["PP"] == [("mouthClose", 1.0)]
    assert table["MBP"] == table["PP"]
    assert table["aa"] == [("jawOpen", 0.8), ("mouthFunnel", 0.2)]
    assert table["oh"] == [("mouthPucker", 0.9), ("jawOpen", 0.3)]
    assert table["ou"] == [("mouthPucker", 0.8)]
    assert table["FF"] == [("mouthFunnel", 0.6)]


def test_seed_side_less_mouth_smile_means_both_corners() -> None:
    table = VisemeTable.from_json(json.loads(SEED_JSON))
    assert table["E"] == [("mouthSmileLeft", 0.6), ("mouthSmileRight", 0.6), ("jawOpen", 0.2)]


def test_side_less_name_is_unknown_when_a_side_is_missing() -> None:
    err = _error({"E": [["mouthSmile", 0.6]]}, known_blendshapes={"mouthSmileLeft", "jawOpen"})
    assert "unknown blendshape 'mouthSmile'" in str(err)


def test_custom_known_set_replaces_arkit() -> None:
    table = VisemeTable.from_json({"aa": [["Key 1", 0.5]]}, known_blendshapes={"Key 1"})
    assert table["aa"] == [("Key 1", 0.5)]
    assert "unknown blendshape 'jawOpen'" in str(_error({"aa": [["jawOpen", 0.5]]}, known_blendshapes={"x"}))


def test_to_json_uses_ovr_keys_in_ovr_order() -> None:
    table = VisemeTable.from_json({"U": [["mouthPucker", 1]], "sil": [], "viseme_PP": [["jawOpen", 0.1]]})
    assert table.to_json() == {"sil": [], "PP": [["jawOpen", 0.1]], "ou": [["mouthPucker", 1.0]]}


# -- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "viseme", "entry", "fragment"),
    [
        ({"XX": [["jawOpen", 0.5]]}, "XX", None, "unknown viseme name"),
        ({"aa": [["jawOpne", 0.5]]}, "aa", 0, "unknown blendshape 'jawOpne'"),
        ({"aa": [["jawOpen", 0.1], ["eyeBlink_L", 0.5]]}, "aa", 1, "did you mean 'eyeBlinkLeft'?"),
        ({"aa": [["jawOpen", "0.5"]]}, "aa", 0, 'weight "0.5" is not a number'),
        ({"aa": [["jawOpen", True]]}, "aa", 0, "weight true is not a number"),
        ({"aa": [["jawOpen", None]]}, "aa", 0, "weight null is not a number"),
        ({"aa": [["jawOpen", math.nan]]}, "aa", 0, "weight is NaN"),
        ({"aa": [["jawOpen", 1.5]]}, "aa", 0, "weight 1.5 is outside [0, 1]"),
        ({"aa": [["jawOpen", -0.1]]}, "aa", 0, "weight -0.1 is outside [0, 1]"),
        ({"aa": [["jawOpen", math.inf]]}, "aa", 0, "outside [0, 1]"),
        ({"aa": [["jawOpen"]]}, "aa", 0, "expected a [blendshape, weight] pair"),
        ({"aa": [["jawOpen", 0.5, 1]]}, "aa", 0, "expected a [blendshape, weight] pair"),
        ({"aa": [{"jawOpen": 0.5}]}, "aa", 0, "expected a [blendshape, weight] pair"),
        ({"aa": [[3, 0.5]]}, "aa", 0, "blendshape name must be a string"),
        ({"aa": {"jawOpen": 0.5}}, "aa", None, "must be a list of [blendshape, weight] pairs, not an object"),
        ({"aa": [["jawOpen", 0.5], ["jawOpen", 0.2]]}, "aa", 1, "'jawOpen' already appears in entry 0"),
        ({"E": [["mouthSmile", 0.5], ["mouthSmileLeft", 0.2]]}, "E", 1, "'mouthSmileLeft' already appears"),
    ],
)
def test_each_problem_names_viseme_and_entry(
    obj: dict[str, object], viseme: str, entry: int | None, fragment: str
) -> None:
    err = _error(obj)
    assert err.viseme == viseme
    assert err.entry == entry
    assert fragment in str(err)
    where = f"viseme {viseme!r}" + (f", entry {entry}" if entry is not None else ":")
    assert str(err).startswith(where)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("obj", [[["jawOpen", 1.0]], "aa", 3, None])
def test_wrong_top_level_shape(obj: object) -> None:
    err = _error(obj)
    assert "a viseme table must be a JSON object" in str(err)
    assert err.viseme is None
    assert err.entry is None


def test_alias_and_its_target_together_name_both() -> None:
    err = _error({"A": [["jawOpen", 0.5]], "aa": [["jawOpen", 0.6]]})
    assert "'aa' and 'A' are both the viseme 'aa'" in str(err)
    assert err.viseme == "aa"


def test_all_problems_are_collected() -> None:
    obj = {"aa": [["jawOpen", 2], ["nope", 0.1]], "XX": [], "ou": [["mouthPucker", "x"]]}
    err = _error(obj)
    assert len(err.problems) == 4
    assert str(err) == err.problems[0] + " (and 3 more)"
    assert err.problems[0] == "viseme 'aa', entry 0: weight 2 is outside [0, 1]"
    assert err.problems[1] == "viseme 'aa', entry 1: unknown blendshape 'nope'"
    assert err.problems[2].startswith("viseme 'XX': unknown viseme name")
    assert err.problems[3] == "viseme 'ou', entry 0: weight \"x\" is not a number"


def test_both_name_and_weight_problems_of_one_entry_are_reported() -> None:
    err = _error({"aa": [["jawOpne", 7]]})
    assert err.problems == [
        "viseme 'aa', entry 0: unknown blendshape 'jawOpne'",
        "viseme 'aa', entry 0: weight 7 is outside [0, 1]",
    ]


def test_constructor_validates_like_from_json() -> None:
    with pytest.raises(VisemeTableError, match=r"viseme 'PP', entry 0: weight 3 is outside"):
        VisemeTable({"PP": [("jawOpen", 3)]})
    assert VisemeTable() == {}


def test_json_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "aa": [["jawOpen", 0.5]],\n  "PP": [["mouthClose" 0.1]]\n}\n', encoding="utf-8")
    with pytest.raises(VisemeTableError) as info:
        VisemeTable.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 3, column 24: invalid JSON")  # the "0" after the name
    assert info.value.viseme is None


def test_duplicate_json_keys_are_reported_not_silently_dropped(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"aa": [["jawOpen", 0.5]], "aa": [["jawOpen", 0.6]]}', encoding="utf-8")
    with pytest.raises(VisemeTableError, match=r"viseme 'aa': appears twice") as info:
        VisemeTable.load(path)
    assert str(info.value).startswith(str(path))


def test_validation_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"aa": [["jawOpen", 5]]}', encoding="utf-8")
    with pytest.raises(VisemeTableError) as info:
        VisemeTable.load(path)
    assert str(info.value) == f"{path}: viseme 'aa', entry 0: weight 5 is outside [0, 1]"


def test_non_utf8_file_is_a_table_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"aa": [["jaw\xf6pen", 0.5]]}')
    with pytest.raises(VisemeTableError, match="not UTF-8"):
        VisemeTable.load(path)


# -- saving ------------------------------------------------------------------------------------------------


def test_save_load_round_trip_is_identical(tmp_path: Path) -> None:
    table = VisemeTable.from_json(json.loads(SEED_JSON))
    first = tmp_path / "a.json"
    second = tmp_path / "b.json"
    table.save(first)
    again = VisemeTable.load(first)
    assert again == table
    assert again.to_json() == table.to_json()
    again.save(second)
    assert first.read_bytes() == second.read_bytes()
    assert list(json.loads(first.read_text(encoding="utf-8"))) == ["PP", "FF", "aa", "E", "oh", "ou"]


def test_saved_file_is_the_pretty_one_pair_per_line_form(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    VisemeTable.from_json({"ou": [["mouthPucker", 0.8], ["jawOpen", 0.1]], "sil": []}).save(path)
    assert path.read_text(encoding="utf-8") == (
        '{\n  "sil": [],\n  "ou": [\n    ["mouthPucker", 0.8],\n    ["jawOpen", 0.1]\n  ]\n}\n'
    )


def test_default_table_file_is_already_in_saved_form(tmp_path: Path) -> None:
    """Saving the shipped table must not reformat it, or every edit in the GUI would be a noisy diff."""
    path = tmp_path / "default.json"
    VisemeTable.default().save(path)
    assert path.read_bytes() == resource_path("viseme_table.json").read_bytes()


def _dir_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_failed_replace_leaves_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "table.json"
    path.write_text("old contents", encoding="utf-8")

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        VisemeTable.from_json({"aa": [["jawOpen", 0.5]]}).save(path)
    assert path.read_text(encoding="utf-8") == "old contents"
    assert _dir_listing(tmp_path) == ["table.json"]


def test_failure_to_serialise_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "table.json"
    path.write_text("old contents", encoding="utf-8")

    def broken(self: VisemeTable) -> str:
        raise ValueError("cannot serialise")

    monkeypatch.setattr(VisemeTable, "dumps", broken)
    with pytest.raises(ValueError, match="cannot serialise"):
        VisemeTable.from_json({"aa": [["jawOpen", 0.5]]}).save(path)
    assert path.read_text(encoding="utf-8") == "old contents"
    assert _dir_listing(tmp_path) == ["table.json"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_leaves_old_file(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "table.json"
    path.write_text("old contents", encoding="utf-8")
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(PermissionError):
            VisemeTable.from_json({"aa": [["jawOpen", 0.5]]}).save(path)
        assert path.read_text(encoding="utf-8") == "old contents"
        assert _dir_listing(folder) == ["table.json"]
    finally:
        folder.chmod(stat.S_IRWXU)


def test_unwritable_directory_simulated_leaves_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same guarantee as the read-only test above, checkable when the tests run as root."""
    path = tmp_path / "table.json"
    path.write_text("old contents", encoding="utf-8")
    real_open = os.open

    def deny_new_files(file: str | os.PathLike[str], flags: int, *args: int, **kwargs: object) -> int:
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", deny_new_files)
    with pytest.raises(PermissionError):
        VisemeTable.from_json({"aa": [["jawOpen", 0.5]]}).save(path)
    assert path.read_text(encoding="utf-8") == "old contents"
    assert _dir_listing(tmp_path) == ["table.json"]


def test_save_keeps_an_existing_files_permissions(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    path.write_text("{}", encoding="utf-8")
    path.chmod(0o640)
    VisemeTable.from_json({"aa": [["jawOpen", 0.5]]}).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert VisemeTable.load(path)["aa"] == [("jawOpen", 0.5)]


# -- soft mapping -----------------------------------------------------------------------------------------

SOFT = {
    "aa": [["jawOpen", 0.6], ["mouthLowerDownLeft", 0.2]],
    "oh": [["mouthFunnel", 0.7], ["jawOpen", 0.5]],
    "PP": [["mouthPressLeft", 0.9]],
}


def test_blendshapes_sums_visemes_times_entry_weights() -> None:
    table = VisemeTable.from_json(SOFT)
    result = table.blendshapes({"aa": 0.5, "oh": 0.4})
    # jawOpen: 0.5 * 0.6 + 0.4 * 0.5 = 0.30 + 0.20
    assert result["jawOpen"] == pytest.approx(0.50)
    assert result["mouthLowerDownLeft"] == pytest.approx(0.10)
    assert result["mouthFunnel"] == pytest.approx(0.28)
    assert result["mouthPressLeft"] == 0.0  # idle shapes are present at 0 so a driver releases them
    assert set(result) == {"jawOpen", "mouthLowerDownLeft", "mouthFunnel", "mouthPressLeft"}


def test_blendshapes_clamps_sums_to_one_and_negative_visemes_to_zero() -> None:
    table = VisemeTable.from_json(SOFT)
    result = table.blendshapes({"aa": 1.0, "oh": 1.0, "PP": -3.0})
    assert result["jawOpen"] == 1.0  # 0.6 + 0.5 = 1.1 → 1
    assert result["mouthPressLeft"] == 0.0
    assert table.blendshapes({"aa": math.nan})["jawOpen"] == 0.0


def test_blendshapes_accepts_aliases_and_prefixed_names() -> None:
    table = VisemeTable.from_json(SOFT)
    assert (
        table.blendshapes({"A": 0.5})
        == table.blendshapes({"viseme_aa": 0.5})
        == table.blendshapes({"aa": 0.5})
    )
    assert table.blendshapes({"MBP": 1.0})["mouthPressLeft"] == pytest.approx(0.9)


def test_blendshapes_known_viseme_missing_from_table_moves_nothing() -> None:
    table = VisemeTable.from_json(SOFT)
    assert set(table.blendshapes({"ou": 1.0}).values()) == {0.0}


def test_blendshapes_unknown_viseme_is_a_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="unknown viseme 'jawOpen'"):
        VisemeTable.from_json(SOFT).blendshapes({"jawOpen": 1.0})
    with pytest.raises(KeyError, match="unknown viseme 'XX'"):
        VisemeTable.from_json(SOFT)["XX"]


# -- expressibility ----------------------------------------------------------------------------------------


def test_unexpressible_lists_missing_shapes_per_viseme() -> None:
    table = VisemeTable.from_json(SOFT | {"sil": []})
    names = ["jawOpen", "mouthFunnel", "NoseWidth"]
    assert table.unexpressible(names) == {"PP": ["mouthPressLeft"], "aa": ["mouthLowerDownLeft"]}
    assert table.expressible(names) == ("sil", "oh")
    assert table.unexpressible(ARKIT_52) == {}
    assert table.expressible([]) == ("sil",)


# -- the shipped default table ---------------------------------------------------------------------------


def test_default_table_covers_all_visemes_with_arkit_shapes_only() -> None:
    table = VisemeTable.default()
    assert tuple(table) == OVR_VISEMES
    for viseme in table:
        for name, weight in table[viseme]:
            assert name in ARKIT_52
            assert 0.0 <= weight <= 1.0
    assert table["sil"] == []
    assert set(table.blendshape_names) <= set(ARKIT_52)


def test_default_table_follows_the_arkit_definitions() -> None:
    table = VisemeTable.default()
    weights = {viseme: dict(table[viseme]) for viseme in table}
    # mouthClose is a jaw-open corrective: never more of it than jawOpen
    for viseme, shapes in weights.items():
        assert shapes.get("mouthClose", 0.0) <= shapes.get("jawOpen", 0.0), viseme
    assert {"mouthPressLeft", "mouthPressRight", "mouthRollLower", "mouthRollUpper"} <= set(weights["PP"])
    assert "mouthRollLower" in weights["FF"]
    assert "mouthFunnel" in weights["oh"]
    assert "mouthPucker" not in weights["oh"]
    assert "mouthPucker" in weights["ou"]
    assert "mouthFunnel" not in weights["ou"]
    # an open vowel opens the jaw more than a closed one
    assert weights["aa"]["jawOpen"] > weights["E"]["jawOpen"] > weights["ih"]["jawOpen"]


def test_default_table_without_tongue_is_partly_expressible() -> None:
    mobile_51 = [n for n in ARKIT_52 if n != "tongueOut"]
    assert VisemeTable.default().unexpressible(mobile_51) == {"TH": ["tongueOut"]}


def test_default_table_has_its_explanation_alongside() -> None:
    text = resource_path("viseme_table.md").read_text(encoding="utf-8")
    for viseme in OVR_VISEMES:
        assert f"| `{viseme}` |" in text


# -- resources ------------------------------------------------------------------------------------------


def test_resource_path_errors() -> None:
    with pytest.raises(FileNotFoundError, match=r"'no_such_file\.json' not found"):
        resource_path("no_such_file.json")
    with pytest.raises(ValueError, match="relative path"):
        resource_path("../pyproject.toml")
    with pytest.raises(ValueError, match="relative path"):
        resource_path("/etc/passwd")
