"""The user's avatar jobs, newest first, and the one way a finished avatar comes back to this machine.

Why the download lives here and the selfie panel borrows it: a finished job's avatar is fetched the
same way whether it finished a second ago (selfie panel) or last week (this list) — signed URL, then
a streamed download with progress into ``<download_dir>/<assetId>.glb``. :class:`AssetDownloader`
is that one path, so both panels show the same progress and the same errors.

Every service call goes through :func:`avatar_studio.gui.tasks.run_task`; callbacks check ``_closed``
because an answer may arrive after the panel was shut down.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final

import platformdirs
import shiboken6
from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QCloseEvent, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.client import JobPage, JobSummary, ServiceClient, ServiceError
from avatar_studio.gui.tasks import run_task

PAGE_SIZE: Final[int] = 20
"""Jobs fetched per page; "Load more" asks for the next page."""

AUTO_REFRESH_MS: Final[int] = 3000
"""While a listed job is unfinished and the list is visible, it is re-read this often."""

NOT_CONNECTED: Final[str] = "Not connected to the avatar service yet."

_SAFE_ASSET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_STATUS_WORDS: Final[dict[str, str]] = {"queued": "Queued", "processing": "Processing", "done": "Done",
                                        "error": "Failed"}
_JOB_ROLE: Final[int] = int(Qt.ItemDataRole.UserRole)


def default_download_dir() -> Path:
    """Where downloaded avatars go when the caller does not say: the user's cache (they can be fetched again)."""
    return Path(platformdirs.user_cache_dir("avatar-studio", appauthor=False)) / "avatars"


def describe_error(exc: BaseException) -> str:
    """One sentence for the user: the service's (or provider's) own message when there is one."""
    if isinstance(exc, ServiceError):
        return exc.message
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc) or type(exc).__name__


def glb_path_for(download_dir: Path, asset_id: str) -> Path:
    """``<download_dir>/<assetId>.glb``; an id that could escape the folder is refused, not cleaned up.

    The id comes from the service; a compromised or buggy service must not make us write elsewhere.
    """
    if not _SAFE_ASSET_ID.match(asset_id) or ".." in asset_id:
        raise ValueError(f"the service sent an asset id that cannot be a file name: {asset_id!r}")
    return download_dir / f"{asset_id}.glb"


def format_size(count: float) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.0f} kB"


class _ProgressRelay(QObject):
    """Created on the GUI thread: a signal emitted from the download thread arrives there queued."""

    sig_progress = Signal(object, object)
    """(received bytes, total bytes or None), emitted from the worker thread."""


