"""The mapping-table editor on a real synthetic head, under Xvfb (pytest-xvfb).

Every avatar is a real GLB from ``make_arkit_head_glb`` read by the project's glTF reader, so the
names the editor completes, accepts and previews are the loader's canonical names. The "lacking"
avatar is the same head read with a provider ``blendshape_map`` that files its ``tongueOut`` and
``mouthPucker`` targets as visemes, which is how a real asset ends up without those ARKit names.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QLineEdit,
    QMessageBox,
    QStyle,
    QStyleOptionButton,
    QToolButton,
)

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.scene import AvatarScene
from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.gui.mapping_editor import RECENT_SETTING, MappingEditor
from avatar_studio.lipsync.viseme_table import VisemeTable

MakeEditor = Callable[..., MappingEditor]
LACKING_MAP = {"tongueOut": "viseme_TH", "mouthPucker": "viseme_ou"}


@pytest.fixture(scope="module")
def head_glb() -> bytes:
    """A small untextured head with the 52 ARKit targets (fast to build and to load)."""
    return make_arkit_head_glb(2000, texture=False)


@pytest.fixture
def scene(head_glb: bytes) -> AvatarScene:
    return AvatarScene(load_avatar(head_glb))


@pytest.fixture
def lacking_scene(head_glb: bytes) -> AvatarScene:
    """The same head, but its provider map turns ``tongueOut`` and ``mouthPucker`` into viseme targets."""
    scene = AvatarScene(load_avatar(head_glb, blendshape_map=LACKING_MAP))
    assert "tongueOut" not in scene.avatar.morph_names and "viseme_TH" in scene.avatar.morph_names
    return scene


@pytest.fixture
def make_editor(qtbot, settings: QSettings) -> Iterator[MakeEditor]:
    """``make_editor(scene=None, show=True)`` → an editor on per-test settings, registered with qtbot."""

    def factory(scene: AvatarScene | None = None, *, show: bool = True) -> MappingEditor:
        editor = MappingEditor(settings)
        qtbot.addWidget(editor)
        editor.resize(760, 560)
        editor.set_scene(scene)
        if show:
            editor.show()
            qtbot.waitExposed(editor)
        return editor

    yield factory
    leftover = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
    assert not leftover, "a message box was left open"


# -- helpers that act as a user would ------------------------------------------------------------------


def type_into_spin(qtbot, spin: QAbstractSpinBox, value: str) -> None:
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, value.replace(".", spin.locale().decimalPoint()))
    qtbot.keyClick(spin, Qt.Key.Key_Enter)


def retype(qtbot, edit: QLineEdit, text: str, *, enter: bool = True) -> None:
    """Select the field's text, type ``text``, close the completion list and (by default) press Enter."""
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, text)
    if edit.completer() is not None:
        edit.completer().popup().hide()
    if enter:
        qtbot.keyClick(edit, Qt.Key.Key_Return)


def click_viseme(qtbot, editor: MappingEditor, viseme: str) -> None:
    item = editor.viseme_list.item(OVR_VISEMES.index(viseme))
    editor.viseme_list.scrollToItem(item)
    rect = editor.viseme_list.visualItemRect(item)
    qtbot.mouseClick(editor.viseme_list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert editor.current_viseme == viseme


def click_check(qtbot, check: QCheckBox) -> None:
    option = QStyleOptionButton()
    check.initStyleOption(option)
    where = check.style().subElementRect(QStyle.SubElement.SE_CheckBoxIndicator, option, check).center()
    qtbot.mouseClick(check, Qt.MouseButton.LeftButton, pos=where)


def row_of(editor: MappingEditor, name: str) -> int:
    rows = [i for i in range(editor.entry_count()) if editor.name_edit(i).text() == name]
    assert len(rows) == 1, f"{name} appears in rows {rows}"
    return rows[0]


def answer_next_question(button: QMessageBox.StandardButton, seen: list[QMessageBox]) -> None:
    """Click ``button`` in the unsaved-table box once it is on screen (it runs its own event loop)."""

    def click() -> None:
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, QMessageBox) and widget.objectName() == "unsavedMappingBox" and widget.isVisible():
                seen.append(widget)
                if widget.button(button).isEnabled():
                    widget.button(button).click()
                else:  # what a user can do when the asked-for button is greyed out
                    widget.button(QMessageBox.StandardButton.Cancel).click()
                return
        QTimer.singleShot(20, click)

    QTimer.singleShot(0, click)


