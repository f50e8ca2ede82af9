"""The layering rule, checked at run time as well as by import-linter's static contracts.

Importing every module outside ``avatar_studio.gui`` in a fresh interpreter must not load Qt,
pyvistaqt, VTK's Qt glue or our GUI: the service, the CLI and the tests of the core run on
machines without a display, and a stray import would make them pay Qt's start-up or crash.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import importlib, json, pkgutil, sys
import avatar_studio
names = []
def walk(path, prefix):  # pkgutil.walk_packages would import avatar_studio.gui itself to descend
    for m in pkgutil.iter_modules(path, prefix):
        if m.name.startswith("avatar_studio.gui") or m.name == "avatar_studio.__main__":
            continue
        names.append(m.name)
        module = importlib.import_module(m.name)
        if m.ispkg:
            walk(module.__path__, m.name + ".")
walk(avatar_studio.__path__, "avatar_studio.")
bad = sorted(m for m in sys.modules if m.split(".")[0] in {"PySide6", "shiboken6", "pyvistaqt", "qtpy"}
             or m.startswith(("vtkmodules.qt", "avatar_studio.gui")))
print(json.dumps({"imported": names, "forbidden": bad}))
"""


def test_no_module_outside_gui_loads_qt_or_the_gui() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(result.stdout)
    assert "avatar_studio.avatar.gltf_reader" in report["imported"]
    assert "avatar_studio.cli" in report["imported"]
    assert report["forbidden"] == []


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
