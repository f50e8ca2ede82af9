"""The lip-sync panel driven like a QA tester would: real widgets, a real avatar scene, real audio files.

Expected weights always come from the table itself (``VisemeTable.blendshapes``), so these tests check
that the panel puts on the face what the mapping says, not that the panel agrees with itself. This
machine class usually has no sound card: file playback then runs silently on a clock (see the panel's
docstring), and the tests check the note that says so. The live-microphone test uses the private
PulseAudio of ``tests/virtual_audio.py`` and runs last, because once that server is up the session has
an audio output too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt

from avatar_studio.avatar.blendshapes import ARKIT_52, OVR_VISEMES
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.scene import AvatarScene
from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.gui.lipsync_panel import LipSyncPanel
from avatar_studio.lipsync.audio_files import read_wav, write_wav
from avatar_studio.lipsync.audio_input import AudioDeviceError
from avatar_studio.lipsync.classifier import VisemeModel, save_profile
from avatar_studio.lipsync.playback import list_output_devices
from avatar_studio.lipsync.viseme_table import VisemeTable

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/ for virtual_audio, tests/lipsync for the signals
sys.path.insert(0, str(Path(__file__).parents[1] / "lipsync"))

from lipsync_signals import hiss, vowel
from virtual_audio import _reinitialize_portaudio, play_wav, start_pulse, stop_processes, virtual_mic_fixture  # noqa: F401

MakePanel = Callable[..., LipSyncPanel]


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_glb() -> bytes:
    return make_arkit_head_glb(2000)


@pytest.fixture
def scene(head_glb: bytes) -> AvatarScene:
    return AvatarScene(load_avatar(head_glb))


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 1.5 s of speech: espeak-ng if present, else vowels and a hiss (the engine moves on both)."""
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    try:
        from avatar_studio.lipsync.espeak import synthesize

        synthesis = synthesize("Hello, my name is Bob.")
        write_wav(path, synthesis.samples(), synthesis.sample_rate)
    except Exception:  # no espeak-ng on this machine: deterministic synthetic speech instead
        rate = 16000
        silence = np.zeros(int(0.2 * rate))
        parts = [silence, vowel(0.4, rate), hiss(0.25, rate), vowel(0.4, rate, (300.0, 2300.0, 3000.0)), silence]
        write_wav(path, np.concatenate(parts), rate)
    return path


@pytest.fixture
def make_panel(qtbot, settings: QSettings, tmp_path: Path) -> Iterator[MakePanel]:
    """``make_panel(scene=None)`` → a shown panel; every panel is shut down and its threads checked at teardown."""
    baseline = threading.active_count()
    panels: list[LipSyncPanel] = []

    def factory(scene: AvatarScene | None = None, *, profiles: Path | None = None) -> LipSyncPanel:
        panel = LipSyncPanel(settings, profiles or tmp_path / "profiles")
        qtbot.addWidget(panel)
        panel.resize(520, 900)
        panel.show()
        qtbot.waitExposed(panel)
        panel.set_scene(scene)
        panels.append(panel)
        return panel

    yield factory
    for panel in panels:
        panel.shutdown()
    assert threading.active_count() == baseline, [t.name for t in threading.enumerate()]


def _has_audio_output() -> bool:
    try:
        return bool(list_output_devices())
    except AudioDeviceError:
        return False


def _mouth(scene: AvatarScene, table: VisemeTable) -> dict[str, float]:
    return {name: scene.weight(name) for name in table.blendshape_names}


def _offline(panel: LipSyncPanel) -> None:
    """Tests about the panel, not the engine, use offline mode: it does not depend on the shipped live model."""
    panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("offline"))


def _assert_neutral(panel: LipSyncPanel, scene: AvatarScene | None) -> None:
    if scene is not None:
        assert max(_mouth(scene, panel.table).values()) == 0.0, _mouth(scene, panel.table)
    assert not panel.bars.values().any()


# -- poses -------------------------------------------------------------------------------------------------


def test_pose_buttons_set_exactly_the_tables_weights_and_neutral_resets(
    qtbot, make_panel: MakePanel, scene: AvatarScene
) -> None:
    panel = make_panel(scene)
    table = panel.table
    others = {n: w for n, w in scene.weights_by_name().items() if n not in table.blendshape_names}
    assert panel.pose_buttons["PP"].text() == "PP (MBP)" and panel.pose_buttons["aa"].text() == "aa (A)"
    assert not panel.avatar_note.isVisibleTo(panel)
    for viseme in OVR_VISEMES:
        button = panel.pose_buttons[viseme]
        assert button.isEnabled(), (viseme, button.toolTip())
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        expected = table.blendshapes({viseme: 1.0})
        assert _mouth(scene, table) == pytest.approx(expected, abs=1e-6), viseme
        assert {n: w for n, w in scene.weights_by_name().items() if n in others} == others  # nothing else moved
    qtbot.mouseClick(panel.pose_buttons["oh"], Qt.MouseButton.LeftButton)
    assert scene.weight("mouthFunnel") > 0
    qtbot.mouseClick(panel.neutral_button, Qt.MouseButton.LeftButton)
    _assert_neutral(panel, scene)