# -- the layout ----------------------------------------------------------------------------------------


def test_starts_with_the_default_table_and_lists_the_fifteen_visemes(make_editor: MakeEditor) -> None:
    editor = make_editor()
    labels = [editor.viseme_list.item(i).text() for i in range(editor.viseme_list.count())]
    assert len(labels) == 15
    assert labels[1].startswith("PP · MBP") and labels[10].startswith("aa · A") and labels[11].startswith("E · ee")
    assert editor.table == VisemeTable.default()
    assert not editor.is_modified and editor.title_label.text() == "Mapping table — default table (not saved to a file)"
    assert editor.summary_label.text().startswith("No avatar shown")
    assert not editor.problems and editor.problems_list.isHidden()


# -- live editing --------------------------------------------------------------------------------------


def test_weight_edit_poses_the_avatar_live_and_emits_the_new_table(
    qtbot, make_editor: MakeEditor, scene: AvatarScene
) -> None:
    editor = make_editor(scene)
    emitted: list[VisemeTable] = []
    editor.sig_table_changed.connect(emitted.append)

    click_viseme(qtbot, editor, "aa")
    assert scene.weight("jawOpen") == pytest.approx(0.6)
    assert scene.weight("mouthLowerDownLeft") == pytest.approx(0.15)
    assert scene.weight("mouthFunnel") == 0.0, "shapes of other visemes are released"

    row = row_of(editor, "jawOpen")
    with qtbot.waitSignal(editor.sig_table_changed) as blocker:
        type_into_spin(qtbot, editor.weight_row(row).spin, "0.9")
    table = blocker.args[0]
    assert isinstance(table, VisemeTable) and ("jawOpen", 0.9) in table["aa"]
    assert editor.table == table
    assert scene.weight("jawOpen") == pytest.approx(0.9), "the preview follows the edit"
    assert editor.weight_row(row).slider.value() == 90, "slider and number field agree"

    editor.weight_row(row_of(editor, "mouthLowerDownLeft")).slider.setValue(40)
    assert scene.weight("mouthLowerDownLeft") == pytest.approx(0.4)
    assert ("mouthLowerDownLeft", 0.4) in emitted[-1]["aa"]
    assert len(emitted) == 2
    assert editor.is_modified and editor.title_label.text().endswith(" *")

    click_viseme(qtbot, editor, "oh")
    assert scene.weight("mouthFunnel") == pytest.approx(0.6) and scene.weight("jawOpen") == pytest.approx(0.35)
    assert scene.weight("mouthLowerDownLeft") == 0.0


