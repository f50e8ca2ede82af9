"""Start the desktop review window.

Why the first file is opened from the event loop rather than before ``exec()``: the window should
paint straight away and show its busy indicator while the file loads, instead of appearing only
after the load (and the 3D imports) have finished.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from avatar_studio import __version__
from avatar_studio.gui.main_window import APP_NAME, MainWindow


def run_app(files: list[str]) -> int:
    """Show the review window, open the first of ``files`` (if any) and run until the user quits.

    Only one avatar is reviewed at a time, so extra files are reported in the status bar rather than
    silently dropped.
    """
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(APP_NAME)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setApplicationVersion(__version__)
    window = MainWindow()
    window.show()
    if files:
        QTimer.singleShot(0, lambda: window.open_file(files[0]))
        if len(files) > 1:
            window.statusBar().showMessage(
                f"One avatar at a time: opening {files[0]}; ignored {len(files) - 1} more file(s)", 10000
            )
    return int(app.exec())
