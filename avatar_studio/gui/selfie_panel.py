"""From a selfie to an avatar on screen: choose the photo, choose the provider, submit, follow, download.

Why the panel re-encodes the photo before sending it: what the user sees must be what is sent. The
photo is decoded with Pillow, turned upright from its EXIF orientation (phones store most portraits
sideways plus a tag), and encoded again from the pixels only — so the preview is exactly the upload,
and GPS positions, camera serials and thumbnails never leave the machine, even to our own service.
The checks mirror the service's (``avatar_studio.service.uploads``: JPEG/PNG, ≤ 15 MB, ≥ 64 px) so
a bad photo is refused at once with a sentence, not after an upload.

Why polling with a single-shot QTimer rather than ``ServiceClient.wait_for_job``: the GUI thread must
stay free, and a poll is only scheduled once the previous answer arrived, so a slow service never
piles up requests. Every service call runs through :func:`~avatar_studio.gui.tasks.run_task`; every
callback first checks ``_closed`` and that it still belongs to the current job.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import shiboken6
from PIL import Image, ImageOps, UnidentifiedImageError
from PySide6.QtCore import Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import (
    QCloseEvent,
    QDesktopServices,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QImage,
)
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.client import JobStatus, ServiceClient
from avatar_studio.gui.camera_dialog import CameraDialog
from avatar_studio.gui.image_view import ScaledImageView
from avatar_studio.gui.jobs_panel import NOT_CONNECTED, AssetDownloader, describe_error, set_download_progress
from avatar_studio.gui.tasks import run_task

MAX_PHOTO_BYTES: Final[int] = 15 * 1024 * 1024
"""The service's default upload limit; a larger file is refused here before any upload."""
MIN_SIDE: Final[int] = 64
MAX_PIXELS: Final[int] = 40_000_000
"""The service's decompression-bomb guard; also keeps a giant panorama from eating the GUI's memory."""
PREVIEW_SIDE: Final[int] = 1600
"""Longest side of the on-screen copy; the upload keeps full resolution."""
POLL_MS: Final[int] = 500
JPEG_QUALITY: Final[int] = 95

JPEG_MAGIC: Final[bytes] = b"\xff\xd8\xff"
PNG_MAGIC: Final[bytes] = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ProviderInfo:
    """How a provider is offered in the combo: label, whether it takes the photo, what the user should know."""

    name: str
    label: str
    needs_selfie: bool
    note: str
    blendshapes: tuple[str, ...] = ("arkit", "basic")


PROVIDERS: Final[tuple[ProviderInfo, ...]] = (
    ProviderInfo("local", "Local (built in)", True,
                 "Avatar Studio builds the avatar from your photo itself; the photo goes to the avatar service "
                 "only."),
    ProviderInfo("avatar-sdk", "Avatar SDK", True,
                 "Your photo is sent to Avatar SDK's cloud, which builds the avatar."),
    ProviderInfo("in3d", "in3D", False,
                 "in3D does not use a photo: after Submit your browser opens in3D's page, where you build the "
                 "avatar yourself. This window follows its progress and downloads the avatar when it is ready. "
                 "in3D offers ARKit blendshapes only.", ("arkit",)),
    ProviderInfo("didimo", "Didimo", True,
                 "Your photo is sent to Didimo's cloud, which builds the avatar."),
)
BLENDSHAPE_LABELS: Final[dict[str, str]] = {
    "arkit": "ARKit (52 expressions, lip-sync ready)",
    "basic": "Basic (visemes and a few expressions)",
}


class PhotoError(ValueError):
    """The chosen file or capture cannot be a selfie; ``str()`` says why, for the user."""


@dataclass(frozen=True)
class Photo:
    """The selfie exactly as it will be uploaded: upright pixels, freshly encoded, no metadata."""

    data: bytes = field(repr=False)
    mime_type: str  # image/jpeg or image/png
    width: int
    height: int
    source: str  # file name, or "camera"
    preview: bytes = field(repr=False)  # RGB888 rows of the on-screen copy
    preview_size: tuple[int, int] = (0, 0)


