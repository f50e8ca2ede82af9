"""The Linux desktop bundle, tested the way a user gets it: built, unpacked elsewhere, run from there.

Why a real build: a bundle breaks in ways no import test sees (a data file or a native library not
collected, a module imported by name). The build takes a few minutes on 2 cores, once per session.
Set ``AVATAR_STUDIO_BUNDLE_TARBALL`` to a tarball from ``packaging/build.sh`` to test that one instead
(e.g. a CI artifact); set ``AVATAR_STUDIO_BUNDLE_WORK`` to keep PyInstaller's cache between runs.

The bundle runs with a clean environment (no PYTHONPATH, no venv on PATH, a temporary HOME and data
folder) from a folder outside the checkout, so nothing can be borrowed from the source tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from avatar_studio import __version__
from avatar_studio.selftest import CHECKS, SELFTEST_PHOTO

pytestmark = pytest.mark.bundle

ROOT = Path(__file__).resolve().parents[2]
TARBALL = f"avatar-studio-{__version__}-linux-x86_64.tar.gz"
BUILD_TIMEOUT_S = 1800
# Files the trimming leaves out (packaging/avatar-studio.spec, build.sh); finding one means the trimming broke.
# (Qt Quick/QML stay: the FFmpeg multimedia plugin links them.)
TRIMMED = re.compile(
    r"libQt6(WebEngineCore|DataVisualization|3DCore|Charts|Pdf|VirtualKeyboard)|libqpdf|libqeglfs|libqvnc"
    r"|vtk(IOExodus|IOIOSS|RenderingMatplotlib|FiltersParallelDIY2|RenderingVR)|botocore/data/ec2/"
    r"|pocketsphinx/model/en-us/en-us\.lm\.bin"
)


@dataclass(frozen=True)
class Bundle:
    folder: Path  # the unpacked avatar-studio-<version>/
    tarball: Path
    home: Path  # HOME, XDG folders and the service data of the bundle's runs

    @property
    def exe(self) -> Path:
        return self.folder / "avatar-studio"

    def env(self) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "DISPLAY", "XAUTHORITY")
        env = {k: v for k, v in os.environ.items() if k in keep}
        venv_bin = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin")
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin)
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / "config"),
            XDG_CACHE_HOME=str(self.home / "cache"),
            XDG_DATA_HOME=str(self.home / "data"),
            AVATAR_STUDIO_DATA_DIR=str(self.home / "service-data"),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        )
        return env

    def run(self, *args: str, timeout: float = 300, xvfb: bool = False) -> subprocess.CompletedProcess[str]:
        command = [str(self.exe), *args]
        if xvfb:
            command = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *command]
        return subprocess.run(command, env=self.env(), cwd=self.home, capture_output=True, text=True,
                              timeout=timeout, check=False)


def _build(dist: Path) -> Path:
    work = Path(os.environ.get("AVATAR_STUDIO_BUNDLE_WORK") or dist / "work")
    result = subprocess.run([str(ROOT / "packaging" / "build.sh"), "--dist", str(dist), "--work", str(work)],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    assert result.returncode == 0, f"build.sh failed:\n{result.stderr[-6000:]}"
    tarball = Path(result.stdout.strip().splitlines()[-1])
    assert tarball.name == TARBALL and tarball.is_file()
    return tarball


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    given = os.environ.get("AVATAR_STUDIO_BUNDLE_TARBALL")
    tarball = Path(given) if given else _build(tmp_path_factory.mktemp("dist"))
    unpacked = tmp_path_factory.mktemp("installed")
    with tarfile.open(tarball) as archive:
        if hasattr(tarfile, "tar_filter"):  # Python ≥ 3.11.4; Debian 12's 3.11.2 predates extraction filters
            archive.extractall(unpacked, filter="tar")
        else:
            archive.extractall(unpacked)  # our own tarball, just built: nothing untrusted in it
    folder = unpacked / f"avatar-studio-{__version__}"
    assert folder.is_dir(), f"the tarball must unpack into avatar-studio-{__version__}/: {os.listdir(unpacked)}"
    home = tmp_path_factory.mktemp("home")
    yield Bundle(folder, tarball, home)
    if not given:
        shutil.rmtree(tarball.parent, ignore_errors=True)  # ~1 GB: do not keep it in pytest's tmp


def test_version(bundle: Bundle) -> None:
    result = bundle.run("--version", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"avatar-studio {__version__}"


def test_self_test_passes_in_the_bundle(bundle: Bundle) -> None:
    result = bundle.run("--self-test")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"avatar-studio {__version__} self-test (bundle: ")
    assert [line.split()[1] for line in lines if line.startswith("PASS ")] == [name for name, _ in CHECKS]
    assert re.match(rf"self-test: {len(CHECKS)} passed, 0 failed", lines[-1])


def test_main_window_renders_a_generated_avatar(bundle: Bundle) -> None:
    """The bundle's own ``generate`` makes an avatar from the bundled photo; the window must render it."""
    glb = bundle.home / "astronaut.glb"
    photo = bundle.folder / "_internal" / "resources" / SELFTEST_PHOTO
    generated = bundle.run("generate", str(photo), "-o", str(glb))
    assert generated.returncode == 0, generated.stderr
    png = bundle.home / "window.png"
    shot = bundle.run("--screenshot", str(png), str(glb), xvfb=True)
    assert shot.returncode == 0, shot.stderr
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width >= 800 and image.height >= 500
        rgb = image.convert("RGB")
        colours = len(rgb.getcolors(maxcolors=1 << 20) or ())
        # A blank or black window has a handful of colours; widgets, text and a shaded, textured head have thousands.
        assert colours > 2000, f"the screenshot looks empty ({colours} colours)"
        # The middle of the window is the 3D view: with the shaded, textured head it has thousands of colours
        # (~10,000 measured); the same area without an avatar, only the view's background and some text (~200).
        w, h = rgb.size
        centre = rgb.crop((w * 2 // 5, h * 2 // 5, w * 3 // 5, h * 3 // 5))
        assert len(centre.getcolors(maxcolors=1 << 20) or ()) > 1000, "no avatar in the middle of the window"


def test_trimmed_modules_are_left_out(bundle: Bundle) -> None:
    internal = bundle.folder / "_internal"
    paths = [p.relative_to(internal).as_posix() for p in internal.rglob("*") if p.is_file()]
    found = sorted(p for p in paths if TRIMMED.search(p))
    assert not found, f"the bundle carries files the spec excludes: {found}"
    for needed in ("libQt6Widgets.so", "libvtkRenderingOpenGL2", "botocore/data/s3/", "cmudict-en-us.dict"):
        assert any(needed in p for p in paths), needed


def test_desktop_integration_files(bundle: Bundle) -> None:
    app_id = "io.github.avatar_studio.AvatarStudio"
    desktop = bundle.folder / f"{app_id}.desktop"
    metainfo = bundle.folder / f"{app_id}.metainfo.xml"
    for name in ("avatar-studio.svg", "avatar-studio.png", "install.sh"):
        assert (bundle.folder / name).is_file(), name
    assert f'release version="{__version__}"' in metainfo.read_text(encoding="utf-8")
    checked = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = subprocess.run(["appstreamcli", "validate", "--no-net", str(metainfo)], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_install_script_registers_the_app(bundle: Bundle) -> None:
    env = bundle.env()
    result = subprocess.run([str(bundle.folder / "install.sh")], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    entry = Path(env["XDG_DATA_HOME"]) / "applications" / "io.github.avatar_studio.AvatarStudio.desktop"
    assert f'Exec="{bundle.exe}" %f' in entry.read_text(encoding="utf-8")
    link = bundle.home / ".local" / "bin" / "avatar-studio"
    assert link.resolve() == bundle.exe.resolve()
    removed = subprocess.run([str(bundle.folder / "install.sh"), "--remove"], env=env, capture_output=True,
                             text=True, check=False)
    assert removed.returncode == 0 and not entry.exists() and not link.exists()
