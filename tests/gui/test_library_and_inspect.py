"""The library and inspect panels on real corpus files, under Xvfb (pytest-xvfb).

Thumbnails come from the real renderer child process (VTK's EGL window), so these tests also prove
that the off-GUI-thread rendering works on the machine; broken-file messages come from the real
loader, and reports from the real ``build_report``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import shiboken6
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication

from avatar_studio.avatar.errors import AvatarError
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.gui.inspect_panel import InspectPanel
from avatar_studio.gui.library_panel import BROKEN, READY, THUMBNAIL_BACKGROUND, LibraryPanel

CORPUS = Path(__file__).parents[1] / "data" / "gltf"
THUMBNAIL_TIMEOUT_MS = 60_000


def corpus_glb(model: str) -> Path:
    return CORPUS / model / "glTF-Binary" / f"{model}.glb"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """MorphStressTest, Box, a truncated Box and a non-avatar file, as a reviewer's download folder has."""
    folder = tmp_path / "avatars"
    folder.mkdir()
    shutil.copy(corpus_glb("MorphStressTest"), folder / "MorphStressTest.glb")
    shutil.copy(corpus_glb("Box"), folder / "Box.glb")
    data = corpus_glb("Box").read_bytes()
    (folder / "Truncated.glb").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not an avatar")
    (folder / "nested").mkdir()
    shutil.copy(corpus_glb("Box"), folder / "nested" / "Hidden.glb")
    return folder


@pytest.fixture
def library(qtbot, tmp_path: Path) -> Iterator[LibraryPanel]:
    panel = LibraryPanel(cache_dir=tmp_path / "thumbs")
    qtbot.addWidget(panel)
    panel.resize(360, 600)
    panel.show()
    qtbot.waitExposed(panel)
    yield panel
    panel.shutdown()
    assert panel._process is None, "the thumbnail renderer outlived the panel"


