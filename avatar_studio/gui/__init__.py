"""The desktop app: the only package allowed to import Qt, pyvistaqt or VTK's Qt glue.

Nothing heavy is imported here, so ``import avatar_studio.gui`` stays cheap; the 3D view module is
imported only when the first avatar is shown (see ``main_window``).
"""

from __future__ import annotations

from avatar_studio.gui.app import run_app

__all__ = ["run_app"]
