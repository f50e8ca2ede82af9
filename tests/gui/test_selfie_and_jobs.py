"""The selfie panel, the camera dialog and the jobs list against a real embedded service.

Why real: the panels' whole job is talking to the service through the real client off the GUI thread
— upload, poll, signed URL, streamed download — and the failures worth showing (a provider that finds
no face) come from the real ``local`` provider. Nothing of ours is mocked: the one stand-in is a
*vendor* (an in3D-like page flow), plugged in through the public provider registry, and the browser,
replaced through Qt's own ``QDesktopServices.setUrlHandler``. The camera test relies on this machine
having no camera, and skips saying so when there is one.

Photos: ``skimage.data.astronaut()`` (NASA, public domain) and ``skimage.data.coffee()`` (no face).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import skimage.data
from PIL import Image
from PySide6.QtCore import QMimeData, QObject, QPoint, QPointF, Qt, QThreadPool, QTimer, QUrl, Slot
from PySide6.QtGui import QDesktopServices, QDragEnterEvent, QDropEvent, QImage
from PySide6.QtMultimedia import QMediaDevices
from PySide6.QtWidgets import QApplication, QDialog, QProgressBar, QPushButton, QTreeWidget

from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.client import ServiceClient
from avatar_studio.config import Settings
from avatar_studio.gui.camera_dialog import NO_CAMERA, CameraDialog, encode_jpeg
from avatar_studio.gui.jobs_panel import JobsPanel
from avatar_studio.gui.selfie_panel import PhotoError, ProviderInfo, SelfiePanel, prepare_photo
from avatar_studio.providers.base import (
    JobOptions,
    ProviderError,
    ProviderResult,
    ProviderStatus,
    Selfie,
    register_provider,
)
from avatar_studio.service.runner import EmbeddedService

JOB_TIMEOUT_MS = 120_000
EXIF_ORIENTATION = 0x0112


# -- photos ------------------------------------------------------------------------------------------
def _upright_astronaut() -> np.ndarray:
    """A portrait (512 tall, 384 wide) crop around the face, so a wrong rotation changes the shape."""
    return skimage.data.astronaut()[:, 64:448]


def _jpeg(pixels: np.ndarray, orientation: int | None = None) -> bytes:
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(pixels).save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


def _sideways_astronaut_jpeg() -> bytes:
    """Stored as a phone stores a portrait: pixels turned 90° counter-clockwise, tag 6 to turn them back."""
    stored = np.rot90(_upright_astronaut(), 1)  # counter-clockwise: 384 tall, 512 wide
    return _jpeg(np.ascontiguousarray(stored), orientation=6)


def _pixels(image: QImage) -> np.ndarray:
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(rgb.constBits(), np.uint8, count=rgb.sizeInBytes()).reshape(rgb.height(),
                                                                                   rgb.bytesPerLine())
    return rows[:, : rgb.width() * 3].reshape(rgb.height(), rgb.width(), 3)


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedService]:
    data = tmp_path_factory.mktemp("service")
    settings = Settings.from_env(env={}, data_dir=data).with_(provider="local", poll_interval_s=0.02)
    with EmbeddedService(settings, workers=1) as running:
        yield running


@pytest.fixture
def client(service: EmbeddedService) -> Iterator[ServiceClient]:
    """A fresh user per test who confirmed their age and consented to selfie processing."""
    with ServiceClient(service.base_url, backoff=0.01) as signed_in:
        signed_in.create_user(age_confirmed=True, consent_selfie=True)
        yield signed_in
        QThreadPool.globalInstance().waitForDone(30_000)  # no call of a test outlives its client


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    files = {"astronaut": tmp_path / "astronaut-sideways.jpg", "coffee": tmp_path / "coffee.jpg",
             "notes": tmp_path / "notes.txt"}
    files["astronaut"].write_bytes(_sideways_astronaut_jpeg())
    files["coffee"].write_bytes(_jpeg(skimage.data.coffee()))
    files["notes"].write_text("not a photo\n", encoding="utf-8")
    return files


class ConsentLog:
    """``ensure_consent`` for the panel: answers ``allow`` and counts the questions."""

    def __init__(self, allow: bool) -> None:
        self.allow = allow
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.allow


MakeSelfiePanel = Callable[..., SelfiePanel]


@pytest.fixture
def make_selfie_panel(qtbot, tmp_path: Path) -> Iterator[MakeSelfiePanel]:
    panels: list[SelfiePanel] = []

    def factory(client: ServiceClient | None, consent: ConsentLog | None = None) -> SelfiePanel:
        panel = SelfiePanel(lambda: client, consent or ConsentLog(True), tmp_path / "avatars")
        qtbot.addWidget(panel)
        panel.resize(480, 720)
        panel.show()
        qtbot.waitExposed(panel)
        panels.append(panel)
        return panel

    yield factory
    for panel in panels:
        panel.close()
    QThreadPool.globalInstance().waitForDone(30_000)


def _load(qtbot, panel: SelfiePanel, path: Path) -> None:
    assert panel.load_photo_file(path)
    qtbot.waitUntil(lambda: panel.photo is not None and panel.photo.source == path.name, timeout=10_000)


def _close_modal_dialogs() -> None:
    """Safety net: a dialog that should not have opened is closed, so the test fails instead of hanging."""
    modal = QApplication.activeModalWidget()
    if isinstance(modal, QDialog):
        modal.reject()


# -- selfie panel ------------------------------------------------------------------------------------
def test_an_exif_rotated_photo_is_shown_and_sent_upright(qtbot, make_selfie_panel: MakeSelfiePanel,
                                                         client: ServiceClient, photos: dict[str, Path]) -> None:
    panel = make_selfie_panel(client)
    _load(qtbot, panel, photos["astronaut"])

    upright = _upright_astronaut()
    shown = _pixels(panel.shown_image)
    assert shown.shape == upright.shape  # 512 tall, 384 wide: the tag was applied
    assert np.abs(shown.astype(int) - upright).mean() < 6  # the same picture, up to JPEG noise

    photo = panel.photo
    assert photo is not None and (photo.width, photo.height) == (384, 512)
    with Image.open(io.BytesIO(photo.data)) as sent:
        assert sent.size == (384, 512)
        assert EXIF_ORIENTATION not in sent.getexif()  # upright pixels need no tag; no metadata leaves
    assert panel.findChild(QPushButton, "submit_button").isEnabled()


def test_submit_with_the_local_provider_downloads_an_arkit_avatar(
        qtbot, make_selfie_panel: MakeSelfiePanel, client: ServiceClient, photos: dict[str, Path],
        tmp_path: Path) -> None:
    panel = make_selfie_panel(client)
    _load(qtbot, panel, photos["astronaut"])
    panel.provider = "local"
    panel.blendshapes = "arkit"
    job_bar = panel.findChild(QProgressBar, "job_bar")
    download_bar = panel.findChild(QProgressBar, "download_bar")
    job_values: list[int] = []
    download_values: list[int] = []
    job_bar.valueChanged.connect(job_values.append)
    download_bar.valueChanged.connect(download_values.append)

    with qtbot.waitSignal(panel.sig_job_created, timeout=20_000) as created, \
            qtbot.waitSignal(panel.sig_avatar_ready, timeout=JOB_TIMEOUT_MS) as ready:
        qtbot.mouseClick(panel.findChild(QPushButton, "submit_button"), Qt.MouseButton.LeftButton)
        assert panel.busy

    path, asset_id = ready.args
    assert job_bar.value() == 100 and 100 in job_values
    assert download_bar.value() == 100 and 100 in download_values
    assert Path(path) == tmp_path / "avatars" / f"{asset_id}.glb"
    assert len(load_avatar(Path(path)).morph_names) == 52
    assert panel.job_id == created.args[0]
    assert client.job(panel.job_id).asset_id == asset_id
    assert not panel.busy and panel.error_message == ""


def test_a_photo_without_a_face_shows_the_providers_message_and_retry_makes_a_new_job(
        qtbot, make_selfie_panel: MakeSelfiePanel, client: ServiceClient, photos: dict[str, Path]) -> None:
    panel = make_selfie_panel(client)
    _load(qtbot, panel, photos["coffee"])
    retry = panel.findChild(QPushButton, "retry_button")

    with qtbot.waitSignal(panel.sig_job_created, timeout=20_000) as first:
        panel.submit()
    qtbot.waitUntil(lambda: panel.error_message != "", timeout=JOB_TIMEOUT_MS)
    assert "no face was found" in panel.error_message
    assert panel.error_message == client.job(first.args[0]).error  # the provider's own words
    assert retry.isVisible() and not panel.busy

    with qtbot.waitSignal(panel.sig_job_created, timeout=20_000) as second:
        qtbot.mouseClick(retry, Qt.MouseButton.LeftButton)
    assert second.args[0] != first.args[0]
    qtbot.waitUntil(lambda: "no face was found" in panel.error_message, timeout=JOB_TIMEOUT_MS)


def test_refused_consent_opens_nothing(qtbot, make_selfie_panel: MakeSelfiePanel, client: ServiceClient,
                                       photos: dict[str, Path]) -> None:
    consent = ConsentLog(False)
    panel = make_selfie_panel(client, consent)
    guard = QTimer()
    guard.timeout.connect(_close_modal_dialogs)
    guard.start(200)
    try:
        assert not panel.load_photo_file(photos["astronaut"])
        qtbot.mouseClick(panel.findChild(QPushButton, "camera_button"), Qt.MouseButton.LeftButton)
        qtbot.mouseClick(panel.findChild(QPushButton, "open_photo_button"), Qt.MouseButton.LeftButton)
        qtbot.wait(300)
    finally:
        guard.stop()
    assert consent.asked == 3
    assert panel.photo is None and panel.shown_image.isNull()
    assert panel.photo_message == "" and panel.job_id is None
    assert client.jobs().total == 0
    assert not panel.findChild(QPushButton, "submit_button").isEnabled()


def _drop(panel: SelfiePanel, path: Path) -> bool:
    """Drag ``path`` onto the panel as a file manager does: enter, then drop; whether the enter was accepted."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    enter = QDragEnterEvent(QPoint(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(panel, enter)
    if enter.isAccepted():
        QApplication.sendEvent(panel, QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime,
                                                 Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    return enter.isAccepted()


def test_dropping_a_file_that_is_not_a_photo_says_so(qtbot, make_selfie_panel: MakeSelfiePanel,
                                                     client: ServiceClient, photos: dict[str, Path]) -> None:
    panel = make_selfie_panel(client)
    assert _drop(panel, photos["notes"])
    qtbot.waitUntil(lambda: panel.photo_message != "", timeout=10_000)
    assert panel.photo_message == "notes.txt is not a photo: choose a JPEG or PNG image"
    assert panel.photo is None

    assert _drop(panel, photos["astronaut"])  # a photo dropped afterwards is taken
    qtbot.waitUntil(lambda: panel.photo is not None, timeout=10_000)
    assert panel.photo_message == ""


def test_in3d_needs_no_photo_and_offers_only_arkit(make_selfie_panel: MakeSelfiePanel,
                                                   client: ServiceClient) -> None:
    panel = make_selfie_panel(client)
    submit = panel.findChild(QPushButton, "submit_button")
    assert not submit.isEnabled()  # local needs a photo
    panel.provider = "in3d"
    assert submit.isEnabled()
    assert panel.blendshapes == "arkit"
    with pytest.raises(ValueError, match="basic"):
        panel.blendshapes = "basic"


def test_closing_the_panel_mid_job_stops_everything(qtbot, make_selfie_panel: MakeSelfiePanel,
                                                    client: ServiceClient, photos: dict[str, Path],
                                                    tmp_path: Path) -> None:
    panel = make_selfie_panel(client)
    _load(qtbot, panel, photos["astronaut"])
    ready: list[tuple[str, str]] = []
    panel.sig_avatar_ready.connect(lambda path, asset: ready.append((path, asset)))
    with qtbot.waitSignal(panel.sig_job_created, timeout=20_000) as created:
        panel.submit()
    panel.close()
    client.wait_for_job(created.args[0], timeout=JOB_TIMEOUT_MS / 1000, interval=0.1)  # the service finishes
    qtbot.wait(1500)  # three poll intervals: none may fire, nothing may be downloaded
    QThreadPool.globalInstance().waitForDone(10_000)
    assert ready == []
    assert not list((tmp_path / "avatars").glob("*.glb"))


def test_a_photo_too_small_for_a_face_is_refused_with_its_size() -> None:
    tiny = _jpeg(np.zeros((40, 90, 3), np.uint8))
    with pytest.raises(PhotoError, match="only 90×40 pixels; a selfie needs at least 64"):
        prepare_photo(tiny, "tiny.jpg")


def test_a_camera_picture_becomes_the_same_kind_of_photo_as_a_file() -> None:
    """The camera path ends in encode_jpeg → prepare_photo, exactly like a file; checked with a real image."""
    upright = np.ascontiguousarray(_upright_astronaut())
    image = QImage(upright.tobytes(), 384, 512, 384 * 3, QImage.Format.Format_RGB888).copy()
    photo = prepare_photo(encode_jpeg(image), "the camera photo")
    assert (photo.width, photo.height, photo.mime_type) == (384, 512, "image/jpeg")
    with Image.open(io.BytesIO(photo.data)) as sent:
        assert np.abs(np.asarray(sent.convert("RGB"), int) - upright).mean() < 6


class _InPageVendor:
    """A vendor like in3D, plugged in through the public provider registry: no selfie; for the first
    ``PAGE_SECONDS`` of a job the user must work in the vendor's page (``action_url``), then the avatar
    is ready. Time-based, so the panel's half-second polls see the page phase whatever the worker's pace.
    """

    name: ClassVar[str] = "test-in-page"
    needs_selfie: ClassVar[bool] = False
    PAGE_URL: ClassVar[str] = "https://vendor.example.invalid/make-your-avatar"
    PAGE_SECONDS: ClassVar[float] = 1.6

    def __init__(self, api_key: str | None) -> None:
        del api_key

    def check(self, selfie: Selfie | None, options: JobOptions) -> None:
        if selfie is not None:
            raise ProviderError("this vendor does not use a selfie")

    def start(self, selfie: Selfie | None, options: JobOptions) -> str:
        return f"page-{time.time():.6f}"

    def poll(self, provider_job_id: str) -> ProviderStatus:
        elapsed = time.time() - float(provider_job_id.removeprefix("page-"))
        if elapsed < self.PAGE_SECONDS:
            return ProviderStatus(progress=0.4 * elapsed / self.PAGE_SECONDS, action_url=self.PAGE_URL)
        return ProviderStatus(progress=1.0, done=True)

    def result(self, provider_job_id: str) -> ProviderResult:
        return ProviderResult(glb=make_arkit_head_glb(500, texture=False))


class _UrlRecorder(QObject):
    """Receives what QDesktopServices.openUrl would hand to the browser."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    @Slot(QUrl)
    def open_url(self, url: QUrl) -> None:
        self.opened.append(url.toString())


@pytest.fixture
def opened_urls() -> Iterator[list[str]]:
    recorder = _UrlRecorder()
    QDesktopServices.setUrlHandler("https", recorder, "open_url")
    yield recorder.opened
    QDesktopServices.unsetUrlHandler("https")


def test_a_provider_page_opens_once_in_the_browser_and_can_be_reopened(
        qtbot, client: ServiceClient, tmp_path: Path, opened_urls: list[str]) -> None:
    register_provider(_InPageVendor.name, _InPageVendor)
    in_page = ProviderInfo(_InPageVendor.name, "In-page vendor", False, "You build the avatar in its page.",
                           ("arkit",))
    panel = SelfiePanel(lambda: client, ConsentLog(False), tmp_path / "avatars", providers=(in_page,))
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitExposed(panel)
    action = panel.findChild(QPushButton, "action_button")
    assert panel.findChild(QPushButton, "submit_button").isEnabled()  # no photo needed

    with qtbot.waitSignal(panel.sig_avatar_ready, timeout=JOB_TIMEOUT_MS) as ready:
        panel.submit()  # no selfie is sent, so consent (refused here) is not asked
        qtbot.waitUntil(action.isVisible, timeout=10_000)
        assert opened_urls == [_InPageVendor.PAGE_URL]
        qtbot.mouseClick(action, Qt.MouseButton.LeftButton)
        assert opened_urls == [_InPageVendor.PAGE_URL] * 2
    assert opened_urls == [_InPageVendor.PAGE_URL] * 2  # every later poll repeated the URL: not reopened
    assert not action.isVisible()
    assert len(load_avatar(Path(ready.args[0])).morph_names) == 52
    panel.close()


# -- camera dialog -----------------------------------------------------------------------------------
def test_the_camera_dialog_says_there_is_no_camera(qtbot) -> None:
    if QMediaDevices.videoInputs():
        pytest.skip("this machine has a camera; the no-camera path needs one without")
    dialog = CameraDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert not dialog.camera_available
    assert dialog.message == NO_CAMERA
    for name in ("capture_button", "retake_button", "use_button"):
        assert not dialog.findChild(QPushButton, name).isEnabled(), name
    dialog.capture()  # harmless without a camera
    dialog.reject()
    assert dialog.photo_jpeg is None


# -- jobs panel --------------------------------------------------------------------------------------
def test_the_jobs_list_is_newest_first_pages_and_reopens_a_finished_avatar(
        qtbot, client: ServiceClient, tmp_path: Path) -> None:
    done_id = client.create_job(_jpeg(_upright_astronaut()), filename="astronaut.jpg", provider="local")
    assert client.wait_for_job(done_id, timeout=JOB_TIMEOUT_MS / 1000, interval=0.1).status == "done"
    failed_id = client.create_job(_jpeg(skimage.data.coffee()), filename="coffee.jpg", provider="local")
    failed = client.wait_for_job(failed_id, timeout=JOB_TIMEOUT_MS / 1000, interval=0.1)
    assert failed.status == "error"

    panel = JobsPanel(lambda: client, download_dir=tmp_path / "reopened", page_size=1)
    qtbot.addWidget(panel)
    panel.resize(700, 400)
    panel.show()
    qtbot.waitExposed(panel)
    tree = panel.findChild(QTreeWidget, "jobs_tree")
    more = panel.findChild(QPushButton, "load_more_button")

    panel.refresh()
    qtbot.waitUntil(lambda: len(panel.jobs) == 1 and more.isEnabled(), timeout=10_000)
    assert panel.jobs[0].job_id == failed_id
    qtbot.mouseClick(more, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(panel.jobs) == 2, timeout=10_000)
    assert [j.job_id for j in panel.jobs] == [failed_id, done_id]  # newest first
    assert not more.isEnabled()

    failed_item, done_item = tree.topLevelItem(0), tree.topLevelItem(1)
    assert failed_item.text(2) == "Failed"
    assert failed.error is not None and failed.error in failed_item.toolTip(3)
    tree.setCurrentItem(failed_item)
    assert not panel.findChild(QPushButton, "open_button").isEnabled()

    tree.scrollToItem(done_item)
    where = tree.visualItemRect(done_item).center()
    with qtbot.waitSignal(panel.sig_avatar_ready, timeout=JOB_TIMEOUT_MS) as ready:
        qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=where)
        qtbot.mouseDClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=where)
    path, asset_id = ready.args
    assert asset_id == client.job(done_id).asset_id
    assert Path(path) == tmp_path / "reopened" / f"{asset_id}.glb"
    assert len(load_avatar(Path(path)).morph_names) == 52
    panel.close()