def test_invalid_entries_are_shown_and_never_emitted_or_saved(
    qtbot, make_editor: MakeEditor, scene: AvatarScene, tmp_path: Path
) -> None:
    editor = make_editor(scene)
    emitted: list[VisemeTable] = []
    editor.sig_table_changed.connect(emitted.append)
    click_viseme(qtbot, editor, "PP")
    assert editor.name_edit(0).text() == "mouthPressLeft"

    retype(qtbot, editor.name_edit(0), "mouthPress_L")
    assert editor.problems == [
        "viseme 'PP', entry 0: unknown blendshape 'mouthPress_L'; did you mean 'mouthPressLeft'?"
    ]
    assert editor.highlighted_rows == {0}
    assert "border" in editor.name_edit(0).styleSheet()
    assert editor.problems_list.isVisible() and editor.problems_list.count() == 1
    assert editor.viseme_list.item(1).text().startswith("✖ PP")

    editor.set_entry(1, weight=3)
    assert "viseme 'PP', entry 1: weight 3 is outside [0, 1]" in editor.problems
    assert editor.highlighted_rows == {0, 1}
    assert editor.weight_row(1).spin.value() == 3.0, "shown as entered, not clamped"

    assert emitted == [] and editor.table == VisemeTable.default()
    target = tmp_path / "never.json"
    assert editor.save(target) is False and not target.exists()
    assert not editor.save_button.isEnabled()
    assert scene.weight("mouthRollLower") == pytest.approx(0.3), "the valid rows still preview"
    assert scene.weight("mouthPressRight") == 0.0 and scene.weight("mouthPressLeft") == 0.0

    click_viseme(qtbot, editor, "aa")
    editor.problems_list.item(0).setSelected(True)
    qtbot.mouseClick(
        editor.problems_list.viewport(),
        Qt.MouseButton.LeftButton,
        pos=editor.problems_list.visualItemRect(editor.problems_list.item(0)).center(),
    )
    assert editor.current_viseme == "PP", "a message leads to its viseme"

    retype(qtbot, editor.name_edit(0), "mouthPressLeft")
    assert emitted == [], "still one problem left"
    editor.set_entry(1, weight=0.4)
    assert editor.problems == [] and editor.problems_list.isHidden()
    assert len(emitted) == 1 and emitted[0]["PP"][:2] == [("mouthPressLeft", 0.5), ("mouthPressRight", 0.4)]
    editor.set_entry(1, weight=3)
    editor.set_entry(1, weight=0.4)
    assert len(emitted) == 1, "valid again, but the same table as last sent"


def test_add_remove_duplicates_and_undo(qtbot, make_editor: MakeEditor, scene: AvatarScene) -> None:
    editor = make_editor(scene)
    click_viseme(qtbot, editor, "ou")
    assert editor.entry_count() == 2

    retype(qtbot, editor.add_edit, "mouthFunnel")
    assert editor.entry_count() == 3 and editor.name_edit(2).text() == "mouthFunnel"
    assert editor.table["ou"][-1] == ("mouthFunnel", 0.5)
    assert scene.weight("mouthFunnel") == pytest.approx(0.5)
    assert editor.add_edit.text() == ""

    retype(qtbot, editor.add_edit, "jawOpen", enter=False)
    qtbot.mouseClick(editor.add_button, Qt.MouseButton.LeftButton)
    assert editor.entry_count() == 3 and editor.add_message.isVisible()
    assert editor.add_message.text() == "ou already uses jawOpen (entry 1)."
    assert editor.add_entry("mouthSmile") and editor.entry_count() == 4, "a side-less pair name: both sides"
    assert not editor.add_entry("mouthSmileLeft"), "already covered by the side-less pair name"
    assert not editor.add_entry("noSuchShape")
    assert editor.add_message.text() == "Unknown blendshape 'noSuchShape'"

    remove = editor.entries.cellWidget(row_of(editor, "mouthFunnel"), 2)
    assert isinstance(remove, QToolButton)
    qtbot.mouseClick(remove, Qt.MouseButton.LeftButton)
    assert [editor.name_edit(i).text() for i in range(editor.entry_count())] == ["mouthPucker", "jawOpen", "mouthSmile"]
    assert scene.weight("mouthFunnel") == 0.0

    editor.undo_button.click()
    assert editor.entry_count() == 4 and scene.weight("mouthFunnel") == pytest.approx(0.5)
    editor.undo_button.click()
    editor.undo_button.click()
    assert editor.table == VisemeTable.default() and not editor.is_modified
    editor.redo_button.click()
    assert editor.table["ou"][-1] == ("mouthFunnel", 0.5) and editor.is_modified

    # A slider drag is one undo step, not one per pixel.
    click_viseme(qtbot, editor, "aa")
    slider = editor.weight_row(0).slider
    for value in (61, 65, 70, 80):
        slider.setValue(value)
    assert editor.table["aa"][0] == ("jawOpen", 0.8)
    editor.undo_button.click()
    assert editor.table["aa"][0] == ("jawOpen", 0.6) and editor.weight_row(0).slider.value() == 60


