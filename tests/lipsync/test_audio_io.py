"""The real audio path: a PulseAudio null sink is the "room", its remapped monitor is the default microphone.

The virtual microphone lives in ``tests/virtual_audio.py`` (shared with the GUI tests); its docstring
says why a real sound server rather than a mocked sounddevice.

Failure modes that need their own process (no PortAudio library, no sound server, a server that
dies mid-stream) run in subprocesses so this process's PortAudio state stays intact.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from virtual_audio import play_wav, start_pulse, stop_processes, virtual_mic_fixture, write_wav  # noqa: F401

from avatar_studio.lipsync import espeak
from avatar_studio.lipsync.audio_files import read_wav
from avatar_studio.lipsync.audio_input import (
    AudioDeviceError,
    MicrophoneStream,
    Recorder,
    list_input_devices,
    resample,
)
from avatar_studio.lipsync.playback import PlaybackError, WavPlayer

ROOT = Path(__file__).resolve().parents[2]
TONE_HZ = 523.25


def _write_tone(path: Path, seconds: float = 1.5, rate: int = 48000, amplitude: float = 0.5) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    return write_wav(path, amplitude * np.sin(2 * np.pi * TONE_HZ * t), rate)


def _capture_while(mic: MicrophoneStream, seconds: float) -> np.ndarray:
    chunks = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        chunks.append(mic.read_available())
        time.sleep(0.02)
    chunks.append(mic.read_available())
    return np.concatenate(chunks)


def _peak_hz(x: np.ndarray, rate: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    return float(np.argmax(spectrum) * rate / (8 * len(x)))


# -- the microphone ---------------------------------------------------------------------------------------------


def test_virtual_microphone_is_listed(virtual_mic: dict[str, str]) -> None:
    devices = list_input_devices()
    assert devices, "PortAudio lists no input device although PulseAudio runs"
    defaults = [d for d in devices if d.is_default]
    assert len(defaults) == 1
    assert any(d.name in ("pulse", "default") for d in devices), [str(d) for d in devices]
    assert defaults[0].default_sample_rate > 0


def test_microphone_captures_played_tone_and_meter_rises(virtual_mic: dict[str, str], tmp_path: Path) -> None:
    tone = _write_tone(tmp_path / "tone.wav")
    with MicrophoneStream() as mic:
        assert mic.sample_rate == mic.device.default_sample_rate
        time.sleep(0.3)
        before = _capture_while(mic, 0.2)
        quiet = mic.level()
        player = play_wav(virtual_mic, tone)
        levels = []
        chunks = []
        deadline = time.monotonic() + 2.2
        while time.monotonic() < deadline:
            chunks.append(mic.read_available())
            levels.append(mic.level())
            time.sleep(0.02)
        assert player.wait(10) == 0, player.stderr.read() if player.stderr else ""
        captured = np.concatenate(chunks)
        rate = mic.sample_rate
    assert before.size > 0.1 * rate, "the idle microphone delivered (almost) nothing: is the keeper stream running?"
    assert quiet < -80.0
    assert max(levels) > -12.0, f"the meter never rose: {max(levels):.1f} dBFS"  # 0.5 amplitude sine = −9 dBFS
    loud = np.flatnonzero(np.abs(captured) > 0.25)
    assert loud.size > rate, "less than 1 s of the 1.5 s tone arrived"
    segment = captured[loud[0] : loud[-1]]
    assert abs(_peak_hz(segment, rate) - TONE_HZ) < 1.5


def test_microphone_callback_and_rate_fallback(virtual_mic: dict[str, str], tmp_path: Path) -> None:
    got: list[tuple[int, float]] = []
    done = threading.Event()

    def on_chunk(chunk: np.ndarray, t: float) -> None:
        got.append((chunk.size, t))
        if sum(n for n, _ in got) > 8000:
            done.set()

    with MicrophoneStream(callback=on_chunk, sample_rate=16000) as mic:
        assert mic.sample_rate == 16000  # the ALSA pulse plugin converts any rate
        assert done.wait(5), "the pump thread delivered no audio"
        assert mic.read_available().size == 0  # the callback owns the data
    assert got[0][1] == 0.0 and got[1][1] == pytest.approx(got[0][0] / 16000)


def test_record_and_replay_session(virtual_mic: dict[str, str], tmp_path: Path) -> None:
    tone = _write_tone(tmp_path / "tone.wav", seconds=0.8)
    with MicrophoneStream(sample_rate=16000) as mic:
        recorder = Recorder(mic.sample_rate)
        player = play_wav(virtual_mic, tone)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            recorder.append(mic.read_available())
            time.sleep(0.02)
        player.wait(10)
        recorder.append(mic.read_available())
    saved = recorder.save(tmp_path / "session.wav")
    replay, rate = read_wav(saved)
    assert rate == 16000 and abs(replay.size - recorder.samples().size) == 0
    assert np.max(np.abs(replay - recorder.samples())) < 1e-4
    hops = list(recorder.chunks(0.01))
    assert sum(h.size for h in hops) == replay.size and hops[0].size == 160
    loud = np.flatnonzero(np.abs(replay) > 0.25)
    assert loud.size > 0.5 * rate
    assert abs(_peak_hz(replay[loud[0] : loud[-1]], rate) - TONE_HZ) < 1.5


def test_invalid_device_id_gives_clear_message(virtual_mic: dict[str, str]) -> None:
    with pytest.raises(AudioDeviceError, match=r"no microphone with id 9999; available: .*pulse"):
        MicrophoneStream(device=9999)
    with pytest.raises(AudioDeviceError, match="no microphone is called 'no-such-mic'"):
        MicrophoneStream(device="no-such-mic")


# -- playback ----------------------------------------------------------------------------------------------------


def test_wav_playback_position_advances_and_is_heard(virtual_mic: dict[str, str], tmp_path: Path) -> None:
    tone = _write_tone(tmp_path / "tone.wav", seconds=1.0, rate=22050)
    with MicrophoneStream(sample_rate=48000) as mic:
        player = WavPlayer(tone, audio_delay_s=0.2)
        assert player.duration_s == pytest.approx(1.0)
        positions, mouths = [], []
        player.start()
        start = time.monotonic()
        while not player.finished and time.monotonic() - start < 4:
            positions.append(player.position_s())
            mouths.append(player.mouth_position_s())
            time.sleep(0.05)
        assert player.wait(3)
        elapsed = time.monotonic() - start
        captured = _capture_while(mic, 0.3)
        player.close()
    assert 1.1 < elapsed < 4.0, "playback is paced in real time (1 s of audio + 0.2 s delay)"
    assert positions == sorted(positions), "the position clock went backwards"
    assert positions[0] == 0.0  # still inside the 0.2 s audio delay
    assert positions[-1] > 0.7
    assert player.position_s() == pytest.approx(1.0)
    assert all(m >= p for m, p in zip(mouths, positions, strict=True))
    mid = [m - p for m, p in zip(mouths, positions, strict=True) if 0 < p < 0.9]
    assert mid and all(abs(d - 0.2) < 0.01 for d in mid)
    loud = np.flatnonzero(np.abs(captured) > 0.25)
    assert loud.size > 0.55 * 48000, "the played WAV did not reach the virtual microphone"
    assert abs(_peak_hz(captured[loud[0] : loud[-1]], 48000) - TONE_HZ) < 1.5


def test_playback_of_unreadable_file_is_a_clear_error(virtual_mic: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    with pytest.raises(PlaybackError, match=r"cannot play .*notes\.wav"):
        WavPlayer(bad)


# -- failure modes in their own process ------------------------------------------------------------------------


def _run_python(code: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout,
        cwd=ROOT,
    )  # fmt: skip


def test_no_sound_server_means_no_device_message(tmp_path: Path) -> None:
    """PulseAudio not running: PortAudio lists nothing, and the user gets a sentence, not a traceback."""
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), PULSE_SERVER=f"unix:{runtime}/none")
    result = _run_python(
        """
        from avatar_studio.lipsync.audio_input import AudioDeviceError, MicrophoneStream, list_input_devices
        from avatar_studio.lipsync.playback import PlaybackError, WavPlayer
        import numpy as np
        print("devices", len(list_input_devices()))
        for make in (MicrophoneStream, lambda: WavPlayer((np.zeros(100, np.float32), 16000))):
            try:
                make()
            except AudioDeviceError as exc:
                print(type(exc).__name__, "|", exc)
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "devices 0"
    assert lines[1].startswith("AudioDeviceError | no microphone found")
    assert lines[2].startswith("PlaybackError | no audio output device")
    assert "Traceback" not in result.stderr


