"""The offline review window, driven like a reviewer would, under Xvfb (pytest-xvfb).

Expected geometry always comes from a second, independent ``load_avatar`` + ``MorphEvaluator``, so
these tests check that the *view* shows what the domain computes, not that the view agrees with
itself.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from avatar_studio.avatar.errors import AvatarError
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.morph import MorphEvaluator
from avatar_studio.gui.main_window import MainWindow

Opener = Callable[[MainWindow, Path], None]
MakeMainWindow = Callable[..., MainWindow]
CORPUS = Path(__file__).parents[1] / "data" / "gltf"


def corpus_glb(model: str) -> Path:
    return CORPUS / model / "glTF-Binary" / f"{model}.glb"


def assert_view_matches(window: MainWindow, path: Path, weights: dict[str, float] | None) -> None:
    """The view's mesh points and normals equal an independent evaluation of ``path`` at ``weights``."""
    expected = MorphEvaluator(load_avatar(str(path))).apply(weights)
    assert window.view is not None
    meshes = window.view.meshes
    assert len(meshes) == len(expected)
    for mesh, (positions, normals) in zip(meshes, expected, strict=True):
        assert mesh is not None
        np.testing.assert_allclose(mesh.points, positions, atol=1e-5)
        np.testing.assert_allclose(mesh.point_data["Normals"], normals, atol=1e-4)


def wait_for_frame(qtbot, window: MainWindow) -> None:
    """Wait until the latest scene change has been written to the meshes and a frame rendered after it."""
    view = window.view
    assert view is not None
    qtbot.waitUntil(lambda: not view.frame_pending, timeout=5000)
    with qtbot.waitSignal(view.sig_frame_rendered, timeout=5000):
        view.request_frame()