def test_completion_offers_the_avatars_names_and_arkit(
    qtbot, make_editor: MakeEditor, lacking_scene: AvatarScene
) -> None:
    editor = make_editor(lacking_scene)
    click_viseme(qtbot, editor, "TH")
    completer = editor.name_edit(0).completer()
    names = completer.model().stringList()
    assert "viseme_TH" in names, "the avatar's own names"
    assert "tongueOut" in names, "ARKit names the avatar lacks are still offered"
    completer.setCompletionPrefix("smileleft")
    assert completer.completionCount() == 1 and completer.currentCompletion() == "mouthSmileLeft"

    retype(qtbot, editor.name_edit(1), "viseme_TH")
    assert editor.problems == [], "a name only this avatar has is valid while it is shown"
    assert editor.table["TH"][1] == ("viseme_TH", 0.3)
    assert lacking_scene.weight("viseme_TH") == pytest.approx(0.3)
    editor.set_scene(None)
    assert editor.problems == ["viseme 'TH', entry 1: unknown blendshape 'viseme_TH'"]


# -- the avatar's limits -------------------------------------------------------------------------------


def test_lists_the_visemes_an_avatar_cannot_express(
    qtbot, make_editor: MakeEditor, scene: AvatarScene, lacking_scene: AvatarScene
) -> None:
    editor = make_editor(lacking_scene)
    assert editor.unexpressible() == {"TH": ["tongueOut"], "RR": ["mouthPucker"], "ou": ["mouthPucker"]}
    assert editor.summary_label.text() == (
        "3 of 15 visemes cannot be shown: TH (lacks tongueOut); RR (lacks mouthPucker); ou (lacks mouthPucker)"
    )
    th_item = editor.viseme_list.item(OVR_VISEMES.index("TH"))
    assert th_item.text().startswith("⚠ TH") and "tongueOut" in th_item.toolTip()
    assert not editor.viseme_list.item(OVR_VISEMES.index("aa")).text().startswith("⚠")

    click_viseme(qtbot, editor, "TH")
    assert "no 'tongueOut'" in editor.name_edit(row_of(editor, "tongueOut")).toolTip()
    assert editor.problems == [], "missing on this avatar is a warning, not an error"

    editor.remove_entry(row_of(editor, "tongueOut"))
    assert "TH" not in editor.unexpressible() and editor.summary_label.text().startswith("2 of 15")

    editor.set_scene(scene)
    assert editor.unexpressible() == {}
    assert editor.summary_label.text() == "This avatar can show all 15 visemes with this table."


def test_preview_off_hide_and_avatar_change_restore_the_previous_weights(
    qtbot, make_editor: MakeEditor, scene: AvatarScene, head_glb: bytes
) -> None:
    scene.set_weights({"jawOpen": 0.33, "mouthFunnel": 0.2, "browInnerUp": 0.7})
    before = scene.weights.copy()
    editor = make_editor(scene)
    click_viseme(qtbot, editor, "oh")
    assert scene.weight("mouthFunnel") == pytest.approx(0.6) and scene.weight("jawOpen") == pytest.approx(0.35)
    assert scene.weight("browInnerUp") == pytest.approx(0.7), "shapes the table does not use are left alone"
    assert editor.previewing

    click_check(qtbot, editor.preview_check)
    assert not editor.preview_check.isChecked() and not editor.previewing
    assert np.array_equal(scene.weights, before)
    click_viseme(qtbot, editor, "aa")
    assert np.array_equal(scene.weights, before), "no posing while preview is off"

    click_check(qtbot, editor.preview_check)
    assert scene.weight("jawOpen") == pytest.approx(0.6)
    editor.hide()
    assert np.array_equal(scene.weights, before), "a hidden editor gives the face back"
    editor.show()
    qtbot.waitExposed(editor)
    assert scene.weight("jawOpen") == pytest.approx(0.6)

    other = AvatarScene(load_avatar(head_glb))
    editor.set_scene(other)
    assert np.array_equal(scene.weights, before), "the previous avatar is restored when another is shown"
    assert other.weight("jawOpen") == pytest.approx(0.6)
    editor.set_scene(None)
    assert not other.weights.any()