def test_missing_portaudio_names_the_package(tmp_path: Path) -> None:
    """Simulate a machine without libportaudio2: sounddevice raises OSError at import."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    env = dict(os.environ, PYTHONPATH=f"{fake}{os.pathsep}{ROOT}")
    result = _run_python(
        """
        from avatar_studio.lipsync.audio_input import AudioDeviceError, list_input_devices
        try:
            list_input_devices()
        except AudioDeviceError as exc:
            print(exc)
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert "libportaudio2" in result.stdout


def test_device_disappearing_mid_stream_gives_clear_message(tmp_path: Path) -> None:
    """Kill the sound server under a running stream (a private one, not the session's)."""
    runtime = tempfile.mkdtemp(prefix="pa-gone-")
    os.chmod(runtime, 0o700)
    server, keeper, env = start_pulse(runtime)
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(
                """
                import sys, time
                from avatar_studio.lipsync.audio_input import AudioDeviceError, MicrophoneStream
                mic = MicrophoneStream().start()
                time.sleep(0.3)
                n = mic.read_available().size
                print("captured", n, flush=True)
                sys.stdin.readline()           # the test kills the server now
                deadline = time.monotonic() + 5
                try:
                    while time.monotonic() < deadline:
                        mic.read_available()
                        time.sleep(0.02)
                    print("no error")
                except AudioDeviceError as exc:
                    print("error |", exc)
                mic.close()
                """
            )],
            env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert child.stdout is not None and child.stdin is not None
            first = child.stdout.readline()
            assert first.startswith("captured ") and int(first.split()[1]) > 0, first + (child.stderr.read() or "")
            stop_processes(keeper, server)
            child.stdin.write("\n")
            child.stdin.flush()
            out, err = child.communicate(timeout=20)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5)
        assert out.startswith("error | the microphone"), out + err
        assert "stopped delivering audio" in out
        assert "Traceback" not in err
    finally:
        stop_processes(keeper, server)
        shutil.rmtree(runtime, ignore_errors=True)