def prepare_photo(data: bytes, source: str) -> Photo:
    """Check, decode, turn upright and re-encode a photo; :class:`PhotoError` says what is wrong.

    Pure and Qt-free, so it runs in a worker thread and is tested without a window.
    """
    if len(data) > MAX_PHOTO_BYTES:
        raise PhotoError(f"{source} is {len(data) / 1e6:.1f} MB; photos up to {MAX_PHOTO_BYTES / 1e6:.0f} MB "
                         "are accepted")
    if not data:
        raise PhotoError(f"{source} is empty")
    if data.startswith(JPEG_MAGIC):
        mime = "image/jpeg"
    elif data.startswith(PNG_MAGIC):
        mime = "image/png"
    else:
        raise PhotoError(f"{source} is not a photo: choose a JPEG or PNG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise PhotoError(f"{source} has {img.width}×{img.height} pixels; up to "
                                     f"{MAX_PIXELS / 1e6:.0f} megapixels are accepted")
                img.load()
                upright = ImageOps.exif_transpose(img)
    except PhotoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError(f"{source} has too many pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise PhotoError(f"{source} cannot be read; it may be truncated or damaged") from None
    if min(upright.size) < MIN_SIDE:
        raise PhotoError(f"{source} is only {upright.width}×{upright.height} pixels; a selfie needs at least "
                         f"{MIN_SIDE} on each side")
    out = io.BytesIO()
    if mime == "image/png":
        upright.convert("RGBA" if "A" in upright.getbands() else "RGB").save(out, "PNG")
    if mime == "image/jpeg" or out.tell() > MAX_PHOTO_BYTES:  # a PNG that grew past the limit goes as JPEG
        out = io.BytesIO()
        upright.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY)
        mime = "image/jpeg"
    shown = upright.convert("RGB")
    shown.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return Photo(out.getvalue(), mime, upright.width, upright.height, source, shown.tobytes(), shown.size)


def _read_photo_file(path: Path) -> Photo:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PHOTO_BYTES + 1)  # enough to know it is too big, never a whole video
    except OSError as exc:
        raise PhotoError(f"{path.name} cannot be opened: {exc.strerror or exc}") from None
    return prepare_photo(data, path.name)


def _qimage(photo: Photo) -> QImage:
    width, height = photo.preview_size
    return QImage(photo.preview, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


class _PhotoView(ScaledImageView):
    """The photo that will be sent, scaled to fit; a hint when there is none."""

    HINT: Final[str] = "No photo yet.\nUse Camera… or Open Photo…, or drop a JPEG or PNG here."

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, empty_text=self.HINT)
        self.setObjectName("photo_view")
        self.setWordWrap(True)
        self.setMinimumSize(240, 240)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
        self.setFrameShape(QFrame.Shape.StyledPanel)


