"""The calibration dialog on a real (virtual) microphone: a whole guided calibration, end to end.

Why real audio instead of feeding samples to the dialog: what can go wrong for the user sits between
the microphone and the take — the stream's rate, the polling, a take that ends early or starts before
the sound, the meter. Synthetic vowels, hums and hisses are played into the PulseAudio null sink of
``tests/virtual_audio.py`` and the dialog records them through ``MicrophoneStream`` like a voice.
The synthetic sounds are deterministic and their spectra unambiguous (formant buzz vs band noise), so
every take must pass the dialog's checks and every prompt must end up calibrated.

Failure modes that need a process of their own (no sound server at all, a server that dies during a
take) run the dialog in a subprocess on the offscreen platform, so this process's PortAudio stays intact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialog, QInputDialog, QMessageBox
from scipy.signal import butter, lfilter, sosfilt
from virtual_audio import play_wav, start_pulse, stop_processes, virtual_mic_fixture, write_wav  # noqa: F401

from avatar_studio.gui.calibration_dialog import (
    TOO_QUIET_DBFS,
    CalibrationDialog,
    assess_take,
    profile_name_problem,
)
from avatar_studio.lipsync.classifier import (
    CALIBRATION_PROMPTS,
    CalibrationPrompt,
    VisemeModel,
    list_profiles,
    load_profile,
    save_profile,
)

ROOT = Path(__file__).resolve().parents[2]
RATE = 48000
TAKE_S = 0.5
SHORT_PROMPTS = tuple(replace(p, seconds=TAKE_S) for p in CALIBRATION_PROMPTS)
"""The real script with half-second takes: every prompt, a quarter of the time."""

FORMANTS = {  # rough adult formants (Hz) of the prompted sounds
    "aa": (730, 1090, 2440),
    "E": (530, 1840, 2480),
    "ih": (270, 2290, 3010),
    "oh": (450, 800, 2600),
    "ou": (300, 870, 2240),
    "RR": (490, 1350, 1690),
    "PP": (250, 1200),  # a hum through the nose: low and weak upper formants
    "nn": (250, 1700),
}
NOISE_BANDS = {"FF": (1500, 7000), "SS": (4000, 7500), "CH": (2000, 5500)}


def synth(viseme: str, seconds: float, rate: int = RATE) -> np.ndarray:
    """A deterministic stand-in for the prompted sound: formant buzz, band noise, or faint room noise."""
    n = int(seconds * rate)
    rng = np.random.default_rng(zlib.crc32(viseme.encode()))
    if viseme == "sil":
        return 0.001 * rng.standard_normal(n)  # a quiet room, ≈ −60 dBFS
    if viseme in NOISE_BANDS:
        sos = butter(4, NOISE_BANDS[viseme], btype="band", fs=rate, output="sos")
        y = sosfilt(sos, rng.standard_normal(n))
        return 0.25 * y / np.abs(y).max()
    x = np.zeros(n)
    x[:: int(rate / 120)] = 1.0  # glottal pulses at 120 Hz
    for f in FORMANTS[viseme]:
        r = np.exp(-np.pi * 90.0 / rate)
        x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / rate), r * r], x)
    peak = 0.2 if viseme in ("PP", "nn") else 0.4
    return peak * x / np.abs(x).max()


@pytest.fixture
def make_dialog(qtbot, virtual_mic: dict[str, str]) -> Iterator[Callable[..., CalibrationDialog]]:
    """``make_dialog(profiles_dir, **kwargs)`` → a shown dialog; closed at teardown, microphone released."""
    dialogs: list[CalibrationDialog] = []

    def factory(profiles_dir: Path, **kwargs: object) -> CalibrationDialog:
        dialog = CalibrationDialog(profiles_dir, **kwargs)  # type: ignore[arg-type]
        qtbot.addWidget(dialog)
        dialogs.append(dialog)
        dialog.show()
        qtbot.waitExposed(dialog)
        return dialog

    yield factory
    for dialog in dialogs:
        dialog.close()
        assert dialog._mic is None, "the dialog kept the microphone open after closing"


def click(qtbot, button) -> None:
    assert button.isVisible() and button.isEnabled(), f"{button.text()!r} is not clickable"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def answer_modal(kind: type, act: Callable[[object], None]) -> None:
    """Answer the next modal dialog of type ``kind`` the way a user would (it blocks the test's call)."""

    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, kind):
            QTimer.singleShot(20, answer)
            return
        act(dialog)

    QTimer.singleShot(0, answer)


def click_yes(box: object) -> None:
    assert isinstance(box, QMessageBox)
    box.button(QMessageBox.StandardButton.Yes).click()


