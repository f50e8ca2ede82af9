"""Calibrate lip sync to the user's voice: a guided recording of short prompts, then a saved profile.

Why a guided, step-per-prompt recording: the classifier adapts per viseme (``classifier.calibrate``),
so it needs one clean take of each sound, not a free-form sentence. One short prompt at a time, with
a live meter and a verdict after every take ("too quiet — move closer", "clipping"), lets a user
who never read the docs fix a bad take on the spot instead of saving a profile that quietly makes
lip sync worse. Vowels are required — they carry most of what makes a voice distinct and give
``calibrate`` the offset it applies to every sound that was not recorded; the room-noise and
consonant steps may be skipped (an accent, a lisp, a noisy room).

Why the microphone is polled from a ``QTimer`` on the GUI thread rather than read on a thread of
our own: :class:`MicrophoneStream` already copies the audio into a ring buffer on PortAudio's thread,
so ``read_available()`` is a cheap copy of ≈30 ms of samples. Polling keeps every piece of state (the
take, the meter, the step) on one thread — no locks, no queued signals — and a vanished device
arrives as an ``AudioDeviceError`` right where the message can be shown. A take ends when it holds
``seconds × rate`` samples, not when a wall clock says so, so timer jitter never shortens it.

Why ``calibrate`` runs in the thread pool although it takes 0.15–0.2 s for the 15 s script (measured on a
2-core machine under load): on a slower machine it is a visible freeze, and ``run_task`` makes it free.

The microphone opens with the dialog (and closes with it) so the level meter shows, before Start,
whether the right microphone hears the user; audio outside a take is read and dropped, never kept.

A machine without a microphone still gets a working dialog: the calibration tab says why nothing can
be recorded and the Profiles tab (list, rename, delete) works as usual.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.gui.tasks import run_task
from avatar_studio.lipsync.audio_input import (
    SILENCE_DBFS,
    AudioDeviceError,
    InputDevice,
    MicrophoneStream,
    list_input_devices,
)
from avatar_studio.lipsync.classifier import (
    CALIBRATION_PROMPTS,
    CalibrationPrompt,
    ProfileError,
    VisemeModel,
    calibrate,
    check_profile_name,
    delete_profile,
    list_profiles,
    load_profile,
    save_profile,
)
from avatar_studio.lipsync.features import SAMPLE_RATE, resample

REQUIRED_VISEMES: Final[frozenset[str]] = frozenset({"aa", "E", "ih", "oh", "ou"})
"""Steps that cannot be skipped: the vowels (see the module docstring for why)."""

TOO_QUIET_DBFS: Final[float] = -40.0
"""A speech take whose loud part (90th percentile of 10 ms levels) stays below this is too quiet.

