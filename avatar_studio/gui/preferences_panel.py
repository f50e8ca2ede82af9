"""The open asset's preferences (appearance, voice, persona), bound to ``POST/GET /avatar/preferences``.

Why it is built this way:

* One binding pattern (anchors-code habit 3): every control only writes the panel's draft; the draft
  is shown back in the controls with their signals blocked. A slider and its number field therefore
  never disagree, and loading, reverting or a save never echo back as "edits".
* The dirty flag is a comparison, not a counter: the draft is dirty when what Save would send differs
  from what the service last confirmed. Moving a slider away and back is not an unsaved change.
* Nothing the service sent is dropped. Unknown persona traits get their own sliders, unknown
  appearance keys are rows of the free-key table keeping their JSON type, and a value this build does
  not list (a newer service) is added to its combo, so a save writes back what it read.
* The service is the judge of validity. Local checks only cover what the user can fix while typing
  (lengths, empty or repeated keys); a 422 is shown at the control its ``field`` names.
* Every service call runs through :func:`run_task`; only the close/switch guard waits for a save, in a
  local event loop, because "Save" there must succeed before the caller may go on.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import shiboken6
from PySide6.QtCore import QEventLoop, Qt, Signal
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSlider,
    QTableWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.client import Preferences, ServiceClient, ServiceError, ValidationError
from avatar_studio.gui.morph_panel import signals_blocked
from avatar_studio.gui.tasks import run_task
from avatar_studio.service.schemas import (
    APPEARANCE_MAX_EXTRA,
    EARRING_STYLES,
    KEY_MAX_CHARS,
    LANGUAGES,
    VALUE_MAX_CHARS,
)

log = logging.getLogger(__name__)

STEPS: Final[int] = 100
"""Slider steps per unit: 0.01, the same resolution as the two-decimal number fields."""

PERSONA_TRAITS: Final[tuple[tuple[str, str], ...]] = (("warmth", "Warmth"), ("humor", "Humour"),
                                                      ("formality", "Formality"))
"""The API's trait names with the labels the user sees (the API spells ``humor`` the US way)."""

PERSONA_DEFAULT: Final[float] = 0.5
"""Shown (and then saved) for a trait never set: the neutral middle, not an extreme."""

RESERVED_APPEARANCE_KEYS: Final[frozenset[str]] = frozenset({"bindi", "earrings"})
"""Appearance keys with their own controls; as free keys they would silently override them."""

EARRING_LABELS: Final[dict[str, str]] = {
    "none": "No earrings",
    "jhumka": "Jhumka (bell-shaped)",
    "chandbali": "Chandbali (crescent)",
}
LANGUAGE_LABELS: Final[dict[str, str]] = {"hinglish": "Hinglish (Hindi + English)"}
NOT_SET: Final[str] = ""
"""Combo item data for "no choice saved"; an empty string because Qt cannot look up ``None`` data."""

ERROR_COLOR: Final[str] = "#d0342c"