def record_take(qtbot, dialog: CalibrationDialog, env: dict[str, str], wav: Path | None, loud: bool) -> None:
    """Play ``wav`` into the room, press Record once the meter hears it, wait for the take to end."""
    qtbot.waitUntil(lambda: dialog.meter.value() < 20, timeout=5000)  # the last sound has died away
    player = play_wav(env, wav) if wav is not None else None
    try:
        if loud:
            qtbot.waitUntil(lambda: dialog.meter.value() > 25, timeout=5000)  # above −35 dBFS: it is playing
        else:
            qtbot.wait(150)
        click(qtbot, dialog.record_button)
        assert dialog.recording
        qtbot.waitUntil(lambda: not dialog.recording, timeout=5000)
    finally:
        if player is not None:
            stop_processes(player)


# -- the whole guided calibration -----------------------------------------------------------------------------


def test_guided_calibration_end_to_end(qtbot, make_dialog, virtual_mic: dict[str, str], tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    save_profile(VisemeModel.default(), profiles, "Test voice")  # saving must ask before replacing it
    wavs = {
        p.viseme: write_wav(tmp_path / f"{p.viseme}.wav", synth(p.viseme, TAKE_S + 1.0), RATE) for p in SHORT_PROMPTS
    }

    dialog = make_dialog(profiles, prompts=SHORT_PROMPTS)
    assert dialog.message == "", dialog.message
    qtbot.keyClicks(dialog.name_edit, "x")  # a user edits the suggested name
    dialog.name_edit.clear()
    qtbot.keyClicks(dialog.name_edit, "Test voice")
    assert "exists" in dialog.name_hint.text()
    click(qtbot, dialog.start_button)

    for step, prompt in enumerate(SHORT_PROMPTS):
        assert dialog.current_step == step
        assert dialog.prompt_label.text() == prompt.text
        assert dialog.step_label.text().startswith(f"Step {step + 1} of {len(SHORT_PROMPTS)}")
        assert dialog.skip_button.isVisible() == dialog.is_optional(step)
        assert not dialog.next_button.isEnabled(), "Next before any take"
        record_take(qtbot, dialog, virtual_mic, wavs[prompt.viseme], loud=prompt.viseme != "sil")
        assert dialog.take_warning(step) == "", f"{prompt.viseme}: {dialog.take_warning(step)}"
        assert dialog.take_status.text().startswith("✓")
        assert dialog.record_button.text() == "Retake"
        if step == 1:  # go back once: the earlier take is kept, and Next goes on without recording again
            click(qtbot, dialog.back_button)
            assert dialog.current_step == 0 and dialog.next_button.isEnabled()
            click(qtbot, dialog.next_button)
            assert dialog.current_step == 1
        click(qtbot, dialog.next_button)

    qtbot.waitUntil(lambda: dialog.calibrated_model is not None, timeout=20_000)
    model = dialog.calibrated_model
    assert model is not None
    assert set(model.calibrated) == {p.viseme for p in SHORT_PROMPTS}, model.calibrated
    assert f"Calibrated {len(SHORT_PROMPTS)} of {len(SHORT_PROMPTS)} sounds" in dialog.result_label.text()

    answer_modal(QMessageBox, click_yes)
    click(qtbot, dialog.save_button)
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.saved_profile_name == "Test voice"
    assert (profiles / "Test voice.npz").is_file() and (profiles / "Test voice.json").is_file()
    [listed] = list_profiles(profiles)
    assert listed["name"] == "Test voice"
    assert set(listed["calibrated"]) == {p.viseme for p in SHORT_PROMPTS}  # type: ignore[arg-type]
    loaded = load_profile(profiles, "Test voice")
    default = VisemeModel.default()
    assert loaded != default, "the saved profile is the default model: the overwrite or the calibration failed"
    assert not np.allclose(loaded.means, default.means)
    assert loaded == model


def test_silent_takes_warn_and_calibration_failure_is_a_message(qtbot, make_dialog, tmp_path: Path) -> None:
    prompts = (CalibrationPrompt("sil", "Stay quiet (room noise)", 0.3), CalibrationPrompt("aa", 'Hold "aah"', 0.4))
    dialog = make_dialog(tmp_path / "profiles", prompts=prompts)
    click(qtbot, dialog.start_button)
    click(qtbot, dialog.skip_button)  # room noise is optional
    assert dialog.current_step == 1
    assert not dialog.skip_button.isVisible(), "a vowel step must not be skippable"
    click(qtbot, dialog.record_button)  # nobody speaks: the room is digital silence
    qtbot.waitUntil(lambda: not dialog.recording, timeout=5000)
    warning = dialog.take_warning(1)
    assert warning.startswith("Too quiet — move closer"), warning
    assert "Too quiet — move closer" in dialog.take_status.text()
    assert dialog.record_button.text() == "Retake"
    assert dialog.next_button.text() == "Finish (use anyway)"
    click(qtbot, dialog.next_button)
    qtbot.waitUntil(lambda: not dialog.calibrating, timeout=10_000)
    text = dialog.result_label.text()
    assert "Calibration failed" in text and "no usable calibration audio" in text, text
    assert not dialog.save_button.isEnabled()
    assert dialog.calibrated_model is None
    assert list_profiles(tmp_path / "profiles") == []


def test_take_checks() -> None:
    """The verdicts on their own: quiet, clipped, a noisy 'silence', and good takes."""
    assert assess_take(synth("aa", 0.5), RATE, "aa") == ""
    assert assess_take(synth("SS", 0.5), RATE, "SS") == ""
    assert assess_take(synth("sil", 0.5), RATE, "sil") == ""
    quiet = synth("aa", 0.5) * 10 ** ((TOO_QUIET_DBFS - 12) / 20) / 0.4
    assert assess_take(quiet, RATE, "aa").startswith("Too quiet")
    assert assess_take(np.clip(synth("aa", 0.5) * 5, -1, 1), RATE, "aa").startswith("Clipping")
    assert assess_take(synth("aa", 0.5), RATE, "sil").startswith("Not quiet")
    assert assess_take(np.zeros(0), RATE, "aa").startswith("Nothing was recorded")


# -- the profile name ---------------------------------------------------------------------------------------


def test_invalid_profile_name_is_refused_at_the_field(qtbot, make_dialog, tmp_path: Path) -> None:
    dialog = make_dialog(tmp_path / "profiles")
    assert dialog.start_button.isEnabled()  # the suggested name is valid
    for bad in ("../evil", "", " .hidden", "trailing.", "a/b", "-dash first", "tab\there"):
        dialog.name_edit.setText(bad)
        assert not dialog.start_button.isEnabled(), bad
        assert dialog.name_hint.isVisible() and dialog.name_hint.text(), bad
    dialog.name_edit.setText("x" * 80)
    assert dialog.name_edit.text() == "x" * 64, "the field stops at the 64 characters a profile name may have"
    dialog.name_edit.clear()
    qtbot.keyClicks(dialog.name_edit, "bad/name")
    assert "invalid profile name" in dialog.name_hint.text().lower()
    dialog.start()  # even called directly, Start refuses the name
    assert dialog.pages.currentIndex() == 0
    dialog.name_edit.setText("Anna 2.0_studio-mic")
    assert dialog.start_button.isEnabled() and not dialog.name_hint.isVisible()
    assert profile_name_problem("Anna 2.0_studio-mic") == ""
    assert profile_name_problem("../evil").startswith("invalid profile name")


# -- devices --------------------------------------------------------------------------------------------------


def test_missing_device_index_is_a_message(qtbot, make_dialog, tmp_path: Path) -> None:
    dialog = make_dialog(tmp_path / "profiles", device=9999)
    assert "there is no microphone with id 9999" in dialog.message
    assert "instead" in dialog.message  # the default microphone was opened so the user can go on
    assert dialog.device_combo.count() >= 1
    qtbot.waitUntil(lambda: dialog.meter.text() != "—", timeout=5000)  # the meter runs on the default device


NO_SERVER_CHILD = """
import sys
from pathlib import Path
from PySide6.QtWidgets import QApplication
from avatar_studio.gui.calibration_dialog import CalibrationDialog
from avatar_studio.lipsync.classifier import VisemeModel, save_profile

app = QApplication([])
folder = Path(sys.argv[1])
save_profile(VisemeModel.default(), folder, "kept")
dialog = CalibrationDialog(folder)
dialog.show()
app.processEvents()
print("message |", dialog.message)
print("buttons |", dialog.start_button.isEnabled(), dialog.record_button.isEnabled())
print("profiles |", dialog.profile_names())
dialog.select_profile("kept")
print("deleted |", dialog.delete_selected_profile(), dialog.profile_names())
dialog.close()
"""


def offscreen_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) for a child that runs the dialog without a display."""
    env = dict(base or os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    env.update(extra)
    env.pop("DISPLAY", None)
    return env


def test_no_microphone_message_and_profiles_still_work(tmp_path: Path) -> None:
    """No sound server: the dialog says so in a sentence, and the Profiles tab keeps working."""
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    env = offscreen_env(XDG_RUNTIME_DIR=str(runtime), PULSE_SERVER=f"unix:{runtime}/none")
    result = subprocess.run(
        [sys.executable, "-c", NO_SERVER_CHILD, str(tmp_path / "profiles")], env=env, capture_output=True,
        text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = dict(line.split(" | ", 1) for line in result.stdout.splitlines() if " | " in line)
    assert lines["message"].startswith("No microphone was found") or "no microphone found" in lines["message"]
    assert "manage saved profiles" in lines["message"]
    assert lines["buttons"] == "False False", "Start and Record need a microphone"
    assert lines["profiles"] == "['kept']"
    assert lines["deleted"] == "True []"


VANISH_CHILD = """
import sys, time
from pathlib import Path
from PySide6.QtWidgets import QApplication
from avatar_studio.gui.calibration_dialog import CalibrationDialog
from avatar_studio.lipsync.classifier import CalibrationPrompt

