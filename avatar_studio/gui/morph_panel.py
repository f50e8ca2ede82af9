"""Sliders for every morph target, grouped by face region, bound to an ``AvatarScene``.

Why the binding goes one way round (anchors-code habit 3): a slider or spin box only ever writes
the scene; the scene's event then updates *both* controls of that row with their signals blocked.
So the two controls cannot disagree, a change made elsewhere (Reset all, lip-sync later) shows up
here for free, and no update loops back into the scene.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

import numpy as np
from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from avatar_studio.avatar.blendshapes import REGIONS, region_of
from avatar_studio.avatar.scene import AvatarScene

SLIDER_STEPS: Final[int] = 1000
"""Slider resolution; the spin box shows three decimals, so every slider step is one visible value."""

REGION_TITLES: Final[dict[str, str]] = {region: region.capitalize() for region in REGIONS}


@contextmanager
def signals_blocked(*objects: QObject) -> Iterator[None]:
    """Block Qt signals of ``objects`` for the duration, restoring each one's previous state."""
    previous = [obj.blockSignals(True) for obj in objects]
    try:
        yield
    finally:
        for obj, was_blocked in zip(objects, previous, strict=True):
            obj.blockSignals(was_blocked)


class _FocusWheelSlider(QSlider):
    """A slider that ignores the mouse wheel unless focused, so scrolling the list never moves a face."""

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt override)
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class _FocusWheelSpinBox(QDoubleSpinBox):
    """Same reason as ``_FocusWheelSlider``: the wheel belongs to the scroll area until clicked."""

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt override)
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class MorphRow(QWidget):
    """One morph target: its name (and the file's own spelling), a slider and a spin box."""

    def __init__(self, index: int, name: str, raw_names: list[str], on_edit: Callable[[int, float], None]):
        super().__init__()
        self.index = index
        self.name = name
        self.raw_names = [raw for raw in raw_names if raw != name]
        self._search_text = " ".join([name, *self.raw_names]).casefold()
        self._on_edit = on_edit

        self.label = QLabel(name)
        self.label.setToolTip(self._tooltip())
        self.raw_label = QLabel(", ".join(self.raw_names))
        self.raw_label.setObjectName("rawNames")
        self.raw_label.setToolTip("The name(s) used in the file")
        self.raw_label.setStyleSheet("color: #80868f; font-size: 9pt;")
        self.raw_label.setVisible(bool(self.raw_names))

        self.slider = _FocusWheelSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.slider.setAccessibleName(name)
        self.slider.setMinimumWidth(80)
        self.spin = _FocusWheelSpinBox()
        self.spin.setRange(0.0, 1.0)
        self.spin.setDecimals(3)
        self.spin.setSingleStep(0.01)
        self.spin.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.spin.setAccessibleName(f"{name} value")
        self.spin.setKeyboardTracking(False)

        names = QVBoxLayout()
        names.setSpacing(0)
        names.addWidget(self.label)
        names.addWidget(self.raw_label)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 1, 4, 1)
        layout.addLayout(names, 3)
        layout.addWidget(self.slider, 4)
        layout.addWidget(self.spin, 0)

        self.slider.valueChanged.connect(lambda step: self._on_edit(self.index, step / SLIDER_STEPS))
        self.spin.valueChanged.connect(lambda value: self._on_edit(self.index, value))

    def _tooltip(self) -> str:
        if not self.raw_names:
            return self.name
        return f"{self.name}\nIn the file: {', '.join(self.raw_names)}"

    def show_value(self, value: float) -> None:
        """Reflect the scene's value in both controls without echoing it back to the scene."""
        with signals_blocked(self.slider, self.spin):
            self.slider.setValue(round(value * SLIDER_STEPS))
            self.spin.setValue(value)

    def matches(self, needle: str) -> bool:
        return needle in self._search_text


class RegionSection(QWidget):
    """A collapsible group of rows for one face region (brows, eyes, …)."""

    def __init__(self, region: str, rows: list[MorphRow]) -> None:
        super().__init__()
        self.region = region
        self.rows = rows
        self.header = QToolButton()
        self.header.setObjectName("regionHeader")
        self.header.setCheckable(True)
        self.header.setChecked(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.header.setStyleSheet("QToolButton { border: none; font-weight: bold; text-align: left; }")
        self.body = QWidget()
        body_layout = QVBoxLayout(self.body)
        body_layout.setContentsMargins(10, 0, 0, 4)
        body_layout.setSpacing(0)
        for row in rows:
            body_layout.addWidget(row)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.header)
        layout.addWidget(self.body)
        self.header.toggled.connect(self.set_expanded)
        self._update_header(len(rows))

    @property
    def expanded(self) -> bool:
        return self.header.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        with signals_blocked(self.header):
            self.header.setChecked(expanded)
        self.header.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.body.setVisible(expanded)

    def apply_filter(self, needle: str) -> int:
        """Show only rows matching ``needle``; returns how many match so the panel can hide empty groups."""
        shown = 0
        for row in self.rows:
            match = not needle or row.matches(needle)
            row.setVisible(match)
            shown += match
        self._update_header(shown)
        return shown

    def _update_header(self, shown: int) -> None:
        total = len(self.rows)
        count = f"{shown}" if shown == total else f"{shown} of {total}"
        self.header.setText(f"{REGION_TITLES.get(self.region, self.region.capitalize())}  ({count})")
        self.header.setArrowType(Qt.ArrowType.DownArrow if self.expanded else Qt.ArrowType.RightArrow)