def _label(value: str, labels: dict[str, str]) -> str:
    return labels.get(value) or value.replace("_", " ").capitalize()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _scalar_text(value: object) -> str:
    """How a free appearance value reads in the table (JSON's spelling for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- the draft: what Save would send --------------------------------------------------------------
@dataclass
class _ExtraRow:
    """One free appearance key; ``original`` keeps the received JSON type while the text is unchanged."""

    key: str = ""
    text: str = ""
    original: Any = None

    def value(self) -> Any:
        """The text typed, as the type it arrived with when it still reads as one (else a string)."""
        original = self.original
        if original is None or self.text == _scalar_text(original):
            return self.text if original is None else original
        if isinstance(original, bool) and self.text.strip().lower() in ("true", "false"):
            return self.text.strip().lower() == "true"
        if _is_number(original):
            for parse in (int, float):
                try:
                    number = parse(self.text.strip())
                except ValueError:
                    continue
                if _is_number(number):
                    return number
        return self.text

    def is_blank(self) -> bool:
        return not self.key.strip() and not self.text


@dataclass
class _Draft:
    """The editable state behind the controls; Qt-free so copies and comparisons are plain Python."""

    bindi: bool = False
    earrings: str | None = None
    extras: list[_ExtraRow] = field(default_factory=list)
    language: str | None = None
    pitch: float = 0.0
    speed: float = 0.0
    persona: dict[str, float] = field(
        default_factory=lambda: {name: PERSONA_DEFAULT for name, _text in PERSONA_TRAITS})
    # Kept verbatim and sent back: values this panel has no control for (not expected from this service).
    voice_other: dict[str, Any] = field(default_factory=dict)
    persona_other: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_preferences(cls, prefs: Preferences) -> _Draft:
        appearance = dict(prefs.appearance)
        voice = dict(prefs.voice)
        persona = dict(prefs.persona)
        draft = cls()
        bindi = appearance.pop("bindi", None)
        if isinstance(bindi, bool):
            draft.bindi = bindi
        elif bindi is not None:
            draft.extras.append(_ExtraRow("bindi", _scalar_text(bindi), bindi))
        earrings = appearance.pop("earrings", None)
        draft.earrings = earrings if isinstance(earrings, str) and earrings else None
        draft.extras += [_ExtraRow(str(key), _scalar_text(value), value) for key, value in appearance.items()]
        language = voice.pop("language", None)
        draft.language = language if isinstance(language, str) and language else None
        for name in ("pitch", "speed"):
            value = voice.pop(name, None)
            if _is_number(value):
                setattr(draft, name, value)
            elif value is not None:
                draft.voice_other[name] = value
        draft.voice_other.update(voice)
        for name, _label_text in PERSONA_TRAITS:
            value = persona.pop(name, None)
            if _is_number(value):
                draft.persona[name] = value
            elif value is not None:
                draft.persona_other[name] = value
        for name, value in persona.items():
            if _is_number(value):
                draft.persona[name] = value
            else:
                draft.persona_other[name] = value
        return draft

    def payload(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """(appearance, voice, persona) exactly as ``save_preferences`` will send them."""
        appearance: dict[str, Any] = {"bindi": self.bindi}
        if self.earrings is not None:
            appearance["earrings"] = self.earrings
        for row in self.extras:
            if not row.is_blank():
                appearance[row.key.strip()] = row.value()
        voice: dict[str, Any] = dict(self.voice_other)
        if self.language is not None:
            voice["language"] = self.language
        voice["pitch"] = self.pitch
        voice["speed"] = self.speed
        persona: dict[str, Any] = {**self.persona_other, **self.persona}
        return appearance, voice, persona

    def extra_problems(self) -> tuple[dict[int, tuple[str, str]], str | None]:
        """Local problems of the free-key table: ``{row: (which, message)}`` plus one about the table."""
        problems: dict[int, tuple[str, str]] = {}
        seen: dict[str, int] = {}
        used = 0
        for index, row in enumerate(self.extras):
            if row.is_blank():
                continue
            used += 1
            key = row.key.strip()
            if not key:
                problems[index] = ("key", f"Row {index + 1}: give this value a key.")
            elif len(key) > KEY_MAX_CHARS:
                problems[index] = ("key", f"Row {index + 1}: keys are at most {KEY_MAX_CHARS} characters "
                                          f"(this one has {len(key)}).")
            elif key in RESERVED_APPEARANCE_KEYS:
                problems[index] = ("key", f"Row {index + 1}: “{key}” has its own control above.")
            elif key in seen:
                problems[index] = ("key", f"Row {index + 1}: “{key}” is already used in row {seen[key] + 1}.")
            elif len(row.text) > VALUE_MAX_CHARS:
                problems[index] = ("value", f"Row {index + 1}: values are at most {VALUE_MAX_CHARS} characters "
                                            f"(this one has {len(row.text)}).")
            seen.setdefault(key, index)
        overall = (f"At most {APPEARANCE_MAX_EXTRA} extra details ({used} now)."
                   if used > APPEARANCE_MAX_EXTRA else None)
        return problems, overall


# -- small controls -------------------------------------------------------------------------------
class _Slider(QSlider):
    """Ignores the mouse wheel unless focused, so scrolling the panel never changes a preference."""

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt override)
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class _Spin(QDoubleSpinBox):
    """Same reason as ``_Slider``: the wheel belongs to the scroll area until the field is clicked."""

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt override)
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class _Combo(QComboBox):
    """Same reason as ``_Slider``."""

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt override)
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class FieldBox(QWidget):
    """A control with room for an error right under it: where a refused field is shown to the user."""

    def __init__(self, content: QWidget) -> None:
        super().__init__()
        self.frame = QFrame()
        self.frame.setObjectName("fieldFrame")
        inner = QVBoxLayout(self.frame)
        inner.setContentsMargins(2, 2, 2, 2)
        inner.addWidget(content)
        self.error_label = QLabel()
        self.error_label.setObjectName("fieldError")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(f"color: {ERROR_COLOR};")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(1)
        layout.addWidget(self.frame)
        layout.addWidget(self.error_label)

    @property
    def error(self) -> str:
        return self.error_label.text() if not self.error_label.isHidden() else ""

    def set_error(self, message: str | None) -> None:
        """Outline the control in red with ``message`` under it; ``None`` clears both."""
        self.frame.setStyleSheet(
            f"QFrame#fieldFrame {{ border: 1px solid {ERROR_COLOR}; border-radius: 3px; }}" if message else "")
        self.error_label.setText(message or "")
        self.error_label.setVisible(bool(message))


class SliderRow(QWidget):
    """A slider and a two-decimal number field for one value; both only report edits, never store them."""

    def __init__(self, name: str, low: float, high: float, on_edit: Callable[[float], None]) -> None:
        super().__init__()
        self.slider = _Slider(Qt.Orientation.Horizontal)
        self.slider.setRange(round(low * STEPS), round(high * STEPS))
        self.slider.setPageStep(10)
        self.slider.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.slider.setAccessibleName(name)
        self.spin = _Spin()
        self.spin.setRange(low, high)
        self.spin.setDecimals(2)
        self.spin.setSingleStep(1 / STEPS)
        self.spin.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.spin.setKeyboardTracking(False)
        self.spin.setAccessibleName(f"{name} value")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.spin)
        self.slider.valueChanged.connect(lambda step: on_edit(step / STEPS))
        self.spin.valueChanged.connect(lambda value: on_edit(round(value, 2)))

    def show_value(self, value: float) -> None:
        """Reflect the draft's value in both controls without reporting it as an edit."""
        with signals_blocked(self.slider, self.spin):
            self.slider.setValue(round(value * STEPS))
            self.spin.setValue(value)


