"""Take the selfie with a camera: pick a device, see the live picture, capture, retake, use the photo.

Why a modal dialog that hands back JPEG bytes (not a QImage, not a file): the selfie panel treats a
captured photo exactly like an opened file — the same decoding, checks and preview — so the camera
path cannot drift from the file path, and no selfie is written to disk just to be read back.

QtMultimedia ships in ``PySide6-Addons``, not in ``PySide6-Essentials``. When it cannot be imported
the dialog still opens and says why camera support is missing, so the rest of the app keeps working
and the user is pointed at Open Photo…. A machine without a camera gets the same kind of plain
sentence, and the capture buttons stay disabled. The camera is stopped whenever a photo is taken and
when the dialog closes, so its light is never left on.
"""

from __future__ import annotations

from typing import Final

from PySide6.QtCore import QBuffer, QByteArray, QCameraPermission, QCoreApplication, QIODevice, Qt
from PySide6.QtGui import QCloseEvent, QImage
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.gui.image_view import ScaledImageView

try:
    from PySide6.QtMultimedia import QCamera, QCameraDevice, QImageCapture, QMediaCaptureSession, QMediaDevices
    from PySide6.QtMultimediaWidgets import QVideoWidget
except ImportError as _import_error:  # PySide6-Addons missing, or a system library it needs
    MULTIMEDIA_ERROR: str | None = (f"{_import_error}. It comes with the PySide6-Addons package "
                                    "(pip install PySide6-Addons).")
else:
    MULTIMEDIA_ERROR = None

NO_CAMERA: Final[str] = "No camera was found. Connect one, or use Open Photo…"
JPEG_QUALITY: Final[int] = 92
"""High enough that the face detector sees what the camera saw; the service re-encodes anyway."""

_PAGE_MESSAGE, _PAGE_LIVE, _PAGE_STILL = 0, 1, 2


def encode_jpeg(image: QImage, quality: int = JPEG_QUALITY) -> bytes:
    """``image`` as JPEG bytes (RGB, no alpha: JPEG has none and some encoders refuse it)."""
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.convertToFormat(QImage.Format.Format_RGB888).save(buffer, "JPG", quality):
        raise OSError("the captured picture could not be encoded as JPEG")
    data: QByteArray = buffer.data()
    return bytes(data.data())


