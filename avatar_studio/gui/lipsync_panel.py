"""The lip-sync panel: microphone or audio file → visemes → the mapping table → the avatar, live, for QA.

Why it is built this way:

* **Threads.** The live engine runs on a worker thread (``lipsync_audio.MicWorker``) that reads the
  microphone; whole clips are analysed on an ``AnalysisJob`` thread. Neither touches Qt. One 16 ms
  ``QTimer`` on the GUI thread polls them and applies *only the newest* frame, so the avatar, bars and
  the scene's redraw happen at most once per display frame however fast frames arrive. The timeline
  is redrawn every second tick (≈30 Hz). Polling instead of cross-thread signals also means a worker
  finishing after the panel closed can never emit into a deleted object.
* **Mapping at display time.** Frames carry the 15 viseme weights; the panel turns them into
  blendshape weights with its own matrix built from the current table (the same sum-and-clamp as
  ``VisemeTable.blendshapes``). ``set_table`` therefore re-maps the live mic, a playing file and an
  offline analysis at once, without re-running any analysis: one 15×K product per display frame.
* **Files play against a clock.** A clip is analysed completely first (live mode: the causal engine,
  ~100× real time; offline mode: pocketsphinx, shown as busy), then played; each display frame shows
  the frame at the *mouth clock* (minus the live engine's look-ahead in live mode, which is when the
  live engine would have had that frame). The audio lags the mouth clock by the "audio delay", which
  is how the two are lined up by ear.
* **No sound card.** ``WavPlayer`` refuses to open without an output device. The panel then plays
  *silently* on a monotonic clock with the same timing and says so in the panel: reviewing a mapping
  by eye is still useful (CI, remote desktops), refusing would not be, and a note makes sure nobody
  mistakes the silence for a bug.
* **Only what the avatar has.** Weights are written only for blendshapes the scene has; pose buttons
  for visemes the avatar cannot fully express are disabled and name what is missing. Stopping, the end
  of a clip and "Neutral" put every blendshape the table drives back to 0 (the table's idle state).
* **Every failure is a sentence in the panel** (``message_label``) and on ``sig_status``: no device, a
  device unplugged mid-stream, an unreadable file, pocketsphinx missing. Nothing else changes state.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Final

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.avatar.blendshapes import OVR_VISEMES, VISEME_ALIASES
from avatar_studio.avatar.scene import AvatarScene
from avatar_studio.gui.lipsync_audio import AnalysisJob, ClipPlayback, FrameBox, FrameTrack, MicWorker
from avatar_studio.gui.lipsync_timeline import WINDOW_S, FrameRing, LipSyncTimeline
from avatar_studio.gui.morph_panel import signals_blocked
from avatar_studio.gui.viseme_bars import VisemeBars
from avatar_studio.lipsync.audio_files import AudioFileError, read_audio
from avatar_studio.lipsync.audio_input import (
    SILENCE_DBFS,
    AudioDeviceError,
    MicrophoneStream,
    Recorder,
    list_input_devices,
)
from avatar_studio.lipsync.classifier import ProfileError, VisemeModel, list_profiles, load_profile
from avatar_studio.lipsync.engine import LIVE_LOOKAHEAD_S, LipSyncEngine, Mode
from avatar_studio.lipsync.smoothing import SmoothingSettings
from avatar_studio.lipsync.viseme_table import VisemeTable

log = logging.getLogger(__name__)

TICK_MS: Final[int] = 16
"""The display timer: one avatar/bars update per ~60 Hz display frame."""
TIMELINE_EVERY: Final[int] = 2
"""Redraw the timeline every this many ticks (≈30 Hz; curves do not need more)."""
METER_FLOOR_DB: Final[float] = -60.0

SEED_ALIASES: Final[dict[str, str]] = {
    VISEME_ALIASES[alias]: alias for alias in ("MBP", "FV", "A", "E", "I", "O", "U") if VISEME_ALIASES[alias] != alias
}
"""OVR viseme → the seed table's name for it (the names QA know from the original table)."""

DEFAULT_PROFILE: Final[str] = ""
"""Combo data for "Default (uncalibrated)"."""

SYSTEM_DEFAULT_DEVICE: Final[int] = -1
"""Combo data for the system's default microphone (PortAudio device ids are ≥ 0)."""
_DEVICE_NAME_ROLE: Final = Qt.ItemDataRole.UserRole + 1
"""Combo role holding a device's name: ids change when devices come and go, the stored choice is the name."""

_SMOOTHING_UI: Final[dict[str, tuple[str, float, float, float, int, str]]] = {
    # field: (label, minimum, maximum, step, decimals, suffix)
    "attack_ms": ("Attack", 0.0, 1000.0, 5.0, 0, " ms"),
    "release_ms": ("Release", 0.0, 1000.0, 5.0, 0, " ms"),
    "min_hold_ms": ("Minimum hold", 0.0, 1000.0, 10.0, 0, " ms"),
    "hysteresis": ("Hysteresis", 0.0, 1.0, 0.05, 2, ""),
    "softness": ("Softness", 0.0, 1.0, 0.05, 2, ""),
    "gate_open_db": ("Gate opens at", -120.0, 0.0, 1.0, 1, " dBFS"),
    "gate_full_db": ("Gate fully open at", -120.0, 0.0, 1.0, 1, " dBFS"),
    "noise_margin_db": ("Noise margin", 0.0, 60.0, 1.0, 1, " dB"),
    "noise_rise_db_per_s": ("Noise floor rise", 0.0, 60.0, 0.5, 1, " dB/s"),
}
_SMOOTHING_TIPS: Final[dict[str, str]] = {
    "attack_ms": "Time constant for rising weights (the mouth opening, a viseme fading in)",
    "release_ms": "Time constant for falling weights (the mouth closing, a viseme fading out)",
    "min_hold_ms": "A new dominant viseme must wait until the current one was shown this long",
    "hysteresis": "Margin a challenger viseme needs over the held one",
    "softness": "Share of the raw classifier output mixed into the held viseme (0 = hard shapes)",
    "gate_open_db": "Below this level the mouth stays shut",
    "gate_full_db": "At and above this level the mouth opens fully",
    "noise_margin_db": "The gate opens this far above the tracked noise floor",
    "noise_rise_db_per_s": "How fast the noise-floor estimate may rise",
}


