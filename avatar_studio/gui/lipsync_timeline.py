"""A scrolling pyqtgraph timeline of the 15 viseme weights, and the ring buffer that feeds it live.

Why pyqtgraph: 15 curves of 500 points redrawn 30 times a second is far beyond what QPainter-based
charts manage while the 3D view renders; pyqtgraph draws them in a few ms. Interaction is switched
off because the view scrolls by itself and a stray drag would freeze it on an old window.

Why a ring buffer of numpy arrays: the mic delivers 100 frames a second; appending to Python lists
and converting each redraw would cost more than the drawing. ``FrameRing.window`` returns views in
time order with at most one copy.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMenu, QVBoxLayout, QWidget

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.gui.viseme_bars import VISEME_COLORS

WINDOW_S: Final[float] = 5.0
"""How much history the timeline shows."""


class FrameRing:
    """The newest ``capacity`` (time, 15 weights) frames; older ones are overwritten."""

    def __init__(self, capacity: int = 600) -> None:
        self.capacity = capacity
        self._times = np.zeros(capacity)
        self._weights = np.zeros((capacity, len(OVR_VISEMES)))
        self._count = 0  # total frames ever appended

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    def clear(self) -> None:
        self._count = 0

    def append(self, t: float, weights: np.ndarray) -> None:
        i = self._count % self.capacity
        self._times[i] = t
        self._weights[i] = weights
        self._count += 1

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, weights) of everything kept, oldest first."""
        n = len(self)
        if self._count <= self.capacity:
            return self._times[:n], self._weights[:n]
        start = self._count % self.capacity
        order = np.r_[start : self.capacity, 0:start]
        return self._times[order], self._weights[order]


class LipSyncTimeline(QWidget):
    """The last ``WINDOW_S`` seconds of viseme weights, one coloured curve per viseme, plus a position marker."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        windows_before = set(QApplication.topLevelWidgets())
        self.plot = pg.PlotWidget(background=None)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        # pyqtgraph builds its "Plot Options" menu and that menu's control form as parentless windows;
        # with the menu off they are never shown, but parentless they would outlive the panel (and each
        # closed window would leak them). Parent them to the plot widget: Qt deletes children in order,
        # so they go after the plot's scene, whose items still reference them while they are destroyed.
        for window in set(QApplication.topLevelWidgets()) - windows_before - {self.plot}:
            if isinstance(window, QMenu):
                window.setParent(self.plot, window.windowFlags())  # stays a popup, now deleted with the plot
            elif window.parent() is None:
                window.setParent(self.plot)
                window.hide()
        self.plot.setYRange(0.0, 1.0, padding=0.02)
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.setMinimumHeight(110)
        self.plot.getPlotItem().getViewBox().enableAutoRange(enable=False)
        self.curves = [
            self.plot.plot(pen=pg.mkPen(VISEME_COLORS[i], width=1.5), name=name) for i, name in enumerate(OVR_VISEMES)
        ]
        self.marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#808080", style=Qt.PenStyle.DashLine))
        self.marker.setVisible(False)
        self.plot.addItem(self.marker)
        self.points_shown = 0
        """Frames in the current picture (tests and the status line use it)."""
        self.end_time = 0.0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self.show_window(np.zeros(0), np.zeros((0, len(OVR_VISEMES))), 0.0)

    def show_window(self, times: np.ndarray, weights: np.ndarray, end: float, marker: float | None = None) -> None:
        """Draw ``weights`` (n, 15) at ``times`` with the x axis covering ``[end − WINDOW_S, end]``."""
        for i, curve in enumerate(self.curves):
            curve.setData(times, weights[:, i], skipFiniteCheck=True)
        self.plot.setXRange(end - WINDOW_S, end, padding=0.0)
        self.marker.setVisible(marker is not None)
        if marker is not None:
            self.marker.setValue(marker)
        self.points_shown = len(times)
        self.end_time = end

    def clear(self) -> None:
        self.show_window(np.zeros(0), np.zeros((0, len(OVR_VISEMES))), WINDOW_S)