app = QApplication([])
dialog = CalibrationDialog(Path(sys.argv[1]), prompts=(CalibrationPrompt("aa", "Hold aah", 4.0),))
dialog.show()
dialog.start_button.click()
dialog.record_button.click()
deadline = time.monotonic() + 0.5
while time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.01)
print("recording", dialog.recording, dialog.take_progress.value() > 0, flush=True)
sys.stdin.readline()  # the test kills the sound server now
deadline = time.monotonic() + 8
while dialog.recording and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.01)
print("still recording |", dialog.recording)
print("message |", dialog.message)
print("status |", dialog.take_status.text())
print("record |", dialog.record_button.text(), dialog.record_button.isEnabled())
dialog.close()
"""


def test_microphone_vanishing_mid_take_is_a_message_and_retake(tmp_path: Path) -> None:
    """Kill a private sound server under a running take: a sentence and a Retake button, no traceback."""
    runtime = tempfile.mkdtemp(prefix="pa-cal-")
    os.chmod(runtime, 0o700)
    server, keeper, pulse_env = start_pulse(runtime)
    try:
        env = offscreen_env(pulse_env)  # the private server's runtime folder, no PULSE_SERVER
        child = subprocess.Popen(
            [sys.executable, "-c", VANISH_CHILD, str(tmp_path / "profiles")], env=env, cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert child.stdout is not None and child.stdin is not None
            first = child.stdout.readline()
            assert first.strip() == "recording True True", first + (child.stderr.read() if child.stderr else "")
            stop_processes(keeper, server)
            child.stdin.write("\n")
            child.stdin.flush()
            out, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5)
        assert child.returncode == 0, err
        assert "Traceback" not in err, err
        lines = dict(line.split(" | ", 1) for line in out.splitlines() if " | " in line)
        assert lines["still recording"] == "False"
        assert "stopped delivering audio" in lines["message"], out
        assert "interrupted" in lines["status"] and "Retake" in lines["status"]
        assert lines["record"].startswith("Re")  # Record/Retake stays available to try again
    finally:
        stop_processes(keeper, server)
        shutil.rmtree(runtime, ignore_errors=True)


# -- managing profiles ----------------------------------------------------------------------------------------


def test_profiles_are_listed_renamed_and_deleted(qtbot, make_dialog, tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    default = VisemeModel.default()
    calibrated = replace(default, calibrated=("aa", "SS"), created="2026-01-02T03:04:05+00:00")
    save_profile(calibrated, folder, "Anna")
    save_profile(default, folder, "Bob")
    dialog = make_dialog(folder)
    dialog.tabs.setCurrentIndex(1)
    assert dialog.profile_names() == ["Anna", "Bob"]
    anna = dialog.profile_list.topLevelItem(0)
    assert anna.text(2) == "aa, SS"
    assert anna.text(1).startswith("2026-01-0")  # shown in local time
    assert not dialog.delete_button.isEnabled(), "nothing selected yet"

    dialog.select_profile("Bob")

    def rename(box: object) -> None:
        assert isinstance(box, QInputDialog)
        box.setTextValue("Robert")
        box.accept()

    answer_modal(QInputDialog, rename)
    click(qtbot, dialog.rename_button)
    assert dialog.profile_names() == ["Anna", "Robert"]
    assert load_profile(folder, "Robert") == replace(default, name="Robert")
    assert not (folder / "Bob.npz").exists()

    dialog.select_profile("Anna")
    assert not dialog.rename_selected_profile("Robert"), "renaming onto an existing profile must be refused"
    assert "already exists" in dialog.profiles_message.text()

    answer_modal(QMessageBox, click_yes)
    click(qtbot, dialog.delete_button)
    assert dialog.profile_names() == ["Robert"]
    assert not (folder / "Anna.npz").exists() and not (folder / "Anna.json").exists()
    assert [p["name"] for p in list_profiles(folder)] == ["Robert"]
    assert dialog.result() != QDialog.DialogCode.Accepted and dialog.saved_profile_name is None