The classifier ignores frames under −50 dBFS and keeps those within 20 dB of a take's loudest part,
so a take peaking under −40 dBFS leaves little for it; a normal voice near a laptop microphone sits
around −30 to −15 dBFS."""

NOISY_ROOM_DBFS: Final[float] = -35.0
"""A room-noise take louder than this was not quiet (talking, music): the silence class would learn speech."""

CLIP_LEVEL: Final[float] = 0.99
"""Samples at or above this magnitude count as clipped (float input is scaled to ±1)."""

POLL_MS: Final[int] = 30
"""How often the microphone buffer is drained and the meter redrawn: smooth to the eye, ≈3 % of a core."""

METER_FLOOR_DBFS: Final[float] = -60.0

NO_DEVICE_HINT: Final[str] = "You can still manage saved profiles in the Profiles tab."

_PAGE_INTRO, _PAGE_TAKE, _PAGE_RESULT = 0, 1, 2


def profile_name_problem(name: str) -> str:
    """Why ``name`` cannot be a profile name, or '' if it can.

    Asks the classifier's own path check (the one ``save_profile`` runs), so the field can never
    accept a name that saving would then refuse.
    """
    try:
        check_profile_name(name)
    except ProfileError as exc:
        return str(exc)
    return ""


def assess_take(samples: np.ndarray, sample_rate: float, viseme: str) -> str:
    """A warning for the user about one take ("too quiet — move closer", "clipping"), or '' when it is fine.

    Judged on 10 ms frame levels rather than the overall RMS: a take that starts late is still fine
    if the sound itself was loud enough, because calibration trims the quiet ends anyway.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0:
        return "Nothing was recorded — check the microphone and Retake."
    clipped = int(np.count_nonzero(np.abs(samples) >= CLIP_LEVEL))
    if clipped > max(3, samples.size // 1000):
        return (
            "Clipping — the sound was too loud for the input and got distorted. Move back a little "
            "(or lower the input volume) and Retake."
        )
    hop = max(1, round(0.01 * sample_rate))
    usable = samples[: samples.size - samples.size % hop] if samples.size >= hop else samples
    frames = usable.reshape(-1, min(hop, usable.size))
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    levels = 20.0 * np.log10(np.maximum(rms, 10 ** (SILENCE_DBFS / 20)))
    loud = float(np.percentile(levels, 90))
    if viseme == "sil":
        if loud > NOISY_ROOM_DBFS:
            return (
                f"Not quiet — the room was at {loud:.0f} dBFS. Stay silent (and wait for noise to stop), "
                "then Retake, or Skip this step."
            )
        return ""
    if loud < TOO_QUIET_DBFS:
        return (
            f"Too quiet — move closer to the microphone (or raise its input volume) and Retake. "
            f"The loudest part was {loud:.0f} dBFS; aim for the meter's upper half."
        )
    return ""


def _created_text(created: object) -> str:
    """An ISO timestamp from a profile as local date and time; the raw text if it is not ISO."""
    try:
        when = _dt.datetime.fromisoformat(str(created))
    except ValueError:
        return str(created or "")
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


class CalibrationDialog(QDialog):
    """Record the calibration prompts, adapt the lip-sync classifier, save it as a profile; manage profiles.

    After ``exec()`` returns Accepted, :attr:`saved_profile_name` names the profile just saved in
    ``profiles_dir``. ``device`` preselects a microphone (index or part of its name, as
    :class:`MicrophoneStream` takes it). ``prompts`` is the script; it defaults to the classifier's
    ``CALIBRATION_PROMPTS`` — tests pass shorter takes, and a future "quick calibration" could pass fewer.
    """

    def __init__(
        self,
        profiles_dir: Path,
        parent: QWidget | None = None,
        device: int | str | None = None,
        *,
        prompts: Sequence[CalibrationPrompt] = CALIBRATION_PROMPTS,
    ) -> None:
        super().__init__(parent)
        if not prompts:
            raise ValueError("the calibration script needs at least one prompt")
        self.setWindowTitle("Calibrate Lip Sync to Your Voice")
        self.setObjectName("calibration_dialog")
        self.resize(640, 520)
        self.profiles_dir = Path(profiles_dir)
        self.saved_profile_name: str | None = None
        self._prompts: tuple[CalibrationPrompt, ...] = tuple(prompts)
        self._mic: MicrophoneStream | None = None
        self._takes: dict[int, np.ndarray] = {}
        self._take_rates: dict[int, float] = {}  # per take: the user may switch microphones between steps
        self._warnings: dict[int, str] = {}
        self._skipped: set[int] = set()
        self._take_rate = 0.0
        self._step = 0
        self._recording: list[np.ndarray] | None = None
        self._recorded = 0
        self._needed = 0
        self._result: VisemeModel | None = None
        self._calibrating = False
        self._job = 0  # bumped whenever a running calibration becomes stale (Back, Start over, close)
        self._closing = False

        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

        self.tabs = QTabWidget(self)
        self.tabs.addTab(self._build_calibrate_tab(), "Calibrate")
        self.tabs.addTab(self._build_profiles_tab(), "Profiles")
        close_box = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        close_box.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(close_box)

        self._fill_devices(device)
        self.refresh_profiles()  # also checks the suggested name
        self._show_page(_PAGE_INTRO)

    # -- building ------------------------------------------------------------------------------------
    def _build_calibrate_tab(self) -> QWidget:
        tab = QWidget(self)
        self.name_edit = QLineEdit(tab)
        self.name_edit.setObjectName("name_edit")
        self.name_edit.setMaxLength(64)
        self.name_edit.setPlaceholderText("e.g. My voice")
        self.name_edit.setText("My voice")
        self.name_edit.textChanged.connect(self._on_name_changed)
        self.name_hint = QLabel(tab)
        self.name_hint.setObjectName("name_hint")
        self.name_hint.setWordWrap(True)
        self.device_combo = QComboBox(tab)
        self.device_combo.setObjectName("device_combo")
        self.device_combo.currentIndexChanged.connect(self._on_device_chosen)
        self.refresh_devices_button = QPushButton("Refresh", tab)
        self.refresh_devices_button.setToolTip("List the microphones again (after plugging one in)")
        self.refresh_devices_button.clicked.connect(lambda: self._fill_devices(self.device_combo.currentData()))
        self.meter = QProgressBar(tab)
        self.meter.setObjectName("level_meter")
        self.meter.setRange(0, round(-METER_FLOOR_DBFS))
        self.meter.setTextVisible(True)
        self.meter.setToolTip("Input level: speak so that it reaches the upper half without touching the end")
        self.meter.setAccessibleName("Microphone level")
        self.device_message = QLabel(tab)
        self.device_message.setObjectName("device_message")
        self.device_message.setWordWrap(True)
        self.device_message.hide()

        form = QFormLayout()
        form.addRow("Profile name:", self.name_edit)
        form.addRow("", self.name_hint)
        device_row = QHBoxLayout()
        device_row.addWidget(self.device_combo, 1)
        device_row.addWidget(self.refresh_devices_button)
        form.addRow("Microphone:", device_row)
        form.addRow("Level:", self.meter)

        # page: intro
        intro = QWidget(tab)
        total = sum(p.seconds for p in self._prompts)
        self.intro_label = QLabel(
            f"<p>Lip sync follows your mouth better once it has heard <b>your</b> voice. You will hold "
            f"{len(self._prompts)} short sounds (about {total:.0f} seconds of recording in all), one at a time.</p>"
            "<p>For each step: read the sound, press <b>Record</b>, and hold it until the bar is full. "
            "Sit as you will when using lip sync, at your usual distance from the microphone. "
            "Nothing is uploaded; the profile is saved on this computer.</p>",
            intro,
        )
        self.intro_label.setWordWrap(True)
        self.intro_label.setTextFormat(Qt.TextFormat.RichText)
        self.start_button = QPushButton("Start", intro)
        self.start_button.setObjectName("start_button")
        self.start_button.clicked.connect(self.start)
        intro_layout = QVBoxLayout(intro)
        intro_layout.addWidget(self.intro_label)
        intro_layout.addStretch(1)
        intro_layout.addWidget(self.start_button, 0, Qt.AlignmentFlag.AlignRight)

        # page: one take
        take = QWidget(tab)
        self.step_label = QLabel(take)
        self.step_label.setObjectName("step_label")
        self.prompt_label = QLabel(take)
        self.prompt_label.setObjectName("prompt_label")
        self.prompt_label.setWordWrap(True)
        self.prompt_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        big = QFont(self.prompt_label.font())
        big.setPointSizeF(big.pointSizeF() * 1.8 if big.pointSizeF() > 0 else 18.0)
        big.setBold(True)
        self.prompt_label.setFont(big)
        self.take_progress = QProgressBar(take)
        self.take_progress.setObjectName("take_progress")
        self.take_progress.setTextVisible(True)
        self.take_progress.setAccessibleName("Time left in this take")
        self.take_status = QLabel(take)
        self.take_status.setObjectName("take_status")
        self.take_status.setWordWrap(True)
        self.back_button = QPushButton("Back", take)
        self.back_button.setObjectName("back_button")
        self.back_button.clicked.connect(self.back)
        self.record_button = QPushButton("Record", take)
        self.record_button.setObjectName("record_button")
        self.record_button.clicked.connect(self.record)
        self.skip_button = QPushButton("Skip", take)
        self.skip_button.setObjectName("skip_button")
        self.skip_button.clicked.connect(self.skip)
        self.next_button = QPushButton("Next", take)
        self.next_button.setObjectName("next_button")
        self.next_button.clicked.connect(self.next)
        take_buttons = QHBoxLayout()
        take_buttons.addWidget(self.back_button)
        take_buttons.addStretch(1)
        take_buttons.addWidget(self.record_button)
        take_buttons.addWidget(self.skip_button)
        take_buttons.addWidget(self.next_button)
        take_layout = QVBoxLayout(take)
        take_layout.addWidget(self.step_label)
        take_layout.addStretch(1)
        take_layout.addWidget(self.prompt_label)
        take_layout.addWidget(self.take_progress)
        take_layout.addWidget(self.take_status)
        take_layout.addStretch(1)
        take_layout.addLayout(take_buttons)

        # page: result
        result = QWidget(tab)
        self.result_label = QLabel(result)
        self.result_label.setObjectName("result_label")
        self.result_label.setWordWrap(True)
        self.result_label.setTextFormat(Qt.TextFormat.RichText)
        self.save_button = QPushButton("Save Profile", result)
        self.save_button.setObjectName("save_button")
        self.save_button.clicked.connect(self.save)
        self.result_back_button = QPushButton("Back to the Takes", result)
        self.result_back_button.clicked.connect(lambda: self._go_to_step(len(self._prompts) - 1))
        self.restart_button = QPushButton("Start Over", result)
        self.restart_button.clicked.connect(self.start)
        result_buttons = QHBoxLayout()
        result_buttons.addWidget(self.result_back_button)
        result_buttons.addWidget(self.restart_button)
        result_buttons.addStretch(1)
        result_buttons.addWidget(self.save_button)
        result_layout = QVBoxLayout(result)
        result_layout.addWidget(self.result_label)
        result_layout.addStretch(1)
        result_layout.addLayout(result_buttons)

        self.pages = QStackedWidget(tab)
        self.pages.addWidget(intro)  # _PAGE_INTRO
        self.pages.addWidget(take)  # _PAGE_TAKE
        self.pages.addWidget(result)  # _PAGE_RESULT

        layout = QVBoxLayout(tab)
        layout.addLayout(form)
        layout.addWidget(self.device_message)
        layout.addWidget(self.pages, 1)
        return tab

    def _build_profiles_tab(self) -> QWidget:
        tab = QWidget(self)
        self.profile_list = QTreeWidget(tab)
        self.profile_list.setObjectName("profile_list")
        self.profile_list.setHeaderLabels(["Name", "Created", "Calibrated sounds"])
        self.profile_list.setRootIsDecorated(False)
        self.profile_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.profile_list.header().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.profile_list.itemSelectionChanged.connect(self._update_profile_buttons)
        self.profiles_message = QLabel(tab)
        self.profiles_message.setObjectName("profiles_message")
        self.profiles_message.setWordWrap(True)
        self.rename_button = QPushButton("Rename…", tab)
        self.rename_button.setObjectName("rename_button")
        self.rename_button.clicked.connect(self._ask_rename)
        self.delete_button = QPushButton("Delete…", tab)
        self.delete_button.setObjectName("delete_button")
        self.delete_button.clicked.connect(self._ask_delete)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.rename_button)
        buttons.addWidget(self.delete_button)
        layout = QVBoxLayout(tab)
        layout.addWidget(QLabel(f"Profiles in {self.profiles_dir}:", tab))
        layout.addWidget(self.profile_list, 1)
        layout.addWidget(self.profiles_message)
        layout.addLayout(buttons)
        return tab

    # -- public API ----------------------------------------------------------------------------------
    @property
    def prompts(self) -> tuple[CalibrationPrompt, ...]:
        return self._prompts

    @property
    def current_step(self) -> int:
        """Index of the prompt on screen (meaningful on the take page)."""
        return self._step

    @property
    def recording(self) -> bool:
        return self._recording is not None

    @property
    def calibrating(self) -> bool:
        """True while ``calibrate`` runs in the background."""
        return self._calibrating

    @property
    def calibrated_model(self) -> VisemeModel | None:
        """The adapted model once calibration finished (before or after saving)."""
        return self._result

    @property
    def message(self) -> str:
        """The microphone message on screen (no device, a device error), or ''."""
        return self.device_message.text() if self.device_message.isVisibleTo(self) else ""

    def take_warning(self, step: int) -> str:
        """The warning shown for ``step``'s take, '' for a good take (KeyError: no take recorded)."""
        if step not in self._takes:
            raise KeyError(step)
        return self._warnings.get(step, "")

    def is_optional(self, step: int) -> bool:
        return self._prompts[step].viseme not in REQUIRED_VISEMES

    def start(self) -> None:
        """Begin (or begin again) the guided recording at the first prompt; earlier takes are dropped."""
        if profile_name_problem(self.profile_name()):
            self.name_edit.setFocus()
            return
        self._job += 1
        self._takes.clear()
        self._take_rates.clear()
        self._warnings.clear()
        self._skipped.clear()
        self._result = None
        self._go_to_step(0)

    def profile_name(self) -> str:
        return self.name_edit.text().strip()

    def record(self) -> None:
        """Record (or retake) the current prompt; the take ends by itself after the prompt's seconds."""
        if self._recording is not None or self.pages.currentIndex() != _PAGE_TAKE:
            return
        mic = self._ensure_mic()
        if mic is None:
            self.take_status.setText("No microphone to record from (see the message above).")
            return
        try:
            mic.read_available()  # drop what was heard before the button was pressed
        except AudioDeviceError as exc:
            self._device_failed(str(exc))
            return
        # An earlier take of this step stays until the new one is complete: an unplugged microphone
        # in the middle of a retake must not cost the user the take they already had.
        self._take_rate = mic.sample_rate
        self._needed = max(1, round(self._prompts[self._step].seconds * mic.sample_rate))
        self._recorded = 0
        self._recording = []
        self.take_progress.setRange(0, self._needed)
        self.take_progress.setValue(0)
        self.take_status.setText("Recording… hold the sound until the bar is full.")
        self._update_take_buttons()

    def skip(self) -> None:
        """Leave the current (optional) prompt out of the calibration and go on."""
        if self._recording is not None or not self.is_optional(self._step):
            return
        self._takes.pop(self._step, None)
        self._warnings.pop(self._step, None)
        self._skipped.add(self._step)
        self._advance()

    def back(self) -> None:
        if self._recording is not None:
            return
        if self._step == 0:
            self._show_page(_PAGE_INTRO)
        else:
            self._go_to_step(self._step - 1)

    def next(self) -> None:
        """Keep the current take (even with a warning: the user may know better) and go on."""
        if self._recording is not None or self._step not in self._takes:
            return
        self._advance()

    def save(self) -> None:
        """Save the calibrated model under the chosen name (asking before replacing one) and close."""
        model = self._result
        name = self.profile_name()
        if model is None:
            return
        problem = profile_name_problem(name)
        if problem:
            self.result_label.setText(f"Cannot save: {problem}. Change the name above.")
            return
        try:
            exists = any(p["name"] == name for p in list_profiles(self.profiles_dir))
        except OSError:
            exists = False  # an unreadable folder: saving will fail and say why
        if exists:
            answer = QMessageBox.question(
                self, "Replace profile?",
                f"A lip-sync profile named “{name}” already exists. Replace it with this calibration?",
            )  # fmt: skip
            if answer != QMessageBox.StandardButton.Yes:
                return
        try:
            save_profile(model, self.profiles_dir, name)
        except (ProfileError, OSError) as exc:
            self.result_label.setText(f"The profile could not be saved: {exc}")
            return
        self.saved_profile_name = name
        self.refresh_profiles()
        self.accept()

    def refresh_profiles(self) -> None:
        """List the profiles in ``profiles_dir`` again (name, date, calibrated visemes)."""
        previous = self._selected_profile()
        self.profile_list.clear()
        try:
            profiles = list_profiles(self.profiles_dir)
        except OSError as exc:
            profiles = []
            self.profiles_message.setText(f"The profiles folder cannot be read: {exc}")
        else:
            self.profiles_message.setText("" if profiles else "No profiles yet: calibrate to make one.")
        for info in profiles:
            calibrated = info.get("calibrated") or []
            visemes = ", ".join(str(v) for v in calibrated) if isinstance(calibrated, list) else str(calibrated)
            item = QTreeWidgetItem([str(info["name"]), _created_text(info.get("created")), visemes])
            item.setData(0, Qt.ItemDataRole.UserRole, str(info["name"]))
            self.profile_list.addTopLevelItem(item)
            if info["name"] == previous:
                item.setSelected(True)
        self.profile_list.resizeColumnToContents(0)
        self.profile_list.resizeColumnToContents(1)
        self._update_profile_buttons()
        self._on_name_changed(self.name_edit.text())

    def profile_names(self) -> list[str]:
        """The names in the Profiles list, as shown."""
        return [self.profile_list.topLevelItem(i).text(0) for i in range(self.profile_list.topLevelItemCount())]

    def select_profile(self, name: str) -> None:
        for i in range(self.profile_list.topLevelItemCount()):
            item = self.profile_list.topLevelItem(i)
            item.setSelected(item.text(0) == name)

    def delete_selected_profile(self) -> bool:
        """Delete the selected profile without asking (the Delete… button asks first); True if deleted."""
        name = self._selected_profile()
        if name is None:
            return False
        try:
            delete_profile(self.profiles_dir, name)
        except (ProfileError, OSError) as exc:
            self.profiles_message.setText(f"“{name}” could not be deleted: {exc}")
            return False
        self.refresh_profiles()
        self.profiles_message.setText(f"Deleted “{name}”.")
        return True

    def rename_selected_profile(self, new_name: str) -> bool:
        """Rename the selected profile (save under the new name, then delete the old); True on success."""
        old = self._selected_profile()
        new_name = new_name.strip()
        if old is None or new_name == old:
            return False
        problem = profile_name_problem(new_name)
        if problem:
            self.profiles_message.setText(problem)
            return False
        if new_name in self.profile_names():
            self.profiles_message.setText(f"A profile named “{new_name}” already exists; delete it first.")
            return False
        try:
            save_profile(load_profile(self.profiles_dir, old), self.profiles_dir, new_name)
            delete_profile(self.profiles_dir, old)
        except (ProfileError, OSError) as exc:
            self.profiles_message.setText(f"“{old}” could not be renamed: {exc}")
            return False
        self.refresh_profiles()
        self.select_profile(new_name)
        self.profiles_message.setText(f"Renamed “{old}” to “{new_name}”.")
        return True

    # -- QDialog -------------------------------------------------------------------------------------
    def done(self, result: int) -> None:
        """Every way out ends here: stop the timer and release the microphone."""
        self._shutdown()
        super().done(result)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        self._shutdown()
        super().closeEvent(event)

    def _shutdown(self) -> None:
        self._closing = True
        self._job += 1
        self._recording = None
        self._close_mic()

    # -- the profile name ----------------------------------------------------------------------------
    def _on_name_changed(self, text: str) -> None:
        name = text.strip()
        problem = profile_name_problem(name) if name else "Enter a name for the profile."
        if problem:
            self.name_hint.setText(problem[0].upper() + problem[1:])
            self.name_hint.setStyleSheet("color: #b00020;")
        elif name in self.profile_names():
            self.name_hint.setText(f"A profile named “{name}” exists; saving will ask before replacing it.")
            self.name_hint.setStyleSheet("")
        else:
            self.name_hint.setText("")
            self.name_hint.setStyleSheet("")
        self.name_hint.setVisible(bool(self.name_hint.text()))
        self.start_button.setEnabled(not problem and self.device_combo.count() > 0)
        self.save_button.setEnabled(not problem and self._result is not None)

    # -- devices -------------------------------------------------------------------------------------
    def _fill_devices(self, wanted: int | str | None) -> None:
        """List the microphones and open ``wanted`` (an index or name; None: the system default)."""
        self._close_mic()
        problem = ""
        try:
            devices = list_input_devices()
        except AudioDeviceError as exc:  # e.g. no PortAudio library: a sentence that names the package
            devices, problem = [], f"{exc}. {NO_DEVICE_HINT}"
        self.device_combo.blockSignals(True)
        try:
            self.device_combo.clear()
            for d in devices:
                self.device_combo.addItem(f"{d.name}{' (default)' if d.is_default else ''}", d.index)
        finally:
            self.device_combo.blockSignals(False)
        self.device_combo.setEnabled(bool(devices))
        self._on_name_changed(self.name_edit.text())  # Start needs a microphone as well as a name
        if not devices:
            self._show_device_message(
                problem
                or "No microphone was found. Plug one in and press Refresh, or check that the sound server "
                f"(PulseAudio/PipeWire) runs. {NO_DEVICE_HINT}"
            )
            self._update_take_buttons()
            return
        self._show_device_message("")
        if self._open_mic(wanted):
            return
        # The requested microphone is missing: say so, and offer the default so the dialog stays usable.
        note = self.device_message.text()
        default = next((d for d in devices if d.is_default), devices[0])
        if self._open_mic(default.index):
            self._show_device_message(f"{note} Using “{default.name}” instead; choose another one above.")

    def _open_mic(self, device: int | str | None) -> bool:
        """Open and start ``device``; on failure show why and leave no stream open."""
        self._close_mic()
        try:
            mic = MicrophoneStream(device=device)
            mic.start()
        except AudioDeviceError as exc:
            self._show_device_message(f"The microphone cannot be used: {exc}")
            self._update_take_buttons()
            return False
        self._mic = mic
        self._select_device(mic.device)
        self._show_device_message(mic.rate_note)
        self._timer.start()
        self._update_take_buttons()
        return True

    def _select_device(self, device: InputDevice) -> None:
        index = self.device_combo.findData(device.index)
        if index >= 0 and index != self.device_combo.currentIndex():
            self.device_combo.blockSignals(True)
            self.device_combo.setCurrentIndex(index)
            self.device_combo.blockSignals(False)

    def _ensure_mic(self) -> MicrophoneStream | None:
        """The open microphone, reopening the chosen one after an error (Retake after an unplug)."""
        if self._mic is None and self.device_combo.count() > 0 and not self._closing:
            self._open_mic(self.device_combo.currentData())
        return self._mic

    def _close_mic(self) -> None:
        self._timer.stop()
        mic, self._mic = self._mic, None
        if mic is not None:
            mic.close()
        self.meter.setValue(0)
        self.meter.setFormat("—")

    def _on_device_chosen(self, _index: int) -> None:
        if self._recording is not None:
            self._recording = None
            self.take_status.setText("The microphone changed during the take; press Retake.")
        self._open_mic(self.device_combo.currentData())

    def _show_device_message(self, text: str) -> None:
        self.device_message.setText(text)
        self.device_message.setVisible(bool(text))

    def _device_failed(self, text: str) -> None:
        """The device vanished or failed: drop the partial take, release the stream, offer Retake."""
        interrupted = self._recording is not None
        self._recording = None
        self._close_mic()
        self._show_device_message(f"{text} Press Refresh if you plugged it in again.")
        if interrupted:
            kept = " (the earlier take of this step is kept)" if self._step in self._takes else ""
            self.take_status.setText(f"The take was interrupted because the microphone stopped. Press Retake{kept}.")
        self._update_take_buttons()

    # -- recording -----------------------------------------------------------------------------------
    def _poll(self) -> None:
        """Drain the microphone: feed the meter, and the take while one is recorded."""
        mic = self._mic
        if mic is None:
            return
        try:
            chunk = mic.read_available()
        except AudioDeviceError as exc:
            self._device_failed(str(exc))
            return
        level = mic.level()
        self.meter.setValue(round(max(0.0, level - METER_FLOOR_DBFS)))
        self.meter.setFormat(f"{level:.0f} dBFS" if level > SILENCE_DBFS else "silence")
        if self._recording is None:
            return
        self._recording.append(chunk)
        self._recorded += chunk.size
        self.take_progress.setValue(min(self._recorded, self._needed))
        left = max(0.0, (self._needed - self._recorded) / mic.sample_rate)
        self.take_progress.setFormat(f"{left:.1f} s left")
        if self._recorded >= self._needed:
            self._finish_take()

    def _finish_take(self) -> None:
        assert self._recording is not None
        samples = np.concatenate(self._recording)[: self._needed]
        self._recording = None
        prompt = self._prompts[self._step]
        warning = assess_take(samples, self._take_rate, prompt.viseme)
        self._takes[self._step] = samples
        self._take_rates[self._step] = self._take_rate
        self._warnings[self._step] = warning
        self._skipped.discard(self._step)
        self.take_progress.setFormat("done")
        self._show_take_verdict()
        self._update_take_buttons()

    def _show_take_verdict(self) -> None:
        warning = self._warnings.get(self._step, "")
        if self._step not in self._takes:
            hint = "Press Record when you are ready."
            if self._step in self._skipped:
                hint = "Skipped. Press Record to record it after all."
            self.take_status.setText(hint)
            self.take_status.setStyleSheet("")
        elif warning:
            self.take_status.setText(f"⚠ {warning}")
            self.take_status.setStyleSheet("color: #b00020;")
        else:
            self.take_status.setText("✓ Good take. Press Next, or Retake.")
            self.take_status.setStyleSheet("")

    # -- steps ---------------------------------------------------------------------------------------
    def _show_page(self, page: int) -> None:
        self.pages.setCurrentIndex(page)
        self.name_edit.setEnabled(page != _PAGE_TAKE)
        # Enter does the page's main action (and never a stray Refresh or Delete).
        default = {_PAGE_INTRO: self.start_button, _PAGE_TAKE: self.record_button, _PAGE_RESULT: self.save_button}
        for button in self.findChildren(QPushButton):
            button.setAutoDefault(False)
            button.setDefault(button is default[page])

    def _go_to_step(self, step: int) -> None:
        self._job += 1  # a calibration still running for an earlier visit of the result page is stale
        self._calibrating = False
        self._result = None
        self._step = step
        prompt = self._prompts[step]
        optional = " (optional)" if self.is_optional(step) else ""
        self.step_label.setText(f"Step {step + 1} of {len(self._prompts)}{optional}")
        self.prompt_label.setText(prompt.text)
        self.take_progress.setRange(0, 1)
        self.take_progress.setValue(1 if step in self._takes else 0)
        self.take_progress.setFormat(f"{prompt.seconds:g} s" if step not in self._takes else "done")
        self._show_page(_PAGE_TAKE)
        self._show_take_verdict()
        self._update_take_buttons()

    def _advance(self) -> None:
        if self._step + 1 < len(self._prompts):
            self._go_to_step(self._step + 1)
        else:
            self._finish()

    def _update_take_buttons(self) -> None:
        recording = self._recording is not None
        have_take = self._step in self._takes
        last = self._step == len(self._prompts) - 1
        self.record_button.setText("Retake" if have_take or self._step in self._skipped else "Record")
        self.record_button.setEnabled(not recording and self.device_combo.count() > 0)
        self.skip_button.setVisible(self.is_optional(self._step))
        self.skip_button.setEnabled(not recording)
        self.back_button.setEnabled(not recording)
        label = "Finish" if last else "Next"
        self.next_button.setText(f"{label} (use anyway)" if self._warnings.get(self._step) else label)
        self.next_button.setEnabled(not recording and have_take)
        if self.pages.currentIndex() == _PAGE_TAKE:  # Enter: Next after a good take, else Record/Retake
            good = have_take and not self._warnings.get(self._step)
            self.next_button.setDefault(good)
            self.record_button.setDefault(not good)
        self.device_combo.setEnabled(not recording and self.device_combo.count() > 0)
        self.refresh_devices_button.setEnabled(not recording)

    # -- calibration ---------------------------------------------------------------------------------
    def _finish(self) -> None:
        """All steps visited: adapt the default model to the kept takes in the background."""
        missing = [i for i, p in enumerate(self._prompts) if i not in self._takes and not self.is_optional(i)]
        if missing:
            self._go_to_step(missing[0])
            self.take_status.setText("This sound is needed for calibration: press Record.")
            return
        takes = {self._prompts[i].viseme: (samples, self._take_rates[i]) for i, samples in sorted(self._takes.items())}
        self._job += 1
        job = self._job
        self._result = None
        self._show_page(_PAGE_RESULT)
        self._calibrating = True
        self.result_label.setText("Adapting lip sync to your voice…")
        self.save_button.setEnabled(False)
        name = self.profile_name()

        def work() -> VisemeModel:
            # One rate for all takes (they may come from different microphones); the features run at 16 kHz.
            # features.resample is the very step calibrate() would take, so nothing is resampled twice.
            audio = {viseme: resample(samples, round(rate)) for viseme, (samples, rate) in takes.items()}
            return calibrate(VisemeModel.default(), audio, SAMPLE_RATE, name=name)

        run_task(work, lambda model: self._on_calibrated(job, model), lambda exc: self._on_calibration_failed(job, exc))

    def _on_calibrated(self, job: int, model: VisemeModel) -> None:
        if self._closing or job != self._job:
            return
        self._calibrating = False
        texts = {p.viseme: p.text for p in self._prompts}
        speech = [v for v in model.calibrated if v != "sil"]
        if not speech:
            self.result_label.setText(
                "<p><b>None of the speech sounds was usable</b> — every take was too quiet. Go back, move "
                "closer to the microphone, and retake the steps marked too quiet.</p>"
            )
            return
        self._result = model
        done = "".join(f"<li>{texts.get(v, v)} <small>({v})</small></li>" for v in model.calibrated)
        left_out = [p for p in self._prompts if p.viseme not in model.calibrated]
        rest = ""
        if left_out:
            names = ", ".join(f"{p.text} ({p.viseme})" for p in left_out)
            rest = (
                f"<p>Not adapted (skipped, or no usable sound in the take): {names}. These follow the "
                "average shift of your voice.</p>"
            )
        self.result_label.setText(
            f"<p><b>Calibrated {len(model.calibrated)} of {len(self._prompts)} sounds</b> to your voice:</p>"
            f"<ul>{done}</ul>{rest}<p>Save the profile as “{self.profile_name()}” to use it for lip sync.</p>"
        )
        self._on_name_changed(self.name_edit.text())

    def _on_calibration_failed(self, job: int, exc: BaseException) -> None:
        if self._closing or job != self._job:
            return
        self._calibrating = False
        hint = "Go back and retake the steps marked too quiet." if isinstance(exc, ValueError) else ""
        self.result_label.setText(f"<p><b>Calibration failed:</b> {exc}.</p><p>{hint}</p>")
        self.save_button.setEnabled(False)

    # -- profiles ------------------------------------------------------------------------------------
    def _selected_profile(self) -> str | None:
        items = self.profile_list.selectedItems()
        return str(items[0].data(0, Qt.ItemDataRole.UserRole)) if items else None

    def _update_profile_buttons(self) -> None:
        selected = self._selected_profile() is not None
        self.rename_button.setEnabled(selected)
        self.delete_button.setEnabled(selected)

    def _ask_delete(self) -> None:
        name = self._selected_profile()
        if name is None:
            return
        answer = QMessageBox.question(
            self, "Delete profile?", f"Delete the lip-sync profile “{name}”? This cannot be undone.",
        )  # fmt: skip
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_selected_profile()

    def _ask_rename(self) -> None:
        old = self._selected_profile()
        if old is None:
            return
        new, ok = QInputDialog.getText(self, "Rename profile", f"New name for “{old}”:", text=old)
        if ok:
            self.rename_selected_profile(new)