# -- the panel ------------------------------------------------------------------------------------
class PreferencesPanel(QWidget):
    """Edit and save the open asset's preferences; unsaved edits are flagged and never dropped silently."""

    sig_dirty_changed = Signal(bool)
    """The draft started or stopped differing from what the service last confirmed."""
    sig_loaded = Signal(str)
    """An asset's preferences arrived and are shown; carries the asset id."""
    sig_saved = Signal(str)
    """The service accepted a save; carries the asset id."""
    sig_failed = Signal(str)
    """Loading or saving failed; carries the service's (or the client's) sentence about why."""

    def __init__(self, get_client: Callable[[], ServiceClient | None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._get_client = get_client
        self._asset_id: str | None = None
        self._saved: _Draft | None = None  # the service's confirmed state; None until loaded
        self._draft = _Draft()
        self._dirty = False
        self._busy: str | None = None  # "loading" or "saving"
        self._generation = 0  # answers for an asset no longer open are dropped
        self._extra_problems: dict[int, tuple[str, str]] = {}
        self._extra_overall: str | None = None
        self._extra_edits: list[tuple[QLineEdit, QLineEdit]] = []
        self._fields: dict[str, FieldBox] = {}
        self.rows: dict[str, SliderRow] = {}
        self._build()
        self._sync_controls()
        self._update_state()

    # -- construction ------------------------------------------------------------------------------
    def _build(self) -> None:
        self.title_label = QLabel("Avatar preferences")
        self.title_label.setStyleSheet("font-weight: bold;")
        self.dirty_label = QLabel("• unsaved changes")
        self.dirty_label.setObjectName("dirtyLabel")
        self.dirty_label.setStyleSheet("color: #d98e04; font-weight: bold;")
        self.dirty_label.hide()
        header = QHBoxLayout()
        header.addWidget(self.title_label)
        header.addStretch(1)
        header.addWidget(self.dirty_label)

        self.notice_label = QLabel()
        self.notice_label.setObjectName("noticeLabel")
        self.notice_label.setWordWrap(True)
        self.notice_label.setStyleSheet("color: #80868f;")

        self.form = QWidget()
        form_layout = QVBoxLayout(self.form)
        form_layout.setContentsMargins(0, 0, 0, 0)
        form_layout.addWidget(self._build_appearance())
        form_layout.addWidget(self._build_voice())
        form_layout.addWidget(self._build_persona())
        form_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.form)

        self.message_label = QLabel()
        self.message_label.setObjectName("messageLabel")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.hide()
        self.retry_button = QPushButton("Try again")
        self.retry_button.setToolTip("Load this avatar's preferences from the service again")
        self.retry_button.clicked.connect(self.refresh)
        self.retry_button.hide()
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip("Throw away the unsaved changes and show the saved preferences")
        self.revert_button.clicked.connect(self.revert)
        self.save_button = QPushButton("Save")
        self.save_button.setToolTip("Save these preferences to the service for this avatar")
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(self.save)
        buttons = QHBoxLayout()
        buttons.addWidget(self.retry_button)
        buttons.addStretch(1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(header)
        layout.addWidget(self.notice_label)
        layout.addWidget(self.scroll, 1)
        layout.addWidget(self.message_label)
        layout.addLayout(buttons)

    def _field(self, name: str, content: QWidget) -> FieldBox:
        box = FieldBox(content)
        self._fields[name] = box
        return box

    def _build_appearance(self) -> QGroupBox:
        self.bindi_check = QCheckBox("Bindi")
        self.bindi_check.toggled.connect(self._on_bindi)
        self.earrings_combo = _Combo()
        self.earrings_combo.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.earrings_combo.addItem("Not set", NOT_SET)
        for style in EARRING_STYLES:
            self.earrings_combo.addItem(_label(style, EARRING_LABELS), style)
        self.earrings_combo.currentIndexChanged.connect(self._on_earrings)

        self.extras_table = QTableWidget(0, 3)
        self.extras_table.setHorizontalHeaderLabels(["Key", "Value", ""])
        self.extras_table.verticalHeader().hide()
        self.extras_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.extras_table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.extras_table.setMinimumHeight(120)
        head = self.extras_table.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        head.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        head.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.add_extra_button = QPushButton("Add detail")
        self.add_extra_button.setToolTip("Add a free key and value, e.g. “nose_ring” = “left”")
        self.add_extra_button.clicked.connect(self.add_extra_row)
        extras = QWidget()
        extras_layout = QVBoxLayout(extras)
        extras_layout.setContentsMargins(0, 0, 0, 0)
        extras_layout.addWidget(self.extras_table)
        extras_layout.addWidget(self.add_extra_button, 0, Qt.AlignmentFlag.AlignLeft)

        group = QGroupBox("Appearance")
        form = QFormLayout(group)
        form.addRow("", self._field("appearance.bindi", self.bindi_check))
        form.addRow("Earrings", self._field("appearance.earrings", self.earrings_combo))
        # The typed keys have their own paths, so an error naming only "appearance" is about the free keys.
        form.addRow("Extra details", self._field("appearance", extras))
        return group

    def _build_voice(self) -> QGroupBox:
        self.language_combo = _Combo()
        self.language_combo.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.language_combo.addItem("Not set", NOT_SET)
        for language in LANGUAGES:
            self.language_combo.addItem(_label(language, LANGUAGE_LABELS), language)
        self.language_combo.currentIndexChanged.connect(self._on_language)
        body = QWidget()
        form = QFormLayout(body)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Language", self._field("voice.language", self.language_combo))
        for name, label in (("pitch", "Pitch"), ("speed", "Speed")):
            row = SliderRow(label, -1.0, 1.0, lambda value, name=name: self._on_voice(name, value))
            self.rows[f"voice.{name}"] = row
            form.addRow(label, self._field(f"voice.{name}", row))
        group = QGroupBox("Voice")
        layout = QVBoxLayout(group)
        layout.addWidget(self._field("voice", body))
        return group

    def _build_persona(self) -> QGroupBox:
        body = QWidget()
        form = QFormLayout(body)
        form.setContentsMargins(0, 0, 0, 0)
        for name, label in PERSONA_TRAITS:
            row = SliderRow(label, 0.0, 1.0, lambda value, name=name: self._on_persona(name, value))
            self.rows[f"persona.{name}"] = row
            form.addRow(label, self._field(f"persona.{name}", row))
        self.other_traits_label = QLabel("Other traits saved for this avatar:")
        self.other_traits_label.setStyleSheet("color: #80868f;")
        self.other_traits = QWidget()
        self._other_traits_form = QFormLayout(self.other_traits)
        self._other_traits_form.setContentsMargins(0, 0, 0, 0)
        group = QGroupBox("Persona")
        layout = QVBoxLayout(group)
        inner = QWidget()
        inner_layout = QVBoxLayout(inner)
        inner_layout.setContentsMargins(0, 0, 0, 0)
        inner_layout.addWidget(body)
        inner_layout.addWidget(self.other_traits_label)
        inner_layout.addWidget(self.other_traits)
        layout.addWidget(self._field("persona", inner))
        return group

    # -- public API --------------------------------------------------------------------------------
    @property
    def asset_id(self) -> str | None:
        return self._asset_id

    def has_unsaved_changes(self) -> bool:
        return self._dirty

    def field_error(self, name: str) -> str:
        """The error shown at field ``name`` (e.g. ``"voice.pitch"``, ``"appearance"``); "" when none."""
        box = self._fields.get(name)
        return box.error if box is not None else ""

    def set_asset(self, asset_id: str | None) -> bool:
        """Show (and load in the background) the preferences of ``asset_id``; ``None`` when none is open.

        Returns False, staying on the current asset, when it has unsaved changes and the user
        chose Cancel (or Save failed): the caller should then keep its own selection too.
        """
        if asset_id == self._asset_id and (self._saved is not None or self._busy == "loading"):
            return True
        if not self.maybe_save_or_discard(self):
            return False
        self._asset_id = asset_id
        self._generation += 1
        self._saved = None
        self._draft = _Draft()
        self._busy = None
        self._set_message(None)
        self._clear_errors()
        self._sync_controls()
        self._load()
        return True

    def refresh(self) -> None:
        """Call after the service connection changed: loads the open asset if it is not loaded yet.

        Unsaved edits are never replaced; already loaded preferences are not fetched again.
        """
        if self._saved is None and self._busy is None:
            self._load()
        else:
            self._update_state()

    def save(self) -> bool:
        """Send the draft in the background; True when a save was started (its end: sig_saved/sig_failed)."""
        if not self._dirty or self._busy is not None or self._asset_id is None:
            return False
        if self._extra_problems or self._extra_overall:
            self._set_message("Not saved: fix the extra details marked in red first.", error=True)
            return False
        client = self._get_client()
        if client is None:
            self._set_message("Not saved: not connected to the avatar service.", error=True)
            return False
        snapshot = copy.deepcopy(self._draft)
        appearance, voice, persona = snapshot.payload()
        asset_id, generation = self._asset_id, self._generation
        self._clear_errors()
        self._busy = "saving"
        self._set_message("Saving…")
        self._update_state()
        run_task(lambda: client.save_preferences(asset_id, appearance, voice, persona),
                 lambda _result: self._on_saved(generation, asset_id, snapshot),
                 lambda exc: self._on_save_failed(generation, exc))
        return True

    def revert(self) -> None:
        """Throw away the draft and show the preferences the service last confirmed."""
        if self._saved is None or self._busy is not None:
            return
        self._draft = copy.deepcopy(self._saved)
        self._clear_errors()
        self._set_message(None)
        self._sync_controls()
        self._update_state()

    def maybe_save_or_discard(self, parent: QWidget | None = None) -> bool:
        """Before closing or switching assets: True when it is fine to go on, False to stay.

        With unsaved changes the user picks Save (go on only once the service accepted them),
        Discard (revert, go on) or Cancel (stay, still dirty).
        """
        self._wait_for_save()
        if not self._dirty:
            return True
        box = QMessageBox(QMessageBox.Icon.Warning, "Unsaved preferences",
                          "This avatar's preferences have unsaved changes.",
                          QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                          | QMessageBox.StandardButton.Cancel, parent)
        box.setObjectName("unsavedPreferencesBox")
        box.setInformativeText("Save them to the avatar service before going on?")
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        box.setEscapeButton(QMessageBox.StandardButton.Cancel)
        try:
            choice = box.exec()
        finally:
            box.deleteLater()
        if choice == QMessageBox.StandardButton.Discard:
            self.revert()
            return True
        if choice != QMessageBox.StandardButton.Save or not self.save():
            return False
        self._wait_for_save()
        return not self._dirty

    def add_extra_row(self) -> None:
        """Append an empty key/value row and put the cursor in its key field."""
        self._draft.extras.append(_ExtraRow())
        self._rebuild_extras_table()
        self._edited("appearance")
        key_edit, _value_edit = self._extra_edits[-1]
        key_edit.setFocus()

    def remove_extra_row(self, index: int) -> None:
        """Remove row ``index`` of the free-key table (saving then deletes the key on the service)."""
        if 0 <= index < len(self._draft.extras):
            del self._draft.extras[index]
            self._rebuild_extras_table()
            self._edited("appearance")

    def extra_edits(self, index: int) -> tuple[QLineEdit, QLineEdit]:
        """The key and value fields of row ``index`` of the free-key table."""
        return self._extra_edits[index]

    # -- control → draft ---------------------------------------------------------------------------
    def _on_bindi(self, checked: bool) -> None:
        self._draft.bindi = checked
        self._edited("appearance.bindi")

    def _on_earrings(self, _index: int) -> None:
        self._draft.earrings = self.earrings_combo.currentData() or None
        self._edited("appearance.earrings")

    def _on_language(self, _index: int) -> None:
        self._draft.language = self.language_combo.currentData() or None
        self._edited("voice.language")

    def _on_voice(self, name: str, value: float) -> None:
        setattr(self._draft, name, value)
        self.rows[f"voice.{name}"].show_value(value)
        self._edited(f"voice.{name}")

    def _on_persona(self, name: str, value: float) -> None:
        self._draft.persona[name] = value
        self.rows[f"persona.{name}"].show_value(value)
        self._edited(f"persona.{name}")

    def _on_extra_key(self, row: _ExtraRow, text: str) -> None:
        row.key = text
        self._edited("appearance")

    def _on_extra_value(self, row: _ExtraRow, text: str) -> None:
        row.text = text
        self._edited("appearance")

    def _on_remove_clicked(self, row: _ExtraRow) -> None:
        for index, candidate in enumerate(self._draft.extras):
            if candidate is row:
                self.remove_extra_row(index)
                return

    def _edited(self, name: str) -> None:
        """A control changed the draft: its old error no longer applies; recheck and re-flag."""
        box = self._fields.get(name)
        if box is not None:
            box.set_error(None)
        if name == "appearance":
            self._validate_extras()
        self._update_state()

    # -- draft → controls --------------------------------------------------------------------------
    def _sync_controls(self) -> None:
        draft = self._draft
        with signals_blocked(self.bindi_check, self.earrings_combo, self.language_combo):
            self.bindi_check.setChecked(draft.bindi)
            self._select(self.earrings_combo, draft.earrings)
            self._select(self.language_combo, draft.language)
        self.rows["voice.pitch"].show_value(draft.pitch)
        self.rows["voice.speed"].show_value(draft.speed)
        self._rebuild_other_traits()
        for name, value in draft.persona.items():
            self.rows[f"persona.{name}"].show_value(value)
        self._rebuild_extras_table()
        self._validate_extras()

    @staticmethod
    def _select(combo: QComboBox, value: str | None) -> None:
        """Select ``value``; one this build does not list (a newer service) is added so it round-trips."""
        data = value or NOT_SET
        index = combo.findData(data)
        if index < 0:
            combo.addItem(value or "", data)
            index = combo.count() - 1
        combo.setCurrentIndex(index)

    def _rebuild_other_traits(self) -> None:
        known = {name for name, _label_text in PERSONA_TRAITS}
        for name in [n for n in self.rows if n.startswith("persona.") and n.removeprefix("persona.") not in known]:
            del self.rows[name]
            del self._fields[name]
        while self._other_traits_form.rowCount():
            self._other_traits_form.removeRow(0)
        others = [name for name in self._draft.persona if name not in known]
        for name in others:
            row = SliderRow(name, 0.0, 1.0, lambda value, name=name: self._on_persona(name, value))
            self.rows[f"persona.{name}"] = row
            self._other_traits_form.addRow(name, self._field(f"persona.{name}", row))
        self.other_traits_label.setVisible(bool(others))
        self.other_traits.setVisible(bool(others))

    def _rebuild_extras_table(self) -> None:
        """New row widgets from the draft; only on load, revert, add and remove (never while typing)."""
        self.extras_table.setRowCount(0)
        self.extras_table.setRowCount(len(self._draft.extras))
        self._extra_edits = []
        for index, row in enumerate(self._draft.extras):
            key_edit = QLineEdit(row.key)
            key_edit.setPlaceholderText("key")
            key_edit.setAccessibleName(f"Extra detail {index + 1} key")
            value_edit = QLineEdit(row.text)
            value_edit.setPlaceholderText("value")
            value_edit.setAccessibleName(f"Extra detail {index + 1} value")
            remove = QToolButton()
            remove.setText("✕")
            remove.setToolTip("Remove this detail")
            key_edit.textChanged.connect(lambda text, row=row: self._on_extra_key(row, text))
            value_edit.textChanged.connect(lambda text, row=row: self._on_extra_value(row, text))
            remove.clicked.connect(lambda _checked=False, row=row: self._on_remove_clicked(row))
            self.extras_table.setCellWidget(index, 0, key_edit)
            self.extras_table.setCellWidget(index, 1, value_edit)
            self.extras_table.setCellWidget(index, 2, remove)
            self._extra_edits.append((key_edit, value_edit))

    def _validate_extras(self) -> None:
        self._extra_problems, self._extra_overall = self._draft.extra_problems()
        outline = f"QLineEdit {{ border: 1px solid {ERROR_COLOR}; }}"
        for index, (key_edit, value_edit) in enumerate(self._extra_edits):
            which = self._extra_problems.get(index, ("", ""))[0]
            key_edit.setStyleSheet(outline if which == "key" else "")
            value_edit.setStyleSheet(outline if which == "value" else "")
        messages = [message for _which, message in self._extra_problems.values()]
        if self._extra_overall:
            messages.insert(0, self._extra_overall)
        self._fields["appearance"].set_error("\n".join(messages) if messages else None)

    # -- background work ---------------------------------------------------------------------------
    def _load(self) -> None:
        client = self._get_client()
        asset_id, generation = self._asset_id, self._generation
        if asset_id is None or client is None:
            self._update_state()
            return
        self._busy = "loading"
        self._set_message("Loading preferences…")
        self._update_state()
        run_task(lambda: client.preferences(asset_id),
                 lambda prefs: self._on_loaded(generation, asset_id, prefs),
                 lambda exc: self._on_load_failed(generation, exc))

    def _current(self, generation: int) -> bool:
        """Whether an answer still concerns what is shown (the widget may be gone, the asset switched)."""
        return shiboken6.isValid(self) and generation == self._generation

    def _on_loaded(self, generation: int, asset_id: str, prefs: Preferences) -> None:
        if not self._current(generation):
            return
        self._busy = None
        self._saved = _Draft.from_preferences(prefs)
        self._draft = copy.deepcopy(self._saved)
        self._set_message(None)
        self._clear_errors()
        self._sync_controls()
        self._update_state()
        self.sig_loaded.emit(asset_id)

    def _on_load_failed(self, generation: int, exc: BaseException) -> None:
        if not self._current(generation):
            return
        self._busy = None
        if not isinstance(exc, ServiceError):
            self._update_state()
            raise exc
        self._set_message(f"Could not load the preferences: {exc}", error=True)
        self._update_state()
        self.sig_failed.emit(str(exc))

    def _on_saved(self, generation: int, asset_id: str, snapshot: _Draft) -> None:
        if not self._current(generation):
            return
        self._busy = None
        self._saved = snapshot
        self._set_message("Saved.")
        self._update_state()
        self.sig_saved.emit(asset_id)

    def _on_save_failed(self, generation: int, exc: BaseException) -> None:
        if not self._current(generation):
            return
        self._busy = None
        if not isinstance(exc, ServiceError):
            self._update_state()
            raise exc
        box = self._box_for(exc.field) if isinstance(exc, ValidationError) else None
        if box is not None and exc.field is not None:
            text = exc.message
            while text.startswith(f"{exc.field}: "):  # the box already says where; keep what follows
                text = text.removeprefix(f"{exc.field}: ")
            box.set_error(text)
            message = "Not saved: the service refused the field marked in red."
            self.scroll.ensureWidgetVisible(box)
        else:
            message = f"Not saved: {exc}"
        self._set_message(message, error=True)
        self._update_state()
        self.sig_failed.emit(str(exc))

    def _wait_for_save(self) -> None:
        """Spin a local event loop until a running save reports (the GUI keeps painting meanwhile)."""
        if self._busy != "saving":
            return
        loop = QEventLoop()
        self.sig_saved.connect(loop.quit)
        self.sig_failed.connect(loop.quit)
        try:
            loop.exec()
        finally:
            self.sig_saved.disconnect(loop.quit)
            self.sig_failed.disconnect(loop.quit)

    # -- state -------------------------------------------------------------------------------------
    def _box_for(self, name: str | None) -> FieldBox | None:
        """The control a service field path names, else its nearest named parent ("voice.volume" → voice)."""
        parts = (name or "").split(".")
        while parts and parts[0]:
            box = self._fields.get(".".join(parts))
            if box is not None:
                return box
            parts.pop()
        return None

    def _clear_errors(self) -> None:
        for box in self._fields.values():
            box.set_error(None)

    def _set_message(self, text: str | None, *, error: bool = False) -> None:
        self.message_label.setText(text or "")
        self.message_label.setStyleSheet(f"color: {ERROR_COLOR};" if error else "color: #80868f;")
        self.message_label.setVisible(bool(text))

    def _unavailable_reason(self) -> str | None:
        if self._asset_id is None:
            return "Open an avatar from the avatar service to edit its preferences."
        if self._get_client() is None:
            return "Connect to the avatar service to edit this avatar's preferences."
        return None

    def _update_state(self) -> None:
        """Derive the dirty flag, the notice and every enabled state from the draft and the busy state."""
        dirty = self._saved is not None and (
            self._draft.payload() != self._saved.payload() or bool(self._extra_problems or self._extra_overall))
        reason = self._unavailable_reason()
        ready = reason is None and self._saved is not None and self._busy is None
        self.notice_label.setText(reason or "")
        self.notice_label.setVisible(reason is not None)
        self.form.setEnabled(ready)
        self.dirty_label.setVisible(dirty)
        title = "Avatar preferences" if self._asset_id is None else f"Avatar preferences — {self._asset_id[:8]}"
        self.title_label.setText(title)
        self.setWindowTitle(f"{title} • unsaved changes" if dirty else title)
        self.save_button.setEnabled(dirty and ready and not (self._extra_problems or self._extra_overall))
        self.revert_button.setEnabled(dirty and self._busy is None)
        self.retry_button.setVisible(self._saved is None and self._busy is None and reason is None)
        if dirty != self._dirty:
            self._dirty = dirty
            self.sig_dirty_changed.emit(dirty)
