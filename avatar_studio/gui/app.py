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

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from avatar_studio import __version__
from avatar_studio.gui.main_window import APP_NAME, MainWindow


def run_app(files: list[str]) -> int:
    """Show the main window, start the service session, open the first of ``files`` (if any), run until quit.

    Only one avatar is reviewed at a time, so extra files are reported in the status bar rather than
    silently dropped. Closing the window stops the embedded service. When ``AVATAR_STUDIO_READY_FILE``
    is set, ``time.monotonic()`` is written to it once the shown window's event loop is idle: the
    hook the start-up benchmark times "interactive" with.
    """
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(APP_NAME)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setApplicationVersion(__version__)
    window = MainWindow(start_session=True)
    app.aboutToQuit.connect(window.session.stop)  # also on a quit that bypasses closeEvent
    window.show()
    ready_file = os.environ.get("AVATAR_STUDIO_READY_FILE")
    if ready_file:
        QTimer.singleShot(0, lambda: _write_ready(Path(ready_file)))
    if files:
        QTimer.singleShot(0, lambda: window.open_file(files[0]))
        if len(files) > 1:
            window.statusBar().showMessage(
                f"One avatar at a time: opening {files[0]}; ignored {len(files) - 1} more file(s)", 10000
            )
    return int(app.exec())


def _write_ready(path: Path) -> None:
    """Record the moment the window is interactive; a failed write must not take the app down with it."""
    try:
        path.write_text(f"{time.monotonic()}\n", encoding="utf-8")
    except OSError as exc:
        print(f"avatar-studio: could not write the ready file {path}: {exc}", file=sys.stderr)
