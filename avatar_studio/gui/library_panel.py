"""The library panel: every avatar file in one folder, with a rendered thumbnail, to pick one for review.

Why thumbnails are rendered in a separate process: decoding a provider GLB and rendering it costs
0.1-1 s per file on a software renderer, and VTK must not touch the GUI thread's OpenGL context
(the 3D view owns it). A child Python process with VTK's EGL off-screen window renders every
missing thumbnail into a cache folder and reports each one as a JSON line on stdout; the panel
reads those lines through ``QProcess`` signals, so the GUI thread never blocks and never imports
pyvista for this. A crash in the renderer (a driver bug, a hostile file) kills only that child:
the panel marks the file it was on and restarts the child for the rest.

Why the cache key is the file's path, size and modification time (not a hash of its bytes): the
key must be computed on the GUI thread for every file on every refresh, and hashing a folder of
50 MB GLBs there would stall the window; a ``stat`` costs microseconds and changes whenever the
file is rewritten. The renderer version is part of the key, so a changed look re-renders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from PySide6.QtCore import (
    QByteArray,
    QFileSystemWatcher,
    QProcess,
    QProcessEnvironment,
    QRectF,
    QSize,
    QStandardPaths,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

AVATAR_SUFFIXES: Final[tuple[str, ...]] = (".glb", ".gltf")
THUMBNAIL_PIXELS: Final[int] = 192
"""Rendered size; shown at ``ICON_PIXELS`` so the icon stays sharp on a 2x screen."""
ICON_PIXELS: Final[int] = 96
THUMBNAIL_VERSION: Final[int] = 1
"""Bump when the thumbnail's look changes, so every cached image is re-rendered."""
REFRESH_DELAY_MS: Final[int] = 400
"""A copy or an export writes a file in many steps; wait for the folder to settle before re-listing."""
MAX_RENDER_RESTARTS: Final[int] = 5
THUMBNAIL_BACKGROUND: Final[tuple[int, int, int]] = (38, 41, 48)
"""The 3D view's background, so a thumbnail looks like a small copy of what opening the file shows."""

PATH_ROLE: Final[int] = int(Qt.ItemDataRole.UserRole)
STATE_ROLE: Final[int] = int(Qt.ItemDataRole.UserRole) + 1

PENDING: Final[str] = "pending"
READY: Final[str] = "ready"
BROKEN: Final[str] = "broken"
NO_THUMBNAIL: Final[str] = "no-thumbnail"
"""The file loads but its picture could not be rendered (e.g. no EGL): a generic icon, still openable."""


def default_cache_dir() -> Path:
    """Where thumbnails persist between runs (the platform's per-user cache folder)."""
    location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.CacheLocation)
    return Path(location or Path.home() / ".cache" / "avatar-studio") / "thumbnails"


def thumbnail_key(path: Path, size: int, mtime_ns: int) -> str:
    """The cache name of one file version (see the module docstring for why not a content hash)."""
    text = f"v{THUMBNAIL_VERSION}\0{THUMBNAIL_PIXELS}\0{path.absolute()}\0{size}\0{mtime_ns}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


@dataclass
class LibraryEntry:
    """What the panel knows about one file in the folder."""

    path: str
    key: str
    state: str = PENDING
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    icon: QIcon | None = None


def scan_folder(folder: Path) -> list[tuple[Path, str]]:
    """Every .glb/.gltf file directly in ``folder``, sorted by name, with its cache key."""
    found: list[tuple[Path, str]] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.lower().endswith(AVATAR_SUFFIXES):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except OSError:
                continue  # vanished between listing and stat: the watcher will refresh again
            path = Path(entry.path)
            found.append((path, thumbnail_key(path, stat.st_size, stat.st_mtime_ns)))
    found.sort(key=lambda item: (item[0].name.casefold(), item[0].name))
    return found


