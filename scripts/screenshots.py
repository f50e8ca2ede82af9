"""Make the README's screenshots from the real app window, so the pictures always show what ships.

Run under Xvfb (the 3D view needs X; software GL is fine)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py

Without ``DISPLAY`` it starts its own Xvfb through PyVirtualDisplay. Writes ``review.png``,
``library.png``, ``inspect.png``, ``inspect-table-error.png``, ``selfie.png`` (a finished ``local``
job) and ``preferences.png`` (that avatar's saved preferences) into ``docs/screenshots/`` (or
``--out``).

Why the avatar is generated here rather than stored: the picture must come from the current
``local`` provider and loader, not from a file that drifts out of date; the photo is scikit-image's
public-domain astronaut, so the screenshots can be published. Settings, the thumbnail cache and the
service data live in a temporary folder, so running this never touches the user's app state.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "gltf"
WINDOW_SIZE = (1560, 940)
EXPRESSION = {"jawOpen": 0.28, "mouthSmileLeft": 0.55, "mouthSmileRight": 0.55, "browInnerUp": 0.35}


@contextmanager
def display() -> Iterator[None]:
    if os.environ.get("DISPLAY"):
        yield
        return
    from pyvirtualdisplay import Display

    virtual = Display(backend="xvfb", size=(1600, 1000), color_depth=24)
    virtual.start()
    try:
        yield
    finally:
        virtual.stop()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    from PySide6.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.01)


def settle(seconds: float = 0.3) -> None:
    from PySide6.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def make_folder(folder: Path) -> dict[str, Path]:
    """A reviewer's download folder: two generated heads, two corpus models and a damaged export."""
    import skimage.data
    from PIL import Image

    from avatar_studio.providers.local import generate_avatar

    folder.mkdir(parents=True)
    photo = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(photo, "JPEG", quality=92)
    files = {
        "astronaut": folder / "astronaut-arkit.glb",
        "basic": folder / "astronaut-visemes.glb",
        "morph": folder / "MorphStressTest.glb",
        "fox": folder / "Fox.glb",
        "broken": folder / "damaged-export.glb",
    }
    files["photo"] = folder.parent / "astronaut.jpg"  # outside the library folder: it is no avatar
    files["photo"].write_bytes(photo.getvalue())
    files["astronaut"].write_bytes(generate_avatar(photo.getvalue(), subdivisions=2))
    files["basic"].write_bytes(generate_avatar(photo.getvalue(), blendshapes="basic", subdivisions=1))
    shutil.copy(CORPUS / "MorphStressTest" / "glTF-Binary" / "MorphStressTest.glb", files["morph"])
    shutil.copy(CORPUS / "Fox" / "glTF-Binary" / "Fox.glb", files["fox"])
    whole = files["morph"].read_bytes()
    files["broken"].write_bytes(whole[: len(whole) * 2 // 3])
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where to write the PNGs")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="avatar-studio-shots-") as tmp_name, display():
        tmp = Path(tmp_name)
        os.environ["AVATAR_STUDIO_DATA_DIR"] = str(tmp / "service-data")
        os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
        os.environ.pop("QT_QPA_PLATFORM", None)
        files = make_folder(tmp / "avatars")
        shoot(out, tmp, files)
    return 0


def shoot(out: Path, tmp: Path, files: dict[str, Path]) -> None:
    from PySide6.QtCore import QSettings, Qt
    from PySide6.QtWidgets import QApplication

    from avatar_studio.gui.inspect_panel import InspectPanel
    from avatar_studio.gui.library_panel import BROKEN, LibraryPanel
    from avatar_studio.gui.main_window import APP_NAME, MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, start_session=True)

    # Use the window's own library and inspect panels once it has them; until then dock ours the way
    # the main window's add_panel does, with the wiring the lead is asked to adopt.
    library = getattr(window, "library_panel", None)
    inspect = getattr(window, "inspect_panel", None)
    if library is None or inspect is None:
        library = LibraryPanel(cache_dir=tmp / "thumbnails")
        inspect = InspectPanel(settings=settings)
        library_dock = window.add_panel("Library", library, Qt.DockWidgetArea.LeftDockWidgetArea)
        inspect_dock = window.add_panel("Inspect", inspect, Qt.DockWidgetArea.RightDockWidgetArea)
        window.tabifyDockWidget(window.panel_dock, inspect_dock)

        def selected(path: str) -> None:
            entry = library.entry(path)
            if entry.state == BROKEN:  # the library already has the loader's verdict: no dialog needed
                inspect.show_error(path, entry.error or "")
            else:
                window.open_file(path)

        library.sig_file_selected.connect(selected)
        library.sig_open_file.connect(window.open_file)
        window.sig_avatar_shown.connect(lambda path: inspect.show_avatar(window.scene.avatar, path))
        window.sig_load_failed.connect(inspect.show_error)
    else:
        library.cache_dir = tmp / "thumbnails"  # never the user's thumbnail cache
        library_dock = next(d for d in window.findChildren(type(window.panel_dock)) if d.widget() is library)
        inspect_dock = next(d for d in window.findChildren(type(window.panel_dock)) if d.widget() is inspect)
        library_dock.raise_()

    window.resize(*WINDOW_SIZE)
    window.resizeDocks([library_dock, window.panel_dock], [330, 430], Qt.Orientation.Horizontal)
    window.show()
    settle(0.5)
    wait_until(lambda: not window.session.is_starting, "the embedded service", timeout=60)

    library.open_folder(files["astronaut"].parent)
    wait_until(lambda: not library.thumbnails_pending, "thumbnails", timeout=120)
    shown: list[str] = []
    window.sig_avatar_shown.connect(shown.append)
    library.select(str(files["astronaut"]))
    wait_until(lambda: bool(shown) and window.view is not None and window.view.frames_rendered > 0, "the avatar")
    assert window.scene is not None and window.view is not None
    window.scene.set_weights(EXPRESSION)
    window.set_camera_preset("three_quarter")
    window.morph_panel.search.setText("mouth")
    window.panel_dock.raise_()
    settle(0.6)
    window.view.render_now()
    settle(0.3)
    save(window.grab(), out / "review.png")

    # The viseme-only head has the more telling report: missing ARKit shapes, unmapped names, and
    # visemes the default table cannot express.
    window.morph_panel.search.clear()
    library.select(str(files["basic"]))
    wait_until(lambda: shown[-1] == str(files["basic"]), "the viseme-only avatar")
    inspect_dock.raise_()
    settle(0.4)
    save(inspect_dock.grab(), out / "inspect.png")

    table = tmp / "studio-visemes.json"
    table.write_text(json.dumps({"aa": [["jawOpen", 1.4]], "XX": [], "E": [["mouthSmile_L", 0.5]]}), "utf-8")
    inspect.load_table(table)
    settle(0.3)
    save(inspect_dock.grab(), out / "inspect-table-error.png")
    inspect.table_error.hide()

    library.select(str(files["broken"]))
    settle(0.4)
    save(library_dock.grab(), out / "library.png")

    if hasattr(window, "selfie_panel") and hasattr(window, "preferences_panel"):
        shoot_selfie_and_preferences(window, out, files["photo"])
        shoot_lipsync_and_mapping(window, out, tmp)

    window.close()
    settle(0.5)
    library.shutdown()


def shoot_selfie_and_preferences(window: object, out: Path, photo: Path) -> None:
    """A finished ``local`` job in the Selfie panel, then that avatar's preferences once saved.

    Consent is recorded through the client rather than the dialog: the dialog is the user's to see,
    and the point of these pictures is the panels after it.
    """
    session = window.session  # type: ignore[attr-defined]
    selfie, prefs = window.selfie_panel, window.preferences_panel  # type: ignore[attr-defined]
    session.set_user(session.client.update_me(age_confirmed=True, consent_selfie=True))
    selfie.load_photo_file(photo)
    wait_until(lambda: selfie.photo is not None, "the selfie")
    selfie.provider = "local"
    opened: list[str] = []
    window.sig_asset_opened.connect(opened.append)  # type: ignore[attr-defined]
    window.selfie_dock.raise_()  # type: ignore[attr-defined]
    selfie.submit()
    wait_until(lambda: bool(opened) and bool(opened[-1]), "the local job", timeout=300)
    window.set_camera_preset("three_quarter")  # type: ignore[attr-defined]
    settle(0.6)
    save(window.selfie_dock.grab(), out / "selfie.png")  # type: ignore[attr-defined]

    window.preferences_dock.raise_()  # type: ignore[attr-defined]
    wait_until(lambda: prefs.asset_id == opened[-1] and prefs.form.isEnabled(), "the preferences")
    prefs.bindi_check.setChecked(True)
    prefs.earrings_combo.setCurrentIndex(prefs.earrings_combo.findData("jhumka"))
    prefs.language_combo.setCurrentIndex(prefs.language_combo.findData("hinglish"))
    prefs.rows["voice.pitch"].spin.setValue(-0.2)
    prefs.rows["voice.speed"].spin.setValue(0.15)
    prefs.rows["persona.warmth"].spin.setValue(0.8)
    prefs.rows["persona.humor"].spin.setValue(0.65)
    saved: list[str] = []
    prefs.sig_saved.connect(saved.append)
    prefs.save()
    wait_until(lambda: bool(saved), "the saved preferences")
    settle(0.4)
    save(window.preferences_dock.grab(), out / "preferences.png")  # type: ignore[attr-defined]


def shoot_lipsync_and_mapping(window: object, out: Path, tmp: Path) -> None:
    """The Lip Sync panel halfway through a spoken sentence, then the Viseme Mapping editor on "aa".

    Uses the avatar the local provider just made from the selfie, so both show a real generated face.
    """
    from avatar_studio.lipsync.audio_files import write_wav
    from avatar_studio.lipsync.espeak import synthesize

    speech = synthesize("Avatar Studio checks every mouth shape before it ships.")
    wav = tmp / "sentence.wav"
    write_wav(wav, speech.samples(), speech.sample_rate)
    window.lipsync_dock.raise_()  # type: ignore[attr-defined]
    wait_until(lambda: window.lipsync_panel is not None, "the lip-sync panel")  # type: ignore[attr-defined]
    panel = window.lipsync_panel  # type: ignore[attr-defined]
    window.set_camera_preset("front")  # type: ignore[attr-defined]
    panel.open_audio_file(wav)
    panel.play()
    wait_until(lambda: panel.timeline.points_shown > 180, "the lip-sync playback", timeout=60)
    panel.pause()
    settle(0.4)
    window.view.render_now()  # type: ignore[attr-defined]
    save(window.grab(), out / "lipsync.png")  # type: ignore[attr-defined]
    panel.stop()

    editor = window.mapping_editor  # type: ignore[attr-defined]
    window.mapping_dock.raise_()  # type: ignore[attr-defined]
    editor.select_viseme("aa")
    settle(0.6)
    window.view.render_now()  # type: ignore[attr-defined]
    save(window.grab(), out / "mapping.png")  # type: ignore[attr-defined]
    window.panel_dock.raise_()  # type: ignore[attr-defined]


def save(pixmap: object, path: Path) -> None:
    if not pixmap.save(str(path), "PNG"):  # type: ignore[attr-defined]
        raise SystemExit(f"screenshots: could not write {path}")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
