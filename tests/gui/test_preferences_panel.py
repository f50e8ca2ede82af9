"""The preferences panel against a real embedded service: load, edit through the widgets, save, guard.

Why a real service and no mocks: the panel's promises are about the round trip (what the user set
is what a fresh client reads back, a refusal lands at the field the service names), and only the
real schema, HTTP layer and client can break them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from PySide6.QtCore import Qt, QThreadPool, QTimer
from PySide6.QtWidgets import QApplication, QCheckBox, QDoubleSpinBox, QMessageBox, QStyle, QStyleOptionButton

from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.client import ServiceClient
from avatar_studio.config import Settings
from avatar_studio.gui.preferences_panel import PreferencesPanel
from avatar_studio.service.models import AvatarAsset, AvatarJob
from avatar_studio.service.runner import EmbeddedService

SEED = {
    "appearance": {"bindi": True, "earrings": "jhumka"},
    "voice": {"language": "hinglish", "pitch": 0.1, "speed": -0.05},
    "persona": {"warmth": 0.8, "humor": 0.4, "formality": 0.3},
}
TIMEOUT = 10_000


@dataclass
class Account:
    service: EmbeddedService
    client: ServiceClient
    user_id: str
    token: str

    def fresh_client(self) -> ServiceClient:
        """Another client with the same token, as a restarted app would build from the keyring."""
        return ServiceClient(self.service.base_url, self.token, retries=0)


def add_asset(service: EmbeddedService, user_id: str) -> str:
    """A finished job with its asset, as the worker would leave it (the worker has its own tests)."""
    job_id, asset_id = uuid.uuid4(), uuid.uuid4()
    key = f"avatars/{asset_id}/model.glb"
    service.storage.put(key, make_arkit_head_glb(1500), "model/gltf-binary")
    with service.engine.begin() as conn:
        conn.execute(sa.insert(AvatarJob).values(id=job_id, user_id=uuid.UUID(user_id), provider="local",
                                                 status="done", progress=1.0))
        conn.execute(sa.insert(AvatarAsset).values(id=asset_id, user_id=uuid.UUID(user_id), job_id=job_id,
                                                   storage_key=key, blendshape_map={"Key 1": "jawOpen"}))
    return str(asset_id)


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Account]:
    settings = Settings.from_env(env={}, data_dir=tmp_path)
    with EmbeddedService(settings, workers=0) as service:
        client = ServiceClient(service.base_url, retries=0)
        user = client.create_user(age_confirmed=True, consent_selfie=True)
        try:
            yield Account(service, client, user.user_id, user.token)
        finally:
            QThreadPool.globalInstance().waitForDone(TIMEOUT)  # no request may outlive the service
            client.close()


@pytest.fixture
def asset_id(account: Account) -> str:
    return add_asset(account.service, account.user_id)


@pytest.fixture
def make_panel(qtbot) -> Callable[..., PreferencesPanel]:
    """``make_panel(get_client)`` → a shown, registered panel (closed by qtbot at teardown)."""

    def factory(get_client: Callable[[], ServiceClient | None]) -> PreferencesPanel:
        panel = PreferencesPanel(get_client)
        qtbot.addWidget(panel)
        panel.resize(520, 900)
        panel.show()
        qtbot.waitExposed(panel)
        return panel

    return factory


def open_asset(qtbot, panel: PreferencesPanel, asset_id: str) -> None:
    with qtbot.waitSignal(panel.sig_loaded, timeout=TIMEOUT) as blocker:
        assert panel.set_asset(asset_id)
    assert blocker.args == [asset_id]


def type_number(qtbot, spin: QDoubleSpinBox, value: str) -> None:
    """Replace the field's text as a user would: select all, type, press Enter."""
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, value.replace(".", spin.locale().decimalPoint()))
    qtbot.keyClick(spin, Qt.Key.Key_Enter)


def click_check(qtbot, check: QCheckBox) -> None:
    """Click the box itself: a check box only reacts on its indicator and label, not its whole width."""
    option = QStyleOptionButton()
    check.initStyleOption(option)
    where = check.style().subElementRect(QStyle.SubElement.SE_CheckBoxIndicator, option, check).center()
    qtbot.mouseClick(check, Qt.MouseButton.LeftButton, pos=where)