@pytest.fixture
def inspect(qtbot, tmp_path: Path) -> InspectPanel:
    panel = InspectPanel(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(panel)
    panel.resize(420, 700)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def wait_for_thumbnails(qtbot, panel: LibraryPanel) -> None:
    qtbot.waitUntil(lambda: not panel.thumbnails_pending, timeout=THUMBNAIL_TIMEOUT_MS)


def test_folder_lists_avatars_sorted_with_thumbnails_and_the_broken_one_with_its_message(
    qtbot, library: LibraryPanel, folder: Path
) -> None:
    library.open_folder(folder)
    names = [Path(p).name for p in library.paths()]
    assert names == ["Box.glb", "MorphStressTest.glb", "Truncated.glb"]  # sorted, .txt and nested/ left out
    wait_for_thumbnails(qtbot, library)

    for name in ("Box.glb", "MorphStressTest.glb"):
        entry = library.entry(str(folder / name))
        assert entry.state == READY, entry.error
        item = library.item(str(folder / name))
        assert not item.icon().isNull()
        image = item.icon().pixmap(96, 96).toImage()
        assert image.width() == 96
        colours = {image.pixelColor(x, y).getRgb()[:3] for x in range(0, 96, 4) for y in range(0, 96, 4)}
        corner = image.pixelColor(2, 2).getRgb()[:3]
        assert all(abs(a - b) <= 8 for a, b in zip(corner, THUMBNAIL_BACKGROUND, strict=True))  # the view's colour
        assert any(sum(abs(a - b) for a, b in zip(c, THUMBNAIL_BACKGROUND, strict=True)) > 60 for c in colours)
    assert "8 morph targets" in library.item(str(folder / "MorphStressTest.glb")).text()

    truncated = str(folder / "Truncated.glb")
    expected = ""
    try:
        load_avatar(truncated)
    except AvatarError as exc:
        expected = str(exc)
    assert "truncated" in expected
    entry = library.entry(truncated)
    assert entry.state == BROKEN
    assert entry.error == expected
    item = library.item(truncated)
    assert expected in item.toolTip()
    assert not item.icon().isNull()
    assert "Cannot be opened" in item.text()
    assert "1 cannot be opened" in library.status.text()


def test_selection_and_double_click_signals(qtbot, library: LibraryPanel, folder: Path) -> None:
    library.open_folder(folder)
    target = str(folder / "MorphStressTest.glb")
    with qtbot.waitSignal(library.sig_file_selected, timeout=2000) as selected:
        library.select(target)
    assert selected.args == [target]
    item = library.item(target)
    with qtbot.waitSignal(library.sig_open_file, timeout=2000) as opened:
        library.list.itemActivated.emit(item)
    assert opened.args == [target]

    rect = library.list.visualItemRect(item)
    qtbot.mouseClick(library.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    with qtbot.waitSignal(library.sig_open_file, timeout=2000) as clicked:
        qtbot.mouseDClick(library.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert clicked.args == [target]


def test_second_listing_uses_the_cache_and_the_watcher_picks_up_new_files(
    qtbot, library: LibraryPanel, folder: Path, tmp_path: Path
) -> None:
    library.open_folder(folder)
    wait_for_thumbnails(qtbot, library)
    cached = sorted(p.name for p in (tmp_path / "thumbs").iterdir())
    assert sum(name.endswith(".png") for name in cached) == 2
    assert sum(name.endswith(".json") for name in cached) == 3  # the broken file's verdict is cached too

    second = LibraryPanel(cache_dir=tmp_path / "thumbs")
    qtbot.addWidget(second)
    try:
        second.open_folder(folder)
        assert not second.thumbnails_pending  # everything came from the cache, no renderer needed
        assert second._process is None
        assert second.entry(str(folder / "Truncated.glb")).state == BROKEN
    finally:
        second.shutdown()

    shutil.copy(corpus_glb("AnimatedMorphCube"), folder / "Added.glb")
    qtbot.waitUntil(lambda: str(folder / "Added.glb") in library.paths(), timeout=10_000)
    wait_for_thumbnails(qtbot, library)
    assert library.entry(str(folder / "Added.glb")).state == READY
    (folder / "Box.glb").unlink()
    qtbot.waitUntil(lambda: str(folder / "Box.glb") not in library.paths(), timeout=10_000)


def test_refresh_button_relists_and_keeps_the_selection_without_emitting(
    qtbot, library: LibraryPanel, folder: Path
) -> None:
    library.open_folder(folder)
    target = str(folder / "MorphStressTest.glb")
    library.select(target)
    shutil.copy(corpus_glb("Box"), folder / "Another.glb")
    with qtbot.assertNotEmitted(library.sig_file_selected):
        library.refresh_button.click()
    assert str(folder / "Another.glb") in library.paths()
    assert library.selected_path() == target


def test_empty_and_missing_folders_say_so(qtbot, library: LibraryPanel, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    library.open_folder(empty)
    assert library.paths() == []
    assert "No .glb or .gltf files" in library.status.text()
    library.open_folder(tmp_path / "gone")
    assert "Cannot read" in library.status.text()


def test_inspect_shows_arkit_coverage_and_unmapped_names(inspect: InspectPanel) -> None:
    path = str(corpus_glb("MorphStressTest"))
    inspect.show_avatar(load_avatar(path), path)
    text = inspect.text.toPlainText()
    assert "MorphStressTest.glb" in text
    assert "0/52" in text
    assert "unmapped (8)" in text
    for n in range(1, 9):
        assert f"Key {n}" in text
    assert "1,504 vertices" in text  # geometry per primitive
    assert "TinyGrid" in text and "64×64" in text  # textures
    assert inspect.report is not None and inspect.report["arkit"]["unmapped"] == [f"Key {n}" for n in range(1, 9)]
    assert inspect.copy_button.isEnabled() and inspect.save_button.isEnabled()


def test_custom_table_lists_the_visemes_it_cannot_express(inspect: InspectPanel, tmp_path: Path) -> None:
    path = str(corpus_glb("MorphStressTest"))
    inspect.show_avatar(load_avatar(path), path)
    table = tmp_path / "jaw-only.json"
    table.write_text(json.dumps({"aa": [["jawOpen", 1.0]], "sil": []}))
    with_signal = []
    inspect.sig_table_changed.connect(with_signal.append)
    assert inspect.load_table(table)
    assert with_signal == [str(table)]
    text = inspect.text.toPlainText()
    assert "Lip-sync with jaw-only.json" in text
    assert "1/2 visemes expressible" in text
    assert "aa\tlacks jawOpen" in text or "aa lacks jawOpen" in text.replace("\t", " ").replace("\n", " ")
    assert inspect.report is not None and inspect.report["mapping"]["unexpressible"] == {"aa": ["jawOpen"]}
    assert "jaw-only.json · 2 visemes" in inspect.table_label.text()
    assert inspect.settings is not None and inspect.settings.value("inspect/visemeTable") == str(table)

    inspect.use_default_table()
    assert inspect.table_path is None
    assert "1/15 visemes expressible" in inspect.text.toPlainText()


def test_malformed_table_is_reported_clearly_and_the_current_table_stays(
    inspect: InspectPanel, tmp_path: Path
) -> None:
    path = str(corpus_glb("MorphStressTest"))
    inspect.show_avatar(load_avatar(path), path)
    bad = tmp_path / "typos.json"
    bad.write_text(json.dumps({"aa": [["jawOpen", 8]], "XX": [], "E": [["mouthSmile_L", 0.5]]}))
    assert not inspect.load_table(bad)
    assert inspect.table_error.isVisible()
    message = inspect.table_error.text()
    assert "Cannot use typos.json" in message and "3 problems" in message
    assert "outside [0, 1]" in message
    assert "unknown viseme name" in message
    assert "did you mean &#x27;mouthSmileLeft&#x27;?" in message or "did you mean 'mouthSmileLeft'?" in message
    assert inspect.table_path is None  # still the default
    assert "1/15 visemes expressible" in inspect.text.toPlainText()

    syntax = tmp_path / "syntax.json"
    syntax.write_text('{"aa": [["jawOpen", 1.0]')
    assert not inspect.load_table(syntax)
    assert "invalid JSON" in inspect.table_error.text()
    assert not inspect.load_table(tmp_path / "missing.json")
    assert "could not be read" in inspect.table_error.text()


def test_broken_file_copy_and_save(qtbot, inspect: InspectPanel, tmp_path: Path) -> None:
    path = str(corpus_glb("MorphStressTest"))
    inspect.show_avatar(load_avatar(path), path)
    inspect.copy_report()
    clip = QApplication.clipboard().text()
    assert clip.startswith(f"File        {path}")
    assert "ARKit       0/52 blendshapes present" in clip

    target = tmp_path / "report.json"
    with qtbot.waitSignal(inspect.sig_report_saved, timeout=2000):
        assert inspect.save_report(target)
    saved = json.loads(target.read_text("utf-8"))
    assert saved["arkit"]["present"] == 0 and len(saved["morphTargets"]) == 8
    assert not inspect.save_report(tmp_path / "no-such-dir" / "r.json")
    assert "Not saved" in inspect.notice.text()

    inspect.show_error("/data/Truncated.glb", "the file is truncated: the GLB header says 1664 bytes")
    text = inspect.text.toPlainText()
    assert "Cannot open Truncated.glb" in text and "the file is truncated" in text
    assert inspect.report is None and not inspect.save_button.isEnabled()
    inspect.copy_report()
    assert "the file is truncated" in QApplication.clipboard().text()
    assert shiboken6.isValid(inspect)
