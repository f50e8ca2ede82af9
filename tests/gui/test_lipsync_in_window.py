"""The lip-sync tester and the mapping editor inside the main window: one table, one avatar, no leaks.

The panels have their own tests; these check the wiring a QA engineer relies on: the Lip Sync dock
builds its panel only when first shown (cold start), both panels follow the avatar on screen, an
edit in the Viseme Mapping editor changes what the lip-sync pose buttons do and what Inspect
reports, and closing the window stops every lip-sync thread.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt

from avatar_studio.avatar.morph import MorphEvaluator
from avatar_studio.gui.main_window import MainWindow
from avatar_studio.lipsync.audio_files import write_wav

MakeMainWindow = Callable[..., MainWindow]
Opener = Callable[[MainWindow, Path], None]


def test_startup_does_not_import_the_lipsync_stack() -> None:
    code = (
        "import sys; import avatar_studio.gui.app, avatar_studio.gui.main_window; "
        "assert 'pyqtgraph' not in sys.modules, 'pyqtgraph imported at start-up'; "
        "assert 'avatar_studio.lipsync.engine' not in sys.modules, 'lip-sync engine imported at start-up'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _show_lipsync(qtbot, window: MainWindow):
    assert window.lipsync_panel is None, "the panel should wait until its dock is shown"
    window.lipsync_dock.show()
    window.lipsync_dock.raise_()
    qtbot.waitUntil(lambda: window.lipsync_panel is not None, timeout=10_000)
    return window.lipsync_panel


def test_lipsync_pose_follows_the_avatar_and_the_edited_table(
    qtbot, make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    panel = _show_lipsync(qtbot, window)
    scene = window.scene
    assert scene is not None

    # The pose button uses the window's table (the editor's) on the avatar on screen, and the mesh moves.
    before = [mesh.points.copy() for mesh in window.view.meshes if mesh is not None]
    qtbot.mouseClick(panel.pose_buttons["aa"], Qt.MouseButton.LeftButton)
    expected = window.mapping_editor.table.blendshapes({"aa": 1.0})
    weights = scene.weights_by_name()
    for name, value in expected.items():
        assert weights[name] == np.float32(value) or abs(weights[name] - value) < 1e-6
    qtbot.waitUntil(lambda: not window.view.frame_pending, timeout=5000)
    posed = MorphEvaluator(scene.avatar).apply(scene.weights)
    after = [mesh.points for mesh in window.view.meshes if mesh is not None]
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True)), "the mouth should move"
    np.testing.assert_allclose(after[0], posed[0][0], atol=1e-5)

    # Edit the aa viseme in the mapping editor: jawOpen weight 0.25 only.
    editor = window.mapping_editor
    try:
        _edit_and_pose(qtbot, window, panel)
    finally:
        editor.revert()  # unsaved edits would make the window ask Save/Discard at teardown


def _edit_and_pose(qtbot, window: MainWindow, panel) -> None:
    editor, scene = window.mapping_editor, window.scene
    assert scene is not None
    window.mapping_dock.show()
    window.mapping_dock.raise_()
    editor.select_viseme("aa")
    while editor.entry_count():
        editor.remove_entry(0)
    assert editor.add_entry("jawOpen", 0.25)
    assert editor.table["aa"] == [("jawOpen", 0.25)]
    assert panel.table["aa"] == [("jawOpen", 0.25)], "the lip-sync panel should use the edited table"
    assert "edited, not saved" in window.inspect_panel.table_label.text()
    assert editor.previewing, "the editor's tab is in front: it poses the face in the viseme being edited"
    assert abs(scene.weight("jawOpen") - 0.25) < 1e-6

    window.lipsync_dock.raise_()  # the editor's live preview ends when its dock is hidden
    qtbot.waitUntil(lambda: not editor.previewing, timeout=5000)
    qtbot.mouseClick(panel.pose_buttons["aa"], Qt.MouseButton.LeftButton)
    weights = scene.weights_by_name()
    assert abs(weights["jawOpen"] - 0.25) < 1e-6
    others = set(window.mapping_editor.table.blendshape_names) - {"jawOpen"}
    assert all(weights[name] == 0.0 for name in others if name in weights)


def test_inspect_reports_against_the_edited_table(
    qtbot, make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    report = window.inspect_panel.report
    assert report is not None
    assert not report["mapping"]["unexpressible"], "the synthetic head has all 52 ARKit shapes"

    # A table that uses a blendshape this avatar lacks makes that viseme unexpressible in Inspect.
    editor = window.mapping_editor
    editor.select_viseme("TH")
    try:
        editor.set_entry(0, name="viseme_missing_on_purpose")  # not a blendshape of this avatar: refused
        assert editor.problems, "an unknown name should be reported by the editor"
        assert window.inspect_panel.report == report, "an invalid draft must not reach Inspect"
        editor.revert()
        editor.select_viseme("TH")
        editor.set_entry(0, weight=0.5)
        assert "edited, not saved" in window.inspect_panel.table_label.text()
        assert window.inspect_panel.table["TH"][0][1] == 0.5
    finally:
        editor.revert()
    assert "edited, not saved" not in window.inspect_panel.table_label.text()


def test_closing_the_window_stops_the_lipsync_threads(
    qtbot, tmp_path: Path, make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    panel = _show_lipsync(qtbot, window)
    rate = 16_000
    t = np.arange(rate * 2) / rate
    voice = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    wav = tmp_path / "tone.wav"
    write_wav(wav, voice, rate)
    assert panel.open_audio_file(str(wav))
    panel.play()
    qtbot.wait(300)  # let the analysis thread start and playback begin
    window.close()
    qtbot.waitUntil(lambda: not _lipsync_threads(), timeout=15_000)
    assert window.scene is not None
    mouth = window.lipsync_panel.table.blendshape_names
    assert all(window.scene.weight(name) == 0.0 for name in mouth if name in window.scene.avatar.morph_names)


def _lipsync_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lipsync-") and t.is_alive()]
