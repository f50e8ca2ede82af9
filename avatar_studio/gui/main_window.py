"""The review window: open an avatar file, look at it from fixed angles, and work its morph targets.

Why the 3D view is created lazily: importing pyvista/pyvistaqt costs about a second (toolchain §9),
while a plain Qt window paints in 0.1 s. The window therefore starts with a light welcome page and
imports the view only when the first avatar arrives; the loader thread imports it ahead of time so
the GUI thread finds it already in ``sys.modules``.

Why loading runs in a worker: a large provider GLB takes a noticeable time to decode, and a window
that stops repainting while it does looks crashed. Results come back through queued signals; a
generation counter makes sure only the most recently requested file is shown.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Final

from PySide6.QtCore import QObject, QRunnable, QSettings, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDragMoveEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QStackedWidget,
    QToolButton,
    QWidget,
)

from avatar_studio.avatar.errors import AvatarError
from avatar_studio.avatar.model import Avatar
from avatar_studio.avatar.scene import CAMERA_PRESETS, AvatarScene
from avatar_studio.gui.morph_panel import MorphPanel

if TYPE_CHECKING:
    from avatar_studio.gui.avatar_view import AvatarView

log = logging.getLogger(__name__)

APP_NAME: Final[str] = "Avatar Studio"
AVATAR_SUFFIXES: Final[tuple[str, ...]] = (".glb", ".gltf")
OPEN_FILTER: Final[str] = "glTF avatars (*.glb *.gltf);;All files (*)"
MAX_RECENT: Final[int] = 10
CAMERA_SHORTCUTS: Final[dict[str, str]] = {
    "front": "Ctrl+1",
    "left": "Ctrl+2",
    "right": "Ctrl+3",
    "three_quarter": "Ctrl+4",
}


def default_settings() -> QSettings:
    """The app's persistent settings (recent files, last folder, window layout)."""
    return QSettings(APP_NAME, APP_NAME)


def avatar_summary(avatar: Avatar) -> str:
    """The status-bar line: the numbers a reviewer checks against a provider's spec sheet."""
    targets = len(avatar.morph_names)
    parts = [
        f"{avatar.vertex_count:,} vertices",
        f"{avatar.triangle_count:,} triangles",
        f"{targets} morph target{'' if targets == 1 else 's'}",
    ]
    if len(avatar.primitives) > 1:
        parts.append(f"{len(avatar.primitives)} parts")
    return " · ".join(parts)


def is_avatar_path(path: str) -> bool:
    return Path(path).suffix.lower() in AVATAR_SUFFIXES


class _LoadSignals(QObject):
    """Carries a worker's result back to the GUI thread (a QRunnable cannot emit signals itself)."""

    sig_loaded = Signal(int, str, object)
    """(generation, path, Avatar): the file was read; the window decides whether it is still wanted."""

    sig_failed = Signal(int, str, str)
    """(generation, path, one-line message for the user): the file could not be shown."""


class _LoadTask(QRunnable):
    """Reads one avatar file off the GUI thread."""

    def __init__(self, generation: int, path: str, signals: _LoadSignals) -> None:
        super().__init__()
        self.generation = generation
        self.path = path
        self.signals = signals

    def run(self) -> None:
        try:
            from avatar_studio.avatar.gltf_reader import load_avatar

            avatar = load_avatar(self.path)
            # Warm the heavy 3D imports here, so the GUI thread does not freeze for them on first show.
            import avatar_studio.gui.avatar_view  # noqa: F401
        except AvatarError as exc:
            self.signals.sig_failed.emit(self.generation, self.path, str(exc))
        except FileNotFoundError:
            self.signals.sig_failed.emit(self.generation, self.path, "The file does not exist (any more).")
        except PermissionError:
            self.signals.sig_failed.emit(self.generation, self.path, "You do not have permission to read it.")
        except OSError as exc:
            reason = f"It could not be read: {exc.strerror or exc}."
            self.signals.sig_failed.emit(self.generation, self.path, reason)
        except Exception as exc:
            # A loader bug must still end in a dialog, never in a window stuck on "Loading…".
            log.exception("unexpected error while loading %s", self.path)
            reason = f"Unexpected error while reading it ({type(exc).__name__}: {exc})."
            self.signals.sig_failed.emit(self.generation, self.path, reason)
        else:
            self.signals.sig_loaded.emit(self.generation, self.path, avatar)