def answer_next_question(button: QMessageBox.StandardButton, seen: list[str]) -> None:
    """Click ``button`` in the next unsaved-changes box once it is on screen (it runs its own loop)."""

    def click() -> None:
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, QMessageBox) and widget.objectName() == "unsavedPreferencesBox" \
                    and widget.isVisible():
                seen.append(widget.text())
                widget.button(button).click()
                return
        QTimer.singleShot(20, click)

    QTimer.singleShot(0, click)


def set_seed_through_widgets(qtbot, panel: PreferencesPanel) -> None:
    click_check(qtbot, panel.bindi_check)
    panel.earrings_combo.setFocus()
    qtbot.keyClicks(panel.earrings_combo, "J")  # the combo's own keyboard search: "Jhumka (bell-shaped)"
    panel.language_combo.setFocus()
    qtbot.keyClicks(panel.language_combo, "Hing")
    type_number(qtbot, panel.rows["voice.pitch"].spin, "0.10")
    panel.rows["voice.speed"].slider.setValue(-5)
    panel.rows["persona.warmth"].slider.setValue(80)
    type_number(qtbot, panel.rows["persona.humor"].spin, "0.40")
    panel.rows["persona.formality"].slider.setValue(30)


def shown_values(panel: PreferencesPanel) -> dict[str, object]:
    return {
        "bindi": panel.bindi_check.isChecked(),
        "earrings": panel.earrings_combo.currentData(),
        "language": panel.language_combo.currentData(),
        **{name: panel.rows[name].spin.value() for name in ("voice.pitch", "voice.speed", "persona.warmth",
                                                              "persona.humor", "persona.formality")},
        **{f"{name} slider": panel.rows[name].slider.value() for name in ("voice.pitch", "persona.warmth")},
    }


# -- availability ------------------------------------------------------------------------------------

def test_disabled_with_an_explanation_until_an_asset_and_a_client(qtbot, make_panel, account: Account,
                                                                  asset_id: str) -> None:
    connected: list[ServiceClient] = []
    panel = make_panel(lambda: connected[0] if connected else None)
    assert not panel.form.isEnabled() and not panel.save_button.isEnabled()
    assert panel.notice_label.isVisible() and "Open an avatar" in panel.notice_label.text()

    assert panel.set_asset(asset_id)
    assert not panel.form.isEnabled()
    assert "Connect to the avatar service" in panel.notice_label.text()

    connected.append(account.client)
    with qtbot.waitSignal(panel.sig_loaded, timeout=TIMEOUT):
        panel.refresh()
    assert panel.form.isEnabled() and not panel.notice_label.isVisible()


def test_load_shows_defaults_and_the_services_choices(qtbot, make_panel, account: Account, asset_id: str) -> None:
    panel = make_panel(lambda: account.client)
    open_asset(qtbot, panel, asset_id)
    assert shown_values(panel) == {
        "bindi": False, "earrings": "", "language": "", "voice.pitch": 0.0, "voice.speed": 0.0,
        "persona.warmth": 0.5, "persona.humor": 0.5, "persona.formality": 0.5,
        "voice.pitch slider": 0, "persona.warmth slider": 50,
    }
    assert panel.extras_table.rowCount() == 0 and not panel.other_traits.isVisible()
    assert not panel.has_unsaved_changes() and not panel.dirty_label.isVisible()
    assert not panel.save_button.isEnabled() and not panel.revert_button.isEnabled()
    earrings = {panel.earrings_combo.itemData(i): panel.earrings_combo.itemText(i)
                for i in range(panel.earrings_combo.count())}
    languages = {panel.language_combo.itemData(i): panel.language_combo.itemText(i)
                 for i in range(panel.language_combo.count())}
    assert earrings["jhumka"].startswith("Jhumka") and languages["hinglish"].startswith("Hinglish")
    assert (panel.rows["voice.pitch"].spin.minimum(), panel.rows["voice.pitch"].spin.maximum()) == (-1.0, 1.0)
    assert (panel.rows["persona.humor"].spin.minimum(), panel.rows["persona.humor"].spin.maximum()) == (0.0, 1.0)