class AssetDownloader(QObject):
    """Fetch an asset's signed URL and stream its GLB to disk off the GUI thread, reporting progress.

    One download at a time; :meth:`cancel` makes the running one stop at its next chunk and leave
    nothing behind (the client writes to a temporary file that is only renamed when complete).
    """

    sig_progress = Signal(object, object)
    """(received bytes, total bytes or None): for a progress bar; throttled to visible changes."""
    sig_finished = Signal(str, str)
    """(path of the GLB, asset id): the avatar is on disk and complete."""
    sig_failed = Signal(str)
    """A sentence saying why the download failed (the service's message when it sent one)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._cancel = threading.Event()
        self._running = False
        self._relay = _ProgressRelay(self)
        self._relay.sig_progress.connect(self._on_progress)

    @property
    def running(self) -> bool:
        return self._running

    def start(self, client: ServiceClient, asset_id: str, download_dir: Path) -> None:
        """Begin downloading ``asset_id``; the outcome arrives as ``sig_finished`` or ``sig_failed``."""
        if self._running:
            raise RuntimeError("a download is already running")
        try:
            dest = glb_path_for(download_dir, asset_id)
        except ValueError as exc:
            self.sig_failed.emit(str(exc))
            return
        self._cancel = cancel = threading.Event()
        self._running = True
        relay = self._relay
        last = [-1]

        def progress(received: int, total: int | None) -> None:
            # Runs on the worker thread: raising cancels the download; only a signal touches Qt.
            if cancel.is_set():
                raise InterruptedError("the download was cancelled")
            step = received * 100 // total if total else received // 1_000_000
            if step != last[0]:
                last[0] = step
                relay.sig_progress.emit(received, total)

        def fetch() -> Path:
            url = client.asset_url(asset_id).url
            return client.download(url, dest, progress=progress)

        run_task(fetch, lambda path: self._on_done(path, asset_id, cancel),
                 lambda exc: self._on_error(exc, cancel))

    def cancel(self) -> None:
        """Stop the running download (if any) at its next chunk; no signal follows."""
        self._cancel.set()

    @Slot(object, object)
    def _on_progress(self, received: object, total: object) -> None:
        if not self._cancel.is_set():
            self.sig_progress.emit(received, total)

    def _on_done(self, path: object, asset_id: str, cancel: threading.Event) -> None:
        self._running = False
        if not cancel.is_set() and shiboken6.isValid(self):
            self.sig_finished.emit(str(path), asset_id)

    def _on_error(self, exc: BaseException, cancel: threading.Event) -> None:
        self._running = False
        if not cancel.is_set() and shiboken6.isValid(self):
            self.sig_failed.emit(describe_error(exc))


def set_download_progress(bar: QProgressBar, received: object, total: object) -> None:
    """Show bytes received on ``bar``: a percentage when the size is known, a busy bar when not."""
    done = int(received) if isinstance(received, int) else 0
    if isinstance(total, int) and total > 0:
        bar.setRange(0, 100)
        bar.setValue(min(100, done * 100 // total))
        bar.setFormat(f"Downloading {format_size(done)} of {format_size(total)} (%p %)")
    else:
        bar.setRange(0, 0)
        bar.setFormat(f"Downloading {format_size(done)}")


def _local_time(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


def _progress_text(job: JobSummary) -> str:
    if job.status == "error":
        return job.error or "failed without a message"
    if job.status == "done":
        return "ready to open"
    if job.status == "processing":
        return f"{job.progress:.0%}"
    return "waiting for a worker"


class JobsPanel(QWidget):
    """The signed-in user's avatar jobs (newest first); a finished one opens with a double-click or Open.

    ``get_client`` is asked on every action, so signing in or out elsewhere takes effect here without
    rebuilding the panel. Avatars are downloaded to ``download_dir/<assetId>.glb`` (default: the user's
    cache); ``page_size`` jobs are fetched per page. The owner calls :meth:`shutdown` (or closes the
    panel) before it goes away.
    """

    sig_avatar_ready = Signal(str, str)
    """(path of the downloaded GLB, asset id): a finished avatar was fetched and can be opened."""

    COLUMNS: Final[tuple[str, ...]] = ("Created", "Provider", "Status", "Progress / error")

    def __init__(self, get_client: Callable[[], ServiceClient | None], parent: QWidget | None = None, *,
                 download_dir: Path | None = None, page_size: int = PAGE_SIZE) -> None:
        super().__init__(parent)
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._page_size = page_size
        self._get_client = get_client
        self._download_dir = download_dir or default_download_dir()
        self._jobs: dict[str, JobSummary] = {}
        self._total = 0
        self._loading = False
        self._closed = False
        self._generation = 0  # bumped by refresh(), so an older page arriving late is dropped

        self._tree = QTreeWidget(self)
        self._tree.setObjectName("jobs_tree")
        self._tree.setColumnCount(len(self.COLUMNS))
        self._tree.setHeaderLabels(list(self.COLUMNS))
        self._tree.setRootIsDecorated(False)
        self._tree.setUniformRowHeights(True)
        self._tree.setAlternatingRowColors(True)
        self._tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self._tree.header().setStretchLastSection(True)
        self._tree.itemDoubleClicked.connect(self._on_double_clicked)
        self._tree.currentItemChanged.connect(self._on_current_changed)

        self._refresh_button = QPushButton("Refresh", self)
        self._refresh_button.setObjectName("refresh_button")
        self._refresh_button.clicked.connect(self.refresh)
        self._more_button = QPushButton("Load more", self)
        self._more_button.setObjectName("load_more_button")
        self._more_button.setEnabled(False)
        self._more_button.clicked.connect(self.load_more)
        self._open_button = QPushButton("Open", self)
        self._open_button.setObjectName("open_button")
        self._open_button.setEnabled(False)
        self._open_button.setToolTip("Download the selected finished avatar and open it")
        self._open_button.clicked.connect(self.open_selected)

        self._count = QLabel(self)
        self._count.setObjectName("count_label")
        self._detail = QLabel(self)
        self._detail.setObjectName("detail_label")
        self._detail.setWordWrap(True)
        self._detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._message = QLabel(self)
        self._message.setObjectName("message_label")
        self._message.setWordWrap(True)
        self._message.hide()

        self._download_bar = QProgressBar(self)
        self._download_bar.setObjectName("download_bar")
        self._download_bar.hide()
        self._downloader = AssetDownloader(self)
        self._downloader.sig_progress.connect(self._on_download_progress)
        self._downloader.sig_finished.connect(self._on_downloaded)
        self._downloader.sig_failed.connect(self._on_download_failed)

        self._auto_refresh = QTimer(self)
        self._auto_refresh.setInterval(AUTO_REFRESH_MS)
        self._auto_refresh.timeout.connect(self._on_auto_refresh)

        buttons = QHBoxLayout()
        buttons.addWidget(self._refresh_button)
        buttons.addWidget(self._more_button)
        buttons.addStretch(1)
        buttons.addWidget(self._count)
        buttons.addWidget(self._open_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self._tree, 1)
        layout.addWidget(self._detail)
        layout.addWidget(self._download_bar)
        layout.addWidget(self._message)
        layout.addLayout(buttons)

    # -- public API ----------------------------------------------------------------------------------
    @property
    def jobs(self) -> list[JobSummary]:
        """The listed jobs in display order (newest first)."""
        return [self._tree.topLevelItem(i).data(0, _JOB_ROLE) for i in range(self._tree.topLevelItemCount())]

    @property
    def loading(self) -> bool:
        return self._loading

    @Slot()
    def refresh(self) -> None:
        """Re-read the first page; later pages are dropped (Load more fetches them again)."""
        self._generation += 1
        self._fetch(offset=0, replace=True)

    @Slot()
    def load_more(self) -> None:
        """Append the next page of older jobs."""
        self._fetch(offset=len(self._jobs), replace=False)

    @Slot()
    def open_selected(self) -> None:
        """Download the selected job's avatar (if it is done) and announce it with ``sig_avatar_ready``."""
        item = self._tree.currentItem()
        if item is not None:
            self.open_job(item.data(0, _JOB_ROLE))

    def open_job(self, job: JobSummary) -> None:
        if self._closed or job.status != "done" or not job.asset_id or self._downloader.running:
            return
        client = self._get_client()
        if client is None:
            self._show_message(NOT_CONNECTED)
            return
        self._message.hide()
        self._download_bar.setRange(0, 100)
        self._download_bar.setValue(0)
        self._download_bar.setFormat("Getting the download link…")
        self._download_bar.show()
        self._open_button.setEnabled(False)
        self._downloader.start(client, job.asset_id, self._download_dir)

    def shutdown(self) -> None:
        """Stop timers and the running download; answers still in flight are ignored."""
        self._closed = True
        self._auto_refresh.stop()
        self._downloader.cancel()

    # -- Qt events -----------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        self.shutdown()
        super().closeEvent(event)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        self._update_auto_refresh()

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802 (Qt override)
        self._auto_refresh.stop()
        super().hideEvent(event)

    # -- fetching ------------------------------------------------------------------------------------
    def _alive(self) -> bool:
        return not self._closed and shiboken6.isValid(self)

    def _fetch(self, *, offset: int, replace: bool) -> None:
        if self._closed or (self._loading and not replace):
            return
        client = self._get_client()
        if client is None:
            self._show_message(NOT_CONNECTED)
            return
        self._loading = True
        self._refresh_button.setEnabled(False)
        self._more_button.setEnabled(False)
        generation, page_size = self._generation, self._page_size
        run_task(lambda: client.jobs(limit=page_size, offset=offset),
                 lambda page: self._on_page(page, replace, generation),
                 lambda exc: self._on_page_error(exc, generation))

    def _on_page(self, page: JobPage, replace: bool, generation: int) -> None:
        if not self._alive() or generation != self._generation:
            return
        self._loading = False
        self._message.hide()
        if replace:
            self._jobs.clear()
        for job in page.jobs:  # keyed by id: a job that moved between pages is listed once
            self._jobs[job.job_id] = job
        self._total = page.total
        self._rebuild()
        self._refresh_button.setEnabled(True)
        self._more_button.setEnabled(page.has_more)
        self._update_auto_refresh()

    def _on_page_error(self, exc: BaseException, generation: int) -> None:
        if not self._alive() or generation != self._generation:
            return
        self._loading = False
        self._refresh_button.setEnabled(True)
        self._more_button.setEnabled(len(self._jobs) < self._total)
        self._show_message(f"Could not list your avatars: {describe_error(exc)}")

    def _on_auto_refresh(self) -> None:
        if not self._loading and self.isVisible():
            self.refresh()

    def _update_auto_refresh(self) -> None:
        unfinished = any(not job.finished for job in self._jobs.values())
        if unfinished and self.isVisible() and not self._closed:
            if not self._auto_refresh.isActive():
                self._auto_refresh.start()
        else:
            self._auto_refresh.stop()

    # -- the list ------------------------------------------------------------------------------------
    def _rebuild(self) -> None:
        current = self._tree.currentItem()
        selected = current.data(0, _JOB_ROLE).job_id if current is not None else None
        self._tree.clear()
        ordered = sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)
        for job in ordered:
            item = QTreeWidgetItem([_local_time(job.created_at), job.provider,
                                    _STATUS_WORDS.get(job.status, job.status), _progress_text(job)])
            item.setData(0, _JOB_ROLE, job)
            tip = (f"Failed: {job.error}" if job.status == "error"
                   else "Double-click to open" if job.status == "done" else _progress_text(job))
            for column in range(len(self.COLUMNS)):
                item.setToolTip(column, tip)
            if job.status == "error":
                item.setForeground(2, Qt.GlobalColor.darkRed)
            self._tree.addTopLevelItem(item)
            if job.job_id == selected:
                self._tree.setCurrentItem(item)
        shown = len(ordered)
        self._count.setText(f"{shown} of {self._total} avatar{'s' if self._total != 1 else ''}"
                            if self._total else "No avatars yet")
        self._on_current_changed(self._tree.currentItem(), None)

    def _on_current_changed(self, item: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        job: JobSummary | None = item.data(0, _JOB_ROLE) if item is not None else None
        self._open_button.setEnabled(job is not None and job.status == "done" and not self._downloader.running)
        if job is None:
            self._detail.clear()
        elif job.status == "error":
            self._detail.setText(f"This job failed: {job.error or 'no message'}")
        else:
            self._detail.setText(f"{_STATUS_WORDS.get(job.status, job.status)}: {_progress_text(job)}")

    def _on_double_clicked(self, item: QTreeWidgetItem, _column: int) -> None:
        self.open_job(item.data(0, _JOB_ROLE))

    # -- downloading ---------------------------------------------------------------------------------
    def _on_download_progress(self, received: object, total: object) -> None:
        if self._alive():
            set_download_progress(self._download_bar, received, total)

    def _on_downloaded(self, path: str, asset_id: str) -> None:
        if not self._alive():
            return
        self._download_bar.hide()
        self._on_current_changed(self._tree.currentItem(), None)
        self.sig_avatar_ready.emit(path, asset_id)

    def _on_download_failed(self, message: str) -> None:
        if not self._alive():
            return
        self._download_bar.hide()
        self._on_current_changed(self._tree.currentItem(), None)
        self._show_message(f"Could not download the avatar: {message}")

    def _show_message(self, text: str) -> None:
        self._message.setText(text)
        self._message.show()