class SelfiePanel(QWidget):
    """Photo in, avatar out: camera/file/drop, provider and options, Submit, progress, download.

    ``get_client`` is asked at each action (the user may sign in later); ``ensure_consent`` is asked
    before a camera or photo file is opened and before a photo is uploaded — it may show the consent
    dialog and returns whether selfie processing is allowed. Finished avatars are written to
    ``download_dir/<assetId>.glb``. ``providers`` are the choices offered (default: the four that ship;
    a service with a plugin provider can offer more). The owner calls :meth:`shutdown` (or closes the
    panel) before it goes away, so no timer or answer touches a dead widget.
    """

    sig_avatar_ready = Signal(str, str)
    """(path of the downloaded GLB, asset id): the new avatar is on disk; open it in the preview."""
    sig_job_created = Signal(str)
    """The service accepted a job (its id): a jobs list can refresh to show it."""

    def __init__(self, get_client: Callable[[], ServiceClient | None], ensure_consent: Callable[[], bool],
                 download_dir: Path, parent: QWidget | None = None, *,
                 providers: Sequence[ProviderInfo] = PROVIDERS) -> None:
        super().__init__(parent)
        if not providers:
            raise ValueError("at least one provider must be offered")
        self._providers = {info.name: info for info in providers}
        self._get_client = get_client
        self._ensure_consent = ensure_consent
        self._download_dir = Path(download_dir)
        self._photo: Photo | None = None
        self._closed = False
        self._busy = False
        self._load_token = 0  # the newest photo load wins; an older one finishing late is ignored
        self._job_id: str | None = None
        self._job_client: ServiceClient | None = None
        self._asset_id: str | None = None
        self._action_url: str | None = None
        self._retry: Callable[[], None] | None = None
        self.setAcceptDrops(True)

        self._view = _PhotoView(self)
        self._photo_info = QLabel(self)
        self._photo_info.setObjectName("photo_info")
        self._photo_info.setWordWrap(True)
        self._photo_message = QLabel(self)
        self._photo_message.setObjectName("photo_message")
        self._photo_message.setWordWrap(True)
        self._photo_message.setStyleSheet("color: #b00020;")
        self._photo_message.hide()
        self._camera_button = QPushButton("Camera…", self)
        self._camera_button.setObjectName("camera_button")
        self._camera_button.setToolTip("Take the selfie with a camera")
        self._camera_button.clicked.connect(self.open_camera)
        self._open_button = QPushButton("Open Photo…", self)
        self._open_button.setObjectName("open_photo_button")
        self._open_button.setToolTip("Use a JPEG or PNG photo of your face (you can also drop one here)")
        self._open_button.clicked.connect(self.open_photo_dialog)

        self._provider_combo = QComboBox(self)
        self._provider_combo.setObjectName("provider_combo")
        for info in providers:
            self._provider_combo.addItem(info.label, info.name)
        self._blendshape_combo = QComboBox(self)
        self._blendshape_combo.setObjectName("blendshapes_combo")
        self._provider_note = QLabel(self)
        self._provider_note.setObjectName("provider_note")
        self._provider_note.setWordWrap(True)
        self._submit_button = QPushButton("Submit", self)
        self._submit_button.setObjectName("submit_button")
        self._submit_button.setDefault(True)
        self._submit_button.clicked.connect(self.submit)

        self._job_bar = QProgressBar(self)
        self._job_bar.setObjectName("job_bar")
        self._job_bar.setRange(0, 100)
        self._job_bar.hide()
        self._status = QLabel(self)
        self._status.setObjectName("job_status")
        self._status.setWordWrap(True)
        self._action_button = QPushButton("Open the Provider's Page Again", self)
        self._action_button.setObjectName("action_button")
        self._action_button.setToolTip("The provider needs you to finish the avatar in its web page")
        self._action_button.clicked.connect(self._reopen_action_url)
        self._action_button.hide()
        self._error = QLabel(self)
        self._error.setObjectName("job_error")
        self._error.setWordWrap(True)
        self._error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._error.setStyleSheet("color: #b00020;")
        self._retry_button = QPushButton("Retry", self)
        self._retry_button.setObjectName("retry_button")
        self._retry_button.clicked.connect(self.retry)
        self._error_row = QWidget(self)
        error_layout = QHBoxLayout(self._error_row)
        error_layout.setContentsMargins(0, 0, 0, 0)
        error_layout.addWidget(self._error, 1)
        error_layout.addWidget(self._retry_button, 0, Qt.AlignmentFlag.AlignTop)
        self._error_row.hide()
        self._download_bar = QProgressBar(self)
        self._download_bar.setObjectName("download_bar")
        self._download_bar.hide()

        self._poll_timer = QTimer(self)
        self._poll_timer.setSingleShot(True)
        self._poll_timer.setInterval(POLL_MS)
        self._poll_timer.timeout.connect(self._poll)
        self._downloader = AssetDownloader(self)
        self._downloader.sig_progress.connect(self._on_download_progress)
        self._downloader.sig_finished.connect(self._on_downloaded)
        self._downloader.sig_failed.connect(lambda message: self._fail(message, self._start_download_again))

        photo_buttons = QHBoxLayout()
        photo_buttons.addWidget(self._camera_button)
        photo_buttons.addWidget(self._open_button)
        photo_buttons.addStretch(1)
        form = QFormLayout()
        form.addRow("Provider:", self._provider_combo)
        form.addRow("Blendshapes:", self._blendshape_combo)
        form.addRow(self._provider_note)
        layout = QVBoxLayout(self)
        layout.addWidget(self._view, 1)
        layout.addWidget(self._photo_info)
        layout.addWidget(self._photo_message)
        layout.addLayout(photo_buttons)
        layout.addLayout(form)
        layout.addWidget(self._submit_button)
        layout.addWidget(self._job_bar)
        layout.addWidget(self._status)
        layout.addWidget(self._action_button)
        layout.addWidget(self._error_row)
        layout.addWidget(self._download_bar)

        self._provider_combo.currentIndexChanged.connect(self._on_provider_changed)
        self._on_provider_changed()

    # -- public API ----------------------------------------------------------------------------------
    @property
    def photo(self) -> Photo | None:
        """The photo that Submit would upload (None: no photo chosen yet)."""
        return self._photo

    @property
    def shown_image(self) -> QImage:
        """The on-screen copy of :attr:`photo`, upright, before it is scaled to the widget."""
        return self._view.image

    @property
    def provider(self) -> str:
        return str(self._provider_combo.currentData())

    @provider.setter
    def provider(self, name: str) -> None:
        index = self._provider_combo.findData(name)
        if index < 0:
            raise ValueError(f"unknown provider {name!r} (known: {', '.join(self._providers)})")
        self._provider_combo.setCurrentIndex(index)

    @property
    def blendshapes(self) -> str:
        return str(self._blendshape_combo.currentData())

    @blendshapes.setter
    def blendshapes(self, name: str) -> None:
        index = self._blendshape_combo.findData(name)
        if index < 0:
            raise ValueError(f"{self.provider} does not offer blendshapes {name!r}")
        self._blendshape_combo.setCurrentIndex(index)

    @property
    def busy(self) -> bool:
        """A job is being created, followed or downloaded."""
        return self._busy

    @property
    def job_id(self) -> str | None:
        """The job this panel follows (or followed last)."""
        return self._job_id

    @property
    def photo_message(self) -> str:
        """Why the last photo was refused, or '' when it was not."""
        return self._photo_message.text() if not self._photo_message.isHidden() else ""

    @property
    def error_message(self) -> str:
        """The failure shown next to Retry, or '' when there is none."""
        return self._error.text() if not self._error_row.isHidden() else ""

    @Slot()
    def open_camera(self) -> None:
        """Take the selfie with a camera (after consent); the capture replaces the current photo."""
        if self._closed or not self._ensure_consent():
            return
        data = CameraDialog.take_photo(self)
        if data is not None and not self._closed:
            self._load(lambda: prepare_photo(data, "the camera photo"))

    @Slot()
    def open_photo_dialog(self) -> None:
        """Ask for a photo file (after consent) and load it."""
        if self._closed or not self._ensure_consent():
            return
        name, _filter = QFileDialog.getOpenFileName(self, "Open a Photo of Your Face", "",
                                                    "Photos (*.jpg *.jpeg *.png);;All files (*)")
        if name and not self._closed:
            self._load_path(Path(name))

    def load_photo_file(self, path: str | Path) -> bool:
        """Load ``path`` as the selfie (after consent); False when consent was refused.

        Loading finishes in the background: :attr:`photo` changes, or :attr:`photo_message` says why not.
        """
        if self._closed or not self._ensure_consent():
            return False
        self._load_path(Path(path))
        return True

    @Slot()
    def submit(self) -> None:
        """Create a job for the chosen provider (with the photo when it needs one) and follow it."""
        if self._closed or self._busy:
            return
        info = self._providers[self.provider]
        photo = self._photo if info.needs_selfie else None
        if info.needs_selfie and photo is None:
            self._show_photo_message("Choose a photo first: use Camera…, Open Photo…, or drop one here.")
            return
        if photo is not None and not self._ensure_consent():
            return
        client = self._get_client()
        self._clear_job_ui()
        if client is None:
            self._fail(NOT_CONNECTED, self.submit)
            return
        self._set_busy(True)
        self._job_id = None
        self._job_client = client
        self._action_url = None
        self._job_bar.setValue(0)
        self._job_bar.setFormat("Uploading the photo…" if photo is not None else "Starting…")
        self._job_bar.show()
        self._status.setText(f"Sending the job to {info.label}.")
        provider, blendshapes = info.name, self.blendshapes
        data = photo.data if photo is not None else None
        filename = None if photo is None else ("selfie.png" if photo.mime_type == "image/png" else "selfie.jpg")
        run_task(lambda: client.create_job(data, filename=filename, blendshapes=blendshapes, provider=provider),
                 self._on_job_created, lambda exc: self._on_call_failed(exc, None, self.submit))

    @Slot()
    def retry(self) -> None:
        """Repeat the step that failed: a new job after a failed one, or resume following / downloading."""
        action, self._retry = self._retry, None
        self._error_row.hide()
        if action is not None and not self._closed:
            action()

    def shutdown(self) -> None:
        """Stop polling and downloading; answers still on their way are ignored."""
        self._closed = True
        self._poll_timer.stop()
        self._downloader.cancel()

    # -- Qt events -----------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        self.shutdown()
        super().closeEvent(event)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt override)
        # Any file is accepted here; the drop says clearly why a non-photo cannot be used.
        if event.mimeData().hasUrls() and not self._closed:
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 (Qt override)
        if event.mimeData().hasUrls() and not self._closed:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt override)
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if not urls or self._closed:
            return
        event.acceptProposedAction()
        local = [Path(u.toLocalFile()) for u in urls if u.isLocalFile()]
        if not local:
            self._show_photo_message("Only a photo file from this computer can be dropped here.")
            return
        self.load_photo_file(local[0])

    # -- photos --------------------------------------------------------------------------------------
    def _alive(self) -> bool:
        return not self._closed and shiboken6.isValid(self)

    def _load_path(self, path: Path) -> None:
        self._load(lambda: _read_photo_file(path))

    def _load(self, make: Callable[[], Photo]) -> None:
        self._load_token += 1
        token = self._load_token
        self._photo_message.hide()
        self._photo_info.setText("Reading the photo…")
        run_task(make, lambda photo: self._on_photo(photo, token), lambda exc: self._on_photo_error(exc, token))

    def _on_photo(self, photo: Photo, token: int) -> None:
        if not self._alive() or token != self._load_token:
            return
        self._photo = photo
        self._view.set_image(_qimage(photo))
        kind = "PNG" if photo.mime_type == "image/png" else "JPEG"
        self._photo_info.setText(f"{photo.source}: {photo.width}×{photo.height} {kind}, upright. This is the "
                                 "picture that will be sent, without its metadata.")
        self._on_provider_changed()  # the in3D note mentions a photo that will not be sent

    def _on_photo_error(self, exc: BaseException, token: int) -> None:
        if not self._alive() or token != self._load_token:
            return
        self._photo_info.setText(f"{self._photo.source}: {self._photo.width}×{self._photo.height}, kept."
                                 if self._photo is not None else "")
        self._show_photo_message(str(exc) if isinstance(exc, PhotoError) else describe_error(exc))

    def _show_photo_message(self, text: str) -> None:
        self._photo_message.setText(text)
        self._photo_message.show()

    # -- provider and options ------------------------------------------------------------------------
    def _on_provider_changed(self, _index: int = 0) -> None:
        info = self._providers[self.provider]
        previous = self._blendshape_combo.currentData()
        self._blendshape_combo.clear()
        for name in info.blendshapes:
            self._blendshape_combo.addItem(BLENDSHAPE_LABELS.get(name, name), name)
        index = self._blendshape_combo.findData(previous)
        self._blendshape_combo.setCurrentIndex(max(0, index))
        self._blendshape_combo.setEnabled(len(info.blendshapes) > 1)
        note = info.note
        if not info.needs_selfie and self._photo is not None:
            note += " The photo above is not sent."
        self._provider_note.setText(note)
        self._update_submit()

    def _update_submit(self) -> None:
        info = self._providers[self.provider]
        ready = self._photo is not None or not info.needs_selfie
        self._submit_button.setEnabled(ready and not self._busy and not self._closed)
        self._submit_button.setToolTip("" if ready else "Choose a photo first")
        for button in (self._camera_button, self._open_button, self._provider_combo):
            button.setEnabled(not self._busy)
        self._blendshape_combo.setEnabled(not self._busy and len(info.blendshapes) > 1)

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self._update_submit()

    # -- the job -------------------------------------------------------------------------------------
    def _clear_job_ui(self) -> None:
        self._retry = None
        self._error_row.hide()
        self._action_button.hide()
        self._download_bar.hide()
        self._status.clear()

    def _on_job_created(self, job_id: object) -> None:
        if not self._alive():
            return
        self._job_id = str(job_id)
        self.sig_job_created.emit(self._job_id)
        self._job_bar.setFormat("Queued…")
        self._status.setText("The service accepted the job.")
        self._poll()

    @Slot()
    def _poll(self) -> None:
        job_id, client = self._job_id, self._job_client
        if not self._alive() or job_id is None or client is None:
            return
        run_task(lambda: client.job(job_id), lambda status: self._on_status(status, job_id),
                 lambda exc: self._on_call_failed(exc, job_id, self._resume_polling))

    def _resume_polling(self) -> None:
        if self._job_id is None:
            self.submit()
            return
        client = self._get_client()
        if client is None:
            self._fail(NOT_CONNECTED, self._resume_polling)
            return
        self._job_client = client
        self._set_busy(True)
        self._job_bar.show()
        self._poll()

    def _on_status(self, status: JobStatus, job_id: str) -> None:
        if not self._alive() or job_id != self._job_id:
            return
        if status.action_url and status.action_url != self._action_url:
            # Opened once per URL: the poll repeats it every half second while the user is in the page.
            self._action_url = status.action_url
            QDesktopServices.openUrl(QUrl(status.action_url))
            self._action_button.show()
        if status.status == "error":
            self._job_bar.setFormat("Failed")
            self._fail(status.error or "the provider failed without saying why", self.submit)
            return
        percent = 100 if status.status == "done" else max(0, min(99, round(status.progress * 100)))
        self._job_bar.setValue(percent)
        if status.status == "done":
            self._job_bar.setFormat("Done (100 %)")
            self._action_button.hide()
            if not status.asset_id:
                self._fail("the job finished without an avatar; try again", self.submit)
                return
            self._asset_id = status.asset_id
            self._start_download(status.asset_id)
            return
        if status.status == "queued":
            self._job_bar.setFormat("Queued…")
            self._status.setText("Waiting for a worker to start the job.")
        else:
            self._job_bar.setFormat(f"Processing {percent} %")
            self._status.setText("Finish the avatar in the provider's page; this window follows it."
                                 if status.action_url else "Building the avatar.")
        self._poll_timer.start()

    def _reopen_action_url(self) -> None:
        if self._action_url:
            QDesktopServices.openUrl(QUrl(self._action_url))

    # -- the download --------------------------------------------------------------------------------
    def _start_download(self, asset_id: str) -> None:
        client = self._job_client or self._get_client()  # the job's own user owns the asset
        if client is None:
            self._fail(NOT_CONNECTED, self._start_download_again)
            return
        self._set_busy(True)
        self._status.setText("Downloading the avatar.")
        self._download_bar.setRange(0, 100)
        self._download_bar.setValue(0)
        self._download_bar.setFormat("Getting the download link…")
        self._download_bar.show()
        self._downloader.start(client, asset_id, self._download_dir)

    def _start_download_again(self) -> None:
        if self._asset_id is None:
            self._resume_polling()
        else:
            self._start_download(self._asset_id)

    def _on_download_progress(self, received: object, total: object) -> None:
        if self._alive():
            set_download_progress(self._download_bar, received, total)

    def _on_downloaded(self, path: str, asset_id: str) -> None:
        if not self._alive():
            return
        self._download_bar.setRange(0, 100)
        self._download_bar.setValue(100)
        self._download_bar.setFormat("Downloaded (100 %)")
        self._status.setText("The avatar is ready.")
        self._set_busy(False)
        self.sig_avatar_ready.emit(path, asset_id)

    # -- failures ------------------------------------------------------------------------------------
    def _on_call_failed(self, exc: BaseException, job_id: str | None, retry: Callable[[], None]) -> None:
        if not self._alive() or (job_id is not None and job_id != self._job_id):
            return
        self._fail(describe_error(exc), retry)

    def _fail(self, message: str, retry: Callable[[], None]) -> None:
        """Show ``message`` with a Retry button that repeats ``retry``; nothing keeps running meanwhile."""
        if not self._alive():
            return
        self._poll_timer.stop()
        self._set_busy(False)
        self._retry = retry
        self._error.setText(message)
        self._error_row.show()
        self._status.clear()
        self._download_bar.hide()
