"""Where the project's data files (``resources/``) live, in a checkout and in an installed wheel.

Why not ``importlib.resources``: the files sit in the top-level ``resources/`` folder, not inside the
package, so QA can edit the default viseme table without touching code. A source checkout or an
editable install finds them next to the package; a wheel installs them as data files under
``<prefix>/share/avatar-studio/resources`` (see ``[tool.setuptools.data-files]`` in pyproject.toml).
A PyInstaller bundle (packaging/avatar-studio.spec) carries them in its own folder, ``sys._MEIPASS``.
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePath

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dirs() -> tuple[Path, ...]:
    """The folders searched, in order: the checkout's ``resources/`` first, so local edits win.

    A frozen bundle searches only its own copy: files from a checkout or an installed wheel elsewhere
    on the machine must not mask a file the bundle forgot (the self-test would then pass wrongly).
    """
    bundle = getattr(sys, "_MEIPASS", None) if getattr(sys, "frozen", False) else None
    if bundle:
        return (Path(bundle) / "resources",)
    return (
        _PACKAGE_DIR.parent / "resources",
        Path(sys.prefix) / "share" / "avatar-studio" / "resources",
    )


def resource_path(name: str) -> Path:
    """Path of the resource file ``name`` (e.g. ``"viseme_table.json"``); FileNotFoundError if absent.

    ``name`` must be a plain relative path: an absolute path or ``..`` would silently escape the
    resource folders and hide a packaging mistake.
    """
    parts = PurePath(name).parts
    if not name or PurePath(name).is_absolute() or ".." in parts:
        raise ValueError(f"resource name must be a relative path inside resources/, not {name!r}")
    searched = resource_dirs()
    for folder in searched:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    places = ", ".join(str(folder) for folder in searched)
    raise FileNotFoundError(
        f"resource {name!r} not found (looked in {places}); the installation is incomplete: "
        f"reinstall avatar-studio or run from a source checkout"
    )