# -- files ---------------------------------------------------------------------------------------------


def test_save_then_reload_from_disk_gives_the_same_table(
    qtbot, make_editor: MakeEditor, scene: AvatarScene, settings: QSettings, tmp_path: Path
) -> None:
    editor = make_editor(scene)
    click_viseme(qtbot, editor, "E")
    type_into_spin(qtbot, editor.weight_row(0).spin, "0.45")
    editor.select_viseme("TH")
    editor.add_entry("mouthShrugUpper", 0.25)
    path = tmp_path / "tuned.json"
    statuses: list[str] = []
    editor.sig_status.connect(statuses.append)

    assert editor.save(path) is True
    assert statuses[-1] == "Saved tuned.json."
    assert not editor.is_modified and editor.title_label.text() == "Mapping table — tuned.json"
    on_disk = VisemeTable.load(path)
    assert on_disk == editor.table
    assert ("jawOpen", 0.45) in on_disk["E"] and ("mouthShrugUpper", 0.25) in on_disk["TH"]
    assert settings.value(RECENT_SETTING) == str(path)

    reopened = make_editor(show=False)
    assert reopened.path == path and reopened.table == on_disk, "the recent table comes back next time"

    editor.new_from_default()
    assert editor.table == VisemeTable.default() and editor.path is None
    with qtbot.waitSignal(editor.sig_table_changed) as blocker:
        assert editor.load(path) is True
    assert blocker.args[0] == on_disk and editor.path == path and not editor.is_modified


def test_a_broken_file_is_refused_and_the_content_kept(
    qtbot, make_editor: MakeEditor, scene: AvatarScene, tmp_path: Path
) -> None:
    editor = make_editor(scene)
    click_viseme(qtbot, editor, "aa")
    editor.weight_row(0).slider.setValue(75)
    table_before = editor.table
    emitted: list[VisemeTable] = []
    editor.sig_table_changed.connect(emitted.append)
    statuses: list[str] = []
    editor.sig_status.connect(statuses.append)

    broken = tmp_path / "broken.json"
    broken.write_text('{"PP": [["jawOpen", 0.5],, ]}', "utf-8")
    assert editor.load(broken) is False
    assert editor.file_error.isVisible()
    assert "Cannot open broken.json" in editor.file_error.text() and "invalid JSON" in editor.file_error.text()
    assert statuses[-1].startswith("Cannot open broken.json: line 1, column")
    assert editor.table == table_before and editor.is_modified and editor.path is None
    assert editor.current_viseme == "aa" and editor.weight_row(0).slider.value() == 75
    assert emitted == []

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"A": [["jawOpen", 8]], "Q": []}), "utf-8")
    assert editor.load(wrong) is False
    assert "weight 8 is outside [0, 1]" in editor.file_error.text() and "2 problems" in editor.file_error.text()
    assert editor.load(tmp_path / "missing.json") is False
    assert "could not be read" in editor.file_error.text()
    assert editor.table == table_before and emitted == []

    editor.revert()
    assert editor.file_error.isHidden() and editor.table == VisemeTable.default() and not editor.is_modified