class MainWindow(QMainWindow):
    """The offline review window around one avatar at a time."""

    sig_avatar_shown = Signal(str)
    """Emitted with the path once a newly loaded avatar is on screen; tests and later panels wait on it."""

    sig_load_failed = Signal(str, str)
    """Emitted with (path, message) after a file failed to open; the previous avatar is still shown."""

    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings if settings is not None else default_settings()
        self._closed = False
        self._scene: AvatarScene | None = None
        self._path: str | None = None
        self._view: AvatarView | None = None
        self._generation = 0
        self._pending: dict[int, _LoadTask] = {}
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self._signals = _LoadSignals(self)
        self._signals.sig_loaded.connect(self._on_loaded)
        self._signals.sig_failed.connect(self._on_failed)
        self.error_box: QMessageBox | None = None

        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.resize(1200, 780)
        self._build_central()
        self._build_panel()
        self._build_status_bar()
        self._build_menus()
        self._update_actions()
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)

    # --- construction ----------------------------------------------------------------------------

    def _build_central(self) -> None:
        self.welcome = QLabel(
            "<h2>Open an avatar to review it</h2>"
            "<p>File → Open… (Ctrl+O), or drop a <b>.glb</b> / <b>.gltf</b> file here.</p>"
        )
        self.welcome.setObjectName("welcome")
        self.welcome.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.welcome.setStyleSheet("QLabel#welcome { color: #9aa0a8; background: #262930; }")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.setCentralWidget(self.stack)

    def _build_panel(self) -> None:
        self.morph_panel = MorphPanel()
        self.panel_dock = QDockWidget("Morph Targets", self)
        self.panel_dock.setObjectName("morphTargetsDock")
        self.panel_dock.setWidget(self.morph_panel)
        areas = Qt.DockWidgetArea.LeftDockWidgetArea | Qt.DockWidgetArea.RightDockWidgetArea
        self.panel_dock.setAllowedAreas(areas)
        self.panel_dock.setMinimumWidth(400)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.panel_dock)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # indeterminate: decoding has no meaningful percentage
        self.busy.setMaximumWidth(140)
        self.busy.setMaximumHeight(14)
        self.busy.setTextVisible(False)
        self.busy.hide()
        self.summary_label = QLabel()
        self.warnings_button = QToolButton()
        self.warnings_button.setAutoRaise(True)
        self.warnings_button.setToolTip("Problems found while loading; the avatar was still opened")
        self.warnings_button.clicked.connect(self.show_warnings)
        self.warnings_button.hide()
        bar.addPermanentWidget(self.busy)
        bar.addPermanentWidget(self.warnings_button)
        bar.addPermanentWidget(self.summary_label)
        bar.showMessage("Ready")

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = QAction("&Open…", self)
        self.open_action.setShortcut(QKeySequence.StandardKey.Open)
        self.open_action.setStatusTip("Open a .glb or .gltf avatar")
        self.open_action.triggered.connect(self.open_dialog)
        file_menu.addAction(self.open_action)
        self.recent_menu = QMenu("Open &Recent", self)
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addMenu(self.recent_menu)
        file_menu.addSeparator()
        self.screenshot_action = QAction("Save &Screenshot…", self)
        self.screenshot_action.setShortcut(QKeySequence("Ctrl+Shift+S"))
        self.screenshot_action.setStatusTip("Save the 3D view as a PNG image")
        self.screenshot_action.triggered.connect(self.screenshot_dialog)
        file_menu.addAction(self.screenshot_action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        view_menu = self.menuBar().addMenu("&View")
        self.camera_actions: dict[str, QAction] = {}
        for key, (label, _direction) in CAMERA_PRESETS.items():
            action = QAction(label, self)
            action.setShortcut(QKeySequence(CAMERA_SHORTCUTS[key]))
            action.setStatusTip(f"Look at the avatar from the {label.lower()} view")
            action.triggered.connect(lambda _checked=False, preset=key: self.set_camera_preset(preset))
            view_menu.addAction(action)
            self.camera_actions[key] = action
        view_menu.addSeparator()
        self.reset_camera_action = QAction("Reset &Camera", self)
        self.reset_camera_action.setShortcut(QKeySequence("Ctrl+0"))
        self.reset_camera_action.setStatusTip("Back to the front view, fitted to the avatar")
        self.reset_camera_action.triggered.connect(lambda: self.set_camera_preset("front"))
        view_menu.addAction(self.reset_camera_action)
        view_menu.addSeparator()
        self.parts_menu = QMenu("&Parts", self)
        view_menu.addMenu(self.parts_menu)
        panel_action = self.panel_dock.toggleViewAction()
        panel_action.setText("&Morph Targets Panel")
        view_menu.addAction(panel_action)

    def _update_actions(self) -> None:
        shown = self._scene is not None
        self.screenshot_action.setEnabled(shown)
        for action in self.camera_actions.values():
            action.setEnabled(shown)
        self.reset_camera_action.setEnabled(shown)
        self.parts_menu.setEnabled(shown and len(self._scene.avatar.primitives) > 0 if self._scene else False)

    # --- public state ----------------------------------------------------------------------------

    @property
    def scene(self) -> AvatarScene | None:
        return self._scene

    @property
    def current_path(self) -> str | None:
        return self._path

    @property
    def view(self) -> AvatarView | None:
        return self._view

    @property
    def is_loading(self) -> bool:
        return bool(self._pending)

    # --- opening ---------------------------------------------------------------------------------

    def open_dialog(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(self, "Open Avatar", self._last_directory(), OPEN_FILTER)
        if path:
            self.open_file(path)

    def open_file(self, path: str) -> None:
        """Start loading ``path`` in the background; the current avatar stays until the new one is ready."""
        if self._closed:
            return
        path = str(Path(path).expanduser().absolute())
        self._generation += 1
        task = _LoadTask(self._generation, path, self._signals)
        task.setAutoDelete(False)  # kept in _pending until its result arrives
        self._pending[self._generation] = task
        self._set_busy(f"Loading {Path(path).name}…")
        self._pool.start(task)

    @Slot(int, str, object)
    def _on_loaded(self, generation: int, path: str, avatar: Avatar) -> None:
        self._pending.pop(generation, None)
        if self._closed:
            return
        if generation != self._generation:
            return  # the user asked for another file meanwhile
        self._set_busy(None)
        self._show_avatar(avatar, path)
        self._remember_recent(path)
        message = f"Opened {Path(path).name}"
        if avatar.warnings:
            count = len(avatar.warnings)
            message += f" with {count} warning{'' if count == 1 else 's'}"
        self.statusBar().showMessage(message, 8000)
        self.sig_avatar_shown.emit(path)

    @Slot(int, str, str)
    def _on_failed(self, generation: int, path: str, message: str) -> None:
        self._pending.pop(generation, None)
        if self._closed or generation != self._generation:
            return
        self._set_busy(None)
        if not Path(path).exists():
            self._forget_recent(path)
        self.statusBar().showMessage(f"Could not open {Path(path).name}", 8000)
        self._show_error(path, message)
        self.sig_load_failed.emit(path, message)

    def _show_error(self, path: str, message: str) -> None:
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Could not open avatar")
        box.setText(f"Avatar Studio could not open “{Path(path).name}”.")
        still = f"\n\n{Path(self._path).name} is still open." if self._path else ""
        box.setInformativeText(f"{message}{still}")
        box.setDetailedText(path)
        box.setStandardButtons(QMessageBox.StandardButton.Ok)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _result: self._forget_error_box(box))
        self.error_box = box
        box.open()  # window-modal and non-blocking: the event loop (and tests) keep running

    def _forget_error_box(self, box: QMessageBox) -> None:
        if self.error_box is box:
            self.error_box = None

    def _set_busy(self, message: str | None) -> None:
        self.busy.setVisible(message is not None)
        if message is None:
            self.unsetCursor()
            self.statusBar().clearMessage()
            if self._scene is None:
                self.welcome.setText(
                    "<h2>Open an avatar to review it</h2>"
                    "<p>File → Open… (Ctrl+O), or drop a <b>.glb</b> / <b>.gltf</b> file here.</p>"
                )
            return
        self.setCursor(Qt.CursorShape.BusyCursor)
        self.statusBar().showMessage(message)
        if self._scene is None:
            self.welcome.setText(f"<h2>{message}</h2>")

    def _ensure_view(self) -> AvatarView:
        if self._view is None:
            from avatar_studio.gui.avatar_view import AvatarView

            self._view = AvatarView()
            self.stack.addWidget(self._view)
        return self._view

    def _show_avatar(self, avatar: Avatar, path: str) -> None:
        scene = AvatarScene(avatar)
        view = self._ensure_view()
        self.stack.setCurrentWidget(view)
        view.set_scene(scene)
        self.morph_panel.set_scene(scene)
        self._scene = scene
        self._path = path
        self.setWindowTitle(f"{Path(path).name} — {APP_NAME}")
        self.setWindowFilePath(path)
        self.summary_label.setText(avatar_summary(avatar))
        self.summary_label.setToolTip(path)
        count = len(avatar.warnings)
        self.warnings_button.setText(f"⚠ {count} warning{'' if count == 1 else 's'}")
        self.warnings_button.setVisible(count > 0)
        self._fill_parts_menu()
        self._update_actions()

    def show_warnings(self) -> None:
        """List the loader's non-fatal findings, which a reviewer must see before approving an avatar."""
        if self._scene is None or not self._scene.avatar.warnings:
            return
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Information)
        box.setWindowTitle("Load warnings")
        box.setText(f"{Path(self._path or '').name} opened, but with these problems:")
        box.setInformativeText("\n".join(f"• {w}" for w in self._scene.avatar.warnings))
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    # --- parts -----------------------------------------------------------------------------------

    def _fill_parts_menu(self) -> None:
        self.parts_menu.clear()
        if self._scene is None:
            return
        for index, prim in enumerate(self._scene.avatar.primitives):
            label = prim.name or f"Part {index + 1}"
            action = QAction(f"{label}  ({prim.vertex_count:,} vertices)", self.parts_menu)
            action.setCheckable(True)
            action.setChecked(self._scene.is_visible(index))
            action.setEnabled(prim.triangle_count > 0)
            action.toggled.connect(lambda visible, i=index: self._set_part_visible(i, visible))
            self.parts_menu.addAction(action)

    def _set_part_visible(self, index: int, visible: bool) -> None:
        if self._scene is not None:
            self._scene.set_visible(index, visible)

    # --- camera and screenshot -------------------------------------------------------------------

    def set_camera_preset(self, preset: str) -> None:
        if self._view is not None and self._scene is not None:
            self._view.set_camera_preset(preset)

    def screenshot_dialog(self) -> None:
        if self._view is None or self._scene is None:
            return
        stem = Path(self._path or "avatar").stem
        start = str(Path(self._last_directory()) / f"{stem}.png")
        path, _filter = QFileDialog.getSaveFileName(self, "Save Screenshot", start, "PNG image (*.png)")
        if path:
            self.save_screenshot(path)

    def save_screenshot(self, path: str) -> str:
        """Write the 3D view to ``path`` as PNG (adding the suffix when missing); returns the path used."""
        if self._view is None or self._scene is None:
            raise RuntimeError("there is no avatar on screen to take a screenshot of")
        target = Path(path)
        if target.suffix.lower() != ".png":
            target = target.with_name(target.name + ".png")
        try:
            self._view.screenshot(str(target))
        except OSError as exc:
            QMessageBox.warning(self, "Could not save screenshot", f"{target}\n\n{exc.strerror or exc}")
            raise
        self.statusBar().showMessage(f"Saved screenshot to {target}", 8000)
        return str(target)

    # --- recent files ----------------------------------------------------------------------------

    def recent_files(self) -> list[str]:
        value = self.settings.value("recentFiles", [])
        if isinstance(value, str):  # QSettings hands back a lone string for a one-element list
            value = [value]
        return [str(v) for v in value or []]

    def _remember_recent(self, path: str) -> None:
        files = [path] + [p for p in self.recent_files() if p != path]
        self.settings.setValue("recentFiles", files[:MAX_RECENT])
        self.settings.setValue("lastDirectory", str(Path(path).parent))

    def _forget_recent(self, path: str) -> None:
        self.settings.setValue("recentFiles", [p for p in self.recent_files() if p != path])

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.recent_files()
        for number, path in enumerate(files, start=1):
            prefix = f"&{number} " if number < 10 else ""
            action = QAction(f"{prefix}{Path(path).name}", self.recent_menu)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_file(p))
            self.recent_menu.addAction(action)
        if not files:
            empty = QAction("No recent files", self.recent_menu)
            empty.setEnabled(False)
            self.recent_menu.addAction(empty)
            return
        self.recent_menu.addSeparator()
        clear = QAction("Clear Menu", self.recent_menu)
        clear.triggered.connect(lambda: self.settings.setValue("recentFiles", []))
        self.recent_menu.addAction(clear)

    def _last_directory(self) -> str:
        return str(self.settings.value("lastDirectory", str(Path.home())))

    # --- drag and drop ---------------------------------------------------------------------------

    @staticmethod
    def _dropped_avatar(event: QDragEnterEvent | QDragMoveEvent | QDropEvent) -> str | None:
        mime = event.mimeData()
        if not mime.hasUrls():
            return None
        for url in mime.urls():
            if url.isLocalFile() and is_avatar_path(url.toLocalFile()):
                return url.toLocalFile()
        return None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt override)
        if self._dropped_avatar(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 (Qt override)
        if self._dropped_avatar(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt override)
        path = self._dropped_avatar(event)
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_file(path)

    # --- lifetime --------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        """Stop rendering before the GL window goes away (child widgets get no closeEvent of their own)."""
        if not self._closed:
            self._closed = True
            self.settings.setValue("window/geometry", self.saveGeometry())
            self.settings.setValue("window/state", self.saveState())
            self._pool.clear()
            self.morph_panel.detach()
            if self._view is not None:
                self._view.shutdown()
        super().closeEvent(event)