def test_empty_window_starts_without_importing_the_3d_stack() -> None:
    code = (
        "import sys; import avatar_studio.gui.app, avatar_studio.gui.main_window; "
        "assert 'pyvistaqt' not in sys.modules and 'vtkmodules' not in sys.modules, 'eager 3D import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_empty_window_invites_opening_a_file(make_main_window: MakeMainWindow) -> None:
    window = make_main_window()
    assert window.view is None
    assert "Open an avatar" in window.welcome.text()
    assert not window.screenshot_action.isEnabled()
    assert not window.camera_actions["front"].isEnabled()
    assert "Open an avatar" in window.morph_panel.message.text()
    menus = [action.text() for action in window.menuBar().actions()]
    assert menus == ["&File", "&View", "&Help"]


def test_open_real_corpus_glb(make_main_window: MakeMainWindow, open_avatar: Opener) -> None:
    path = corpus_glb("MorphStressTest")
    window = make_main_window()
    open_avatar(window, path)
    avatar = load_avatar(str(path))
    assert window.windowTitle().startswith("MorphStressTest.glb")
    summary = window.summary_label.text()
    assert f"{avatar.vertex_count:,} vertices" in summary
    assert f"{avatar.triangle_count:,} triangles" in summary
    assert "8 morph targets" in summary
    assert [row.name for row in window.morph_panel.rows] == avatar.morph_names
    assert window.screenshot_action.isEnabled()
    assert_view_matches(window, path, None)


def test_slider_moves_the_mesh_exactly_like_the_evaluator(
    qtbot, make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    before = [m.points.copy() for m in window.view.meshes]
    row = window.morph_panel.row("jawOpen")
    row.slider.setFocus()
    qtbot.keyClick(row.slider, Qt.Key.Key_End)  # a real user input: jump to 1.0
    row.slider.setValue(700)
    wait_for_frame(qtbot, window)
    assert window.scene.weight("jawOpen") == pytest.approx(0.7)
    assert_view_matches(window, synthetic_head, {"jawOpen": 0.7})
    # jawOpen drives both the head and the separate teeth mesh.
    for mesh, old in zip(window.view.meshes, before, strict=True):
        assert not np.allclose(mesh.points, old)


def test_spinbox_and_slider_stay_in_sync(
    qtbot, make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    row = window.morph_panel.row("eyeBlinkLeft")

    row.spin.setValue(0.25)
    assert row.slider.value() == 250
    assert window.scene.weight("eyeBlinkLeft") == pytest.approx(0.25)

    row.slider.setValue(600)
    assert row.spin.value() == pytest.approx(0.6)
    assert window.scene.weight("eyeBlinkLeft") == pytest.approx(0.6)

    window.scene.set_weight("eyeBlinkLeft", 0.125)  # a change from outside the panel (e.g. lip-sync)
    assert row.slider.value() == 125
    assert row.spin.value() == pytest.approx(0.125)

    row.spin.clear()
    qtbot.keyClicks(row.spin, "0.9")
    qtbot.keyClick(row.spin, Qt.Key.Key_Return)
    assert row.slider.value() == 900
    wait_for_frame(qtbot, window)
    assert_view_matches(window, synthetic_head, {"eyeBlinkLeft": 0.9})


def test_raw_provider_names_are_shown_beside_canonical_ones(
    make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    blink = window.morph_panel.row("eyeBlinkLeft")
    assert blink.raw_label.text() == "eyeBlink_L"
    assert blink.raw_label.isVisible()
    jaw = window.morph_panel.row("jawOpen")  # same spelling in the file: nothing extra to show
    assert jaw.raw_names == []
    assert not jaw.raw_label.isVisible()


def test_many_weight_changes_cost_one_render(
    qtbot, make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    view = window.view
    before = -1
    while before != view.frames_rendered:  # let start-up repaints (layout, expose) settle first
        before = view.frames_rendered
        qtbot.wait(200)
    weights = {}
    for i, name in enumerate(window.scene.avatar.morph_names):
        weights[name] = (i % 10) / 10
        window.scene.set_weight(name, weights[name])
    qtbot.waitUntil(lambda: not view.frame_pending, timeout=5000)
    qtbot.wait(200)
    assert view.frames_rendered - before == 1
    assert_view_matches(window, synthetic_head, weights)


def test_search_filters_groups(make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    panel = window.morph_panel
    regions = [section.region for section in panel.sections]
    assert regions == ["brows", "eyes", "cheeks", "nose", "jaw", "mouth", "tongue"]

    panel.search.setText("blink")
    visible = [s.region for s in panel.sections if s.isVisibleTo(panel)]
    assert visible == ["eyes"]
    shown = [r.name for r in panel.section("eyes").rows if r.isVisibleTo(panel)]
    assert shown == ["eyeBlinkLeft", "eyeBlinkRight"]

    panel.search.setText("browDown_L")  # the provider's spelling finds the canonical slider
    shown = [r.name for r in panel.rows if r.isVisibleTo(panel)]
    assert shown == ["browDownLeft"]

    panel.search.setText("no such shape")
    assert not any(s.isVisibleTo(panel) for s in panel.sections)
    assert panel.message.isVisibleTo(panel)
    assert "no such shape" in panel.message.text()

    panel.search.clear()
    assert all(s.isVisibleTo(panel) for s in panel.sections)
    assert all(r.isVisibleTo(panel) for r in panel.rows)
    assert not panel.message.isVisibleTo(panel)


def test_groups_collapse_and_expand(
    make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    section = window.morph_panel.section("mouth")
    section.header.click()
    assert not section.body.isVisibleTo(section)
    window.morph_panel.search.setText("smile")  # searching opens groups that have matches
    assert section.body.isVisibleTo(section)


def test_reset_all_restores_the_files_default_weights(
    qtbot, make_main_window: MakeMainWindow, open_avatar: Opener
) -> None:
    path = corpus_glb("MorphPrimitivesTest")  # ships mesh.weights = [0.5]
    window = make_main_window()
    open_avatar(window, path)
    row = window.morph_panel.rows[0]
    assert row.slider.value() == 500
    row.slider.setValue(1000)
    wait_for_frame(qtbot, window)
    assert_view_matches(window, path, {row.name: 1.0})

    qtbot.mouseClick(window.morph_panel.reset_button, Qt.MouseButton.LeftButton)
    assert window.scene.weight(0) == pytest.approx(0.5)
    assert row.slider.value() == 500
    assert row.spin.value() == pytest.approx(0.5)
    wait_for_frame(qtbot, window)
    assert_view_matches(window, path, None)


def test_avatar_without_morphs_says_so(make_main_window: MakeMainWindow, open_avatar: Opener) -> None:
    window = make_main_window()
    open_avatar(window, corpus_glb("Box"))
    panel = window.morph_panel
    assert panel.rows == []
    assert panel.message.isVisibleTo(panel)
    assert panel.message.text() == "This avatar has no morph targets."
    assert not panel.reset_button.isEnabled()


def test_broken_file_shows_the_error_and_keeps_the_previous_avatar(
    qtbot, tmp_path: Path, make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    window.scene.set_weight("jawOpen", 0.4)
    broken = tmp_path / "truncated-head.glb"
    broken.write_bytes(synthetic_head.read_bytes()[:5000])
    with pytest.raises(AvatarError) as expected:
        load_avatar(str(broken))

    with qtbot.waitSignal(window.sig_load_failed, timeout=30_000):
        window.open_file(str(broken))

    box = window.error_box
    assert isinstance(box, QMessageBox)
    qtbot.waitUntil(box.isVisible)
    assert "truncated-head.glb" in box.text()
    assert str(expected.value) in box.informativeText()
    assert "synthetic-head.glb is still open" in box.informativeText()
    assert box.icon() == QMessageBox.Icon.Warning

    assert window.current_path == str(synthetic_head)
    assert window.scene.weight("jawOpen") == pytest.approx(0.4)
    assert window.windowTitle().startswith("synthetic-head.glb")
    assert str(broken) not in window.recent_files()
    wait_for_frame(qtbot, window)
    assert_view_matches(window, synthetic_head, {"jawOpen": 0.4})
    box.accept()
    qtbot.waitUntil(lambda: window.error_box is None)


def test_missing_file_is_reported_and_the_window_stays_empty(
    qtbot, tmp_path: Path, make_main_window: MakeMainWindow
) -> None:
    window = make_main_window()
    with qtbot.waitSignal(window.sig_load_failed, timeout=30_000) as blocker:
        window.open_file(str(tmp_path / "gone.glb"))
    assert "No such file" in blocker.args[1] or "does not exist" in blocker.args[1]
    assert window.scene is None
    assert "gone.glb" in window.error_box.text()
    assert not window.busy.isVisible()
    window.error_box.accept()


def test_screenshot_is_a_png_with_the_head_drawn(
    qtbot,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_main_window: MakeMainWindow,
    open_avatar: Opener,
    synthetic_head: Path,
) -> None:
    from avatar_studio.gui.avatar_view import BACKGROUND

    window = make_main_window()
    open_avatar(window, synthetic_head)
    chosen = tmp_path / "review shot"  # no suffix: the window must add .png
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(chosen), ""))
    window.screenshot_action.trigger()

    saved = chosen.with_name("review shot.png")
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(saved) as img:
        pixels = np.asarray(img.convert("RGB")).astype(int)
    height, width, _ = pixels.shape
    assert (width, height) == (window.view.width(), window.view.height())
    background = np.array(BACKGROUND)
    corner = pixels[:10, :10].reshape(-1, 3)
    assert np.abs(corner - background).max() <= 3, "the corner should show the plain background"
    centre = pixels[height * 2 // 5 : height * 3 // 5, width * 2 // 5 : width * 3 // 5].reshape(-1, 3)
    differs = np.abs(centre - background).sum(axis=1) > 40
    assert differs.mean() > 0.95, "the head should fill the centre of the view"
    assert centre.std(axis=0).max() > 5, "a textured, lit head is not one flat colour"


def test_drag_and_drop_opens_the_file(
    qtbot, make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    path = corpus_glb("AnimatedMorphSphere")

    def mime(*files: Path) -> QMimeData:
        data = QMimeData()
        data.setUrls([QUrl.fromLocalFile(str(f)) for f in files])
        return data

    target = window.view.plotter  # dropped onto the 3D view, as a user would
    where = target.mapTo(window, target.rect().center())  # QDragEnterEvent takes a QPoint, QDropEvent a QPointF
    actions = Qt.DropAction.CopyAction
    text_file = mime(Path(__file__))
    button, no_modifier = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(where, actions, text_file, button, no_modifier)
    QApplication.sendEvent(window, enter)
    assert not enter.isAccepted(), "only .glb/.gltf files may be dropped"

    payload = mime(path)
    enter = QDragEnterEvent(where, actions, payload, button, no_modifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(where), actions, payload, button, no_modifier)
    with qtbot.waitSignal(window.sig_avatar_shown, timeout=30_000):
        QApplication.sendEvent(window, drop)
    assert drop.isAccepted()
    assert window.current_path == str(path)
    assert not target.acceptDrops(), "pyvistaqt's own drop handler must not read files into the scene"
    wait_for_frame(qtbot, window)
    assert_view_matches(window, path, None)


def test_open_recent_remembers_and_reopens(
    qtbot, make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    sphere = corpus_glb("AnimatedMorphSphere")
    open_avatar(window, sphere)
    open_avatar(window, synthetic_head)
    assert window.recent_files() == [str(synthetic_head), str(sphere)]

    window.recent_menu.aboutToShow.emit()
    entries = [a for a in window.recent_menu.actions() if a.statusTip()]
    assert [a.statusTip() for a in entries] == [str(synthetic_head), str(sphere)]
    with qtbot.waitSignal(window.sig_avatar_shown, timeout=30_000):
        entries[1].trigger()
    assert window.current_path == str(sphere)
    assert window.recent_files()[0] == str(sphere)


def _view_pixels(window: MainWindow, path: Path) -> np.ndarray:
    assert window.view is not None
    window.view.screenshot(str(path))
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(int)


@pytest.mark.parametrize("preset", ["front", "left", "three_quarter"])
@pytest.mark.parametrize("model", ["synthetic", "Fox", "AnimatedMorphSphere"])
def test_back_face_culling_hides_nothing_that_faces_the_camera(
    tmp_path: Path, make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path, model: str,
    preset: str,
) -> None:
    """glTF requires culling back faces of single-sided materials (and it saves ~40% of a frame); the
    picture must not change, which fails if any mesh's triangles were wound inwards (e.g. a mirrored node)."""
    window = make_main_window()
    open_avatar(window, synthetic_head if model == "synthetic" else corpus_glb(model))
    view = window.view
    assert view is not None
    view.set_camera_preset(preset)
    actors = [actor for actor in view._actors if actor is not None]
    assert actors and all(actor.prop.culling == "back" for actor in actors)
    culled = _view_pixels(window, tmp_path / "culled.png")
    for actor in actors:
        actor.prop.culling = "None"
    both_sides = _view_pixels(window, tmp_path / "both.png")
    changed = (np.abs(culled - both_sides).sum(axis=2) > 30).mean()
    assert changed < 0.002, f"{changed:.2%} of the pixels changed when back faces were drawn too"
    drawn = (np.abs(culled - np.array(_background())).sum(axis=2) > 30).mean()
    assert drawn > 0.02, "the model should cover part of the view"


def _background() -> tuple[int, int, int]:
    from avatar_studio.gui.avatar_view import BACKGROUND

    return BACKGROUND


def test_double_sided_materials_are_drawn_from_both_sides(
    make_main_window: MakeMainWindow, open_avatar: Opener
) -> None:
    window = make_main_window()
    open_avatar(window, corpus_glb("MorphStressTest"))  # its material says doubleSided: true
    assert window.view is not None
    actors = [actor for actor in window.view._actors if actor is not None]
    assert actors and all(actor.prop.culling == "none" for actor in actors)


def test_camera_presets_look_from_the_named_side(
    make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    camera = window.view.plotter.camera
    lo, hi = window.scene.avatar.bounds()
    centre = (lo + hi) / 2

    def offset() -> np.ndarray:
        return np.array(camera.position) - centre

    window.camera_actions["left"].trigger()
    assert offset()[0] > 0 and abs(offset()[2]) < 1e-6 * np.linalg.norm(offset()) + 1e-6
    window.camera_actions["right"].trigger()
    assert offset()[0] < 0
    window.camera_actions["three_quarter"].trigger()
    assert offset()[0] > 0 and offset()[2] > 0
    window.reset_camera_action.trigger()
    direction = offset() / np.linalg.norm(offset())
    np.testing.assert_allclose(direction, [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(camera.up, [0, 1, 0], atol=1e-6)


def test_hiding_a_part_hides_its_actor(
    make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path
) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    actions = window.parts_menu.actions()
    assert len(actions) == len(window.scene.avatar.primitives) == 2
    actions[1].setChecked(False)
    assert not window.scene.is_visible(1)
    assert window.view._actors[1].GetVisibility() == 0


def test_no_rendering_after_close(make_main_window: MakeMainWindow, open_avatar: Opener, synthetic_head: Path) -> None:
    window = make_main_window()
    open_avatar(window, synthetic_head)
    view, scene = window.view, window.scene
    window.close()
    assert view.is_closed
    frames = view.frames_rendered
    scene.set_weight("jawOpen", 1.0)  # the scene outlives the window; it must not reach the dead view
    view.request_frame()
    view.render_now()
    QApplication.processEvents()
    assert view.frames_rendered == frames


def test_the_app_icon_has_every_shipped_size(qtbot) -> None:
    """The window icon comes from resources/icons, the same files the .desktop entry installs."""
    from avatar_studio.gui.app import ICON_SIZES, app_icon

    icon = app_icon()
    assert not icon.isNull()
    assert sorted(size.width() for size in icon.availableSizes()) == sorted(ICON_SIZES)
    assert not icon.pixmap(64, 64).toImage().isNull()