def test_a_broken_recent_file_falls_back_to_the_default(
    make_editor: MakeEditor, settings: QSettings, tmp_path: Path
) -> None:
    broken = tmp_path / "was-fine.json"
    broken.write_text('{"A": [["jawOpen", "0.6"]]}', "utf-8")
    settings.setValue(RECENT_SETTING, str(broken))
    editor = make_editor()
    assert editor.table == VisemeTable.default() and editor.path is None and not editor.is_modified
    assert editor.file_error.isVisible()
    assert "viseme 'A', entry 0: weight \"0.6\" is not a number" in html.unescape(editor.file_error.text())


# -- never lost silently -------------------------------------------------------------------------------


def test_close_guard_asks_about_unsaved_changes(
    qtbot, make_editor: MakeEditor, scene: AvatarScene, tmp_path: Path
) -> None:
    editor = make_editor(scene)
    path = tmp_path / "mine.json"
    assert editor.save(path)
    assert editor.maybe_save_or_discard(editor), "nothing to ask about"

    click_viseme(qtbot, editor, "aa")
    editor.weight_row(0).slider.setValue(90)
    asked: list[QMessageBox] = []
    answer_next_question(QMessageBox.StandardButton.Cancel, asked)
    assert editor.maybe_save_or_discard(editor) is False
    assert len(asked) == 1 and editor.is_modified and editor.table["aa"][0] == ("jawOpen", 0.9)

    answer_next_question(QMessageBox.StandardButton.Discard, asked)
    assert editor.maybe_save_or_discard(editor) is True
    assert len(asked) == 2 and not editor.is_modified and editor.table["aa"][0] == ("jawOpen", 0.6)
    assert editor.weight_row(0).slider.value() == 60

    editor.weight_row(0).slider.setValue(20)
    answer_next_question(QMessageBox.StandardButton.Save, asked)
    assert editor.maybe_save_or_discard(editor) is True
    assert len(asked) == 3 and not editor.is_modified
    assert VisemeTable.load(path)["aa"][0] == ("jawOpen", 0.2)

    retype(qtbot, editor.name_edit(0), "jawOpn")
    answer_next_question(QMessageBox.StandardButton.Save, asked)
    assert editor.maybe_save_or_discard(editor) is False, "an invalid draft cannot be saved"
    assert len(asked) == 4 and editor.is_modified
    assert VisemeTable.load(path)["aa"][0] == ("jawOpen", 0.2)
    answer_next_question(QMessageBox.StandardButton.Discard, asked)
    assert editor.maybe_save_or_discard(editor) is True
    assert editor.problems == [] and editor.name_edit(0).text() == "jawOpen"


def test_preview_choice_is_remembered(make_editor: MakeEditor, scene: AvatarScene) -> None:
    editor = make_editor(scene)
    editor.preview_check.setChecked(False)
    again = make_editor(scene)
    assert not again.preview_check.isChecked() and not again.previewing


def test_a_typed_name_counts_on_enter_not_per_keystroke(qtbot, make_editor: MakeEditor) -> None:
    """Half-typed names can be valid (``mouth`` = mouthLeft + mouthRight): they must not be emitted."""
    editor = make_editor()
    emitted: list[VisemeTable] = []
    editor.sig_table_changed.connect(emitted.append)
    click_viseme(qtbot, editor, "PP")
    edit = editor.name_edit(4)
    retype(qtbot, edit, "mouth", enter=False)
    assert emitted == [] and not editor.is_modified and editor.table == VisemeTable.default()
    qtbot.keyClicks(edit, "Shrug")
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert editor.problems == ["viseme 'PP', entry 4: unknown blendshape 'mouthShrug'"]
    assert emitted == [] and editor.name_edit(4) is edit, "the row is kept, not rebuilt, while typing"
    retype(qtbot, edit, "mouthShrugLower")
    assert editor.problems == [] and len(emitted) == 1 and emitted[0]["PP"][4] == ("mouthShrugLower", 0.1)