def _pose_label(viseme: str) -> str:
    alias = SEED_ALIASES.get(viseme)
    return f"{viseme} ({alias})" if alias else viseme


class LipSyncPanel(QWidget):
    """Microphone/file controls, viseme bars, timeline and pose buttons; see the module docstring for why."""

    sig_status = Signal(str)
    """Short messages for the status bar."""

    def __init__(self, settings: QSettings, profiles_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self._profiles_dir = Path(profiles_dir)
        self._scene: AvatarScene | None = None
        self._table = VisemeTable.default()
        self._smoothing = self._load_smoothing()
        self._profile: VisemeModel | None = None
        self._shut_down = False
        # mapping: viseme weights (15) → values for the scene's indices
        self._matrix = np.zeros((len(OVR_VISEMES), 0))
        self._scene_cols = np.zeros(0, np.intp)
        self._scene_idx: list[int] = []
        self._mouth_dirty = False  # the panel has put a non-neutral mouth on the scene
        self._posed: str | None = None
        # microphone
        self._mic: MicrophoneStream | None = None
        self._worker: MicWorker | None = None
        self._box = FrameBox()
        self._ring = FrameRing(capacity=int(WINDOW_S * 100) + 50)
        self._recorder: Recorder | None = None
        self._last_recording: Recorder | None = None
        # file / replay
        self._clip_name = ""
        self._clip_samples: np.ndarray | None = None
        self._clip_rate = 0
        self._clip_id = 0
        self._playback: ClipPlayback | None = None
        self._track: FrameTrack | None = None
        self._track_key: object = None
        self._job: AnalysisJob | None = None
        self._old_jobs: list[AnalysisJob] = []
        self._play_when_ready = False
        self._tick_count = 0
        self._last_frame_index = -2

        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)

        self._build_ui()
        self._rebuild_mapping()
        self._refresh_devices()
        self._refresh_profiles(select=str(self._settings.value("lipsync/profile", DEFAULT_PROFILE)))
        self._update_controls()

    # == UI ================================================================================================

    def _build_ui(self) -> None:
        body = QWidget()
        column = QVBoxLayout(body)
        column.setContentsMargins(6, 6, 6, 6)

        self.message_label = QLabel()
        self.message_label.setObjectName("lipsyncMessage")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.setVisible(False)
        column.addWidget(self.message_label)

        column.addWidget(self._build_mic_group())
        column.addWidget(self._build_file_group())

        self.bars = VisemeBars()
        column.addWidget(self.bars)
        self.timeline = LipSyncTimeline()
        self.timeline.setMinimumHeight(140)
        self.timeline.setMaximumHeight(220)
        column.addWidget(self.timeline)
        column.addWidget(self._build_pose_group())
        column.addWidget(self._build_engine_group())  # tuning, used less often than the rest: last
        column.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

    def _build_mic_group(self) -> QGroupBox:
        group = QGroupBox("Microphone")
        self.device_combo = QComboBox()
        self.device_combo.setAccessibleName("Microphone")
        self.device_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.device_combo.setMinimumContentsLength(16)
        self.device_combo.currentIndexChanged.connect(self._on_device_chosen)
        self.refresh_devices_button = QToolButton()
        self.refresh_devices_button.setText("⟳")
        self.refresh_devices_button.setToolTip("List the microphones again (after plugging one in)")
        self.refresh_devices_button.clicked.connect(self._refresh_devices)
        self.mic_button = QPushButton("Start mic")
        self.mic_button.setToolTip("Drive the mouth live from the microphone")
        self.mic_button.clicked.connect(self._toggle_mic)
        self.record_button = QPushButton("Record")
        self.record_button.setCheckable(True)
        self.record_button.setToolTip("Keep the microphone audio of this session for Replay and Save")
        self.record_button.toggled.connect(self._on_record_toggled)

        self.level_meter = QProgressBar()
        self.level_meter.setRange(round(METER_FLOOR_DB * 10), 0)
        self.level_meter.setValue(round(METER_FLOOR_DB * 10))
        self.level_meter.setTextVisible(False)
        self.level_meter.setMaximumHeight(12)
        self.level_meter.setAccessibleName("Input level")
        self.level_label = QLabel("— dBFS")
        self.level_label.setMinimumWidth(80)

        self.replay_button = QPushButton("Replay")
        self.replay_button.setToolTip("Play the last recorded microphone session through the file path")
        self.replay_button.clicked.connect(self._replay_recording)
        self.save_recording_button = QPushButton("Save recording…")
        self.save_recording_button.clicked.connect(self._save_recording_dialog)
        self.recording_label = QLabel("No recording")

        row1 = QHBoxLayout()
        row1.addWidget(self.device_combo, 1)
        row1.addWidget(self.refresh_devices_button)
        row2 = QHBoxLayout()
        row2.addWidget(self.mic_button)
        row2.addWidget(self.record_button)
        row2.addWidget(self.level_meter, 1)
        row2.addWidget(self.level_label)
        row3 = QHBoxLayout()
        row3.addWidget(self.replay_button)
        row3.addWidget(self.save_recording_button)
        row3.addWidget(self.recording_label, 1)
        layout = QVBoxLayout(group)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addLayout(row3)
        return group

    def _build_file_group(self) -> QGroupBox:
        group = QGroupBox("Audio file")
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Open a WAV (PCM 8/16/24/32-bit or float) or FLAC file")
        self.open_button.clicked.connect(self._open_dialog)
        self.file_label = QLabel("No file")
        self.file_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("Live (as the microphone)", "live")
        self.mode_combo.addItem("Offline (pocketsphinx, whole file)", "offline")
        self.mode_combo.setToolTip(
            "Live runs the causal engine the microphone uses; offline decodes phones over the whole file first"
        )
        mode = str(self._settings.value("lipsync/file_mode", "live"))
        self.mode_combo.setCurrentIndex(max(0, self.mode_combo.findData(mode)))
        self.mode_combo.currentIndexChanged.connect(self._on_mode_changed)
        self.play_button = QPushButton("Play")
        self.play_button.clicked.connect(self._toggle_play)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.delay_spin = QSpinBox()
        self.delay_spin.setRange(-500, 1000)
        self.delay_spin.setSingleStep(10)
        self.delay_spin.setSuffix(" ms")
        self.delay_spin.setAccessibleName("Audio delay")
        self.delay_spin.setToolTip(
            "Delay the sound relative to the mouth so the two line up (positive: the mouth leads the sound)"
        )
        self.delay_spin.setValue(_int_setting(self._settings.value("lipsync/audio_delay_ms", 0), 0))
        self.delay_spin.valueChanged.connect(self._on_delay_changed)
        self.position_label = QLabel("0.00 / 0.00 s")
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)  # indeterminate
        self.busy_bar.setMaximumHeight(10)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setVisible(False)
        self.busy_label = QLabel()
        self.busy_label.setVisible(False)
        self.output_note = QLabel()
        self.output_note.setObjectName("outputNote")
        self.output_note.setWordWrap(True)
        self.output_note.setVisible(False)

        row1 = QHBoxLayout()
        row1.addWidget(self.open_button)
        row1.addWidget(self.file_label, 1)
        row2 = QHBoxLayout()
        row2.addWidget(QLabel("Mode:"))
        row2.addWidget(self.mode_combo, 1)
        row3 = QHBoxLayout()
        row3.addWidget(self.play_button)
        row3.addWidget(self.stop_button)
        row3.addWidget(QLabel("Audio delay:"))
        row3.addWidget(self.delay_spin)
        row3.addWidget(self.position_label, 1, Qt.AlignmentFlag.AlignRight)
        row4 = QHBoxLayout()
        row4.addWidget(self.busy_label)
        row4.addWidget(self.busy_bar, 1)
        layout = QVBoxLayout(group)
        for row in (row1, row2, row3, row4):
            layout.addLayout(row)
        layout.addWidget(self.output_note)
        return group

    def _build_engine_group(self) -> QGroupBox:
        group = QGroupBox("Engine")
        self.profile_combo = QComboBox()
        self.profile_combo.setAccessibleName("Calibration profile")
        self.profile_combo.setToolTip("The speaker calibration the live engine uses")
        self.profile_combo.currentIndexChanged.connect(self._on_profile_chosen)
        self.calibrate_button = QPushButton("Calibrate…")
        self.calibrate_button.setToolTip("Record a few sounds to calibrate the live engine to a voice")
        self.calibrate_button.clicked.connect(self._calibrate)
        profile_row = QHBoxLayout()
        profile_row.addWidget(self.profile_combo, 1)
        profile_row.addWidget(self.calibrate_button)

        # collapsed by default: the knobs are for tuning sessions, not for every check of a mapping
        self.smoothing_toggle = QToolButton()
        self.smoothing_toggle.setText("Smoothing (live engine)")
        self.smoothing_toggle.setCheckable(True)
        self.smoothing_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.smoothing_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.smoothing_toggle.setStyleSheet("QToolButton { border: none; }")
        form_host = QWidget()
        form = QFormLayout(form_host)
        form.setContentsMargins(0, 0, 0, 0)
        self.smoothing_spins: dict[str, QDoubleSpinBox] = {}
        for name, (label, low, high, step, decimals, suffix) in _SMOOTHING_UI.items():
            spin = QDoubleSpinBox()
            spin.setRange(low, high)
            spin.setSingleStep(step)
            spin.setDecimals(decimals)
            spin.setSuffix(suffix)
            spin.setKeyboardTracking(False)
            spin.setToolTip(_SMOOTHING_TIPS[name])
            spin.setAccessibleName(label)
            spin.setValue(float(getattr(self._smoothing, name)))
            spin.valueChanged.connect(self._on_smoothing_edited)
            self.smoothing_spins[name] = spin
            form.addRow(label + ":", spin)
        self.smoothing_reset_button = QPushButton("Defaults")
        self.smoothing_reset_button.clicked.connect(self._reset_smoothing)
        form.addRow("", self.smoothing_reset_button)
        form_host.setVisible(False)

        def expand(on: bool) -> None:
            form_host.setVisible(on)
            self.smoothing_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

        self.smoothing_toggle.toggled.connect(expand)
        layout = QVBoxLayout(group)
        layout.addLayout(profile_row)
        layout.addWidget(self.smoothing_toggle)
        layout.addWidget(form_host)
        return group

    def _build_pose_group(self) -> QGroupBox:
        group = QGroupBox("Pose the avatar")
        self.avatar_note = QLabel("Poses and mouth motion need an avatar: open one to see them on the face.")
        self.avatar_note.setWordWrap(True)
        grid = QGridLayout()
        self.pose_buttons: dict[str, QPushButton] = {}
        for i, viseme in enumerate(OVR_VISEMES):
            button = QPushButton(_pose_label(viseme))
            button.setAccessibleName(f"Pose {viseme}")
            button.clicked.connect(lambda _checked=False, v=viseme: self.pose(v))
            self.pose_buttons[viseme] = button
            grid.addWidget(button, i // 4, i % 4)
        self.neutral_button = QPushButton("Neutral")
        self.neutral_button.setToolTip("Every blendshape the table drives back to 0")
        self.neutral_button.clicked.connect(self.neutral)
        grid.addWidget(self.neutral_button, 3, 3)
        layout = QVBoxLayout(group)
        layout.addWidget(self.avatar_note)
        layout.addLayout(grid)
        return group

    # == public API ===========================================================================================

    def set_scene(self, scene: AvatarScene | None) -> None:
        """Show lip sync on ``scene`` (None: no avatar; bars and timeline keep running)."""
        if scene is self._scene:
            return
        if self._scene is not None and self._mouth_dirty:
            self._write_neutral()
        self._scene = scene
        self._mouth_dirty = False
        self._posed = None
        self._last_frame_index = -2
        self._rebuild_mapping()
        if self._playback is not None and self._playback.state == "paused":
            self._show_clip_frame()

    def set_table(self, table: VisemeTable) -> None:
        """Use ``table`` from now on: the running source, the current pose and the buttons re-map at once."""
        if self._scene is not None and self._mouth_dirty:
            self._write_neutral()  # shapes the old table drove but the new one may not
        self._table = table
        self._rebuild_mapping()
        if self._posed is not None:
            self.pose(self._posed)
        self._last_frame_index = -2  # re-apply the current frame on the next tick …
        if self._playback is not None and self._playback.state == "paused":
            self._show_clip_frame()  # … or now, when paused (no ticks run)

    @property
    def table(self) -> VisemeTable:
        return self._table

    @property
    def smoothing(self) -> SmoothingSettings:
        return self._smoothing

    def shutdown(self) -> None:
        """Stop the mic, playback and every thread; the mouth goes back to neutral. Safe to call twice."""
        if self._shut_down:
            return
        self._shut_down = True
        self._timer.stop()
        self._stop_mic(neutral=False)
        if self._playback is not None:
            self._playback.close()
            self._playback = None
        for job in [self._job, *self._old_jobs]:
            if job is not None:
                job.cancel()
                job.finish()
        self._job = None
        self._old_jobs.clear()
        if self._scene is not None and self._mouth_dirty:
            self._write_neutral()

    # -- actions a test (or a menu) can call directly -------------------------------------------------------

    def pose(self, viseme: str) -> None:
        """Put the avatar in ``viseme`` at full weight through the current table (other table shapes → 0)."""
        if self._scene is None:
            self._show_message("Open an avatar to see its poses.")
            return
        if self._is_running():
            self.stop()  # a running source would overwrite the pose on the next display frame
        self._posed = viseme
        weights = np.zeros(len(OVR_VISEMES))
        weights[OVR_VISEMES.index(viseme)] = 1.0
        self._apply_weights(weights, force=True)
        self.sig_status.emit(f"Lip sync: posed {_pose_label(viseme)}")

    def neutral(self) -> None:
        """Stop any running source; every blendshape the table drives (and the avatar has) back to 0."""
        if self._is_running():
            self.stop()
        self._posed = None
        if self._scene is not None:
            self._write_neutral()
        self.bars.clear()

    def open_audio_file(self, path: str | Path) -> bool:
        """Load a WAV or FLAC file for playback; on failure show why and keep everything as it was."""
        path = Path(path)
        try:
            samples, rate = read_audio(path)
        except AudioFileError as exc:
            self._show_message(f"Cannot open the audio file — {exc}", error=True)
            return False
        if samples.size == 0:
            self._show_message(f"Cannot open the audio file — {path.name} contains no audio.", error=True)
            return False
        self._settings.setValue("lipsync/last_dir", str(path.parent))
        self._load_clip(path.name, samples, rate)
        self.sig_status.emit(f"Lip sync: opened {path.name} ({len(samples) / rate:.1f} s)")
        return True

    def play(self) -> None:
        """Play (or resume) the loaded clip; in offline mode waits for the analysis first."""
        if self._shut_down:
            return
        if self._clip_samples is None:
            self._show_message("Open an audio file (or record the microphone) first.")
            return
        self._stop_mic()
        if self._playback is not None and self._playback.state == "playing":
            return
        if self._track is None or self._track_key != self._analysis_key():
            self._play_when_ready = True
            self._ensure_analysis()
            self._update_controls()
            return
        self._start_playback()

    def pause(self) -> None:
        self._play_when_ready = False
        if self._playback is not None:
            self._playback.pause()
        self._update_controls()

    def stop(self) -> None:
        """Stop playback (or the mic) and return the mouth to neutral."""
        self._play_when_ready = False
        if self._playback is not None:
            self._playback.stop()
        self._stop_mic(neutral=False)
        self._go_idle()

    def start_microphone(self) -> bool:
        """Open the chosen microphone and drive the mouth live; a device problem becomes a message."""
        if self._worker is not None:
            return True
        if self._shut_down:
            return False
        self.stop()
        device = self.device_combo.currentData()
        profile = self._current_profile()
        try:  # the device first: "no microphone" is the more basic problem to report
            mic = MicrophoneStream(None if device in (None, SYSTEM_DEFAULT_DEVICE) else int(device))
        except AudioDeviceError as exc:
            self._show_message(f"Microphone: {exc}", error=True)
            return False
        engine = self._make_engine("live", profile)
        if engine is None:
            mic.close()
            return False
        try:
            mic.start()
        except AudioDeviceError as exc:
            mic.close()
            self._show_message(f"Microphone: {exc}", error=True)
            return False
        self._mic = mic
        self._box = FrameBox()
        self._ring.clear()
        self._worker = MicWorker(mic, engine, self._box)
        if self.record_button.isChecked():
            self._recorder = Recorder(mic.sample_rate)
            self._worker.set_recorder(self._recorder)
        self._worker.start()
        note = f" ({mic.rate_note})" if mic.rate_note else ""
        self._show_message(f"Listening to {mic.device.name}, latency {mic.latency_s * 1000:.0f} ms{note}.")
        self.sig_status.emit(f"Lip sync: microphone {mic.device.name} started")
        self._timer.start()
        self._update_controls()
        return True

    def stop_microphone(self) -> None:
        self._stop_mic()

    def save_recording(self, path: str | Path) -> Path | None:
        """Save the last microphone recording as 16-bit WAV; None (and a message) if there is none or it fails."""
        recording = self._last_recording
        if recording is None or recording.duration_s <= 0:
            self._show_message("There is no recording to save: press Record while the microphone runs.")
            return None
        try:
            saved = recording.save(path)
        except OSError as exc:
            self._show_message(f"Cannot save the recording — {exc.strerror or exc}", error=True)
            return None
        self.sig_status.emit(f"Lip sync: recording saved to {saved}")
        self._show_message(f"Recording saved to {saved}.")
        return saved

    # == microphone ===========================================================================================

    def _refresh_devices(self) -> None:
        current = self.device_combo.currentData(_DEVICE_NAME_ROLE) if self.device_combo.count() else None
        wanted = current or str(self._settings.value("lipsync/mic_device", ""))
        try:
            devices = list_input_devices()
            problem = ""
        except AudioDeviceError as exc:
            devices, problem = [], str(exc)
        with signals_blocked(self.device_combo):
            self.device_combo.clear()
            self.device_combo.addItem("System default", SYSTEM_DEFAULT_DEVICE)
            for device in devices:
                self.device_combo.addItem(str(device), device.index)
                self.device_combo.setItemData(self.device_combo.count() - 1, device.name, _DEVICE_NAME_ROLE)
            if wanted:
                index = self.device_combo.findData(wanted, _DEVICE_NAME_ROLE)
                self.device_combo.setCurrentIndex(max(0, index))
        if problem:
            self._show_message(f"Microphone: {problem}", error=True)
        elif not devices:
            self.device_combo.setToolTip("No microphone found; plug one in and press ⟳")
        else:
            self.device_combo.setToolTip(f"{len(devices)} microphone(s) found")

    def _on_device_chosen(self, _index: int) -> None:
        name = self.device_combo.currentData(_DEVICE_NAME_ROLE) or ""
        self._settings.setValue("lipsync/mic_device", name)
        if self._worker is not None:  # switch devices while listening
            self._stop_mic(neutral=False)
            self.start_microphone()

    def _toggle_mic(self) -> None:
        if self._worker is not None:
            self._stop_mic()
            self.sig_status.emit("Lip sync: microphone stopped")
        else:
            self.start_microphone()

    def _stop_mic(self, neutral: bool = True) -> None:
        worker, self._worker = self._worker, None
        mic, self._mic = self._mic, None
        if worker is not None:
            worker.stop()
        if mic is not None:
            mic.close()
        if self._recorder is not None:
            self._finish_recording()
        if worker is not None and neutral:
            self._go_idle()
        self._show_level(SILENCE_DBFS)
        self._update_controls()

    def _on_record_toggled(self, on: bool) -> None:
        if self._worker is None or self._mic is None:
            return  # takes effect when the mic starts
        if on:
            self._recorder = Recorder(self._mic.sample_rate)
            self._worker.set_recorder(self._recorder)
        else:
            self._worker.set_recorder(None)
            self._finish_recording()
        self._update_controls()

    def _finish_recording(self) -> None:
        recorder, self._recorder = self._recorder, None
        if recorder is None or recorder.duration_s <= 0:
            return
        self._last_recording = recorder
        cut = " (cut at the 10-minute limit)" if recorder.truncated else ""
        self.recording_label.setText(f"Recorded {recorder.duration_s:.1f} s{cut}")

    def _replay_recording(self) -> None:
        recording = self._last_recording
        if recording is None or recording.duration_s <= 0:
            self._show_message("There is no recording to replay: press Record while the microphone runs.")
            return
        self._stop_mic()
        self._load_clip(f"Recording ({recording.duration_s:.1f} s)", recording.samples(), round(recording.sample_rate))
        self.play()

    def _save_recording_dialog(self) -> None:
        start = str(self._settings.value("lipsync/last_dir", str(Path.home())))
        path, _filter = QFileDialog.getSaveFileName(
            self, "Save recording", str(Path(start) / "recording.wav"), "WAV audio (*.wav)"
        )
        if path:
            if not path.lower().endswith(".wav"):
                path += ".wav"
            self.save_recording(path)

    def _show_level(self, level_db: float) -> None:
        shown = max(METER_FLOOR_DB, min(0.0, level_db))
        self.level_meter.setValue(round(shown * 10))
        self.level_label.setText("— dBFS" if level_db <= SILENCE_DBFS else f"{level_db:.1f} dBFS")

    # == files ===============================================================================================

    def _open_dialog(self) -> None:
        start = str(self._settings.value("lipsync/last_dir", str(Path.home())))
        path, _filter = QFileDialog.getOpenFileName(
            self, "Open audio", start, "Audio (*.wav *.wave *.flac);;All files (*)"
        )
        if path:
            self.open_audio_file(path)

    def _load_clip(self, name: str, samples: np.ndarray, rate: int) -> None:
        self.stop()
        self._clip_name = name
        self._clip_samples = samples
        self._clip_rate = int(rate)
        self._clip_id += 1
        self._track = None
        self._track_key = None
        self.file_label.setText(name)
        self.file_label.setToolTip(name)
        self._show_position(0.0)
        self._clear_message()
        self._ensure_analysis()
        self._update_controls()

    def _mode(self) -> Mode:
        return "offline" if self.mode_combo.currentData() == "offline" else "live"

    def _analysis_key(self) -> object:
        mode = self._mode()
        engine_knobs = (self._smoothing, self.profile_combo.currentData()) if mode == "live" else ()
        return (self._clip_id, mode, engine_knobs)

    def _ensure_analysis(self) -> None:
        """Start analysing the clip with the current mode/settings unless that result is there or coming."""
        if self._clip_samples is None or self._shut_down:
            return
        key = self._analysis_key()
        if self._track is not None and self._track_key == key:
            return
        if self._job is not None:
            if self._job.key == key:
                return
            self._job.cancel()
            self._old_jobs.append(self._job)
        mode = self._mode()
        engine = self._make_engine(mode, self._current_profile() if mode == "live" else None)
        if engine is None:
            self._play_when_ready = False
            return
        self._job = AnalysisJob(engine, self._clip_samples, self._clip_rate, key)
        self._job.start()
        what = "Decoding phones (pocketsphinx)…" if mode == "offline" else "Analysing…"
        self.busy_label.setText(what)
        self._timer.start()
        self._update_controls()

    def _poll_analysis(self) -> None:
        self._old_jobs = [job for job in self._old_jobs if not job.done]
        job = self._job
        if job is None or not job.done:
            return
        self._job = None
        if job.cancelled or job.key != self._analysis_key():
            self._ensure_analysis()
            return
        if job.error is not None or job.track is None:
            self._play_when_ready = False
            self._show_message(f"The {self._mode()} analysis of {self._clip_name} failed — {job.error}", error=True)
        else:
            self._track, self._track_key = job.track, job.key
            self._last_frame_index = -2
            if self._play_when_ready:
                self._play_when_ready = False
                self._start_playback()
            elif self._playback is not None and self._playback.state == "paused":
                self._show_clip_frame()
        self._update_controls()

    def _start_playback(self) -> None:
        assert self._clip_samples is not None
        if (
            self._playback is None
            or self._playback.state == "stopped"
            or self._playback.samples is not self._clip_samples
        ):
            if self._playback is not None:
                self._playback.close()
            self._playback = ClipPlayback(self._clip_samples, self._clip_rate, self.delay_spin.value() / 1000.0)
        self._playback.play()
        if self._playback.silent_reason:
            self.output_note.setText(
                "Playing silently — the mouth, bars and timeline follow a clock, but nothing can be heard: "
                + self._playback.silent_reason
            )
            self.output_note.setVisible(True)
        else:
            self.output_note.setVisible(False)
        self._posed = None
        self._last_frame_index = -2
        self.sig_status.emit(f"Lip sync: playing {self._clip_name}")
        self._timer.start()
        self._update_controls()

    def _toggle_play(self) -> None:
        playing = self._play_when_ready or (self._playback is not None and self._playback.state == "playing")
        if playing:
            self.pause()
        else:
            self.play()

    def _on_delay_changed(self, value: int) -> None:
        self._settings.setValue("lipsync/audio_delay_ms", value)
        if self._playback is not None:
            self._playback.audio_delay_s = value / 1000.0

    def _on_mode_changed(self, _index: int) -> None:
        self._settings.setValue("lipsync/file_mode", self._mode())
        if self._playback is not None and self._playback.state == "playing":
            self._playback.pause()
            self._play_when_ready = True  # resume once the new analysis is in
        self._ensure_analysis()
        self._update_controls()

    def _show_position(self, position: float) -> None:
        total = len(self._clip_samples) / self._clip_rate if self._clip_samples is not None else 0.0
        self.position_label.setText(f"{position:.2f} / {total:.2f} s")

    # == engine settings =========================================================================================

    def _load_smoothing(self) -> SmoothingSettings:
        defaults = SmoothingSettings()
        values = {}
        for f in fields(SmoothingSettings):
            raw = self._settings.value(f"lipsync/smoothing/{f.name}", getattr(defaults, f.name))
            try:
                values[f.name] = float(raw)
            except (TypeError, ValueError):
                values[f.name] = getattr(defaults, f.name)
        try:
            return SmoothingSettings(**values)
        except ValueError as exc:
            log.warning("ignoring stored smoothing settings: %s", exc)
            return defaults

    def _on_smoothing_edited(self) -> None:
        values = {name: spin.value() for name, spin in self.smoothing_spins.items()}
        try:
            settings = SmoothingSettings(**values)
        except ValueError as exc:
            self._show_message(f"Smoothing not applied — {exc}", error=True)
            return
        self._set_smoothing(settings)

    def _reset_smoothing(self) -> None:
        defaults = SmoothingSettings()
        with signals_blocked(*self.smoothing_spins.values()):
            for name, spin in self.smoothing_spins.items():
                spin.setValue(float(getattr(defaults, name)))
        self._set_smoothing(defaults)

    def _set_smoothing(self, settings: SmoothingSettings) -> None:
        if settings == self._smoothing:
            return
        self._smoothing = settings
        for name, value in settings.to_json().items():
            self._settings.setValue(f"lipsync/smoothing/{name}", value)
        self._clear_message()
        self._engine_settings_changed()

    def _engine_settings_changed(self) -> None:
        """A new engine for the running mic; a new analysis for a live-mode clip (offline ignores both)."""
        if self._worker is not None:
            engine = self._make_engine("live", self._current_profile())
            if engine is not None:
                self._worker.replace_engine(engine)
        if self._clip_samples is not None and self._mode() == "live":
            if self._playback is not None and self._playback.state == "playing":
                self._playback.pause()
                self._play_when_ready = True
            self._ensure_analysis()
        self._update_controls()

    def _refresh_profiles(self, select: str | None = None) -> None:
        wanted = self.profile_combo.currentData() if select is None else select
        try:
            names = [str(p["name"]) for p in list_profiles(self._profiles_dir)]
        except OSError as exc:
            names = []
            self._show_message(f"Cannot list calibration profiles in {self._profiles_dir} — {exc}", error=True)
        with signals_blocked(self.profile_combo):
            self.profile_combo.clear()
            self.profile_combo.addItem("Default (uncalibrated)", DEFAULT_PROFILE)
            for name in names:
                self.profile_combo.addItem(name, name)
            self.profile_combo.setCurrentIndex(max(0, self.profile_combo.findData(wanted)))
        self._on_profile_chosen(self.profile_combo.currentIndex())

    def _on_profile_chosen(self, _index: int) -> None:
        name = str(self.profile_combo.currentData() or DEFAULT_PROFILE)
        self._profile = None
        if name:
            try:
                self._profile = load_profile(self._profiles_dir, name)
            except (ProfileError, OSError, ValueError) as exc:
                self._show_message(f"Cannot load the profile {name!r}; using the default — {exc}", error=True)
                with signals_blocked(self.profile_combo):
                    self.profile_combo.setCurrentIndex(0)
                name = DEFAULT_PROFILE
        previous = str(self._settings.value("lipsync/profile", DEFAULT_PROFILE))
        self._settings.setValue("lipsync/profile", name)
        if previous != name:
            self._engine_settings_changed()

    def _current_profile(self) -> VisemeModel | None:
        return self._profile

    def _make_engine(self, mode: Mode, profile: VisemeModel | None) -> LipSyncEngine | None:
        """A new engine, or None with the reason in the panel (a broken shipped model, a bad profile)."""
        try:
            return LipSyncEngine(self._table, mode, self._smoothing, profile)
        except (ValueError, OSError, RuntimeError) as exc:  # ProfileError is a ValueError
            self._show_message(f"The {mode} lip-sync engine cannot start — {exc}", error=True)
            return None

    def _calibrate(self) -> None:
        self._stop_mic()  # the dialog needs the microphone to itself
        try:
            from avatar_studio.gui.calibration_dialog import CalibrationDialog
        except ImportError as exc:
            self._show_message(f"Calibration is not available in this build — {exc}", error=True)
            return
        dialog = CalibrationDialog(self._profiles_dir, self)
        try:
            accepted = dialog.exec()
            saved = getattr(dialog, "saved_profile_name", None) if accepted else None
        finally:
            dialog.deleteLater()
        self._refresh_profiles(select=saved if saved else None)
        if saved:
            self.sig_status.emit(f"Lip sync: using the new profile {saved}")

    # == the display tick ========================================================================================

    def _tick(self) -> None:
        self._tick_count += 1
        if self._job is not None or self._old_jobs:
            self._poll_analysis()
        if self._worker is not None:
            self._tick_mic()
        elif self._playback is not None and self._playback.state == "playing":
            self._tick_clip()
        if (
            self._worker is None
            and self._job is None
            and not self._old_jobs
            and not self._play_when_ready
            and (self._playback is None or self._playback.state != "playing")
        ):
            self._timer.stop()

    def _tick_mic(self) -> None:
        frames, level, error = self._box.take()
        for t, weights in frames:
            self._ring.append(t, weights)
        if frames:
            self._apply_weights(frames[-1][1])
        self._show_level(level)
        if self._tick_count % TIMELINE_EVERY == 0 and len(self._ring):
            times, weights = self._ring.window()
            self.timeline.show_window(times, weights, max(WINDOW_S, float(times[-1])))
        if error is not None:
            self._stop_mic()
            self._show_message(f"Microphone: {error}", error=True)
            self.sig_status.emit("Lip sync: the microphone stopped")

    def _display_time(self, playback: ClipPlayback) -> float:
        # the live engine has the frame for t only once audio up to t + look-ahead was fed to it
        live = isinstance(self._track_key, tuple) and self._track_key[1] == "live"
        return playback.mouth_position_s() - (LIVE_LOOKAHEAD_S if live else 0.0)

    def _tick_clip(self) -> None:
        playback = self._playback
        assert playback is not None
        if playback.finished:
            self.stop()
            self.sig_status.emit(f"Lip sync: {self._clip_name} finished")
            return
        self._show_clip_frame()
        self._show_position(playback.position_s())

    def _show_clip_frame(self) -> None:
        playback, track = self._playback, self._track
        if playback is None or track is None or not len(track):
            return
        t = self._display_time(playback)
        index = min(track.index_at(t), len(track) - 1)
        if index != self._last_frame_index:
            self._last_frame_index = index
            self._apply_weights(track.weights[index] if index >= 0 else np.eye(len(OVR_VISEMES))[0])
        if self._tick_count % TIMELINE_EVERY == 0 or playback.state != "playing":
            end = max(WINDOW_S, t)
            times, weights = track.window(end - WINDOW_S, t)
            self.timeline.show_window(times, weights, end, marker=playback.position_s())

    # == applying weights ==========================================================================================

    def _rebuild_mapping(self) -> None:
        """Matrix viseme → table blendshapes, the columns the scene has, and the pose buttons' states."""
        names = self._table.blendshape_names
        column = {name: j for j, name in enumerate(names)}
        matrix = np.zeros((len(OVR_VISEMES), len(names)))
        for i, viseme in enumerate(OVR_VISEMES):
            for name, weight in self._table.get(viseme, ()):
                matrix[i, column[name]] += weight
        self._matrix = matrix
        scene = self._scene
        morphs = list(scene.avatar.morph_names) if scene is not None else []
        present = {name: i for i, name in enumerate(morphs)}
        cols = [j for j, name in enumerate(names) if name in present]
        self._scene_cols = np.array(cols, np.intp)
        self._scene_idx = [present[names[j]] for j in cols]
        missing = self._table.unexpressible(morphs) if scene is not None else {}
        for viseme, button in self.pose_buttons.items():
            entries = self._table.get(viseme, [])
            if scene is None:
                button.setEnabled(False)
                button.setToolTip("Open an avatar to pose it")
            elif viseme in missing:
                button.setEnabled(False)
                partly = " partly" if len(missing[viseme]) < len(entries) else ""
                button.setToolTip(f"This avatar cannot{partly} show {viseme}: it lacks {', '.join(missing[viseme])}")
            else:
                button.setEnabled(True)
                shapes = ", ".join(f"{name} {weight:g}" for name, weight in entries) or "no blendshapes (mouth at rest)"
                button.setToolTip(f"{_pose_label(viseme)}: {shapes}")
        self.neutral_button.setEnabled(scene is not None)
        self.avatar_note.setVisible(scene is None)

    def _apply_weights(self, visemes: np.ndarray, force: bool = False) -> None:
        """Show 15 viseme weights on the bars and, through the table, on the avatar (one scene event)."""
        self.bars.set_values(visemes)
        scene = self._scene
        if scene is None or not self._scene_idx:
            return
        shapes = np.minimum(visemes @ self._matrix, 1.0)[self._scene_cols]
        scene.set_weights(dict(zip(self._scene_idx, shapes.tolist(), strict=True)))
        self._mouth_dirty = force or bool(shapes.any()) or self._mouth_dirty

    def _write_neutral(self) -> None:
        scene = self._scene
        if scene is not None and self._scene_idx:
            scene.set_weights(dict.fromkeys(self._scene_idx, 0.0))
        self._mouth_dirty = False

    def _go_idle(self) -> None:
        """After stop/finish: neutral mouth, empty bars, position back to 0 (the timeline keeps its picture)."""
        self._last_frame_index = -2
        self._posed = None
        if self._scene is not None and self._mouth_dirty:  # untouched: leave a slider user's edits alone
            self._write_neutral()
        self.bars.clear()
        self._show_position(0.0)
        self._update_controls()

    def _is_running(self) -> bool:
        playback = self._playback
        return (
            self._worker is not None or self._play_when_ready or (playback is not None and playback.state != "stopped")
        )

    # == messages and enabled states ===============================================================================

    def _show_message(self, text: str, error: bool = False) -> None:
        self.message_label.setText(text)
        self.message_label.setStyleSheet("color: #d0342c;" if error else "")
        self.message_label.setVisible(True)
        self.sig_status.emit(text if len(text) <= 160 else text[:159] + "…")

    def _clear_message(self) -> None:
        self.message_label.clear()
        self.message_label.setVisible(False)

    def _update_controls(self) -> None:
        listening = self._worker is not None
        has_clip = self._clip_samples is not None
        playing = self._playback is not None and self._playback.state == "playing"
        waiting = self._play_when_ready
        busy = self._job is not None
        self.mic_button.setText("Stop mic" if listening else "Start mic")
        self.level_meter.setEnabled(listening)
        has_recording = self._last_recording is not None and self._last_recording.duration_s > 0
        self.replay_button.setEnabled(has_recording and not listening)
        self.save_recording_button.setEnabled(has_recording)
        self.play_button.setEnabled(has_clip)
        self.play_button.setText("Pause" if playing or waiting else "Play")
        active = playing or waiting or (self._playback is not None and self._playback.state == "paused")
        self.stop_button.setEnabled(listening or active)
        self.busy_bar.setVisible(busy)
        self.busy_label.setVisible(busy)
        if self._recorder is not None:
            self.recording_label.setText("Recording…")

    # == Qt ==========================================================================================================

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        if self.isWindow():  # shown on its own: closing it is the end; inside a window, the window calls shutdown
            self.shutdown()
        super().closeEvent(event)


def _int_setting(value: object, default: int) -> int:
    try:
        return int(float(str(value)))
    except (TypeError, ValueError):
        return default
