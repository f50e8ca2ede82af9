"""The whole desktop flow in the real window, against a real embedded service: the issue's "Done means".

Why one long test instead of many small ones: what it checks is the hand-over between the pieces
(selfie panel → service job → download → 3D view → morph sliders → preferences → a restart on the
same data → the jobs list), which small tests with their own fixtures never exercise together.
Nothing of ours is mocked; only the keyring *backend* is an in-memory one, so the user's real keyring
is never touched, and it outlives the first window so the second session finds the stored token.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from memory_keyring import MemoryKeyring
from PIL import Image
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QLabel, QPushButton, QTreeWidget

from avatar_studio.gui.consent_dialog import ConsentDialog
from avatar_studio.gui.main_window import MainWindow
from avatar_studio.gui.secret_store import SERVICE_NAME

MakeMainWindow = Callable[..., MainWindow]
READY_TIMEOUT_MS = 60_000
JOB_TIMEOUT_MS = 180_000


@pytest.fixture
def selfie(tmp_path: Path) -> Path:
    """scikit-image's public-domain astronaut, saved as a JPEG like a phone would."""
    path = tmp_path / "astronaut.jpg"
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, "JPEG", quality=92)
    path.write_bytes(buffer.getvalue())
    return path


def start_window(qtbot, make_main_window: MakeMainWindow) -> MainWindow:
    window = make_main_window(start_session=True)
    window.resize(1500, 950)
    qtbot.waitUntil(lambda: window.session.is_ready, timeout=READY_TIMEOUT_MS)
    assert window.session_label.text() == "Connected: embedded service"
    return window


def give_consent_when_asked(qtbot) -> list[ConsentDialog]:
    """Answer the consent dialog the selfie panel opens modally, by clicking it like a user would."""
    seen: list[ConsentDialog] = []

    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, ConsentDialog):
            QTimer.singleShot(20, answer)
            return
        seen.append(dialog)
        dialog.age_box.click()  # click(): a mouse click at the centre of a wide check box misses its box
        dialog.consent_box.click()
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)

    QTimer.singleShot(0, answer)
    return seen


def mouth_vertices(window: MainWindow, target: str) -> tuple[int, np.ndarray]:
    """(primitive index, vertex indices) that ``target`` moves most: where the jaw should move on screen."""
    assert window.scene is not None
    avatar = window.scene.avatar
    slot = avatar.morph_index(target)
    best: tuple[int, np.ndarray, float] | None = None
    for index, prim in enumerate(avatar.primitives):
        for local, global_slot in enumerate(prim.morph_slots):
            if int(global_slot) != slot:
                continue
            lengths = np.linalg.norm(prim.morph_positions[local], axis=1)
            if best is None or lengths.max() > best[2]:
                best = (index, np.flatnonzero(lengths > lengths.max() * 0.25), float(lengths.max()))
    assert best is not None, f"no primitive has a {target} target"
    return best[0], best[1]


def screen_rows(image: np.ndarray, background: tuple[int, int, int]) -> tuple[int, int]:
    """The first and last pixel rows that show the avatar (not the background)."""
    rows = np.flatnonzero(np.any(np.abs(image[..., :3].astype(int) - background).sum(axis=2) > 30, axis=1))
    assert rows.size, "the avatar is not visible in the view"
    return int(rows[0]), int(rows[-1])


def button(widget: object, name: str) -> QPushButton:
    found = widget.findChild(QPushButton, name)  # type: ignore[attr-defined]
    assert found is not None, f"no button {name!r}"
    return found