class LibraryPanel(QWidget):
    """A folder of avatars as a list with thumbnails; select to inspect, double-click to open."""

    sig_file_selected = Signal(str)
    """The user selected a file (absolute path); the main window shows its report / loads it for review."""

    sig_open_file = Signal(str)
    """The user double-clicked (or pressed Enter on) a file: open it in the review window."""

    sig_folder_opened = Signal(str)
    """A folder was listed (absolute path); the main window can remember it as the last folder."""

    sig_thumbnails_finished = Signal()
    """Every file of the current listing has its final icon (thumbnail, error or generic)."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._folder: Path | None = None
        self._entries: dict[str, LibraryEntry] = {}
        self._process: QProcess | None = None
        self._queue: list[LibraryEntry] = []
        self._stdout = QByteArray()
        self._stderr_tail = ""
        self._restarts = 0
        self._closed = False

        self.folder_label = QLabel("No folder open")
        self.folder_label.setObjectName("libraryFolder")
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.folder_label.setMinimumWidth(60)
        self.open_button = QToolButton()
        self.open_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon))
        self.open_button.setToolTip("Open a folder of .glb / .gltf avatars")
        self.open_button.clicked.connect(self.choose_folder)
        self.refresh_button = QToolButton()
        self.refresh_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_BrowserReload))
        self.refresh_button.setToolTip("Re-read the folder (it is also watched for changes)")
        self.refresh_button.setEnabled(False)
        self.refresh_button.clicked.connect(self.refresh)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.folder_label, 1)
        top.addWidget(self.open_button)
        top.addWidget(self.refresh_button)

        self.list = QListWidget()
        self.list.setObjectName("libraryList")
        self.list.setIconSize(QSize(ICON_PIXELS, ICON_PIXELS))
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setWordWrap(True)
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.list.setSpacing(2)
        self.list.setUniformItemSizes(True)
        self.list.currentItemChanged.connect(self._on_current_changed)
        self.list.itemActivated.connect(self._on_activated)

        self.status = QLabel()
        self.status.setObjectName("libraryStatus")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #80868f;")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.status)

        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(self._schedule_refresh)
        self._watcher.fileChanged.connect(self._schedule_refresh)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_DELAY_MS)
        self._refresh_timer.timeout.connect(self.refresh)

        self._pending_icon = _tile_icon("…")
        self._generic_icon = _tile_icon("3D")
        self._error_icon = _error_icon(self.style())
        self._update_status()

    # --- public state ----------------------------------------------------------------------------

    @property
    def folder(self) -> str | None:
        return str(self._folder) if self._folder is not None else None

    def paths(self) -> list[str]:
        """The listed files in display order."""
        return [self.list.item(row).data(PATH_ROLE) for row in range(self.list.count())]

    def entry(self, path: str) -> LibraryEntry:
        return self._entries[str(Path(path).absolute())]

    def item(self, path: str) -> QListWidgetItem:
        wanted = str(Path(path).absolute())
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(PATH_ROLE) == wanted:
                return item
        raise KeyError(f"{path} is not listed")

    @property
    def thumbnails_pending(self) -> bool:
        """True while some listed file still waits for its thumbnail (tests wait on this)."""
        return any(entry.state == PENDING for entry in self._entries.values())

    def selected_path(self) -> str | None:
        item = self.list.currentItem()
        return item.data(PATH_ROLE) if item is not None else None

    # --- folder ----------------------------------------------------------------------------------

    def choose_folder(self) -> None:
        """Ask for a folder and list it (the File → Open Folder… action can call this)."""
        start = self.folder or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open Folder of Avatars", start)
        if folder:
            self.open_folder(folder)

    def open_folder(self, path: str | os.PathLike[str]) -> None:
        """List ``path`` (non-recursive) and start rendering the thumbnails it lacks."""
        if self._closed:
            return
        folder = Path(path).expanduser().absolute()
        self._stop_renderer()
        self._entries.clear()
        self.list.clear()
        if self._watcher.directories() or self._watcher.files():
            self._watcher.removePaths(self._watcher.directories() + self._watcher.files())
        self._folder = folder
        self.folder_label.setText(folder.name or str(folder))
        self.folder_label.setToolTip(str(folder))
        self.refresh_button.setEnabled(True)
        if folder.is_dir():
            self._watcher.addPath(str(folder))
        self.refresh()
        self.sig_folder_opened.emit(str(folder))

    @Slot()
    def refresh(self) -> None:
        """Re-read the folder: new files appear, removed ones go, rewritten ones get a new thumbnail."""
        if self._closed or self._folder is None:
            return
        self._refresh_timer.stop()
        try:
            found = scan_folder(self._folder)
        except OSError as exc:
            self._stop_renderer()
            self._entries.clear()
            self.list.clear()
            reason = exc.strerror or str(exc)
            self.status.setText(f"Cannot read {self._folder}: {reason}.")
            return
        if str(self._folder) not in self._watcher.directories():
            self._watcher.addPath(str(self._folder))  # the folder came back after being removed
        selected = self.selected_path()
        entries: dict[str, LibraryEntry] = {}
        for path, key in found:
            old = self._entries.get(str(path))
            entries[str(path)] = old if old is not None and old.key == key else LibraryEntry(str(path), key)
        self._entries = entries
        watched = set(self._watcher.files())
        stale = [f for f in watched if f not in entries]
        if stale:
            self._watcher.removePaths(stale)
        fresh = [p for p in entries if p not in watched]
        if fresh:
            self._watcher.addPaths(fresh)

        for entry in entries.values():
            if entry.state == PENDING:
                self._read_cache(entry)
        self._rebuild_items(selected)
        self._start_renderer()
        self._update_status()

    def select(self, path: str) -> None:
        """Select ``path`` in the list (and emit ``sig_file_selected`` like a click would)."""
        self.list.setCurrentItem(self.item(path))

    def shutdown(self) -> None:
        """Stop the thumbnail renderer and the watcher; the main window calls this when it closes."""
        if self._closed:
            return
        self._closed = True
        self._refresh_timer.stop()
        self._stop_renderer()
        paths = self._watcher.directories() + self._watcher.files()
        if paths:
            self._watcher.removePaths(paths)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt override)
        self.shutdown()
        super().closeEvent(event)

    # --- list ------------------------------------------------------------------------------------

    def _rebuild_items(self, selected: str | None) -> None:
        # Rebuilt with signals blocked: a refresh must not look like the user picking a file.
        self.list.blockSignals(True)
        try:
            self.list.clear()
            for entry in self._entries.values():
                item = QListWidgetItem()
                item.setData(PATH_ROLE, entry.path)
                self._decorate(item, entry)
                self.list.addItem(item)
                if entry.path == selected:
                    self.list.setCurrentItem(item)
        finally:
            self.list.blockSignals(False)

    def _decorate(self, item: QListWidgetItem, entry: LibraryEntry) -> None:
        name = Path(entry.path).name
        item.setData(STATE_ROLE, entry.state)
        if entry.state == BROKEN:
            item.setIcon(self._error_icon)
            item.setText(f"{name}\nCannot be opened: {_shorten(entry.error or '', 90)}")
            item.setToolTip(f"{entry.path}\n\n{entry.error}")
            item.setForeground(QColor(220, 110, 100))
            return
        item.setForeground(self.palette().text())
        if entry.state == READY and entry.icon is not None:
            item.setIcon(entry.icon)
        elif entry.state == PENDING:
            item.setIcon(self._pending_icon)
        else:
            item.setIcon(self._generic_icon)
        details = _describe(entry.info) if entry.info else ("Rendering thumbnail…" if entry.state == PENDING else "")
        item.setText(f"{name}\n{details}" if details else name)
        tip = entry.path
        if entry.state == NO_THUMBNAIL and entry.error:
            tip += f"\n\nNo thumbnail: {entry.error}"
        item.setToolTip(tip)

    def _refresh_item(self, entry: LibraryEntry) -> None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(PATH_ROLE) == entry.path:
                self._decorate(item, entry)
                return

    @Slot(QListWidgetItem, QListWidgetItem)
    def _on_current_changed(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        if current is not None:
            self.sig_file_selected.emit(current.data(PATH_ROLE))

    @Slot(QListWidgetItem)
    def _on_activated(self, item: QListWidgetItem) -> None:
        self.sig_open_file.emit(item.data(PATH_ROLE))

    def _update_status(self) -> None:
        if self._folder is None:
            self.status.setText("Open a folder to list its avatars.")
            return
        total = len(self._entries)
        if total == 0:
            self.status.setText("No .glb or .gltf files in this folder.")
            return
        broken = sum(entry.state == BROKEN for entry in self._entries.values())
        pending = sum(entry.state == PENDING for entry in self._entries.values())
        parts = [f"{total} avatar file{'' if total == 1 else 's'}"]
        if broken:
            parts.append(f"{broken} cannot be opened")
        if pending:
            parts.append(f"rendering {pending} thumbnail{'' if pending == 1 else 's'}…")
        self.status.setText(" · ".join(parts))

    @Slot()
    def _schedule_refresh(self) -> None:
        if not self._closed:
            self._refresh_timer.start()

    # --- cache -----------------------------------------------------------------------------------

    def _read_cache(self, entry: LibraryEntry) -> None:
        meta_path = self.cache_dir / f"{entry.key}.json"
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
        except (OSError, ValueError):
            return
        self._apply_result(entry, meta)

    def _apply_result(self, entry: LibraryEntry, result: dict[str, Any]) -> None:
        if not result.get("ok"):
            entry.state, entry.error = BROKEN, str(result.get("error") or "The file could not be read.")
            return
        entry.info = dict(result.get("info") or {})
        pixmap = QPixmap(str(self.cache_dir / f"{entry.key}.png"))
        if pixmap.isNull():
            entry.state, entry.error = NO_THUMBNAIL, str(result.get("renderError") or "no image in the cache")
        else:
            entry.state, entry.icon, entry.error = READY, QIcon(pixmap), None

    # --- renderer process ------------------------------------------------------------------------

    def _start_renderer(self) -> None:
        self._stop_renderer()
        self._queue = [entry for entry in self._entries.values() if entry.state == PENDING]
        self._restarts = 0
        if self._queue:
            self._launch()
        else:
            self.sig_thumbnails_finished.emit()

    def _launch(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._give_up(f"the thumbnail cache {self.cache_dir} cannot be created ({exc.strerror or exc})")
            return
        job = {"cache": str(self.cache_dir), "size": THUMBNAIL_PIXELS, "files": [[e.key, e.path] for e in self._queue]}
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        # EGL renders without a window or an X connection and does not compete with the GUI's context.
        env.insert("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
        process.setProcessEnvironment(env)
        process.readyReadStandardOutput.connect(self._on_stdout)
        process.readyReadStandardError.connect(self._on_stderr)
        process.finished.connect(self._on_finished)
        self._process = process
        self._stdout = QByteArray()
        self._stderr_tail = ""
        code = "import sys; from avatar_studio.gui.library_panel import render_main; sys.exit(render_main(sys.argv[1]))"
        process.start(sys.executable, ["-c", code, json.dumps(job)])

    def _stop_renderer(self) -> None:
        process, self._process = self._process, None
        self._queue = []
        if process is None:
            return
        process.readyReadStandardOutput.disconnect(self._on_stdout)
        process.readyReadStandardError.disconnect(self._on_stderr)
        process.finished.disconnect(self._on_finished)
        if process.state() != QProcess.ProcessState.NotRunning:
            process.kill()
            process.waitForFinished(3000)
        process.deleteLater()

    @Slot()
    def _on_stdout(self) -> None:
        if self._process is not None:
            self._drain(self._process)

    @Slot()
    def _on_stderr(self) -> None:
        if self._process is not None:
            text = bytes(self._process.readAllStandardError()).decode("utf-8", "replace")
            self._stderr_tail = (self._stderr_tail + text)[-2000:]

    def _on_result_line(self, line: str) -> None:
        try:
            result = json.loads(line)
        except ValueError:
            return  # a stray print from a library; results are always one JSON object per line
        if not isinstance(result, dict):
            return
        key = result.get("key")
        for index, entry in enumerate(self._queue):
            if entry.key == key:
                del self._queue[index]
                self._apply_result(entry, result)
                self._refresh_item(entry)
                break
        self._update_status()

    @Slot(int, QProcess.ExitStatus)
    def _on_finished(self, exit_code: int, _status: QProcess.ExitStatus) -> None:
        process, self._process = self._process, None
        if process is not None:
            self._drain(process)
            process.deleteLater()
        if self._closed:
            return
        if self._queue:
            # The renderer died on the first file it had not answered for: blame that file only.
            culprit = self._queue.pop(0)
            reason = _last_line(self._stderr_tail) or f"the thumbnail renderer exited with code {exit_code}"
            log.warning("thumbnail renderer failed on %s: %s", culprit.path, self._stderr_tail.strip())
            culprit.state, culprit.error = NO_THUMBNAIL, reason
            self._refresh_item(culprit)
            self._restarts += 1
            if self._queue and self._restarts <= MAX_RENDER_RESTARTS:
                self._launch()
                self._update_status()
                return
            self._give_up(reason)
        self._update_status()
        self.sig_thumbnails_finished.emit()

    def _drain(self, process: QProcess) -> None:
        self._stdout.append(process.readAllStandardOutput())
        while (end := self._stdout.indexOf(b"\n")) >= 0:
            line = bytes(self._stdout.left(end)).decode("utf-8", "replace")
            self._stdout.remove(0, end + 1)
            self._on_result_line(line)

    def _give_up(self, reason: str) -> None:
        for entry in self._queue:
            entry.state, entry.error = NO_THUMBNAIL, reason
            self._refresh_item(entry)
        self._queue = []
        self._update_status()


# --- icons ---------------------------------------------------------------------------------------


def _tile_icon(text: str) -> QIcon:
    """A dark tile in the view's colours, so pending and picture-less files keep the grid aligned."""
    pixmap = QPixmap(THUMBNAIL_PIXELS, THUMBNAIL_PIXELS)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(*THUMBNAIL_BACKGROUND))
    painter.setPen(QPen(QColor(70, 75, 86), 3))
    painter.drawRoundedRect(QRectF(4, 4, THUMBNAIL_PIXELS - 8, THUMBNAIL_PIXELS - 8), 14, 14)
    font = QFont()
    font.setPixelSize(THUMBNAIL_PIXELS // 4)
    font.setBold(True)
    painter.setFont(font)
    painter.setPen(QColor(128, 134, 143))
    painter.drawText(pixmap.rect(), Qt.AlignmentFlag.AlignCenter, text)
    painter.end()
    return QIcon(pixmap)


def _error_icon(style: QStyle) -> QIcon:
    pixmap = QPixmap(THUMBNAIL_PIXELS, THUMBNAIL_PIXELS)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(60, 36, 38))
    painter.setPen(QPen(QColor(150, 70, 70), 3))
    painter.drawRoundedRect(QRectF(4, 4, THUMBNAIL_PIXELS - 8, THUMBNAIL_PIXELS - 8), 14, 14)
    symbol = style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxCritical).pixmap(THUMBNAIL_PIXELS // 2)
    offset = (THUMBNAIL_PIXELS - symbol.width()) // 2
    painter.drawPixmap(offset, (THUMBNAIL_PIXELS - symbol.height()) // 2, symbol)
    painter.end()
    return QIcon(pixmap)


def _describe(info: dict[str, Any]) -> str:
    parts = []
    if "vertices" in info:
        parts.append(f"{info['vertices']:,} vertices")
    if "morphTargets" in info:
        parts.append(f"{info['morphTargets']} morph targets")
    if "arkitPresent" in info and "arkitOf" in info:
        parts.append(f"ARKit {info['arkitPresent']}/{info['arkitOf']}")
    return " · ".join(parts)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- the renderer (runs in the child process) ---------------------------------------------------


def load_error_message(exc: BaseException) -> str:
    """The one-line reason a file cannot be opened, worded as the review window words it."""
    from avatar_studio.avatar.errors import AvatarError

    if isinstance(exc, AvatarError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "The file does not exist (any more)."
    if isinstance(exc, PermissionError):
        return "You do not have permission to read it."
    if isinstance(exc, OSError):
        return f"It could not be read: {exc.strerror or exc}."
    return f"Unexpected error while reading it ({type(exc).__name__}: {exc})."


def render_main(job_json: str) -> int:
    """Child-process entry: render each job file's thumbnail into the cache, one JSON line per file.

    Results are written to the cache *before* they are printed, so a panel that is closed mid-way
    still finds them next time. Only the loader's verdict is final: a render failure is reported as
    ``renderError`` and the file stays openable.
    """
    job = json.loads(job_json)
    cache = Path(job["cache"])
    size = int(job["size"])
    plotter = None
    for key, path in job["files"]:
        result: dict[str, Any] = {"key": key, "path": path}
        try:
            from avatar_studio.avatar.blendshapes import coverage
            from avatar_studio.avatar.gltf_reader import load_avatar

            avatar = load_avatar(path)
        except Exception as exc:
            result.update(ok=False, error=load_error_message(exc))
        else:
            cov = coverage(avatar.morph_names)
            result.update(
                ok=True,
                info={
                    "vertices": avatar.vertex_count,
                    "triangles": avatar.triangle_count,
                    "morphTargets": len(avatar.morph_names),
                    "arkitPresent": len(cov.present),
                    "arkitOf": len(cov.present) + len(cov.missing),
                },
            )
            try:
                if plotter is None:
                    plotter = _make_plotter(size)
                _render_avatar(plotter, avatar, cache / f"{key}.png")
            except Exception as exc:
                result["renderError"] = f"{type(exc).__name__}: {exc}"
        _write_atomic(cache / f"{key}.json", json.dumps(result).encode("utf-8"))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    if plotter is not None:
        plotter.close()
    return 0


def _make_plotter(size: int) -> Any:
    import pyvista as pv

    plotter = pv.Plotter(off_screen=True, window_size=(size, size), lighting="light kit")
    plotter.set_background(tuple(c / 255 for c in THUMBNAIL_BACKGROUND))
    return plotter


def _render_avatar(plotter: Any, avatar: Any, target: Path) -> None:
    import numpy as np
    import pyvista as pv
    from PIL import Image

    from avatar_studio.avatar.morph import MorphEvaluator
    from avatar_studio.avatar.scene import CAMERA_PRESETS

    plotter.clear_actors()
    evaluated = MorphEvaluator(avatar).apply(None)  # the pose the file asks for, as the view opens it
    textures: dict[int, Any] = {}
    for prim, (positions, normals) in zip(avatar.primitives, evaluated, strict=True):
        if prim.vertex_count == 0 or prim.triangle_count == 0:
            continue
        mesh = pv.PolyData.from_regular_faces(np.array(positions, np.float32), np.asarray(prim.triangles, np.int64))
        mesh.point_data["Normals"] = np.array(normals, np.float32)
        mesh.point_data.active_normals_name = "Normals"
        r, g, b, a = prim.base_color
        kwargs: dict[str, Any] = {"smooth_shading": False, "opacity": float(a), "show_scalar_bar": False}
        if prim.texture is not None and prim.uvs is not None:
            uvs = np.array(prim.uvs, np.float32)
            uvs[:, 1] = 1.0 - uvs[:, 1]  # glTF v runs down the image, VTK's t runs up
            mesh.active_texture_coordinates = uvs
            if id(prim.texture) not in textures:
                textures[id(prim.texture)] = pv.Texture(prim.texture.to_rgba())
            kwargs.update(texture=textures[id(prim.texture)], color="white")
        else:
            kwargs["color"] = (float(r), float(g), float(b))
        actor = plotter.add_mesh(mesh, render=False, reset_camera=False, **kwargs)
        actor.prop.interpolation = "phong"
    lo, hi = avatar.bounds()
    centre = (np.asarray(lo, float) + np.asarray(hi, float)) / 2
    radius = max(float(np.linalg.norm(np.asarray(hi, float) - lo)) / 2, 1e-3)
    direction = np.asarray(CAMERA_PRESETS["front"][1], float)
    camera = plotter.camera
    camera.focal_point = tuple(centre)
    camera.position = tuple(centre + direction * radius * 4)
    camera.up = (0.0, 1.0, 0.0)
    plotter.reset_camera(render=False)
    camera.zoom(1.1)
    plotter.reset_camera_clipping_range()
    image = plotter.screenshot(return_img=True, transparent_background=False)
    buffer = _png_bytes(Image.fromarray(image))
    _write_atomic(target, buffer)


def _png_bytes(image: Any) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def _write_atomic(target: Path, data: bytes) -> None:
    # A panel reading the cache while this runs must see the old file or the new one, never half.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


__all__ = ["BROKEN", "NO_THUMBNAIL", "PENDING", "READY", "LibraryEntry", "LibraryPanel", "default_cache_dir"]