# -- the round trip ----------------------------------------------------------------------------------

def test_seed_values_set_in_the_widgets_are_saved_and_survive_a_restart(qtbot, make_panel, account: Account,
                                                                         asset_id: str) -> None:
    panel = make_panel(lambda: account.client)
    open_asset(qtbot, panel, asset_id)
    flags: list[bool] = []
    panel.sig_dirty_changed.connect(flags.append)

    set_seed_through_widgets(qtbot, panel)
    assert flags == [True] and panel.has_unsaved_changes()
    assert panel.dirty_label.isVisible() and panel.dirty_label.text() == "• unsaved changes"
    assert panel.windowTitle().endswith("• unsaved changes")
    assert panel.save_button.isEnabled() and panel.revert_button.isEnabled()
    assert panel.rows["voice.pitch"].slider.value() == 10, "the number field moves its slider"
    assert panel.rows["persona.warmth"].spin.value() == 0.8, "the slider moves its number field"

    with qtbot.waitSignal(panel.sig_saved, timeout=TIMEOUT) as blocker:
        qtbot.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [asset_id]
    assert flags == [True, False] and not panel.has_unsaved_changes() and not panel.dirty_label.isVisible()
    assert not panel.save_button.isEnabled()

    with account.fresh_client() as other:
        saved = other.preferences(asset_id)
    assert (saved.appearance, saved.voice, saved.persona) == (SEED["appearance"], SEED["voice"], SEED["persona"])

    with account.fresh_client() as restarted:
        again = make_panel(lambda: restarted)
        open_asset(qtbot, again, asset_id)
        assert shown_values(again) == {
            "bindi": True, "earrings": "jhumka", "language": "hinglish", "voice.pitch": 0.1, "voice.speed": -0.05,
            "persona.warmth": 0.8, "persona.humor": 0.4, "persona.formality": 0.3,
            "voice.pitch slider": 10, "persona.warmth slider": 80,
        }
        assert not again.has_unsaved_changes()
        again.close()


def test_dirty_flag_follows_the_difference_and_revert_restores(qtbot, make_panel, account: Account,
                                                               asset_id: str) -> None:
    account.client.save_preferences(asset_id, **SEED)
    panel = make_panel(lambda: account.client)
    open_asset(qtbot, panel, asset_id)
    flags: list[bool] = []
    panel.sig_dirty_changed.connect(flags.append)
    pitch = panel.rows["voice.pitch"]

    pitch.slider.setValue(40)
    assert panel.has_unsaved_changes() and pitch.spin.value() == 0.4
    pitch.slider.setValue(10)
    assert not panel.has_unsaved_changes(), "back to the saved value is not an unsaved change"

    click_check(qtbot, panel.bindi_check)
    type_number(qtbot, panel.rows["persona.formality"].spin, "0.95")
    assert panel.has_unsaved_changes() and panel.revert_button.isEnabled()
    qtbot.mouseClick(panel.revert_button, Qt.MouseButton.LeftButton)
    assert flags == [True, False, True, False]
    assert not panel.has_unsaved_changes() and not panel.revert_button.isEnabled()
    assert panel.bindi_check.isChecked() and panel.rows["persona.formality"].slider.value() == 30
    assert panel.rows["persona.formality"].spin.value() == 0.3

    qtbot.mouseClick(panel.add_extra_button, Qt.MouseButton.LeftButton)
    assert panel.extras_table.rowCount() == 1 and not panel.has_unsaved_changes(), "an empty row changes nothing"
    qtbot.keyClicks(panel.extra_edits(0)[0], "nose_ring")
    assert panel.has_unsaved_changes()
    qtbot.mouseClick(panel.revert_button, Qt.MouseButton.LeftButton)
    assert panel.extras_table.rowCount() == 0 and not panel.has_unsaved_changes()