def test_selfie_to_avatar_to_preferences_and_back_after_a_restart(
    qtbot, make_main_window: MakeMainWindow, data_dir: Path, selfie: Path, memory_keyring: MemoryKeyring,
    tmp_path: Path,
) -> None:
    from avatar_studio.gui.avatar_view import BACKGROUND

    window = start_window(qtbot, make_main_window)
    assert any(service == SERVICE_NAME and name.startswith("token:") for service, name in memory_keyring.store)

    # --- the selfie: consent through the real dialog, then the photo --------------------------------
    panel = window.selfie_panel
    window.selfie_dock.raise_()
    asked = give_consent_when_asked(qtbot)
    assert panel.load_photo_file(selfie)
    assert asked, "the consent dialog was not shown before the first photo"
    assert window.session.user is not None and window.session.user.may_upload
    qtbot.waitUntil(lambda: panel.photo is not None, timeout=10_000)
    panel.provider = "local"

    # --- submit with the local provider, follow it to the end, and see the avatar appear ----------
    with qtbot.waitSignal(panel.sig_job_created, timeout=30_000) as created:
        qtbot.mouseClick(button(panel, "submit_button"), Qt.MouseButton.LeftButton)
    job_id = created.args[0]
    with qtbot.waitSignal(window.sig_asset_opened, timeout=JOB_TIMEOUT_MS) as opened:
        pass
    asset_id = opened.args[0]
    assert asset_id and window.current_asset_id == asset_id
    job_bar = panel.findChild(type(window.busy), "job_bar")
    assert job_bar is not None and job_bar.value() == 100 and "Done" in job_bar.format()
    downloaded = data_dir.resolve() / "avatars" / f"{asset_id}.glb"
    assert window.current_path == str(downloaded) and downloaded.is_file()
    view = window.view
    assert view is not None
    qtbot.waitUntil(lambda: view.frames_rendered > 0 and not view.frame_pending, timeout=10_000)
    qtbot.waitUntil(lambda: job_id in {job.job_id for job in window.jobs_panel.jobs}, timeout=10_000)
    assert window.inspect_panel.report is not None and window.inspect_panel.error is None

    # --- the jawOpen slider moves the mouth, in the mesh and on screen ------------------------------
    prim_index, mouth = mouth_vertices(window, "jawOpen")
    mesh = view.meshes[prim_index]
    assert mesh is not None
    window.panel_dock.raise_()  # before the first screenshot: raising a dock can resize the 3D view
    qtbot.wait(100)
    view.render_now()
    before_points = np.array(mesh.points, copy=True)
    before_image = view.plotter.screenshot(None, return_img=True, transparent_background=False)
    row = window.morph_panel.row("jawOpen")
    with qtbot.waitSignal(view.sig_frame_rendered, timeout=10_000):
        row.slider.setValue(row.slider.maximum())  # what a drag to the end emits
    qtbot.waitUntil(lambda: not view.frame_pending, timeout=10_000)
    assert window.scene is not None and window.scene.weight("jawOpen") == pytest.approx(1.0)
    after_points = np.array(mesh.points, copy=True)
    moved = np.linalg.norm(after_points - before_points, axis=1)
    assert moved[mouth].max() > 1e-3, "the mouth vertices did not move"
    still = np.setdiff1d(np.arange(len(moved)), np.flatnonzero(moved > 0))
    assert still.size > len(moved) // 2, "jawOpen should leave most of the head where it was"
    view.render_now()
    after_image = view.plotter.screenshot(None, return_img=True, transparent_background=False)
    assert after_image.shape == before_image.shape, "the 3D view was resized between the screenshots"
    changed = np.flatnonzero(np.any(np.abs(after_image.astype(int) - before_image.astype(int)).sum(axis=2) > 24,
                                    axis=1))
    assert changed.size > 0, "the rendered pixels did not change"
    top, bottom = screen_rows(before_image, BACKGROUND)
    middle = (top + bottom) / 2
    assert np.median(changed) > middle, "the pixels that changed are not in the lower face"

    # --- preferences, through the panel, saved to the service ---------------------------------------
    prefs = window.preferences_panel
    window.preferences_dock.raise_()
    qtbot.waitUntil(lambda: prefs.asset_id == asset_id and prefs.form.isEnabled(), timeout=15_000)
    prefs.bindi_check.click()
    prefs.earrings_combo.setCurrentIndex(prefs.earrings_combo.count() - 1)
    prefs.language_combo.setCurrentIndex(2)
    prefs.rows["voice.pitch"].spin.setValue(0.35)
    prefs.rows["persona.warmth"].slider.setValue(prefs.rows["persona.warmth"].slider.maximum())
    assert prefs.has_unsaved_changes() and prefs.save_button.isEnabled()
    chosen = {
        "bindi": prefs.bindi_check.isChecked(),
        "earrings": prefs.earrings_combo.currentData(),
        "language": prefs.language_combo.currentData(),
        "pitch": prefs.rows["voice.pitch"].spin.value(),
        "warmth": prefs.rows["persona.warmth"].spin.value(),
    }
    with qtbot.waitSignal(prefs.sig_saved, timeout=15_000):
        qtbot.mouseClick(prefs.save_button, Qt.MouseButton.LeftButton)
    assert not prefs.has_unsaved_changes()

    # --- close: the service stops; a new window on the same data finds the same user and asset ----
    session = window.session
    assert window.close()
    assert session.client is None and not session.is_ready

    window = start_window(qtbot, make_main_window)
    jobs = window.jobs_panel
    window.jobs_dock.raise_()
    qtbot.waitUntil(lambda: job_id in {job.job_id for job in jobs.jobs}, timeout=15_000)
    job = next(job for job in jobs.jobs if job.job_id == job_id)
    assert job.status == "done" and job.asset_id == asset_id
    jobs_tree = jobs.findChild(QTreeWidget, "jobs_tree")
    assert jobs_tree is not None
    jobs_tree.setCurrentItem(jobs_tree.topLevelItem([j.job_id for j in jobs.jobs].index(job_id)))
    with qtbot.waitSignal(window.sig_asset_opened, timeout=30_000) as reopened:
        qtbot.mouseClick(button(jobs, "open_button"), Qt.MouseButton.LeftButton)
    assert reopened.args == [asset_id]
    prefs = window.preferences_panel
    qtbot.waitUntil(lambda: prefs.asset_id == asset_id and prefs.form.isEnabled(), timeout=15_000)
    assert prefs.bindi_check.isChecked() == chosen["bindi"]
    assert prefs.earrings_combo.currentData() == chosen["earrings"]
    assert prefs.language_combo.currentData() == chosen["language"]
    assert prefs.rows["voice.pitch"].spin.value() == pytest.approx(chosen["pitch"])
    assert prefs.rows["persona.warmth"].spin.value() == pytest.approx(chosen["warmth"])
    assert not prefs.has_unsaved_changes()

    # --- a corrupt GLB: a dialog, the previous avatar stays, and the app goes on working ------------
    corrupt = tmp_path / "corrupt.glb"
    corrupt.write_bytes(downloaded.read_bytes()[:4096])
    with qtbot.waitSignal(window.sig_load_failed, timeout=30_000) as failed:
        window.open_file(str(corrupt))
    assert failed.args[0] == str(corrupt)
    box = window.error_box
    assert box is not None
    qtbot.waitExposed(box)
    assert "corrupt.glb" in box.text() and f"{asset_id}.glb is still open" in box.informativeText()
    assert window.inspect_panel.error is not None
    assert window.current_asset_id == asset_id and window.current_path == str(downloaded)
    box.close()
    qtbot.waitUntil(lambda: window.error_box is None, timeout=5000)
    with qtbot.waitSignal(window.sig_avatar_shown, timeout=30_000):
        window.open_file(str(downloaded))
    assert window.inspect_panel.error is None and window.current_asset_id is None
    assert window.close()


