"""Start-up of the desktop bundle against the ``pip install`` (venv) start-up, and the bundle's size.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m benchmarks.bench_bundle dist/avatar-studio-0.1.0

(the folder ``packaging/build.sh`` unpacks to, or any unpacked tarball). Not part of ``benchmarks/run``:
it needs a built bundle, which takes minutes to make.

Three times per launcher, median of ``--runs`` cold starts each, in a throw-away HOME and data folder:
``--version`` (process start to exit: the interpreter and the bootloader, no Qt); "interactive": to the
moment the shown window's event loop is idle (``AVATAR_STUDIO_READY_FILE``, which the app writes with
``time.monotonic()``, a system-wide clock on Linux); "avatar rendered": ``--screenshot`` with a
generated head, to the process' exit (window, 3D view, the file loaded and drawn once, the PNG written).
Why cold starts both ways: the bundle's first start pays for reading ~500 MB of files from disk, the
venv's for the same libraries; the page cache is warm for both after the first run, as on a user's
second start, and the medians compare those.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table

ROOT = Path(__file__).resolve().parents[1]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QT_QPA_PLATFORM")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"),
               XDG_DATA_HOME=str(home / "data"), AVATAR_STUDIO_DATA_DIR=str(home / "service"),
               PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    return env


def _version(exe: list[str], home: Path) -> float:
    start = time.monotonic()
    subprocess.run([*exe, "--version"], env=_env(home), capture_output=True, check=True, timeout=60)
    return time.monotonic() - start


def _interactive(exe: list[str], home: Path) -> float:
    ready = home / f"ready-{time.monotonic_ns()}"
    env = _env(home)
    env["AVATAR_STUDIO_READY_FILE"] = str(ready)
    start = time.monotonic()
    proc = subprocess.Popen(exe, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = start + 120
        while not ready.exists() or not ready.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{exe[0]} did not become interactive")
            time.sleep(0.01)
        return float(ready.read_text()) - start
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rendered(exe: list[str], home: Path, glb: Path) -> float:
    start = time.monotonic()
    subprocess.run([*exe, "--screenshot", str(home / "shot.png"), str(glb)], env=_env(home), capture_output=True,
                   check=True, timeout=180)
    return time.monotonic() - start


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the unpacked bundle folder (holds the avatar-studio executable)")
    parser.add_argument("--venv-exe", type=Path, default=Path(sys.prefix) / "bin" / "avatar-studio")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-venv", action="store_true", help="time the bundle only (e.g. an untrimmed build)")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY"):
        parser.error("needs a display: run it under xvfb-run (see the module docstring)")

    from avatar_studio.avatar.synthetic import make_arkit_head_glb

    launchers = {"bundle": [str(args.bundle / "avatar-studio")]}
    if not args.no_venv:
        launchers["pip install (venv)"] = [str(args.venv_exe)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        glb = Path(tmp) / "head.glb"
        glb.write_bytes(make_arkit_head_glb(30_000))
        for name, exe in launchers.items():
            figures = []
            for measure in (_version, _interactive, lambda e, h: _rendered(e, h, glb)):
                times = []
                for run in range(args.runs + 1):  # run 0 warms the page cache and is dropped
                    home = Path(tmp) / f"{name[:6]}-{run}-{time.monotonic_ns()}"
                    home.mkdir()
                    t = measure(exe, home)
                    if run:
                        times.append(t)
                figures.append(f"{statistics.median(times):.2f} s")
            rows.append([name, *figures])
    print_table(
        f"Start-up, median of {args.runs} (after one warm-up run)",
        ["launcher", "--version", "interactive window", "avatar rendered (--screenshot)"],
        rows,
        [f"bundle: {_size(args.bundle) / 1e6:,.0f} MB unpacked ({args.bundle})"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
