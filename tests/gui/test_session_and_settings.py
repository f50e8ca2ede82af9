"""Start-up session, consent and settings, against a real embedded service on loopback.

Why no mocks: the point of these tests is that the window, the keyring wrapper, the client and the
service agree (the token the keyring holds is the one the service accepts; the consent the dialog
saves is the one the service reports). Only the keyring *backend* is replaced, by an in-memory one
(toolchain §7), so no test ever touches the user's real keyring; one test uses keyring's own
``fail`` backend to show what a desktop without a keyring gets.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import keyring
import pytest
from keyring.backends import fail
from memory_keyring import MemoryKeyring
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication, QLabel

from avatar_studio.client import ServiceClient
from avatar_studio.config import Settings
from avatar_studio.gui.consent_dialog import ConsentDialog, ensure_consent
from avatar_studio.gui.main_window import MainWindow
from avatar_studio.gui.secret_store import SERVICE_NAME, SecretStore
from avatar_studio.gui.session import (
    KEY_MODE,
    KEY_REMOTE_URL,
    MODE_REMOTE,
    ServiceSession,
    embedded_service_key,
)
from avatar_studio.gui.settings_dialog import SettingsDialog, validate_api_key, validate_service_url
from avatar_studio.service.runner import EmbeddedService

MakeMainWindow = Callable[..., MainWindow]
MakeSession = Callable[..., ServiceSession]
READY_TIMEOUT_MS = 60_000


@pytest.fixture
def make_session(settings: QSettings, data_dir: Path) -> Iterator[MakeSession]:
    """``make_session()`` → an unstarted ServiceSession on the test's QSettings; all stopped at teardown."""
    sessions: list[ServiceSession] = []

    def factory(**kwargs: object) -> ServiceSession:
        session = ServiceSession(settings, **kwargs)  # type: ignore[arg-type]
        sessions.append(session)
        return session

    yield factory
    for session in sessions:
        session.stop()


def start_and_wait(qtbot, session: ServiceSession) -> ServiceClient:
    with qtbot.waitSignal(session.sig_ready, timeout=READY_TIMEOUT_MS) as blocker:
        session.start()
    client = blocker.args[0]
    assert client is session.client
    return client


def answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def files_containing(root: Path, needle: str) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``needle`` (the grep of the brief)."""
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


# --- the session: first run, second run, stale token ----------------------------------------------


def test_first_start_creates_a_user_and_keeps_its_token_in_the_keyring(
    qtbot, make_session: MakeSession, memory_keyring: MemoryKeyring, data_dir: Path
) -> None:
    session = make_session()
    states: list[str] = []
    session.sig_state.connect(states.append)
    client = start_and_wait(qtbot, session)

    assert states[0] == "Starting the avatar service…"
    assert session.state == "Connected: embedded service"
    assert session.is_embedded and session.base_url and session.base_url.startswith("http://127.0.0.1:")
    user = session.user
    assert user is not None and not user.age_confirmed and not user.consent_selfie
    stored = memory_keyring.store[(SERVICE_NAME, "token:" + embedded_service_key(data_dir.resolve()))]
    assert stored == client.token
    assert ServiceClient(session.base_url, stored).me().user_id == user.user_id


def test_second_start_reuses_the_stored_user(qtbot, make_session: MakeSession) -> None:
    first = make_session()
    start_and_wait(qtbot, first)
    assert first.user is not None
    user_id, first_url = first.user.user_id, first.base_url
    first.stop()
    assert not answers(first_url or "")

    second = make_session(secrets=SecretStore())  # a new store: the token must come from the keyring
    start_and_wait(qtbot, second)
    assert second.user is not None and second.user.user_id == user_id


def test_a_token_the_service_no_longer_knows_gets_a_new_user(
    qtbot, make_session: MakeSession, memory_keyring: MemoryKeyring, data_dir: Path
) -> None:
    first = make_session()
    client = start_and_wait(qtbot, first)
    assert first.user is not None
    old_id, old_token = first.user.user_id, client.token
    client.delete_me()  # the account (and with it the stored token) is gone on the service side
    first.stop()

    second = make_session()
    start_and_wait(qtbot, second)
    assert second.user is not None and second.user.user_id != old_id
    new_token = memory_keyring.store[(SERVICE_NAME, "token:" + embedded_service_key(data_dir.resolve()))]
    assert new_token != old_token and new_token == second.client.token


def test_remote_service_down_then_retry_connects(qtbot, make_session: MakeSession, settings: QSettings,
                                                 tmp_path: Path, make_main_window: MakeMainWindow) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings.setValue(KEY_MODE, MODE_REMOTE)
    settings.setValue(KEY_REMOTE_URL, url)
    session = make_session()
    window = make_main_window(session=session)
    with qtbot.waitSignal(session.sig_failed, timeout=READY_TIMEOUT_MS) as blocker:
        session.start()
    assert "cannot be reached" in blocker.args[0] and "retry" in blocker.args[0]
    assert window.retry_button.isVisible()
    assert window.session_label.text() == "Avatar service not available"

    remote = EmbeddedService(Settings.from_env({"AVATAR_STUDIO_DATA_DIR": str(tmp_path / "remote")}), port=port)
    remote.start()
    try:
        with qtbot.waitSignal(session.sig_ready, timeout=READY_TIMEOUT_MS):
            window.retry_button.click()
        assert not session.is_embedded and session.base_url == url
        assert window.session_label.text() == f"Connected: remote {url}"
        assert not window.retry_button.isVisible()
        session.stop()
    finally:
        remote.stop()


# --- consent --------------------------------------------------------------------------------------


def test_consent_dialog_needs_both_boxes_and_records_consent_with_the_service(
    qtbot, make_session: MakeSession, make_main_window: MakeMainWindow
) -> None:
    session = make_session()
    window = make_main_window(session=session)
    client = start_and_wait(qtbot, session)
    dialog = ConsentDialog(session, window)
    dialog.open()
    qtbot.waitExposed(dialog)
    text = dialog.explanation.text()
    assert "biometric" in text and "GPS" in text and "this computer" in text and "deleted" in text
    assert not dialog.ok_button.isEnabled()
    assert not dialog.withdraw_button.isVisible()
    dialog.age_box.setChecked(True)
    assert not dialog.ok_button.isEnabled()
    dialog.consent_box.setChecked(True)
    assert dialog.ok_button.isEnabled()
    dialog.age_box.setChecked(False)
    assert not dialog.ok_button.isEnabled()
    dialog.age_box.setChecked(True)

    with qtbot.waitSignal(session.sig_user_changed, timeout=10_000):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=5000)
    assert dialog.result() == ConsentDialog.DialogCode.Accepted
    me = client.me()
    assert me.consent_selfie and me.age_confirmed
    assert session.user is not None and session.user.may_upload
    assert ensure_consent(window, session)  # no second question once consent is on record


def test_consent_can_be_withdrawn(qtbot, make_session: MakeSession, make_main_window: MakeMainWindow) -> None:
    session = make_session()
    window = make_main_window(session=session)
    client = start_and_wait(qtbot, session)
    session.set_user(client.update_me(age_confirmed=True, consent_selfie=True))
    dialog = ConsentDialog(session, window)
    dialog.open()
    qtbot.waitExposed(dialog)
    assert dialog.withdraw_button.isVisible()
    with qtbot.waitSignal(dialog.sig_consent_changed, timeout=10_000) as blocker:
        dialog.withdraw_button.click()
    assert blocker.args == [False]
    assert not client.me().consent_selfie
    assert session.user is not None and not session.user.may_upload
    assert "withdrawn" in dialog.status.text()
    dialog.reject()


def test_ensure_consent_asks_modally_before_the_first_capture(
    qtbot, make_session: MakeSession, make_main_window: MakeMainWindow
) -> None:
    session = make_session()
    window = make_main_window(session=session)
    client = start_and_wait(qtbot, session)
    seen: list[ConsentDialog] = []

    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, ConsentDialog):
            QTimer.singleShot(20, answer)
            return
        seen.append(dialog)
        dialog.age_box.setChecked(True)
        dialog.consent_box.setChecked(True)
        dialog.ok_button.click()

    QTimer.singleShot(0, answer)
    assert ensure_consent(window, session)
    assert seen and client.me().may_upload


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://avatars.example.com/", "https://avatars.example.com"),
        ("  http://127.0.0.1:8080/api ", "http://127.0.0.1:8080/api"),
        ("ftp://avatars.example.com", None),
        ("avatars.example.com", None),
        ("https://", None),
        ("http://host:99999", None),
        ("https://host/?token=abc", None),
        ("https://user:pw@host", None),
        ("", None),
    ],
)
def test_service_url_validation(text: str, expected: str | None) -> None:
    url, error = validate_service_url(text)
    assert url == expected
    assert (error is None) == (expected is not None)


def test_avatar_sdk_key_must_be_client_id_colon_secret() -> None:
    assert validate_api_key("avatar-sdk", "client-id:client-secret") is None
    assert validate_api_key("avatar-sdk", "just-a-key") is not None
    assert validate_api_key("avatar-sdk", ":secret") is not None
    assert validate_api_key("in3d", "plain-key-123") is None
    assert validate_api_key("didimo", "") is None


def test_settings_refuses_an_invalid_remote_url(
    qtbot, make_session: MakeSession, make_main_window: MakeMainWindow, settings: QSettings
) -> None:
    session = make_session()
    window = make_main_window(session=session)
    dialog = SettingsDialog(session, window)
    dialog.open()
    qtbot.waitExposed(dialog)
    assert dialog.embedded_radio.isChecked() and not dialog.url_edit.isEnabled()
    dialog.remote_radio.setChecked(True)
    assert dialog.url_edit.isEnabled() and dialog.reconnect_note.isVisible()
    dialog.url_edit.setText("ftp://avatars.example.com")
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    assert dialog.isVisible() and dialog.error_label.isVisible()
    assert "http://" in dialog.error_label.text()
    assert settings.value(KEY_MODE) is None and settings.value(KEY_REMOTE_URL) is None
    dialog.reject()


def test_test_connection_against_a_real_service(
    qtbot, make_session: MakeSession, make_main_window: MakeMainWindow, tmp_path: Path
) -> None:
    session = make_session()
    window = make_main_window(session=session)
    dialog = SettingsDialog(session, window)
    dialog.open()
    dialog.remote_radio.setChecked(True)
    with EmbeddedService(Settings.from_env({"AVATAR_STUDIO_DATA_DIR": str(tmp_path / "remote")})) as remote:
        dialog.url_edit.setText(remote.base_url + "/")
        with qtbot.waitSignal(dialog.sig_test_finished, timeout=20_000) as blocker:
            qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
        ok, message = blocker.args
        assert ok, message
        assert message.startswith("Connected: avatar service") and "local" in message
        assert dialog.test_result.text() == message
    dialog.url_edit.setText(remote.base_url)  # the same port, now closed
    with qtbot.waitSignal(dialog.sig_test_finished, timeout=20_000) as blocker:
        dialog.test_button.click()
    ok, message = blocker.args
    assert not ok and "cannot be reached" in message
    dialog.reject()


def test_api_key_goes_to_the_keyring_and_never_to_a_file(
    qtbot, make_session: MakeSession, make_main_window: MakeMainWindow, memory_keyring: MemoryKeyring,
    settings: QSettings, tmp_path: Path
) -> None:
    key = "client-id-7f3a9c:client-secret-e41d27b8"
    session = make_session()
    window = make_main_window(session=session)
    start_and_wait(qtbot, session)
    first_url = session.base_url
    dialog = SettingsDialog(session, window)
    dialog.open()
    qtbot.waitExposed(dialog)
    assert dialog.session_only_box.isEnabled() and not dialog.session_only_box.isChecked()
    assert "keyring" in dialog.keyring_notice.text()
    edit = dialog.key_edits["avatar-sdk"]
    assert edit.echoMode() == edit.EchoMode.Password
    dialog.show_buttons["avatar-sdk"].click()
    assert edit.echoMode() == edit.EchoMode.Normal
    edit.setText(key)
    assert not dialog.reconnect_note.isVisible()  # the key of a provider not in use: no reconnect
    dialog.provider_combo.setCurrentIndex(dialog.provider_combo.findData("avatar-sdk"))
    assert dialog.reconnect_note.isVisible()

    with qtbot.waitSignal(session.sig_ready, timeout=READY_TIMEOUT_MS):
        dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    assert dialog.reconnected
    assert memory_keyring.store[(SERVICE_NAME, "api-key:avatar-sdk")] == key
    service_settings = session.service_settings
    assert service_settings is not None
    assert service_settings.provider == "avatar-sdk" and service_settings.provider_api_key == key
    assert session.base_url != first_url and not answers(first_url or "")

    settings.sync()
    assert (tmp_path / "settings.ini").is_file()
    for needle in (key, "client-secret-e41d27b8", "client-id-7f3a9c"):
        assert files_containing(tmp_path, needle) == [], f"{needle!r} was written to a file"
    assert "provider" in (tmp_path / "settings.ini").read_text()  # the non-secret choice is saved


def test_session_only_choice_drops_a_key_from_the_keyring(
    qtbot, make_session: MakeSession, make_main_window: MakeMainWindow, memory_keyring: MemoryKeyring
) -> None:
    session = make_session()
    session.secrets.set_api_key("in3d", "in3d-key-5be0c2")
    assert memory_keyring.store[(SERVICE_NAME, "api-key:in3d")] == "in3d-key-5be0c2"
    window = make_main_window(session=session)
    dialog = SettingsDialog(session, window)
    dialog.open()
    assert dialog.key_edits["in3d"].text() == "in3d-key-5be0c2"
    dialog.session_only_box.setChecked(True)
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    assert (SERVICE_NAME, "api-key:in3d") not in memory_keyring.store
    assert session.secrets.get_api_key("in3d") == "in3d-key-5be0c2"  # still usable for this session


def test_without_a_keyring_keys_are_kept_for_this_session_only(
    qtbot, make_session: MakeSession, make_main_window: MakeMainWindow, tmp_path: Path
) -> None:
    keyring.set_keyring(fail.Keyring())  # the autouse fixture restores the previous backend afterwards
    session = make_session()
    window = make_main_window(session=session)
    start_and_wait(qtbot, session)
    assert not session.secrets.persistent
    assert "no keyring" in window.session_label.text()
    dialog = SettingsDialog(session, window)
    dialog.open()
    qtbot.waitExposed(dialog)
    assert dialog.keyring_notice.isVisible()
    assert "session only" in dialog.keyring_notice.text() and "never written to a file" in dialog.keyring_notice.text()
    assert dialog.session_only_box.isChecked() and not dialog.session_only_box.isEnabled()
    dialog.key_edits["didimo"].setText("didimo-key-93c1e0aa")
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    assert not dialog.isVisible()
    assert session.secrets.get_api_key("didimo") == "didimo-key-93c1e0aa"
    assert files_containing(tmp_path, "didimo-key-93c1e0aa") == []
    assert SecretStore().get_api_key("didimo") is None  # a new session (store) would not have it


# --- the main window around the session ----------------------------------------------------------


def test_closing_the_window_stops_the_embedded_service(
    qtbot, make_session: MakeSession, make_main_window: MakeMainWindow
) -> None:
    session = make_session()
    with qtbot.waitSignal(session.sig_ready, timeout=READY_TIMEOUT_MS):
        window = make_main_window(session=session, start_session=True)
    assert window.session is session
    assert window.session_label.text() == "Connected: embedded service"
    base_url = session.base_url
    assert base_url and answers(base_url)
    window.close()
    assert not answers(base_url)
    assert session.client is None and not session.is_ready


def test_close_guards_can_keep_the_window_open(qtbot, make_main_window: MakeMainWindow) -> None:
    window = make_main_window()
    allow = [False]
    asked: list[bool] = []

    def guard() -> bool:
        asked.append(allow[0])
        return allow[0]

    window.add_close_guard(guard)
    assert not window.close()
    assert window.isVisible() and asked == [False]
    allow[0] = True
    assert window.close()
    assert asked == [False, True]


def test_panels_plug_into_the_window_and_downloaded_avatars_keep_their_asset_id(
    qtbot, make_main_window: MakeMainWindow, synthetic_head: Path
) -> None:
    window = make_main_window()
    dock = window.add_panel("Jobs", QLabel("jobs"))
    second = window.add_panel("Library", QLabel("library"))
    assert window.dockWidgetArea(dock) == Qt.DockWidgetArea.LeftDockWidgetArea
    qtbot.waitUntil(lambda: second in window.tabifiedDockWidgets(dock), timeout=2000)  # after the layout pass
    view_actions = [a.text() for a in window.view_menu.actions()]
    assert "Jobs Panel" in view_actions and "Library Panel" in view_actions
    dock.toggleViewAction().trigger()
    assert dock.isHidden()

    with qtbot.waitSignal(window.sig_asset_opened, timeout=30_000) as blocker:
        window.show_avatar_file(str(synthetic_head), "asset-42")
    assert blocker.args == ["asset-42"]
    assert window.current_asset_id == "asset-42"
    with qtbot.waitSignal(window.sig_asset_opened, timeout=30_000) as blocker:
        window.open_file(str(synthetic_head))
    assert blocker.args == [""] and window.current_asset_id is None


def test_settings_and_about_are_in_the_menus(qtbot, make_main_window: MakeMainWindow, data_dir: Path) -> None:
    window = make_main_window()
    window.settings_action.trigger()
    assert isinstance(window.settings_box, SettingsDialog)
    qtbot.waitExposed(window.settings_box)
    window.settings_box.reject()
    window.about_action.trigger()
    assert window.about_box is not None
    text = window.about_box.text() + window.about_box.informativeText()
    assert "0.1.0" in text and str(data_dir.resolve()) in text and "Apache" in text
    window.about_box.close()
