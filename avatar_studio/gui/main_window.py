"""The review window: open an avatar file, look at it from fixed angles, and work its morph targets.

Why the 3D view is created lazily: importing pyvista/pyvistaqt costs about a second (toolchain §9),
while a plain Qt window paints in 0.1 s. The window therefore starts with a light welcome page and
imports the view only when the first avatar arrives; the loader thread imports it ahead of time so
the GUI thread finds it already in ``sys.modules``.

Why loading runs in a worker: a large provider GLB takes a noticeable time to decode, and a window
that stops repainting while it does looks crashed. Results come back through queued signals; a
generation counter makes sure only the most recently requested file is shown.

Why the service session starts after the first paint: starting the embedded service (database
migrations, uvicorn) or reaching a remote one takes a second or more. The window shows at once with a
status-bar indicator, and the panels that need the service wait for :attr:`MainWindow.session`.

Why every panel is built with the window, connected or not: a panel that appears only once the
service answers moves the layout under the user's mouse, and one that never appears (service down)
hides *why* nothing works. The panels ask the session for its client on every action, so they show
"not connected" until ``sig_ready`` and work from then on without being rebuilt. Left: Selfie, Jobs,
Library (where avatars come from); right: Morph Targets, Inspect, Preferences, Viseme Mapping and Lip
Sync (what to do with the one on screen). The Lip Sync panel is the one exception to "built with the
window": it is built when its dock is first shown (see ``_build_lipsync_dock``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from PySide6.QtCore import QObject, QRunnable, QSettings, Qt, QThreadPool, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDragMoveEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from avatar_studio import __version__
from avatar_studio.avatar.errors import AvatarError
from avatar_studio.avatar.model import Avatar
from avatar_studio.avatar.scene import CAMERA_PRESETS, AvatarScene
from avatar_studio.gui.consent_dialog import ensure_consent
from avatar_studio.gui.inspect_panel import InspectPanel
from avatar_studio.gui.jobs_panel import JobsPanel
from avatar_studio.gui.library_panel import BROKEN, LibraryPanel
from avatar_studio.gui.mapping_editor import MappingEditor
from avatar_studio.gui.morph_panel import MorphPanel
from avatar_studio.gui.preferences_panel import PreferencesPanel
from avatar_studio.gui.selfie_panel import SelfiePanel
from avatar_studio.gui.session import ServiceSession, data_dir_from_env

if TYPE_CHECKING:
    from avatar_studio.client import ServiceClient
    from avatar_studio.gui.avatar_view import AvatarView
    from avatar_studio.gui.lipsync_panel import LipSyncPanel
    from avatar_studio.lipsync.viseme_table import VisemeTable

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

    def __init__(self, generation: int, path: str, signals: _LoadSignals, asset_id: str | None = None) -> None:
        super().__init__()
        self.generation = generation
        self.path = path
        self.signals = signals
        self.asset_id = asset_id

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

    sig_asset_opened = Signal(str)
    """Emitted with the service asset id of the avatar now on screen ("" for a file not from the service)."""

    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None, *,
                 session: ServiceSession | None = None, start_session: bool = False) -> None:
        """``session``: the service connection (a new, unstarted one when None); ``start_session``: start
        it once the window has painted. The app passes True; tests leave it off so that a review window
        never starts a service it does not need.
        """
        super().__init__(parent)
        self.settings = settings if settings is not None else default_settings()
        self.session = session if session is not None else ServiceSession(self.settings, parent=self)
        self._closed = False
        self._asset_id: str | None = None
        self._close_guards: list[Callable[[], bool]] = []
        self._panel_docks: list[QDockWidget] = []
        self.about_box: QMessageBox | None = None
        self.settings_box: QDialog | None = None
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
        self._build_service_panels()
        self._update_actions()
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        self.session.sig_state.connect(self._on_session_state)
        self.session.sig_failed.connect(self._on_session_failed)
        self.session.sig_ready.connect(self._on_session_ready)
        self.session.when_ready(self._on_panels_connected)
        self._on_session_state(self.session.state)
        if start_session:
            QTimer.singleShot(0, self.session.start)  # after the first paint: the window comes first

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

    def _build_service_panels(self) -> None:
        """Dock every panel and wire it to the window and the session (see the module docstring)."""
        left, right = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        self.download_dir = (self.session.data_dir or data_dir_from_env()) / "avatars"
        self.selfie_panel = SelfiePanel(self._client, lambda: ensure_consent(self, self.session), self.download_dir)
        self.jobs_panel = JobsPanel(self._client, download_dir=self.download_dir)
        self.library_panel = LibraryPanel()
        self.inspect_panel = InspectPanel(settings=self.settings)
        self.preferences_panel = PreferencesPanel(self._client)
        self.mapping_editor = MappingEditor(self.settings)

        self.selfie_dock = self.add_panel("Selfie", self.selfie_panel, left)
        self.jobs_dock = self.add_panel("Jobs", self.jobs_panel, left)
        self.library_dock = self.add_panel("Library", self.library_panel, left)
        # The morph dock predates add_panel; listing it makes Inspect and Preferences tab onto it.
        self._panel_docks.insert(0, self.panel_dock)
        self.inspect_dock = self.add_panel("Inspect", self.inspect_panel, right)
        self.preferences_dock = self.add_panel("Preferences", self.preferences_panel, right)
        self.mapping_dock = self.add_panel("Viseme Mapping", self.mapping_editor, right)
        self.mapping_dock.visibilityChanged.connect(self.mapping_editor.set_on_screen)
        self.mapping_editor.set_on_screen(False)  # until its tab is chosen: it starts behind Morph Targets
        self._build_lipsync_dock()
        for dock in (self.selfie_dock, self.jobs_dock, self.library_dock):
            dock.setMinimumWidth(300)
        self.selfie_dock.raise_()  # first run: start where a new user starts, and with the sliders
        self.panel_dock.raise_()

        self.selfie_panel.sig_avatar_ready.connect(self.show_avatar_file)
        self.selfie_panel.sig_job_created.connect(lambda _job_id: self.jobs_panel.refresh())
        self.jobs_panel.sig_avatar_ready.connect(self.show_avatar_file)
        self.library_panel.sig_file_selected.connect(self._on_library_selected)
        self.library_panel.sig_open_file.connect(self.open_file)
        self.open_folder_action.triggered.connect(self.library_panel.choose_folder)
        self.sig_asset_opened.connect(self._on_asset_opened)
        self.sig_avatar_shown.connect(self._inspect_shown)
        self.sig_load_failed.connect(self.inspect_panel.show_error)
        self.add_close_guard(lambda: self.preferences_panel.maybe_save_or_discard(self))
        self.add_close_guard(lambda: self.mapping_editor.maybe_save_or_discard(self))
        # One mapping table for the whole window: the editor holds it; Inspect reports against it.
        self.mapping_editor.sig_table_changed.connect(self._on_table_edited)
        self.mapping_editor.sig_status.connect(self._on_mapping_status)
        self.inspect_panel.sig_table_changed.connect(self._on_inspect_table_chosen)
        self._on_table_edited(self.mapping_editor.table)
        if not self.session.is_ready:
            self.jobs_panel.refresh()  # shows "not connected" rather than an empty list that looks final

    def _build_lipsync_dock(self) -> None:
        """The Lip Sync dock; its panel is built the first time the dock is shown.

        Why lazily: the panel brings pyqtgraph and the lip-sync engine (≈0.5 s of imports), which would
        double the cold start for every user, while the dock starts tabbed behind Morph Targets.
        """
        self._lipsync_holder = QWidget()
        self._lipsync_holder.setObjectName("lipsyncHolder")
        QVBoxLayout(self._lipsync_holder).setContentsMargins(0, 0, 0, 0)
        self.lipsync_panel: LipSyncPanel | None = None
        self.lipsync_dock = self.add_panel("Lip Sync", self._lipsync_holder, Qt.DockWidgetArea.RightDockWidgetArea)
        self.lipsync_dock.visibilityChanged.connect(self._on_lipsync_visible)

    @Slot(bool)
    def _on_lipsync_visible(self, visible: bool) -> None:
        if visible and self.lipsync_panel is None and not self._closed:
            QTimer.singleShot(0, self.ensure_lipsync_panel)  # after this paint: the dock never blocks it

    def ensure_lipsync_panel(self) -> LipSyncPanel | None:
        """The lip-sync panel, built now if it was not yet (None once the window has closed)."""
        if self.lipsync_panel is None and not self._closed:
            from avatar_studio.gui.lipsync_panel import LipSyncPanel

            profiles = (self.session.data_dir or data_dir_from_env()) / "lipsync-profiles"
            panel = LipSyncPanel(self.settings, profiles)
            panel.set_table(self.mapping_editor.table)
            panel.set_scene(self._scene)
            panel.sig_status.connect(lambda text: self.statusBar().showMessage(text, 5000))
            self._lipsync_holder.layout().addWidget(panel)
            self.lipsync_panel = panel
        return self.lipsync_panel

    def _client(self) -> ServiceClient | None:
        """What the panels ask at each action: the signed-in client, or None while not connected."""
        return self.session.client

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
        self.session_label = QLabel()
        self.session_label.setObjectName("sessionState")
        self.retry_button = QToolButton()
        self.retry_button.setText("Retry")
        self.retry_button.setAutoRaise(True)
        self.retry_button.setToolTip("Try again to start or reach the avatar service")
        self.retry_button.clicked.connect(self.session.retry)
        self.retry_button.hide()
        bar.addPermanentWidget(self.busy)
        bar.addPermanentWidget(self.warnings_button)
        bar.addPermanentWidget(self.summary_label)
        bar.addPermanentWidget(self.session_label)
        bar.addPermanentWidget(self.retry_button)
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
        self.open_folder_action = QAction("Open &Folder…", self)
        self.open_folder_action.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.open_folder_action.setStatusTip("List a folder of avatars with thumbnails in the Library panel")
        file_menu.addAction(self.open_folder_action)  # connected once the library panel exists
        file_menu.addSeparator()
        self.screenshot_action = QAction("Save &Screenshot…", self)
        self.screenshot_action.setShortcut(QKeySequence("Ctrl+Shift+S"))
        self.screenshot_action.setStatusTip("Save the 3D view as a PNG image")
        self.screenshot_action.triggered.connect(self.screenshot_dialog)
        file_menu.addAction(self.screenshot_action)
        file_menu.addSeparator()
        self.consent_action = QAction("Selfie &Consent…", self)
        self.consent_action.setStatusTip("Confirm your age and give or withdraw consent to selfie processing")
        self.consent_action.triggered.connect(self.consent_dialog)
        file_menu.addAction(self.consent_action)
        self.settings_action = QAction("Se&ttings…", self)
        self.settings_action.setShortcut(QKeySequence.StandardKey.Preferences)
        self.settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)
        self.settings_action.setStatusTip("Choose the avatar service, the default provider and API keys")
        self.settings_action.triggered.connect(self.settings_dialog)
        file_menu.addAction(self.settings_action)
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
        self.view_menu = view_menu

        help_menu = self.menuBar().addMenu("&Help")
        self.about_action = QAction("&About Avatar Studio", self)
        self.about_action.setMenuRole(QAction.MenuRole.AboutRole)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)

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

    @property
    def current_asset_id(self) -> str | None:
        """The service asset id of the avatar on screen; None for a file opened from disk."""
        return self._asset_id

    # --- the API other panels plug into ----------------------------------------------------------

    def add_panel(self, title: str, widget: QWidget,
                  area: Qt.DockWidgetArea = Qt.DockWidgetArea.LeftDockWidgetArea) -> QDockWidget:
        """Dock ``widget`` under ``title`` and add its show/hide toggle to the View menu.

        The dock's object name derives from the title, so the saved window layout puts it back where
        the user left it; panels added to the same side are tabbed together instead of squeezed.
        """
        dock = QDockWidget(title, self)
        dock.setObjectName("panel-" + "".join(ch if ch.isalnum() else "_" for ch in title))
        dock.setWidget(widget)
        dock.setAllowedAreas(Qt.DockWidgetArea.AllDockWidgetAreas)
        if not self.restoreDockWidget(dock):  # True only when the saved layout already has a place for it
            self.addDockWidget(area, dock)
            siblings = [d for d in self._panel_docks if self.dockWidgetArea(d) == area and not d.isFloating()]
            if siblings:
                self.tabifyDockWidget(siblings[-1], dock)
        self._panel_docks.append(dock)
        toggle = dock.toggleViewAction()
        toggle.setText(f"{title} Panel")
        self.view_menu.addAction(toggle)
        return dock

    def add_close_guard(self, guard: Callable[[], bool]) -> None:
        """Ask ``guard()`` before the window closes; it returns False to keep the window open.

        A panel with unsaved work (edited preferences, a running capture) asks the user itself and
        answers; the first guard that refuses stops the close, and the rest are not asked.
        """
        self._close_guards.append(guard)

    def show_avatar_file(self, path: str, asset_id: str | None) -> None:
        """Open a GLB downloaded from the service and remember which asset it is (``sig_asset_opened``)."""
        self._open(path, asset_id)

    # --- opening ---------------------------------------------------------------------------------

    def open_dialog(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(self, "Open Avatar", self._last_directory(), OPEN_FILTER)
        if path:
            self.open_file(path)

    def open_file(self, path: str) -> None:
        """Start loading ``path`` in the background; the current avatar stays until the new one is ready."""
        self._open(path, None)

    def _open(self, path: str, asset_id: str | None) -> None:
        if self._closed:
            return
        path = str(Path(path).expanduser().absolute())
        self._generation += 1
        task = _LoadTask(self._generation, path, self._signals, asset_id)
        task.setAutoDelete(False)  # kept in _pending until its result arrives
        self._pending[self._generation] = task
        self._set_busy(f"Loading {Path(path).name}…")
        self._pool.start(task)

    @Slot(int, str, object)
    def _on_loaded(self, generation: int, path: str, avatar: Avatar) -> None:
        task = self._pending.pop(generation, None)
        if self._closed:
            return
        if generation != self._generation:
            return  # the user asked for another file meanwhile
        self._set_busy(None)
        self._show_avatar(avatar, path)
        self._asset_id = task.asset_id if task is not None else None
        self._remember_recent(path)
        message = f"Opened {Path(path).name}"
        if avatar.warnings:
            count = len(avatar.warnings)
            message += f" with {count} warning{'' if count == 1 else 's'}"
        self.statusBar().showMessage(message, 8000)
        self.sig_avatar_shown.emit(path)
        self.sig_asset_opened.emit(self._asset_id or "")

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
        self.mapping_editor.set_scene(scene)
        if self.lipsync_panel is not None:
            self.lipsync_panel.set_scene(scene)
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

    # --- service session, settings, about ------------------------------------------------------

    @Slot(str)
    def _on_session_state(self, state: str) -> None:
        self.session_label.setText(state)
        if self.session.is_ready and self.session.base_url:
            self.session_label.setToolTip(f"Avatar service at {self.session.base_url}")
        if self.session.is_starting:
            self.retry_button.hide()

    @Slot(str)
    def _on_session_failed(self, message: str) -> None:
        if self._closed:
            return
        self.session_label.setText("Avatar service not available")
        self.session_label.setToolTip(message)
        self.retry_button.show()
        self.statusBar().showMessage(message, 15000)

    @Slot(object)
    def _on_session_ready(self, _client: object) -> None:
        self.retry_button.hide()

    @Slot(object)
    def _on_panels_connected(self, _client: object) -> None:
        """(Re)connected: the panels that show service data fetch it now instead of at their next action."""
        if self._closed:
            return
        self.jobs_panel.refresh()
        self.preferences_panel.refresh()

    @Slot(str)
    def _on_asset_opened(self, asset_id: str) -> None:
        if not self.preferences_panel.set_asset(asset_id or None):
            # The user kept unsaved edits of the previous asset (Cancel): they stay editable, but say so.
            self.statusBar().showMessage("The Preferences panel still shows the previous avatar (unsaved)", 8000)

    @Slot(object)
    def _on_table_edited(self, table: VisemeTable) -> None:
        editor = self.mapping_editor
        path = str(editor.path) if editor.path is not None else None
        title = Path(path).name if path else "the default table"
        if editor.is_modified:
            title += " (edited, not saved)"
        self.inspect_panel.follow_table(table, title, path)
        if self.lipsync_panel is not None:
            self.lipsync_panel.set_table(table)

    @Slot(str)
    def _on_mapping_status(self, text: str) -> None:
        """Saved, opened or reverted: the table may be the same, but its name and saved state changed."""
        self.statusBar().showMessage(text, 5000)
        self._on_table_edited(self.mapping_editor.table)

    @Slot(str)
    def _on_inspect_table_chosen(self, path: str) -> None:
        """Inspect's own table buttons open that table in the editor, so both keep showing one table."""
        editor = self.mapping_editor
        if editor.maybe_save_or_discard(self):
            if path:
                editor.load(path)
            else:
                editor.new_from_default()
        self._on_table_edited(editor.table)  # also when the user kept their edits (Cancel)

    @Slot(str)
    def _inspect_shown(self, path: str) -> None:
        if self._scene is not None:
            self.inspect_panel.show_avatar(self._scene.avatar, path)

    @Slot(str)
    def _on_library_selected(self, path: str) -> None:
        """A broken file already has the thumbnailer's verdict: show it in Inspect, no dialog, no reload."""
        entry = self.library_panel.entry(path)
        if entry.state == BROKEN:
            self.inspect_panel.show_error(path, entry.error or "")
        else:
            self.open_file(path)

    def settings_dialog(self) -> None:
        """File → Settings: window-modal and non-blocking, so tests and the event loop keep running."""
        from avatar_studio.gui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.session, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(lambda _result: setattr(self, "settings_box", None))
        self.settings_box = dialog
        dialog.open()

    def consent_dialog(self) -> None:
        """File → Selfie Consent: review, give or withdraw consent outside of a capture."""
        from avatar_studio.gui.consent_dialog import ConsentDialog

        if self.session.user is None:
            QMessageBox.information(self, "Not connected", self.session.error
                                    or "The avatar service is still starting; try again in a moment.")
            return
        dialog = ConsentDialog(self.session, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    def show_about(self) -> None:
        """Help → About: version, where the data lives, and where the licences are."""
        from avatar_studio.gui.session import data_dir_from_env

        data_dir = self.session.data_dir or data_dir_from_env()
        service = self.session.base_url or ("embedded" if self.session.is_embedded else self.session.remote_url)
        try:
            from avatar_studio.resources import resource_path

            face_licence = str(resource_path("face_models/LICENSE"))
        except FileNotFoundError:
            face_licence = "resources/face_models/LICENSE"
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Information)
        box.setWindowTitle(f"About {APP_NAME}")
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(f"<h3>{APP_NAME} {__version__}</h3>"
                    "<p>Turn a selfie into a photoreal, animatable 3D avatar and check it before it ships.</p>")
        box.setInformativeText(
            f"<p><b>Data folder:</b> {data_dir}<br><b>Avatar service:</b> {service}</p>"
            "<p><b>Licences:</b> the face models of the offline provider are MediaPipe's, Apache License 2.0 "
            f"(<code>{face_licence}</code>). Qt for Python (PySide6) is used under the LGPLv3; "
            "VTK and PyVista under the BSD 3-clause licence. See the README for details.</p>"
        )
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _result: setattr(self, "about_box", None))
        self.about_box = box
        box.open()

    # --- lifetime --------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        """Ask the panels' close guards, stop rendering before the GL window goes away (child widgets get
        no closeEvent of their own), stop the panels' timers, downloads and thumbnail renderer, then
        stop the service session so no server thread outlives us.
        """
        if not self._closed:
            for guard in self._close_guards:
                if not guard():
                    event.ignore()
                    return
            self._closed = True
            self.settings.setValue("window/geometry", self.saveGeometry())
            self.settings.setValue("window/state", self.saveState())
            self._pool.clear()
            # Before the session stops: their polls and downloads must not meet a dead client.
            self.selfie_panel.shutdown()
            self.jobs_panel.shutdown()
            self.library_panel.shutdown()
            self.morph_panel.detach()
            self.mapping_editor.set_scene(None)
            if self.lipsync_panel is not None:
                self.lipsync_panel.shutdown()  # mic, playback and analysis threads end before the view goes
            if self._view is not None:
                self._view.shutdown()
            self.session.stop()
        super().closeEvent(event)