# -- the espeak-ng oracle ----------------------------------------------------------------------------------------


def test_espeak_oracle_phonemes_cover_the_audio() -> None:
    if not espeak.espeak_available():
        pytest.fail("libespeak-ng.so.1 is missing: run scripts/run-tests, or apt-get install espeak-ng libespeak-ng1")
    s = espeak.synthesize("Please pass the butter, Bob.", voice="en-gb", rate_wpm=160, pitch=40)
    assert s.sample_rate == 22050 and s.pcm.dtype == np.int16
    assert s.phonemes[0].start_s == 0.0
    assert s.phonemes[-1].end_s == pytest.approx(s.duration_s, abs=1e-9)
    assert sum(p.duration_s for p in s.phonemes) == pytest.approx(s.duration_s, abs=1e-6)
    assert all(a.end_s == b.start_s for a, b in zip(s.phonemes, s.phonemes[1:], strict=False))
    names = [p.name for p in s.phonemes if not p.is_pause]
    assert names.count("b") >= 3 and "p" in names
    # pauses are digital silence, speech is not
    audio = s.samples()
    speech = [p for p in s.phonemes if not p.is_pause and p.duration_s > 0.04]
    pauses = [p for p in s.phonemes if p.is_pause and p.duration_s > 0.04]
    level = lambda p: float(np.sqrt(np.mean(audio[int(p.start_s * 22050) : int(p.end_s * 22050)] ** 2)))  # noqa: E731
    assert pauses and max(level(p) for p in pauses) < 1e-3
    assert np.median([level(p) for p in speech]) > 0.02
    with pytest.raises(espeak.EspeakError, match="no voice 'xx-nowhere'"):
        espeak.synthesize("hi", voice="xx-nowhere")