def test_free_keys_and_unknown_traits_round_trip_with_their_types(qtbot, make_panel, account: Account,
                                                                  asset_id: str) -> None:
    account.client.save_preferences(
        asset_id, {"bindi": False, "earrings": "hoops", "glasses": True, "tattoo_count": 2, "tattoo": "none"},
        {"language": "tamil", "pitch": 0.25, "speed": 0.0}, {"warmth": 0.5, "humor": 0.5, "formality": 0.5,
                                                             "zest": 0.7})
    panel = make_panel(lambda: account.client)
    open_asset(qtbot, panel, asset_id)
    rows = {panel.extra_edits(i)[0].text(): panel.extra_edits(i)[1].text()
            for i in range(panel.extras_table.rowCount())}
    assert rows == {"glasses": "true", "tattoo_count": "2", "tattoo": "none"}
    assert panel.other_traits.isVisible() and panel.rows["persona.zest"].spin.value() == 0.7

    count_edit = next(panel.extra_edits(i)[1] for i in range(3) if panel.extra_edits(i)[0].text() == "tattoo_count")
    count_edit.selectAll()
    qtbot.keyClicks(count_edit, "3")
    qtbot.mouseClick(panel.add_extra_button, Qt.MouseButton.LeftButton)
    key_edit, value_edit = panel.extra_edits(3)
    assert panel.focusWidget() is key_edit, "a new row is ready for typing"
    qtbot.keyClicks(key_edit, "nose_ring")
    qtbot.keyClicks(value_edit, "left")
    panel.rows["persona.zest"].slider.setValue(65)
    with qtbot.waitSignal(panel.sig_saved, timeout=TIMEOUT):
        qtbot.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)

    with account.fresh_client() as other:
        saved = other.preferences(asset_id)
    assert saved.appearance == {"bindi": False, "earrings": "hoops", "glasses": True, "tattoo_count": 3,
                                "tattoo": "none", "nose_ring": "left"}
    assert saved.voice == {"language": "tamil", "pitch": 0.25, "speed": 0.0}
    assert saved.persona == {"warmth": 0.5, "humor": 0.5, "formality": 0.5, "zest": 0.65}


def test_free_keys_are_checked_while_typing(qtbot, make_panel, account: Account, asset_id: str) -> None:
    panel = make_panel(lambda: account.client)
    open_asset(qtbot, panel, asset_id)
    qtbot.mouseClick(panel.add_extra_button, Qt.MouseButton.LeftButton)
    key_edit, value_edit = panel.extra_edits(0)
    qtbot.keyClicks(key_edit, "k" * 65)
    assert "at most 64 characters" in panel.field_error("appearance")
    assert panel.has_unsaved_changes() and not panel.save_button.isEnabled()
    qtbot.keyClick(key_edit, Qt.Key.Key_Backspace)
    assert panel.field_error("appearance") == "" and panel.save_button.isEnabled()
    qtbot.keyClicks(value_edit, "v" * 129)
    assert "at most 128 characters" in panel.field_error("appearance")
    qtbot.keyClick(value_edit, Qt.Key.Key_Backspace)
    qtbot.mouseClick(panel.add_extra_button, Qt.MouseButton.LeftButton)
    qtbot.keyClicks(panel.extra_edits(1)[0], "earrings")
    assert "has its own control" in panel.field_error("appearance")
    remove = panel.extras_table.cellWidget(1, 2)
    qtbot.mouseClick(remove, Qt.MouseButton.LeftButton)
    assert panel.extras_table.rowCount() == 1 and panel.field_error("appearance") == ""


# -- the service's refusal ---------------------------------------------------------------------------

