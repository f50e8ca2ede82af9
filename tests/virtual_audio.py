"""A real virtual microphone for tests: a private PulseAudio whose null sink is the "room".

Why a real sound server instead of mocking sounddevice: the bugs that matter (a stream that needs a
clock to deliver data, sample-rate conversion, PortAudio's device list, what happens when the server
goes away) live below sounddevice. Recipe A of ``design/toolchain.md`` §6: a null sink, a source
remapped from its monitor (PortAudio sees it as the default input), and a keeper stream of zeros that
keeps the sink clocked, otherwise an idle null sink delivers almost nothing to the capture stream.

A module of its own rather than part of a ``conftest.py`` (like ``gltf_builder.py``): several test
folders have a conftest, and the GUI tests need the microphone as much as the lip-sync tests do.

Use it from any test module (importing the fixture into the module is what makes pytest see it)::

    from virtual_audio import play_wav, virtual_mic_fixture, write_wav  # noqa: F401

    def test_something(virtual_mic: dict[str, str], tmp_path: Path) -> None:
        player = play_wav(virtual_mic, write_wav(tmp_path / "a.wav", samples, 48000))
        assert player.wait(10) == 0

The fixture yields the environment (``XDG_RUNTIME_DIR``) of the private server; pass it to ``play_wav``.
While it is active, ``os.environ`` points at the private server and PortAudio has re-enumerated, so
``MicrophoneStream()`` opens the virtual microphone as the default input.

Importing the fixture into several modules registers it once per module. The server itself is shared:
the first user starts it, the last one to finish stops it, so one PulseAudio serves the whole session.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

SINK = "vmic_sink"
SOURCE = "vmic"
RATE = 48000


def start_pulse(runtime: str) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], dict[str, str]]:
    """Start a private PulseAudio with the virtual microphone in ``runtime``; returns (server, keeper, env).

    Public so a test can run a throw-away server of its own (e.g. to kill it under a running stream)
    without disturbing the session's shared one.
    """
    missing = [tool for tool in ("pulseaudio", "pactl", "pacat", "parec") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: the microphone tests need PulseAudio. Run scripts/run-tests "
            "(it installs pulseaudio, pulseaudio-utils and libasound2-plugins through scripts/bootstrap test)."
        )
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime)
    env.pop("PULSE_SERVER", None)
    server = subprocess.Popen(
        [
            "pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "-n", "--use-pid-file=no",
            "--load=module-native-protocol-unix auth-anonymous=1",
            f"--load=module-null-sink sink_name={SINK} rate={RATE} channels=1",
            f"--load=module-remap-source master={SINK}.monitor source_name={SOURCE}",
            "--log-level=error",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        if subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0:
            break
        if server.poll() is not None:
            pytest.fail(f"pulseaudio exited with status {server.returncode} while starting")
        time.sleep(0.05)
    else:
        server.kill()
        server.wait(5)
        pytest.fail("pulseaudio did not come up within 10 s")
    subprocess.run(["pactl", "set-default-source", SOURCE], env=env, check=True, capture_output=True)
    subprocess.run(["pactl", "set-default-sink", SINK], env=env, check=True, capture_output=True)
    keeper = subprocess.Popen(
        [
            "pacat", "--playback", f"--device={SINK}", "--format=s16le", f"--rate={RATE}", "--channels=1",
            "--latency-msec=20", "/dev/zero",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_until_capture_flows(env, server, keeper)
    return server, keeper, env


def _wait_until_capture_flows(env: dict[str, str], *procs: subprocess.Popen[bytes]) -> None:
    """Block until the virtual microphone delivers audio.

    For about two seconds after the keeper connects, the monitor of a fresh null sink delivers nothing
    (measured); a test that starts capturing inside that window would see a dead microphone.
    """
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        rec = subprocess.Popen(
            ["parec", f"--device={SOURCE}", "--raw", "--format=s16le", "--rate=16000", "--channels=1",
             "--latency-msec=20"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert rec.stdout is not None
        ready, _, _ = select.select([rec.stdout], [], [], 0.5)
        got = os.read(rec.stdout.fileno(), 640) if ready else b""
        stop_processes(rec)
        if got:
            return
    stop_processes(*procs)
    pytest.fail("the virtual microphone delivered no audio within 10 s of starting PulseAudio")


def stop_processes(*procs: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if needed, each still-running process (a dead sound server must not linger)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class _SharedServer:
    """The session's one PulseAudio, reference-counted across the modules that imported the fixture."""

    users = 0
    env: dict[str, str] | None = None
    procs: tuple[subprocess.Popen[bytes], ...] = ()
    runtime = ""
    old_runtime: str | None = None

    @classmethod
    def acquire(cls) -> dict[str, str]:
        if cls.users == 0:
            cls.runtime = tempfile.mkdtemp(prefix="pa-rt-")
            os.chmod(cls.runtime, 0o700)
            server, keeper, cls.env = start_pulse(cls.runtime)
            cls.procs = (keeper, server)
            cls.old_runtime = os.environ.get("XDG_RUNTIME_DIR")
            os.environ["XDG_RUNTIME_DIR"] = cls.runtime
            _reinitialize_portaudio()
        cls.users += 1
        assert cls.env is not None
        return cls.env

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        if cls.users > 0:
            return
        stop_processes(*cls.procs)
        if cls.old_runtime is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = cls.old_runtime
        _reinitialize_portaudio()
        shutil.rmtree(cls.runtime, ignore_errors=True)
        cls.env, cls.procs = None, ()


def _reinitialize_portaudio() -> None:
    """PortAudio enumerated devices when sounddevice was first imported; redo it after the server changed."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


@pytest.fixture(scope="session", name="virtual_mic")
def virtual_mic_fixture() -> Iterator[dict[str, str]]:
    """The virtual microphone as the default input for the whole session; yields the server's environment.

    Named ``virtual_mic`` for pytest but imported as ``virtual_mic_fixture``: a test parameter with the same
    name as an imported function is a redefinition to ruff (F811), and the fixture is found by its pytest name.
    """
    env = _SharedServer.acquire()
    try:
        yield env
    finally:
        _SharedServer.release()


def play_wav(env: dict[str, str], path: Path) -> subprocess.Popen[bytes]:
    """Start playing ``path`` into the virtual room; the caller waits on (or stops) the returned process."""
    return subprocess.Popen(["paplay", f"--device={SINK}", str(path)], env=env, stderr=subprocess.PIPE)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Float samples in [-1, 1] as a mono 16-bit WAV (what ``paplay`` plays), clipped rather than wrapped."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path