def test_panels_are_docked_and_say_not_connected_before_the_session(
    qtbot, make_main_window: MakeMainWindow, data_dir: Path
) -> None:
    window = make_main_window()
    left = {window.selfie_dock, window.jobs_dock, window.library_dock}
    right = {window.panel_dock, window.inspect_dock, window.preferences_dock}
    for dock in left:
        assert window.dockWidgetArea(dock) == Qt.DockWidgetArea.LeftDockWidgetArea
    for dock in right:
        assert window.dockWidgetArea(dock) == Qt.DockWidgetArea.RightDockWidgetArea
    qtbot.waitUntil(lambda: left - {window.selfie_dock} <= set(window.tabifiedDockWidgets(window.selfie_dock)),
                    timeout=2000)
    assert right - {window.panel_dock} <= set(window.tabifiedDockWidgets(window.panel_dock))
    assert [d.windowTitle() for d in (window.selfie_dock, window.jobs_dock, window.library_dock)] == [
        "Selfie", "Jobs", "Library"]
    assert [d.windowTitle() for d in (window.panel_dock, window.inspect_dock, window.preferences_dock)] == [
        "Morph Targets", "Inspect", "Preferences"]
    message = window.jobs_panel.findChild(QLabel, "message_label")
    assert message is not None and "connect" in message.text().lower()
    assert "Open an avatar" in window.preferences_panel.notice_label.text()
    assert window.open_folder_action.isEnabled()
    assert window.download_dir == data_dir.resolve() / "avatars"