def test_espeak_missing_library_message(tmp_path: Path) -> None:
    env = dict(os.environ)
    result = _run_python(
        """
        import ctypes, ctypes.util
        from avatar_studio.lipsync import espeak
        def fail(*a, **k):
            raise OSError("cannot open shared object file")
        ctypes.CDLL = fail
        try:
            espeak.synthesize("hello")
        except espeak.EspeakError as exc:
            print(exc)
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert "libespeak-ng1" in result.stdout and "espeak-ng" in result.stdout


# -- the engine on the real microphone path ---------------------------------------------------------------------


def test_live_engine_on_captured_speech(virtual_mic: dict[str, str], tmp_path: Path) -> None:
    """An espeak-ng sentence goes through the null sink and the real sounddevice stream into the live engine."""
    if importlib.util.find_spec("avatar_studio.lipsync.engine") is None:
        pytest.fail("avatar_studio.lipsync.engine does not exist yet; this test checks the live engine on the mic path")
    from avatar_studio.lipsync.engine import LipSyncEngine
    from avatar_studio.lipsync.viseme_table import VisemeTable

    speech = espeak.synthesize("Bob will show you the new blue boat.", voice="en-us", rate_wpm=150)
    wav = tmp_path / "speech.wav"
    pcm = np.concatenate([np.zeros(int(0.6 * 22050), np.int16), speech.pcm, np.zeros(int(0.8 * 22050), np.int16)])
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes(pcm.astype("<i2").tobytes())
    with MicrophoneStream(sample_rate=16000) as mic:
        time.sleep(0.2)
        mic.read_available()
        player = play_wav(virtual_mic, wav)
        captured = _capture_while(mic, len(pcm) / 22050 + 0.6)
        player.wait(10)
    loud = np.flatnonzero(np.abs(captured) > 0.02)
    assert loud.size, "the sentence never reached the microphone"
    engine = LipSyncEngine(VisemeTable.default(), mode="live")
    frames = []
    for i in range(0, captured.size, 160):
        frames.extend(engine.feed(captured[i : i + 160], 16000))
    assert frames, "the live engine returned no frames"
    onset, offset = loud[0] / 16000, loud[-1] / 16000

    def top(frame: object) -> str:
        visemes: dict[str, float] = frame.visemes  # type: ignore[attr-defined]
        return max(visemes, key=visemes.get)  # type: ignore[arg-type]

    during = [top(f) for f in frames if onset + 0.1 < f.t < offset - 0.1]
    before = [top(f) for f in frames if f.t < onset - 0.15]
    after = [top(f) for f in frames if f.t > offset + 0.25]
    assert during and sum(v != "sil" for v in during) / len(during) > 0.6, during
    assert before and all(v == "sil" for v in before), before
    assert after and sum(v == "sil" for v in after) / len(after) > 0.9, after


def test_resample_keeps_frequency() -> None:
    rate = 48000
    t = np.arange(rate) / rate
    down = resample(np.sin(2 * np.pi * TONE_HZ * t).astype(np.float32), rate, 16000)
    assert down.size == 16000 and down.dtype == np.float32
    assert abs(_peak_hz(down, 16000) - TONE_HZ) < 1.5