class MorphPanel(QWidget):
    """The right-hand panel of the review window: find a morph target and dial it in."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._scene: AvatarScene | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.rows: list[MorphRow] = []
        self.sections: list[RegionSection] = []

        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter morph targets…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._apply_filter)
        self.reset_button = QPushButton("Reset all")
        self.reset_button.setToolTip("Set every morph target back to the file's default weight")
        self.reset_button.clicked.connect(self.reset_all)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.reset_button)

        self.message = QLabel()
        self.message.setObjectName("panelMessage")
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #80868f; padding: 16px;")

        self._list = QWidget()
        self._list_layout = QVBoxLayout(self._list)
        self._list_layout.setContentsMargins(0, 0, 0, 0)
        self._list_layout.setSpacing(2)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self._list)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.message)
        layout.addWidget(self.scroll, 1)
        self.set_scene(None)

    @property
    def scene(self) -> AvatarScene | None:
        return self._scene

    def set_scene(self, scene: AvatarScene | None) -> None:
        """Rebuild the rows for a new avatar; the old scene is unsubscribed first."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._scene = scene
        self._clear_rows()
        names = scene.avatar.morph_names if scene else []
        if scene is not None and names:
            self._build_rows(scene)
            self._unsubscribe = scene.on_weights_changed(self._on_weights_changed)
        has_rows = bool(self.rows)
        self.search.setEnabled(has_rows)
        self.reset_button.setEnabled(has_rows)
        self._apply_filter(self.search.text())
        if scene is None:
            self._show_message("Open an avatar to see its morph targets.")
        elif not names:
            self._show_message("This avatar has no morph targets.")

    def detach(self) -> None:
        """Stop listening to the scene, e.g. when the window closes before the scene is collected."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def row(self, name: str) -> MorphRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no slider for morph target {name!r}")

    def section(self, region: str) -> RegionSection:
        for section in self.sections:
            if section.region == region:
                return section
        raise KeyError(f"no group for region {region!r}")

    def reset_all(self) -> None:
        if self._scene is not None:
            self._scene.reset()

    # --- building --------------------------------------------------------------------------------

    def _build_rows(self, scene: AvatarScene) -> None:
        avatar = scene.avatar
        by_region: dict[str, list[MorphRow]] = {region: [] for region in REGIONS}
        for index, name in enumerate(avatar.morph_names):
            row = MorphRow(index, name, avatar.raw_names.get(name, []), self._on_edit)
            row.show_value(float(scene.weights[index]))
            self.rows.append(row)
            region = region_of(name)
            by_region.setdefault(region, []).append(row)
        for region, rows in by_region.items():
            if rows:
                section = RegionSection(region, rows)
                self.sections.append(section)
                self._list_layout.addWidget(section)
        self._list_layout.addStretch(1)

    def _clear_rows(self) -> None:
        while self._list_layout.count():
            item = self._list_layout.takeAt(0)
            widget = item.widget()
            if widget is not None:
                widget.setParent(None)
                widget.deleteLater()
        self.rows = []
        self.sections = []

    # --- binding ---------------------------------------------------------------------------------

    def _on_edit(self, index: int, value: float) -> None:
        if self._scene is not None:
            self._scene.set_weight(index, value)
            # A clamped or unchanged value emits no event; still snap the controls to the truth.
            self.rows[index].show_value(self._scene.weight(index))

    def _on_weights_changed(self, indices: np.ndarray) -> None:
        if self._scene is None:
            return
        weights = self._scene.weights
        for index in indices:
            self.rows[int(index)].show_value(float(weights[int(index)]))

    # --- filtering -------------------------------------------------------------------------------

    def _apply_filter(self, text: str) -> None:
        needle = text.strip().casefold()
        shown_total = 0
        for section in self.sections:
            shown = section.apply_filter(needle)
            section.setVisible(shown > 0)
            if needle and shown:
                section.set_expanded(True)
            shown_total += shown
        if self.rows and shown_total == 0:
            self._show_message(f"No morph target matches “{text.strip()}”.")
        elif self.rows:
            self.message.hide()
            self.scroll.show()

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.show()
        self.scroll.setVisible(bool(self.rows))
