"""``avatar-studio --self-test``: prove that an installation works, without a display, a camera or a network.

Why it exists: a frozen bundle fails in ways a source checkout never does — a data file left out, a
native library (PortAudio, LiteRT, pocketsphinx) not collected, a module imported by name that the
bundler could not see. Each check below exercises one such path end to end (the same code the app
runs, not a mock), so a packager or a user can run one command on the installed bundle and read which
part is broken. The checks use a temporary data folder, so they never touch the user's avatars,
settings or service database.

No Qt here (import-linter contract): the self-test must run on a headless machine; the window is
checked separately (``--screenshot``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from avatar_studio import __version__

SELFTEST_PHOTO = "selftest/astronaut.jpg"
_RATE = 16_000


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome; ``reason`` is empty when it passed."""

    name: str
    passed: bool
    seconds: float
    reason: str = ""


class SelfTestFailure(AssertionError):
    """A check ran but found a wrong result (as opposed to crashing)."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise SelfTestFailure(message)


@dataclass
class _Context:
    """State shared between checks (the loaded avatar feeds the morph check)."""

    data_dir: Path
    avatar: object = None


def _check_resources(ctx: _Context) -> str:
    from avatar_studio.lipsync.viseme_table import VisemeTable
    from avatar_studio.resources import resource_path

    for name in ("viseme_table.json", "lipsync/live_model.npz", "face_models/face_landmark.tflite",
                 "face_models/face_detection_short_range.tflite", "face_models/iris_landmark.tflite",
                 "face_models/face_mesh_topology.json", SELFTEST_PHOTO):
        resource_path(name)
    table = VisemeTable.default()
    return f"{len(table.blendshape_names)} blendshapes in the default viseme table"


def _check_avatar(ctx: _Context) -> str:
    from avatar_studio.avatar.gltf_reader import load_avatar
    from avatar_studio.avatar.synthetic import make_arkit_head_glb

    glb = make_arkit_head_glb(3_000)
    avatar = load_avatar(glb)
    _expect(len(avatar.morph_names) == 52, f"expected 52 ARKit morph targets, found {len(avatar.morph_names)}")
    ctx.avatar = avatar
    return f"{avatar.vertex_count:,} vertices, {len(avatar.morph_names)} morph targets"


def _check_morphs(ctx: _Context) -> str:
    from avatar_studio.avatar.model import Avatar
    from avatar_studio.avatar.morph import MorphEvaluator

    avatar = ctx.avatar
    _expect(isinstance(avatar, Avatar), "no avatar (the avatar check failed)")
    assert isinstance(avatar, Avatar)
    evaluator = MorphEvaluator(avatar)
    rest = [positions.copy() for positions, _ in evaluator.apply(None)]
    posed = evaluator.apply({"jawOpen": 1.0, "eyeBlinkLeft": 1.0})
    moved = max(float(np.abs(p - r).max()) for (p, _), r in zip(posed, rest, strict=True))
    finite = all(np.isfinite(p).all() and np.isfinite(n).all() for p, n in posed)
    _expect(finite, "the posed mesh has non-finite positions or normals")
    _expect(moved > 1e-4, "jawOpen=1 did not move any vertex")
    return f"jawOpen moves vertices by up to {moved:.4f}"


def _vowel_signal() -> tuple[np.ndarray, slice]:
    """0.3 s silence, 0.6 s of a synthetic open vowel (harmonics of 120 Hz under /a/ formants), 0.3 s silence.

    Returns the signal and the 10 ms frames that lie well inside the vowel.
    """
    t = np.arange(int(0.6 * _RATE)) / _RATE
    phase = 2 * np.pi * np.cumsum(120 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / _RATE
    voice = np.zeros_like(t)
    for k in range(1, 30):
        f = 120 * k
        gain = np.exp(-(((f - 750) / 300) ** 2)) + 0.6 * np.exp(-(((f - 1150) / 300) ** 2))
        voice += gain / k * np.sin(k * phase)
    voice *= 0.3 / np.abs(voice).max()
    silence = np.zeros(int(0.3 * _RATE))
    return np.concatenate([silence, voice, silence]).astype(np.float32), slice(45, 85)


def _check_lipsync_live(ctx: _Context) -> str:
    from avatar_studio.lipsync.engine import LipSyncEngine

    signal, vowel = _vowel_signal()
    frames = LipSyncEngine(mode="live").analyze(signal, _RATE)
    _expect(len(frames) == 120, f"expected 120 frames for 1.2 s, got {len(frames)}")
    quiet = [max(f.visemes, key=f.visemes.__getitem__) for f in frames[:25]]
    _expect(all(v == "sil" for v in quiet), f"silence was not read as silence: {sorted(set(quiet))}")
    opening = max(max(f.blendshapes.values()) for f in frames[vowel])
    _expect(opening > 0.1, f"the vowel did not open the mouth (largest blendshape weight {opening:.2f})")
    return f"{len(frames)} frames, vowel opens the mouth to {opening:.2f}"


def _check_lipsync_offline(ctx: _Context) -> str:
    from avatar_studio.lipsync.engine import LipSyncEngine

    signal, _ = _vowel_signal()
    frames = LipSyncEngine(mode="offline").analyze(signal, _RATE)  # OfflineUnavailable if the model is missing
    _expect(len(frames) == 120, f"expected 120 frames for 1.2 s, got {len(frames)}")
    return "pocketsphinx decoded the signal"


def _check_audio(ctx: _Context) -> str:
    from avatar_studio.lipsync.audio_input import load_sounddevice

    sd = load_sounddevice()  # AudioDeviceError naming libportaudio when the library is missing
    version = sd.get_portaudio_version()[1]
    return str(version)


def _check_s3_client(ctx: _Context) -> str:
    """The S3 storage's client: botocore reads its API model from data files (the bundle keeps S3's only)."""
    import boto3

    client = boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="selftest", aws_secret_access_key="selftest")  # nothing is sent
    url = client.generate_presigned_url("get_object", Params={"Bucket": "selftest", "Key": "a.glb"}, ExpiresIn=60)
    _expect("X-Amz-Signature=" in url or "Signature=" in url, f"the presigned URL is not signed: {url}")
    return "presigned a URL offline"


def _check_generate(ctx: _Context) -> str:
    from avatar_studio.avatar.gltf_reader import load_avatar
    from avatar_studio.providers.local.generator import generate_avatar
    from avatar_studio.resources import resource_path

    glb = generate_avatar(resource_path(SELFTEST_PHOTO).read_bytes(), subdivisions=0)
    avatar = load_avatar(glb)
    _expect("jawOpen" in avatar.morph_names, "the generated avatar has no jawOpen morph target")
    (ctx.data_dir / "selftest.glb").write_bytes(glb)
    return f"{len(glb):,} bytes, {avatar.vertex_count:,} vertices, {len(avatar.morph_names)} morph targets"


def _check_service(ctx: _Context) -> str:
    import httpx

    from avatar_studio.config import Settings
    from avatar_studio.service.runner import EmbeddedService

    settings = Settings.from_env({"AVATAR_STUDIO_DATA_DIR": str(ctx.data_dir / "service")})
    with EmbeddedService(settings, workers=1) as service:
        response = httpx.get(f"{service.base_url}/health", timeout=10)
        _expect(response.status_code == 200, f"GET /health answered {response.status_code}")
        body = response.json()
        _expect(body.get("database") == "ok", f"the database is not ok: {body}")
        _expect(body.get("version") == __version__, f"the service reports version {body.get('version')}")
    return f"{service.base_url} answered /health, stopped"


CHECKS: tuple[tuple[str, Callable[[_Context], str]], ...] = (
    ("resources", _check_resources),
    ("avatar", _check_avatar),
    ("morph-targets", _check_morphs),
    ("lipsync-live", _check_lipsync_live),
    ("lipsync-offline", _check_lipsync_offline),
    ("audio-library", _check_audio),
    ("s3-client", _check_s3_client),
    ("generate-local", _check_generate),
    ("service", _check_service),
)


def iter_checks(data_dir: Path) -> Iterator[CheckResult]:
    """Run every check in order, using ``data_dir`` for anything written; one failure does not stop the rest.

    A generator, so the caller can print each line as soon as its check ends (the whole run takes
    seconds, and a hang should show which check it is in).
    """
    ctx = _Context(data_dir)
    for name, check in CHECKS:
        start = time.perf_counter()
        try:
            detail = check(ctx)
        except Exception as exc:  # every failure is a result to report, not a crash
            reason = str(exc) if isinstance(exc, SelfTestFailure) else f"{type(exc).__name__}: {exc}"
            yield CheckResult(name, False, time.perf_counter() - start, reason)
        else:
            yield CheckResult(name, True, time.perf_counter() - start, detail)


def run_self_test(out: TextIO | None = None) -> int:
    """Run all checks in a temporary data folder, print one line per check to ``out`` (default: standard
    output, looked up at call time); 0 if all passed, else 1."""
    out = sys.stdout if out is None else out
    frozen = "bundle" if getattr(sys, "frozen", False) else "python"
    print(f"avatar-studio {__version__} self-test ({frozen}: {sys.executable})", file=out, flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="avatar-studio-selftest-") as tmp:
        # The service's keyring and caches resolve under these folders: keep them inside the temp dir too.
        saved = {key: os.environ.get(key) for key in ("XDG_CACHE_HOME", "XDG_DATA_HOME")}
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        os.environ["XDG_DATA_HOME"] = str(Path(tmp) / "data")
        try:
            results = []
            for result in iter_checks(Path(tmp)):
                results.append(result)
                if result.passed:
                    print(f"PASS {result.name} ({result.seconds:.2f} s): {result.reason}", file=out, flush=True)
                else:
                    print(f"FAIL {result.name}: {result.reason}", file=out, flush=True)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    failed = [r.name for r in results if not r.passed]
    total = time.perf_counter() - start
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed in {total:.1f} s"
    print(f"self-test: {summary}" + (f" (failed: {', '.join(failed)})" if failed else ""), file=out, flush=True)
    return 1 if failed else 0
