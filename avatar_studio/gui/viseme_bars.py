"""Live bars for the 15 OVR viseme weights, the strongest one highlighted, and the shared viseme colours.

Why one painted widget instead of 15 ``QProgressBar``s: the bars change up to 60 times a second
while the 3D view renders; one ``update()`` and one ``paintEvent`` per display frame costs a fraction
of 15 styled widgets relaying out. The colours are shared with the timeline, so the bars double as
its legend (15 legend entries would hide the curves).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from avatar_studio.avatar.blendshapes import OVR_VISEMES

VISEME_COLORS: Final[tuple[str, ...]] = (
    "#9aa0a6", "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
    "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000",
)  # fmt: skip
"""One colour per OVR viseme (in OVR order), distinct enough to tell 15 curves apart."""

_CHANGE_EPS: Final[float] = 1e-3  # below this nothing visible changes, so no repaint is requested


class VisemeBars(QWidget):
    """Fifteen vertical bars (OVR order) with the viseme names under them; the top viseme is outlined."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._values = np.zeros(len(OVR_VISEMES))
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setAccessibleName("Viseme weights")
        self._update_tooltip()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        return QSize(360, 120)

    def values(self) -> np.ndarray:
        """A copy of the weights shown, in OVR order."""
        return self._values.copy()

    @property
    def top_viseme(self) -> str | None:
        """The highlighted viseme, or None when every weight is (near) zero."""
        i = int(np.argmax(self._values))
        return OVR_VISEMES[i] if self._values[i] > _CHANGE_EPS else None

    def set_values(self, weights: np.ndarray) -> None:
        """Show ``weights`` (15, OVR order, clipped to [0, 1]); repaints only when something visibly moved."""
        new = np.clip(np.asarray(weights, dtype=np.float64).reshape(-1), 0.0, 1.0)
        if np.max(np.abs(new - self._values)) < _CHANGE_EPS:
            return
        self._values = new
        self._update_tooltip()
        self.update()

    def clear(self) -> None:
        self.set_values(np.zeros(len(OVR_VISEMES)))

    def _update_tooltip(self) -> None:
        top = self.top_viseme
        self.setToolTip(f"Strongest viseme: {top} ({self._values.max():.2f})" if top else "No speech")

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt override)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        n = len(OVR_VISEMES)
        label_h = self.fontMetrics().height() + 2
        slot = self.width() / n
        bar_w = max(2.0, slot * 0.7)
        top_index = OVR_VISEMES.index(self.top_viseme) if self.top_viseme else -1
        plot_h = max(1.0, self.height() - label_h - 2)
        painter.fillRect(QRectF(0, 0, self.width(), plot_h), self.palette().base())
        bold = QFont(self.font())
        bold.setBold(True)
        for i, name in enumerate(OVR_VISEMES):
            x = i * slot + (slot - bar_w) / 2
            h = self._values[i] * plot_h
            color = QColor(VISEME_COLORS[i])
            if i != top_index:
                color.setAlpha(170)
            painter.fillRect(QRectF(x, plot_h - h, bar_w, h), color)
            if i == top_index:
                painter.setPen(QPen(self.palette().text().color(), 2))
                painter.drawRect(QRectF(x, plot_h - h, bar_w, h))
            painter.setFont(bold if i == top_index else self.font())
            painter.setPen(self.palette().text().color())
            painter.drawText(QRectF(i * slot, plot_h + 1, slot, label_h), Qt.AlignmentFlag.AlignCenter, name)
        painter.end()
