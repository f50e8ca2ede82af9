"""Age confirmation and selfie consent, asked before the first capture and revocable at any time.

Why a dialog of its own rather than a checkbox in the capture panel: a selfie is biometric data, so
the user must be told what is kept, where it goes and for how long *before* a camera opens or a file
is picked, and the answer must be recorded by the service (which refuses uploads without it), not
just remembered by this window. The text names the chosen provider, because "local" (this computer)
and a cloud provider are very different answers to "where does my face go".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.gui.session import LOCAL_PROVIDER, ServiceSession
from avatar_studio.gui.tasks import run_task

if TYPE_CHECKING:
    from avatar_studio.client import UserInfo

PROVIDER_PLACES = {
    LOCAL_PROVIDER: "nowhere else: the <b>local</b> provider makes the avatar on this computer",
    "avatar-sdk": "to <b>Avatar SDK</b> (itSeez3D), the cloud provider chosen in Settings",
    "in3d": "to <b>in3D</b>, the cloud provider chosen in Settings",
    "didimo": "to <b>Didimo</b>, the cloud provider chosen in Settings",
}


def provider_place(session: ServiceSession) -> str:
    """Where a selfie goes with this session's provider, in words for the consent text."""
    provider = session.provider
    if session.is_embedded:
        place = PROVIDER_PLACES.get(provider, f"to the provider <b>{provider}</b>")
        return f"to the avatar service on this computer, and from there {place}"
    where = f"to the avatar service at <b>{session.base_url or session.remote_url}</b>"
    if provider == LOCAL_PROVIDER:
        return f"{where}, whose <b>local</b> provider makes the avatar on that server"
    return f"{where}, and from there {PROVIDER_PLACES.get(provider, f'to the provider <b>{provider}</b>')}"


class ConsentDialog(QDialog):
    """Explains selfie processing; records age confirmation and consent (or their withdrawal) with the service."""

    sig_consent_changed = Signal(bool)
    """Emitted with the new consent state after the service confirmed the change."""

    def __init__(self, session: ServiceSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self._closed = False
        self.setWindowTitle("Selfie consent")
        self.setModal(True)
        self.setMinimumWidth(520)
        user = session.user
        already = bool(user and user.may_upload)

        self.explanation = QLabel(
            "<p>To make your avatar, Avatar Studio processes a <b>selfie</b>. A photo of your face is "
            "<b>biometric data</b>, so we ask first.</p>"
            "<ul>"
            "<li><b>What is stored:</b> the image only. Location (GPS), camera details and other EXIF "
            "metadata are removed before it is kept.</li>"
            f"<li><b>Where it goes:</b> {provider_place(session)}.</li>"
            "<li><b>How long:</b> the selfie is deleted as soon as the avatar job ends, whether it "
            "succeeded or failed. The finished avatar is kept until you delete it.</li>"
            "<li>You can withdraw your consent here at any time; no new selfie is accepted after that.</li>"
            "</ul>"
        )
        self.explanation.setWordWrap(True)
        self.explanation.setTextFormat(Qt.TextFormat.RichText)
        self.age_box = QCheckBox("I am 18 or older")
        self.consent_box = QCheckBox("I consent to my selfie being processed to make an avatar")
        self.age_box.setChecked(bool(user and user.age_confirmed))
        self.consent_box.setChecked(already)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.hide()

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("I agree")
        self.withdraw_button = QPushButton("Withdraw consent")
        self.withdraw_button.setToolTip("Stop allowing selfies; avatars already made are kept")
        self.buttons.addButton(self.withdraw_button, QDialogButtonBox.ButtonRole.DestructiveRole)
        self.withdraw_button.setVisible(bool(user and user.consent_selfie))
        self.buttons.accepted.connect(self._save_consent)
        self.buttons.rejected.connect(self.reject)
        self.withdraw_button.clicked.connect(self._withdraw)
        self.age_box.toggled.connect(self._update_ok)
        self.consent_box.toggled.connect(self._update_ok)

        layout = QVBoxLayout(self)
        layout.addWidget(self.explanation)
        layout.addWidget(self.age_box)
        layout.addWidget(self.consent_box)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self._busy = False
        self._update_ok()

    def _update_ok(self) -> None:
        both = self.age_box.isChecked() and self.consent_box.isChecked()
        self.ok_button.setEnabled(both and not self._busy and self.session.client is not None)

    def _set_busy(self, message: str | None) -> None:
        self._busy = message is not None
        self.status.setText(message or "")
        self.status.setVisible(message is not None)
        self.age_box.setEnabled(not self._busy)
        self.consent_box.setEnabled(not self._busy)
        self.withdraw_button.setEnabled(not self._busy)
        self._update_ok()

    def _save_consent(self) -> None:
        self._update(age_confirmed=True, consent_selfie=True, accept=True)

    def _withdraw(self) -> None:
        self._update(age_confirmed=None, consent_selfie=False, accept=False)

    def _update(self, *, age_confirmed: bool | None, consent_selfie: bool, accept: bool) -> None:
        client = self.session.client
        if client is None or self._busy:
            return
        self._set_busy("Saving…")
        run_task(lambda: client.update_me(age_confirmed=age_confirmed, consent_selfie=consent_selfie),
                 lambda user: self._on_saved(user, accept), self._on_error)

    def _on_saved(self, user: UserInfo, accept: bool) -> None:
        self.session.set_user(user)
        if self._closed:
            return
        self._set_busy(None)
        self.sig_consent_changed.emit(user.consent_selfie)
        if accept:
            self.accept()
        else:
            self.consent_box.setChecked(False)
            self.withdraw_button.hide()
            self.status.setText("Consent withdrawn: no selfie will be accepted until you agree again.")
            self.status.show()

    def _on_error(self, exc: BaseException) -> None:
        if self._closed:
            return
        self._set_busy(None)
        self.status.setText(f"Could not save your answer: {exc}")
        self.status.show()

    def done(self, result: int) -> None:
        self._closed = True
        super().done(result)


def ensure_consent(parent: QWidget | None, session: ServiceSession) -> bool:
    """True when the user may capture a selfie now; asks (modally) first if consent is missing.

    The selfie panel calls this before opening the camera or a file picker.
    """
    user = session.user
    if user is None:
        reason = session.error or "The avatar service is still starting; try again in a moment."
        QMessageBox.information(parent, "Not connected", reason)
        return False
    if user.may_upload:
        return True
    dialog = ConsentDialog(session, parent)
    try:
        accepted = dialog.exec() == QDialog.DialogCode.Accepted
    finally:
        dialog.deleteLater()
    return accepted and session.user is not None and session.user.may_upload
