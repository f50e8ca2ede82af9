"""Start the desktop review window.

Why the first file is opened from the event loop rather than before ``exec()``: the window should
paint straight away and show its busy indicator while the file loads, instead of appearing only
after the load (and the 3D imports) have finished. The avatar service session (embedded by default)
starts the same way, in the background after the first paint, so the window is interactive within
the start-up budget however long the service takes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QSize, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from avatar_studio import __version__
from avatar_studio.gui.main_window import APP_NAME, MainWindow
from avatar_studio.resources import resource_path

SCREENSHOT_TIMEOUT_S = 120.0
DESKTOP_ID = "io.github.avatar_studio.AvatarStudio"
ICON_SIZES = (48, 64, 128, 256)


def run_app(files: list[str], screenshot: Path | None = None) -> int:
    """Show the main window, start the service session, open the first of ``files`` (if any), run until quit.

    Only one avatar is reviewed at a time, so extra files are reported in the status bar rather than
    silently dropped. Closing the window stops the embedded service. When ``AVATAR_STUDIO_READY_FILE``
    is set, ``time.monotonic()`` is written to it once the shown window's event loop is idle: the
    hook the start-up benchmark times "interactive" with. ``screenshot`` (``--screenshot PNG``): save
    the window once it is up (and the file's avatar rendered) and quit — how a packager checks that a
    bundle can open its window and render 3D; exit code 1 if that does not happen.
    """
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(APP_NAME)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setApplicationVersion(__version__)
    # The id of packaging/linux/*.desktop: lets the desktop match the window to its menu entry and icon.
    app.setDesktopFileName(DESKTOP_ID)
    app.setWindowIcon(app_icon())
    window = MainWindow(start_session=True)
    app.aboutToQuit.connect(window.session.stop)  # also on a quit that bypasses closeEvent
    window.show()
    ready_file = os.environ.get("AVATAR_STUDIO_READY_FILE")
    if ready_file:
        QTimer.singleShot(0, lambda: _write_ready(Path(ready_file)))
    if screenshot is not None:
        _capture_when_ready(app, window, screenshot, wait_for_avatar=bool(files))
    if files:
        QTimer.singleShot(0, lambda: window.open_file(files[0]))
        if len(files) > 1:
            window.statusBar().showMessage(
                f"One avatar at a time: opening {files[0]}; ignored {len(files) - 1} more file(s)", 10000
            )
    return int(app.exec())


def app_icon() -> QIcon:
    """The application icon at every size shipped in ``resources/icons`` (an empty icon if none is found)."""
    icon = QIcon()
    for size in ICON_SIZES:
        try:
            icon.addFile(str(resource_path(f"icons/avatar-studio-{size}.png")), QSize(size, size))
        except FileNotFoundError:
            continue  # a missing icon is cosmetic; --self-test reports an incomplete installation
    return icon


def _capture_when_ready(app: QApplication, window: MainWindow, path: Path, *, wait_for_avatar: bool) -> None:
    """Poll until the window (and the avatar, if one is opened) has rendered, then save it and quit."""
    failed: list[str] = []
    window.sig_load_failed.connect(lambda _path, message: failed.append(message))
    deadline = time.monotonic() + SCREENSHOT_TIMEOUT_S
    timer = QTimer(window)

    def poll() -> None:
        view = window.view
        rendered = view is not None and view.frames_rendered > 0 and window.scene is not None
        if failed or time.monotonic() > deadline:
            timer.stop()
            print(f"avatar-studio: no screenshot: {failed[0] if failed else 'timed out'}", file=sys.stderr)
            app.exit(1)
        elif window.isVisible() and (rendered or not wait_for_avatar):
            timer.stop()
            QTimer.singleShot(300, save)  # let the dock layout and a last render settle

    def save() -> None:
        ok = window.grab().save(str(path), "PNG")
        if not ok:
            print(f"avatar-studio: could not write the screenshot {path}", file=sys.stderr)
        app.exit(0 if ok else 1)

    timer.timeout.connect(poll)
    timer.start(50)


def _write_ready(path: Path) -> None:
    """Record the moment the window is interactive; a failed write must not take the app down with it."""
    try:
        path.write_text(f"{time.monotonic()}\n", encoding="utf-8")
    except OSError as exc:
        print(f"avatar-studio: could not write the ready file {path}: {exc}", file=sys.stderr)
