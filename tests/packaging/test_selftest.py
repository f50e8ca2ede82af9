"""``avatar-studio --self-test`` in-process (not frozen): the checks pass here and report failures honestly.

The frozen bundle runs the same code in tests/packaging/test_bundle.py; these run in seconds, so the
self-test's logic is covered even where the bundle test is deselected.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from avatar_studio import resources, selftest
from avatar_studio.cli import main

LINE = re.compile(r"^(PASS (?P<name>[\w-]+) \(\d+\.\d\d s\)|FAIL (?P<failed>[\w-]+): .+)")


@pytest.fixture(scope="module")
def report() -> tuple[int, str]:
    out = io.StringIO()
    code = selftest.run_self_test(out)
    return code, out.getvalue()


def test_every_check_passes_from_a_source_checkout(report: tuple[int, str]) -> None:
    code, text = report
    assert code == 0, text
    passed = [m["name"] for line in text.splitlines() if (m := LINE.match(line)) and m["name"]]
    assert passed == [name for name, _ in selftest.CHECKS], text
    assert text.splitlines()[-1].startswith(f"self-test: {len(selftest.CHECKS)} passed, 0 failed")


def test_a_failing_check_is_reported_and_the_rest_still_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_ctx: object) -> str:
        raise OSError("libportaudio.so.2: cannot open shared object file")

    def wrong(_ctx: object) -> str:
        selftest._expect(False, "expected 52 morph targets, found 0")
        return ""

    monkeypatch.setattr(selftest, "CHECKS", (("audio-library", broken), ("avatar", wrong),
                                             ("resources", selftest._check_resources)))
    out = io.StringIO()
    assert selftest.run_self_test(out) == 1
    lines = out.getvalue().splitlines()
    assert "FAIL audio-library: OSError: libportaudio.so.2: cannot open shared object file" in lines
    assert "FAIL avatar: expected 52 morph targets, found 0" in lines
    assert any(line.startswith("PASS resources (") for line in lines)
    assert lines[-1].startswith("self-test: 1 passed, 2 failed") and "audio-library, avatar" in lines[-1]


def test_it_leaves_the_environment_and_the_user_folders_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    seen: list[tuple[str | None, str | None, Path]] = []

    def spy(ctx: selftest._Context) -> str:
        seen.append((os.environ.get("XDG_CACHE_HOME"), os.environ.get("XDG_DATA_HOME"), ctx.data_dir))
        return "ok"

    monkeypatch.setattr(selftest, "CHECKS", (("spy", spy),))
    assert selftest.run_self_test(io.StringIO()) == 0
    cache, data, data_dir = seen[0]
    assert cache is not None and data is not None
    assert Path(cache).parent == data_dir and Path(data).parent == data_dir  # all inside the temporary folder
    assert not data_dir.exists()  # removed afterwards
    assert os.environ["XDG_CACHE_HOME"] == str(tmp_path / "user-cache") and "XDG_DATA_HOME" not in os.environ
    assert not (tmp_path / "user-cache").exists()


def test_the_command_runs_it_headless_without_qt(tmp_path: Path) -> None:
    """``avatar-studio --self-test`` as a user runs it, with no display; Qt and the GUI are never imported."""
    script = (
        "import sys\n"
        "from avatar_studio.cli import main\n"
        "code = main(['--self-test'])\n"
        "qt = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'pyvistaqt')"
        " or m.startswith('avatar_studio.gui'))\n"
        "print('QT-MODULES', qt)\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "QT-MODULES []" in result.stdout
    assert f"{len(selftest.CHECKS)} passed, 0 failed" in result.stdout


def test_the_cli_option_runs_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(selftest, "CHECKS", (("resources", selftest._check_resources),))
    assert main(["--self-test"]) == 0
    assert "PASS resources" in capsys.readouterr().out


def test_a_frozen_bundle_reads_only_its_own_resources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A checkout's or a wheel's resources/ must not hide a file the bundle forgot to collect."""
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "viseme_table.json").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resources.resource_dirs() == (tmp_path / "resources",)
    assert resources.resource_path("viseme_table.json") == tmp_path / "resources" / "viseme_table.json"
    with pytest.raises(FileNotFoundError, match=r"face_models/face_landmark\.tflite"):
        resources.resource_path("face_models/face_landmark.tflite")


def test_the_selftest_photo_and_its_provenance_are_shipped() -> None:
    photo = resources.resource_path(selftest.SELFTEST_PHOTO)
    readme = photo.with_name("README.md").read_text(encoding="utf-8")
    assert "public domain" in readme and "astronaut" in readme