def test_a_refused_field_is_shown_at_the_field(qtbot, make_panel, account: Account, asset_id: str) -> None:
    panel = make_panel(lambda: account.client)
    open_asset(qtbot, panel, asset_id)
    qtbot.mouseClick(panel.add_extra_button, Qt.MouseButton.LeftButton)
    key_edit, value_edit = panel.extra_edits(0)
    # A key pasted from elsewhere with a NUL in it: fine for a text field, refused by the service.
    QApplication.clipboard().setText("p\x00w")
    qtbot.keyClick(key_edit, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert key_edit.text() == "p\x00w"
    qtbot.keyClicks(value_edit, "gold")
    assert panel.save_button.isEnabled(), "local checks leave this one to the service"

    with qtbot.waitSignal(panel.sig_failed, timeout=TIMEOUT) as blocker:
        qtbot.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)
    assert "printable characters" in blocker.args[0]
    error = panel.field_error("appearance")
    assert error.startswith("key names are at most 64 printable characters"), error
    box = panel._fields["appearance"]
    assert box.error_label.isVisible() and "border: 1px solid" in box.frame.styleSheet()
    assert all(panel.field_error(name) == "" for name in ("appearance.bindi", "voice.pitch", "persona.warmth"))
    assert panel.message_label.isVisible() and "marked in red" in panel.message_label.text()
    assert panel.has_unsaved_changes(), "a refused save keeps the edits"

    key_edit.selectAll()
    qtbot.keyClicks(key_edit, "pw")
    assert panel.field_error("appearance") == "" and box.frame.styleSheet() == ""
    with qtbot.waitSignal(panel.sig_saved, timeout=TIMEOUT):
        qtbot.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)
    assert account.client.preferences(asset_id).appearance == {"bindi": False, "pw": "gold"}


# -- never lost silently -----------------------------------------------------------------------------

def test_unsaved_changes_are_never_dropped_silently(qtbot, make_panel, account: Account, asset_id: str) -> None:
    other_asset = add_asset(account.service, account.user_id)
    panel = make_panel(lambda: account.client)
    open_asset(qtbot, panel, asset_id)
    assert panel.maybe_save_or_discard(panel), "nothing to ask about"

    panel.rows["persona.warmth"].slider.setValue(90)
    asked: list[str] = []
    answer_next_question(QMessageBox.StandardButton.Cancel, asked)
    assert panel.maybe_save_or_discard(panel) is False
    assert asked == ["This avatar's preferences have unsaved changes."]
    assert panel.has_unsaved_changes() and panel.rows["persona.warmth"].slider.value() == 90

    answer_next_question(QMessageBox.StandardButton.Cancel, asked)
    assert panel.set_asset(other_asset) is False, "switching assets asks too"
    assert len(asked) == 2 and panel.asset_id == asset_id and panel.has_unsaved_changes()

    answer_next_question(QMessageBox.StandardButton.Save, asked)
    assert panel.maybe_save_or_discard(panel) is True
    assert not panel.has_unsaved_changes()
    assert account.client.preferences(asset_id).persona["warmth"] == 0.9

    panel.rows["persona.warmth"].slider.setValue(10)
    answer_next_question(QMessageBox.StandardButton.Discard, asked)
    with qtbot.waitSignal(panel.sig_loaded, timeout=TIMEOUT):
        assert panel.set_asset(other_asset) is True
    assert len(asked) == 4 and panel.asset_id == other_asset and not panel.has_unsaved_changes()
    assert account.client.preferences(asset_id).persona["warmth"] == 0.9, "discarded, not saved"
    assert not [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]


def test_other_failures_are_shown_in_the_message_line(qtbot, make_panel, account: Account, asset_id: str) -> None:
    panel = make_panel(lambda: account.client)
    with qtbot.waitSignal(panel.sig_failed, timeout=TIMEOUT) as blocker:
        panel.set_asset(str(uuid.uuid4()))
    assert blocker.args == ["no such asset"]
    assert panel.message_label.isVisible() and "Could not load the preferences: no such asset" in \
        panel.message_label.text()
    assert not panel.form.isEnabled() and panel.retry_button.isVisible()

    open_asset(qtbot, panel, asset_id)
    assert not panel.retry_button.isVisible() and not panel.message_label.isVisible()
    panel.rows["voice.speed"].slider.setValue(20)
    with account.service.engine.begin() as conn:  # deleted elsewhere (another device) meanwhile
        conn.execute(sa.delete(AvatarAsset).where(AvatarAsset.id == uuid.UUID(asset_id)))
    with qtbot.waitSignal(panel.sig_failed, timeout=TIMEOUT):
        qtbot.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)
    assert panel.message_label.text() == "Not saved: no such asset"
    assert not any(box.error for box in panel._fields.values()), "a 404 names no field"
    assert panel.has_unsaved_changes() and panel.rows["voice.speed"].spin.value() == 0.2
