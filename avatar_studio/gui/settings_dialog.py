"""File → Settings: which avatar service to use, the default provider, and the providers' API keys.

Why keys are edited here but never saved with the other settings: ``QSettings`` is a plain file (or
registry) that ends up in backups; keys go to the :class:`SecretStore` (the OS keyring) or, where
no keyring works, stay in memory for this session, and the dialog says which of the two happened.

Why OK may reconnect: the embedded service reads its provider and key when it starts, and a remote
URL is a different service altogether, so those changes only take effect on a new connection. The
dialog names them as they are made, and reconnects once on OK rather than on every keystroke.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.gui.session import (
    CLOUD_PROVIDERS,
    KEY_MODE,
    KEY_PROVIDER,
    KEY_REMOTE_URL,
    KEY_SESSION_ONLY,
    LOCAL_PROVIDER,
    MODE_EMBEDDED,
    MODE_REMOTE,
    PROVIDER_CHOICES,
    ServiceSession,
)
from avatar_studio.gui.tasks import run_task

if TYPE_CHECKING:
    from avatar_studio.client import Health

PROVIDER_LABELS: Final[dict[str, str]] = {
    LOCAL_PROVIDER: "local (on this computer, offline)",
    "avatar-sdk": "Avatar SDK (cloud)",
    "in3d": "in3D (cloud)",
    "didimo": "Didimo (cloud)",
}
KEY_HINTS: Final[dict[str, str]] = {
    "avatar-sdk": "client_id:client_secret",
    "in3d": "API key",
    "didimo": "API key",
}
TEST_TIMEOUT_S: Final[float] = 5.0


def validate_service_url(text: str) -> tuple[str | None, str | None]:
    """``(normalized URL, None)`` for a usable http(s) service URL, else ``(None, reason for the user)``."""
    url = text.strip().rstrip("/")
    if not url:
        return None, "Enter the service URL, for example https://avatars.example.com"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number or out of range
    except ValueError as exc:
        return None, f"This is not a valid URL ({exc})."
    if parts.scheme not in ("http", "https"):
        return None, "The URL must start with http:// or https://."
    if not parts.hostname:
        return None, "The URL has no host name."
    if parts.query or parts.fragment:
        return None, "The URL must not contain a query (?…) or fragment (#…)."
    if parts.username or parts.password:
        return None, "Do not put a user name or password in the URL; the app signs in with its own token."
    if port == 0:
        return None, "Port 0 is not a valid port."
    return url, None


def validate_api_key(provider: str, key: str) -> str | None:
    """Why ``key`` cannot be right for ``provider`` (checked before it is stored), or None."""
    if not key:
        return None
    if any(ch.isspace() for ch in key):
        return f"The {PROVIDER_LABELS[provider]} key must not contain spaces."
    if provider == "avatar-sdk":
        client_id, sep, secret = key.partition(":")
        if not sep or not client_id or not secret:
            return "The Avatar SDK key must be written as client_id:client_secret."
    return None


def check_health(url: str) -> Health:
    """GET /health of ``url`` once, without retries: a test button must answer quickly either way."""
    from avatar_studio.client import ServiceClient

    with ServiceClient(url, timeout=TEST_TIMEOUT_S, retries=0) as client:
        return client.health()


class SettingsDialog(QDialog):
    """Edits the service choice, default provider and API keys; OK saves and reconnects when needed."""

    sig_test_finished = Signal(bool, str)
    """Emitted with (reachable, the message shown) after "Test connection" got its answer."""

    def __init__(self, session: ServiceSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.qsettings: QSettings = session.qsettings
        self.secrets = session.secrets
        self._closed = False
        self._test_generation = 0
        self.reconnected = False
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)

        self._initial_mode = session.mode
        self._initial_url = session.remote_url
        self._initial_provider = session.provider
        if self._initial_provider not in PROVIDER_CHOICES:
            self._initial_provider = LOCAL_PROVIDER
        self._initial_keys = {p: self.secrets.get_api_key(p) or "" for p in CLOUD_PROVIDERS}
        self._initial_session_only = self.secrets.keys_session_only

        layout = QVBoxLayout(self)
        layout.addWidget(self._build_service_group())
        layout.addWidget(self._build_provider_group())
        layout.addWidget(self._build_keys_group())
        self.reconnect_note = QLabel("These changes take effect after reconnecting to the service; OK reconnects.")
        self.reconnect_note.setWordWrap(True)
        self.reconnect_note.setStyleSheet("color: #b0601c;")
        self.reconnect_note.hide()
        layout.addWidget(self.reconnect_note)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c0392b;")
        self.error_label.hide()
        layout.addWidget(self.error_label)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.save_and_accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._mode_changed()

    # --- construction ----------------------------------------------------------------------------

    def _build_service_group(self) -> QGroupBox:
        group = QGroupBox("Avatar service")
        self.embedded_radio = QRadioButton("Embedded (this computer)")
        self.embedded_radio.setToolTip("The service runs inside Avatar Studio; data stays in your data folder")
        self.remote_radio = QRadioButton("Remote service URL")
        self._mode_group = QButtonGroup(self)
        self._mode_group.addButton(self.embedded_radio)
        self._mode_group.addButton(self.remote_radio)
        self.url_edit = QLineEdit(self._initial_url)
        self.url_edit.setPlaceholderText("https://avatars.example.com")
        self.url_edit.setClearButtonEnabled(True)
        self.test_button = QPushButton("Test connection")
        self.test_button.setToolTip("Ask the service at this URL for its /health")
        self.test_result = QLabel()
        self.test_result.setWordWrap(True)
        self.test_result.hide()
        (self.remote_radio if self._initial_mode == MODE_REMOTE else self.embedded_radio).setChecked(True)
        self.embedded_radio.toggled.connect(self._mode_changed)
        self.url_edit.textChanged.connect(self._url_changed)
        self.test_button.clicked.connect(self.test_connection)

        url_row = QHBoxLayout()
        url_row.addWidget(self.url_edit, 1)
        url_row.addWidget(self.test_button)
        box = QVBoxLayout(group)
        box.addWidget(self.embedded_radio)
        box.addWidget(self.remote_radio)
        box.addLayout(url_row)
        box.addWidget(self.test_result)
        return group

    def _build_provider_group(self) -> QGroupBox:
        group = QGroupBox("Default provider")
        self.provider_combo = QComboBox()
        for name in PROVIDER_CHOICES:
            self.provider_combo.addItem(PROVIDER_LABELS[name], name)
        self.provider_combo.setCurrentIndex(PROVIDER_CHOICES.index(self._initial_provider))
        self.provider_combo.currentIndexChanged.connect(self._update_reconnect_note)
        hint = QLabel("Who turns a selfie into an avatar. Cloud providers need an API key below; "
                      "with them the selfie leaves this computer.")
        hint.setWordWrap(True)
        form = QFormLayout(group)
        form.addRow("Provider:", self.provider_combo)
        form.addRow(hint)
        return group

    def _build_keys_group(self) -> QGroupBox:
        group = QGroupBox("Provider API keys")
        form = QFormLayout(group)
        self.key_edits: dict[str, QLineEdit] = {}
        self.show_buttons: dict[str, QToolButton] = {}
        for provider in CLOUD_PROVIDERS:
            edit = QLineEdit(self._initial_keys[provider])
            edit.setEchoMode(QLineEdit.EchoMode.Password)
            edit.setPlaceholderText(KEY_HINTS[provider])
            edit.setObjectName(f"apiKey-{provider}")
            edit.textChanged.connect(self._update_reconnect_note)
            show = QToolButton()
            show.setText("Show")
            show.setCheckable(True)
            show.setToolTip("Show or hide the key")
            show.toggled.connect(lambda on, e=edit, b=show: self._show_key(e, b, on))
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            row.addWidget(show)
            form.addRow(f"{PROVIDER_LABELS[provider]}:", row)
            self.key_edits[provider] = edit
            self.show_buttons[provider] = show

        self.keyring_notice = QLabel()
        self.keyring_notice.setWordWrap(True)
        self.keyring_notice.setStyleSheet("color: #b0601c;")
        self.session_only_box = QCheckBox("Keep keys for this session only (do not save them in the keyring)")
        self.session_only_box.setChecked(self._initial_session_only)
        if self.secrets.persistent:
            self.keyring_notice.setText("Keys are saved in your system keyring, never in a settings file.")
            self.keyring_notice.setStyleSheet("")
        else:
            self.keyring_notice.setText(
                f"No usable keyring: {self.secrets.problem}. Keys are kept for this session only: you will "
                "need to enter them again after restarting Avatar Studio. They are never written to a file."
            )
            self.session_only_box.setChecked(True)
            self.session_only_box.setEnabled(False)
        uses = QLabel("The embedded service uses the key of the default provider; a remote service uses its own.")
        uses.setWordWrap(True)
        form.addRow(self.keyring_notice)
        form.addRow(self.session_only_box)
        form.addRow(uses)
        return group

    @staticmethod
    def _show_key(edit: QLineEdit, button: QToolButton, shown: bool) -> None:
        edit.setEchoMode(QLineEdit.EchoMode.Normal if shown else QLineEdit.EchoMode.Password)
        button.setText("Hide" if shown else "Show")

    # --- state -----------------------------------------------------------------------------------

    @property
    def chosen_mode(self) -> str:
        return MODE_REMOTE if self.remote_radio.isChecked() else MODE_EMBEDDED

    @property
    def chosen_provider(self) -> str:
        return str(self.provider_combo.currentData())

    def _keys(self) -> dict[str, str]:
        return {p: edit.text().strip() for p, edit in self.key_edits.items()}

    def needs_reconnect(self) -> bool:
        """Whether OK must reconnect: another service, another provider, or the active provider's key."""
        mode = self.chosen_mode
        if mode != self._initial_mode:
            return True
        if mode == MODE_REMOTE:
            url, _error = validate_service_url(self.url_edit.text())
            return (url or self.url_edit.text().strip()) != self._initial_url
        provider = self.chosen_provider
        if provider != self._initial_provider:
            return True
        return provider != LOCAL_PROVIDER and self._keys()[provider] != self._initial_keys[provider]

    def _mode_changed(self) -> None:
        remote = self.remote_radio.isChecked()
        self.url_edit.setEnabled(remote)
        self.test_button.setEnabled(remote)
        if not remote:
            self.test_result.hide()
        self._update_reconnect_note()

    def _url_changed(self) -> None:
        self._test_generation += 1  # an answer for the old URL no longer describes this one
        self.test_result.hide()
        self.test_button.setEnabled(self.remote_radio.isChecked())
        self._update_reconnect_note()

    def _update_reconnect_note(self) -> None:
        self.reconnect_note.setVisible(self.needs_reconnect())

    def _show_error(self, message: str | None) -> None:
        self.error_label.setText(message or "")
        self.error_label.setVisible(message is not None)

    # --- test connection -------------------------------------------------------------------------

    def test_connection(self) -> None:
        """Ask the URL in the field for /health in the background and show the answer under it."""
        url, error = validate_service_url(self.url_edit.text())
        if url is None:
            self._test_done(self._test_generation, False, error or "Invalid URL.")
            return
        self._test_generation += 1
        generation = self._test_generation
        self.test_button.setEnabled(False)
        self.test_result.setText(f"Connecting to {url}…")
        self.test_result.setStyleSheet("")
        self.test_result.show()

        def done(health: Health) -> None:
            providers = ", ".join(health.providers) or "none"
            message = (f"Connected: avatar service {health.version}, status {health.status}, "
                       f"database {health.database}, providers: {providers}.")
            self._test_done(generation, True, message)

        run_task(lambda: check_health(url), done, lambda exc: self._test_done(generation, False, _reason(exc)))

    def _test_done(self, generation: int, ok: bool, message: str) -> None:
        if self._closed or generation != self._test_generation:
            return
        self.test_button.setEnabled(self.remote_radio.isChecked())
        self.test_result.setText(message)
        self.test_result.setStyleSheet("color: #2e7d32;" if ok else "color: #c0392b;")
        self.test_result.show()
        self.sig_test_finished.emit(ok, message)

    # --- saving ----------------------------------------------------------------------------------

    def save_and_accept(self) -> None:
        """Validate, save preferences to QSettings and keys to the secret store, reconnect if needed, close."""
        mode = self.chosen_mode
        url = self._initial_url
        if mode == MODE_REMOTE:
            checked, error = validate_service_url(self.url_edit.text())
            if checked is None:
                self._show_error(error)
                self.url_edit.setFocus()
                return
            url = checked
        keys = self._keys()
        for provider, key in keys.items():
            error = validate_api_key(provider, key)
            if error is not None:
                self._show_error(error)
                self.key_edits[provider].setFocus()
                return
        self._show_error(None)
        reconnect = self.needs_reconnect()

        self.qsettings.setValue(KEY_MODE, mode)
        self.qsettings.setValue(KEY_REMOTE_URL, url)
        if self.chosen_provider != self._initial_provider or self.session.default_provider is not None:
            self.qsettings.setValue(KEY_PROVIDER, self.chosen_provider)
        session_only = self.session_only_box.isChecked()
        if self.session_only_box.isEnabled():  # without a keyring it is forced, not a preference
            self.qsettings.setValue(KEY_SESSION_ONLY, session_only)
        self.qsettings.sync()
        self.secrets.keys_session_only = session_only
        for provider, key in keys.items():
            if key != self._initial_keys[provider] or session_only != self._initial_session_only:
                self.secrets.set_api_key(provider, key or None)

        if reconnect or self.session.error is not None:  # a failed session retries with the new settings
            self.session.reconnect()
            self.reconnected = True
        self.accept()

    def done(self, result: int) -> None:
        self._closed = True
        super().done(result)


def _reason(exc: BaseException) -> str:
    from avatar_studio.client import ServiceError

    if isinstance(exc, ServiceError):
        return f"Not reachable: {exc}"
    return f"Not reachable: {type(exc).__name__}: {exc}"