class CameraDialog(QDialog):
    """Capture a selfie from a camera; after ``exec()`` returns Accepted, :attr:`photo_jpeg` holds it.

    ``CameraDialog.take_photo(parent)`` is the one-call form: JPEG bytes, or None when cancelled.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Take a Selfie")
        self.setObjectName("camera_dialog")
        self.resize(720, 600)
        self._photo: bytes | None = None
        self._still = QImage()
        self._closing = False
        self._camera: QCamera | None = None
        self._video: QVideoWidget | None = None

        self._device_combo = QComboBox(self)
        self._device_combo.setObjectName("device_combo")
        self._device_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self._message = QLabel(self)
        self._message.setObjectName("camera_message")
        self._message.setWordWrap(True)
        self._message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._still_view = ScaledImageView(self)
        self._stack = QStackedWidget(self)
        self._stack.addWidget(self._message)  # _PAGE_MESSAGE
        self._live_page = QWidget(self)
        self._live_layout = QVBoxLayout(self._live_page)
        self._live_layout.setContentsMargins(0, 0, 0, 0)
        self._stack.addWidget(self._live_page)  # _PAGE_LIVE; the video widget is made on first use
        self._stack.addWidget(self._still_view)  # _PAGE_STILL
        self._status = QLabel(self)
        self._status.setObjectName("camera_status")
        self._status.setWordWrap(True)

        self._capture_button = QPushButton("Capture", self)
        self._capture_button.setObjectName("capture_button")
        self._capture_button.clicked.connect(self.capture)
        self._retake_button = QPushButton("Retake", self)
        self._retake_button.setObjectName("retake_button")
        self._retake_button.clicked.connect(self.retake)
        self._use_button = QPushButton("Use Photo", self)
        self._use_button.setObjectName("use_button")
        self._use_button.clicked.connect(self.accept)
        cancel = QPushButton("Cancel", self)
        cancel.clicked.connect(self.reject)

        top = QHBoxLayout()
        top.addWidget(QLabel("Camera:", self))
        top.addWidget(self._device_combo, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self._capture_button)
        buttons.addWidget(self._retake_button)
        buttons.addStretch(1)
        buttons.addWidget(self._use_button)
        buttons.addWidget(cancel)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self._stack, 1)
        layout.addWidget(self._status)
        layout.addLayout(buttons)

        if MULTIMEDIA_ERROR is not None:
            self._show_message(f"Camera support is not available: {MULTIMEDIA_ERROR}")
            self._device_combo.setEnabled(False)
            self._update_buttons()
            return
        self._devices = QMediaDevices(self)
        self._session = QMediaCaptureSession(self)
        self._capture = QImageCapture(self)
        self._capture.setQuality(QImageCapture.Quality.VeryHighQuality)
        self._session.setImageCapture(self._capture)
        self._capture.imageCaptured.connect(self._on_captured)
        self._capture.errorOccurred.connect(self._on_capture_error)
        self._capture.readyForCaptureChanged.connect(lambda _ready: self._update_buttons())
        self._devices.videoInputsChanged.connect(self._refresh_devices)
        self._device_combo.currentIndexChanged.connect(self._on_device_chosen)
        self._refresh_devices()

    # -- public API ----------------------------------------------------------------------------------
    @classmethod
    def take_photo(cls, parent: QWidget | None = None) -> bytes | None:
        """Run the dialog; the captured JPEG, or None when the user cancelled or no photo was taken."""
        dialog = cls(parent)
        try:
            return dialog.photo_jpeg if dialog.exec() == QDialog.DialogCode.Accepted else None
        finally:
            dialog.deleteLater()

    @property
    def photo_jpeg(self) -> bytes | None:
        """The captured photo as JPEG, once the user pressed Use Photo."""
        return self._photo

    @property
    def camera_available(self) -> bool:
        """Whether at least one camera can be offered (and QtMultimedia works here)."""
        return MULTIMEDIA_ERROR is None and self._device_combo.count() > 0

    @property
    def message(self) -> str:
        """The sentence shown instead of the picture (no camera, no support, a camera error), or ''."""
        return self._message.text() if self._stack.currentIndex() == _PAGE_MESSAGE else ""

    def capture(self) -> None:
        """Take a still from the live picture; it replaces the preview until Retake."""
        if self._camera is None or not self._capture.isReadyForCapture():
            return
        self._status.setText("Capturing…")
        self._capture.capture()

    def retake(self) -> None:
        """Drop the still and go back to the live picture of the chosen camera."""
        self._still = QImage()
        self._photo = None
        self._start_camera()

    # -- QDialog -------------------------------------------------------------------------------------
    def accept(self) -> None:
        if self._still.isNull():
            return
        try:
            self._photo = encode_jpeg(self._still)
        except OSError as exc:
            self._status.setText(str(exc))
            return
        self._stop_camera()
        super().accept()

    def done(self, result: int) -> None:
        """Every way out (Use Photo, Cancel, Escape, the close button) ends here: release the camera."""
        self._closing = True
        self._stop_camera()
        super().done(result)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        self._closing = True
        self._stop_camera()
        super().closeEvent(event)

    # -- devices and the camera ----------------------------------------------------------------------
    def _refresh_devices(self) -> None:
        """Fill the device list (again, when a camera is plugged in or out), keeping the choice if it remains."""
        previous = self._device_combo.currentData()
        inputs = QMediaDevices.videoInputs()
        self._device_combo.blockSignals(True)
        try:
            self._device_combo.clear()
            for device in inputs:
                self._device_combo.addItem(device.description(), device)
            ids = [bytes(d.id().data()) for d in inputs]
            keep = bytes(previous.id().data()) if isinstance(previous, QCameraDevice) else None
            default = QMediaDevices.defaultVideoInput()
            wanted = keep if keep in ids else bytes(default.id().data()) if not default.isNull() else None
            self._device_combo.setCurrentIndex(ids.index(wanted) if wanted in ids else 0 if ids else -1)
        finally:
            self._device_combo.blockSignals(False)
        self._device_combo.setEnabled(bool(inputs))
        if not inputs:
            self._stop_camera()
            self._still = QImage()
            self._show_message(NO_CAMERA)
            self._update_buttons()
        elif self._camera is None or keep not in ids:
            self._start_camera()

    def _on_device_chosen(self, _index: int) -> None:
        self._still = QImage()
        self._photo = None
        self._start_camera()

    def _start_camera(self) -> None:
        device = self._device_combo.currentData()
        self._stop_camera()
        if self._closing or not isinstance(device, QCameraDevice) or device.isNull():
            self._update_buttons()
            return
        app = QCoreApplication.instance()
        status = app.checkPermission(QCameraPermission())
        if status == Qt.PermissionStatus.Undetermined:
            self._show_message("Waiting for permission to use the camera…")
            app.requestPermission(QCameraPermission(), self, self._on_permission)
            return
        if status == Qt.PermissionStatus.Denied:
            self._show_message("Avatar Studio is not allowed to use the camera. Allow it in the system's privacy "
                               "settings, or use Open Photo…")
            self._update_buttons()
            return
        camera = QCamera(device, self)
        camera.errorOccurred.connect(self._on_camera_error)
        camera.activeChanged.connect(lambda _active: self._update_buttons())
        self._camera = camera
        self._session.setCamera(camera)
        self._session.setVideoOutput(self._video_widget())
        self._stack.setCurrentIndex(_PAGE_LIVE)
        self._status.setText(f"Live picture from {device.description()}. Look at the camera and press Capture.")
        camera.start()
        self._update_buttons()

    def _on_permission(self, _permission: object) -> None:
        if not self._closing:
            self._start_camera()

    def _video_widget(self) -> QVideoWidget:
        if self._video is None:
            self._video = QVideoWidget(self._live_page)
            self._video.setObjectName("live_preview")
            self._live_layout.addWidget(self._video)
        return self._video

    def _stop_camera(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        camera.stop()
        self._session.setCamera(None)
        camera.deleteLater()

    # -- capture -------------------------------------------------------------------------------------
    def _on_captured(self, _request_id: int, image: QImage) -> None:
        if self._closing or image.isNull():
            return
        self._still = image.copy()
        self._stop_camera()
        self._still_view.set_image(self._still)
        self._stack.setCurrentIndex(_PAGE_STILL)
        self._status.setText(f"Captured {image.width()}×{image.height()}. Use Photo, or Retake.")
        self._update_buttons()

    def _on_capture_error(self, _request_id: int, _error: object, text: str) -> None:
        if not self._closing:
            self._status.setText(f"The photo could not be taken: {text or 'the camera did not deliver a picture'}")
            self._update_buttons()

    def _on_camera_error(self, _error: object, text: str) -> None:
        if self._closing:
            return
        self._stop_camera()
        self._show_message(f"The camera stopped with an error: {text or 'unknown error'}. Choose another camera, "
                           "reconnect it, or use Open Photo…")
        self._update_buttons()

    def _show_message(self, text: str) -> None:
        self._message.setText(text)
        self._stack.setCurrentIndex(_PAGE_MESSAGE)
        self._status.clear()

    def _update_buttons(self) -> None:
        have_still = not self._still.isNull()
        live = (MULTIMEDIA_ERROR is None and self._camera is not None and self._camera.isActive()
                and self._capture.isReadyForCapture())
        self._capture_button.setEnabled(live and not have_still)
        self._retake_button.setEnabled(have_still and self._device_combo.count() > 0)
        self._use_button.setEnabled(have_still)