def test_visemes_the_avatar_cannot_express_are_disabled_and_name_the_missing_shapes(
    make_panel: MakePanel, scene: AvatarScene
) -> None:
    known = (*ARKIT_52, "lipsTogether")
    table = VisemeTable(
        {"PP": [["mouthClose", 1.0], ["lipsTogether", 0.5]], "aa": [["jawOpen", 0.7]]}, known_blendshapes=known
    )
    panel = make_panel(scene)
    panel.set_table(table)
    pp = panel.pose_buttons["PP"]
    assert not pp.isEnabled()
    assert "lipsTogether" in pp.toolTip() and "partly" in pp.toolTip()
    assert panel.pose_buttons["aa"].isEnabled()
    panel.set_scene(None)
    assert not any(button.isEnabled() for button in panel.pose_buttons.values())
    assert panel.avatar_note.isVisibleTo(panel)


def test_set_table_changes_what_a_pose_button_does(qtbot, make_panel: MakePanel, scene: AvatarScene) -> None:
    panel = make_panel(scene)
    panel.set_table(VisemeTable({"PP": [["mouthClose", 1.0]]}))
    qtbot.mouseClick(panel.pose_buttons["PP"], Qt.MouseButton.LeftButton)
    assert scene.weight("mouthClose") == 1.0 and scene.weight("mouthPucker") == 0.0

    panel.set_table(VisemeTable({"PP": [["mouthPucker", 0.7]]}))  # the shown pose re-maps at once…
    assert scene.weight("mouthClose") == 0.0
    assert scene.weight("mouthPucker") == pytest.approx(0.7, abs=1e-6)
    qtbot.mouseClick(panel.neutral_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(panel.pose_buttons["PP"], Qt.MouseButton.LeftButton)  # …and so does the button
    assert scene.weight("mouthClose") == 0.0
    assert scene.weight("mouthPucker") == pytest.approx(0.7, abs=1e-6)


# -- file playback -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["live", "offline"])
def test_file_playback_moves_bars_timeline_and_mouth_then_returns_to_neutral(
    qtbot, make_panel: MakePanel, scene: AvatarScene, speech_wav: Path, mode: str
) -> None:
    panel = make_panel(scene)
    panel.mode_combo.setCurrentIndex(panel.mode_combo.findData(mode))
    assert panel.open_audio_file(speech_wav)
    assert panel.file_label.text() == speech_wav.name
    assert panel.busy_bar.isVisibleTo(panel)  # the analysis runs in the background from the moment of opening
    qtbot.mouseClick(panel.play_button, Qt.MouseButton.LeftButton)

    seen: dict[str, float] = {"mouth": 0.0, "points": 0, "tops": 0}
    tops: set[str] = set()

    def observe() -> bool:
        seen["mouth"] = max(seen["mouth"], max(_mouth(scene, panel.table).values()))
        seen["points"] = max(seen["points"], panel.timeline.points_shown)
        if panel.bars.top_viseme not in (None, "sil"):
            tops.add(panel.bars.top_viseme)
        return seen["mouth"] > 0.05 and seen["points"] > 20 and len(tops) >= 2

    qtbot.waitUntil(observe, timeout=15_000)
    assert panel.play_button.text() == "Pause"
    assert not panel.busy_bar.isVisibleTo(panel)
    assert panel.output_note.isVisibleTo(panel) == (not _has_audio_output())
    if not _has_audio_output():
        assert "silently" in panel.output_note.text() and "output" in panel.output_note.text()

    qtbot.waitUntil(lambda: panel.play_button.text() == "Play", timeout=15_000)  # the clip ran out
    _assert_neutral(panel, scene)
    assert panel.position_label.text().startswith("0.00 /")


def test_pause_keeps_the_mouth_and_play_resumes(
    qtbot, make_panel: MakePanel, scene: AvatarScene, speech_wav: Path
) -> None:
    panel = make_panel(scene)
    _offline(panel)
    panel.open_audio_file(speech_wav)
    panel.play()
    qtbot.waitUntil(lambda: max(_mouth(scene, panel.table).values()) > 0.05, timeout=10_000)
    panel.pause()
    assert panel.play_button.text() == "Play"
    held, position = _mouth(scene, panel.table), panel.position_label.text()
    qtbot.wait(200)
    assert _mouth(scene, panel.table) == held and panel.position_label.text() == position
    panel.play()
    qtbot.waitUntil(lambda: panel.position_label.text() != position, timeout=5_000)
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    _assert_neutral(panel, scene)


def test_unreadable_file_shows_a_message_and_the_panel_stays_usable(
    qtbot, make_panel: MakePanel, scene: AvatarScene, speech_wav: Path, tmp_path: Path
) -> None:
    panel = make_panel(scene)
    _offline(panel)
    assert panel.open_audio_file(speech_wav)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    flac = tmp_path / "voice.flac"
    flac.write_bytes(b"fLaC\x00\x00\x00\x22" + bytes(40))

    for path, reason in ((broken, "fmt"), (flac, "FLAC"), (tmp_path / "missing.wav", "missing.wav")):
        with qtbot.waitSignal(panel.sig_status) as status:
            assert not panel.open_audio_file(path)
        assert panel.message_label.isVisibleTo(panel)
        assert reason in panel.message_label.text() and path.name in panel.message_label.text()
        assert reason in status.args[0]
    assert panel.file_label.text() == speech_wav.name  # the previous file is still loaded …

    panel.play()  # … and plays
    qtbot.waitUntil(lambda: max(_mouth(scene, panel.table).values()) > 0.05, timeout=10_000)
    panel.stop()
    _assert_neutral(panel, scene)


def test_a_flac_file_plays_like_its_wav(
    qtbot, make_panel: MakePanel, scene: AvatarScene, speech_wav: Path, tmp_path: Path
) -> None:
    import soundfile

    from avatar_studio.lipsync.audio_files import read_wav

    samples, rate = read_wav(speech_wav)
    flac = tmp_path / "speech.flac"
    soundfile.write(flac, samples, rate, subtype="PCM_16")
    panel = make_panel(scene)
    assert panel.open_audio_file(flac)
    assert panel.file_label.text() == "speech.flac"
    panel.play()
    qtbot.waitUntil(lambda: max(_mouth(scene, panel.table).values()) > 0.05, timeout=15_000)
    panel.stop()
    _assert_neutral(panel, scene)


def test_without_an_avatar_the_bars_and_timeline_still_run(qtbot, make_panel: MakePanel, speech_wav: Path) -> None:
    panel = make_panel(None)
    assert panel.avatar_note.isVisibleTo(panel)
    _offline(panel)
    panel.open_audio_file(speech_wav)
    panel.play()
    qtbot.waitUntil(
        lambda: panel.bars.top_viseme not in (None, "sil") and panel.timeline.points_shown > 20, timeout=10_000
    )
    panel.stop()
    assert not panel.bars.values().any()


# -- microphone, settings, shutdown -----------------------------------------------------------------------------


def test_microphone_that_does_not_exist_gives_a_message_not_an_exception(
    qtbot, make_panel: MakePanel, scene: AvatarScene
) -> None:
    panel = make_panel(scene)
    panel.device_combo.addItem("9999: a microphone unplugged since the list was made", 9999)
    panel.device_combo.setCurrentIndex(panel.device_combo.count() - 1)
    with qtbot.waitSignal(panel.sig_status) as status:
        qtbot.mouseClick(panel.mic_button, Qt.MouseButton.LeftButton)
    assert panel.mic_button.text() == "Start mic"
    assert panel.message_label.isVisibleTo(panel) and "icrophone" in panel.message_label.text()
    assert "Traceback" not in panel.message_label.text()
    assert status.args[0].startswith("Microphone:")
    assert not panel.replay_button.isEnabled()
    _assert_neutral(panel, scene)


def test_smoothing_and_profile_choices_persist(make_panel: MakePanel, settings: QSettings, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    save_profile(VisemeModel.default(), profiles, "alice")
    panel = make_panel(profiles=profiles)
    assert [panel.profile_combo.itemText(i) for i in range(panel.profile_combo.count())] == [
        "Default (uncalibrated)",
        "alice",
    ]
    panel.profile_combo.setCurrentIndex(1)
    panel.smoothing_spins["attack_ms"].setValue(40.0)
    panel.delay_spin.setValue(120)
    _offline(panel)
    assert panel.smoothing.attack_ms == 40.0

    panel.smoothing_spins["gate_full_db"].setValue(-70.0)  # below the gate's opening level: refused, not applied
    assert "gate_full_db" in panel.message_label.text()
    assert panel.smoothing.gate_full_db == -25.0

    again = make_panel(profiles=profiles)
    assert again.profile_combo.currentText() == "alice"
    assert again.smoothing.attack_ms == 40.0
    assert again.smoothing_spins["attack_ms"].value() == 40.0
    assert again.delay_spin.value() == 120 and again.mode_combo.currentData() == "offline"
    again.smoothing_reset_button.click()
    assert again.smoothing.attack_ms == 25.0
    assert float(settings.value("lipsync/smoothing/attack_ms")) == 25.0


def test_shutdown_mid_playback_is_clean_and_safe_twice(
    qtbot, make_panel: MakePanel, scene: AvatarScene, speech_wav: Path
) -> None:
    baseline = threading.active_count()
    panel = make_panel(scene)
    panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("offline"))
    panel.open_audio_file(speech_wav)  # the analysis thread starts here
    panel.play()
    qtbot.waitUntil(lambda: max(_mouth(scene, panel.table).values()) > 0.05, timeout=15_000)
    panel.open_audio_file(speech_wav)  # a second analysis while the first result is in use
    panel.shutdown()
    assert threading.active_count() == baseline, [t.name for t in threading.enumerate()]
    _assert_neutral(panel, scene)
    panel.shutdown()
    panel.play()  # after shutdown nothing starts again
    assert threading.active_count() == baseline


# -- the real (virtual) microphone: keep last, it gives the session an audio output ------------------------------


def test_live_microphone_record_replay_and_save(
    qtbot, virtual_mic: dict[str, str], make_panel: MakePanel, scene: AvatarScene, speech_wav: Path, tmp_path: Path
) -> None:
    panel = make_panel(scene)
    panel._refresh_devices()  # the fixture's sound server started after the panel's first look
    panel.record_button.setChecked(True)
    qtbot.mouseClick(panel.mic_button, Qt.MouseButton.LeftButton)
    assert panel.mic_button.text() == "Stop mic", panel.message_label.text()

    levels: list[float] = []
    player = play_wav(virtual_mic, speech_wav)
    try:

        def moving() -> bool:
            text = panel.level_label.text()
            if text.endswith("dBFS") and not text.startswith("—"):
                levels.append(float(text.split()[0]))
            return max(_mouth(scene, panel.table).values()) > 0.05 and panel.timeline.points_shown > 50

        qtbot.waitUntil(moving, timeout=15_000)
        player.wait(15)
    finally:
        if player.poll() is None:
            player.kill()
            player.wait(5)
    assert levels and max(levels) > -40.0
    qtbot.mouseClick(panel.mic_button, Qt.MouseButton.LeftButton)
    assert panel.mic_button.text() == "Start mic"
    _assert_neutral(panel, scene)
    assert panel.recording_label.text().startswith("Recorded")

    saved = panel.save_recording(tmp_path / "session.wav")
    assert saved is not None
    samples, _rate = read_wav(saved)
    assert samples.size > 0 and np.abs(samples).max() > 0.01

    qtbot.mouseClick(panel.replay_button, Qt.MouseButton.LeftButton)
    assert panel.file_label.text().startswith("Recording (")
    qtbot.waitUntil(lambda: max(_mouth(scene, panel.table).values()) > 0.05, timeout=15_000)
    panel.stop()
    _assert_neutral(panel, scene)


def test_microphone_that_disappears_mid_stream_gives_a_message(
    qtbot, make_panel: MakePanel, scene: AvatarScene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private sound server (not the session's) is killed under the running microphone."""
    runtime = tempfile.mkdtemp(prefix="pa-gone-")
    os.chmod(runtime, 0o700)
    server, keeper, _env = start_pulse(runtime)
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
        _reinitialize_portaudio()
        panel = make_panel(scene)
        assert panel.start_microphone(), panel.message_label.text()
        qtbot.waitUntil(lambda: panel.timeline.points_shown > 10, timeout=10_000)
        with qtbot.waitSignal(panel.sig_status, timeout=10_000, check_params_cb=lambda text: "stopped" in text):
            stop_processes(keeper, server)
        qtbot.waitUntil(lambda: panel.mic_button.text() == "Start mic", timeout=5_000)
        assert "stopped delivering audio" in panel.message_label.text()
        assert "Traceback" not in panel.message_label.text()
        _assert_neutral(panel, scene)
    finally:
        stop_processes(keeper, server)
        monkeypatch.undo()
        _reinitialize_portaudio()
        shutil.rmtree(runtime, ignore_errors=True)
