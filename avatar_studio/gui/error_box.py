"""The red box panels use to list why a file could not be used (Inspect's table, the mapping editor's file).

Why one helper: the two boxes must look the same, so a user learns one signal for "this file was
refused and nothing changed"; a shared constructor keeps their style from drifting apart.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel


def error_box(object_name: str) -> QLabel:
    """A hidden, selectable, word-wrapped rich-text label styled as an error box."""
    box = QLabel()
    box.setObjectName(object_name)
    box.setWordWrap(True)
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.setStyleSheet(
        f"QLabel#{object_name} {{ background: #4a2a2c; color: #f2d0cc; border: 1px solid #8a4b4b;"
        " border-radius: 4px; padding: 6px; }"
    )
    box.hide()
    return box
