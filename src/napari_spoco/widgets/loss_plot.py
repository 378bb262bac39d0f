"""Live plot of the training loss: the total and every term, on a log scale."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

__all__ = ["LossPlot"]

_TERMS = (
    "total",
    "pull",
    "push",
    "instance",
    "unlabeled_push",
    "consistency",
    "foreground",
    "distance",
)


#: Seconds between redraws while training: a matplotlib draw holds the GIL for tens of
#: milliseconds, and twice a second cost the training thread a quarter of its speed.
REDRAW_INTERVAL = 2.0


class LossPlot(QWidget):
    """Loss curves drawn from the training history; redraws every few seconds at most."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.figure = Figure(figsize=(4, 2.4), tight_layout=True)
        self.figure.patch.set_facecolor("#262930")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.canvas.setFixedHeight(190)
        self.axes = self.figure.add_subplot()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.history: list[dict[str, Any]] = []
        self._drawn_at = 0.0
        self._style()

    def _style(self) -> None:
        axes = self.axes
        axes.set_facecolor("#262930")
        axes.tick_params(colors="#d0d0d0", labelsize=7)
        for spine in axes.spines.values():
            spine.set_color("#808080")
        axes.set_xlabel("step", color="#d0d0d0", fontsize=8)
        axes.set_ylabel("loss", color="#d0d0d0", fontsize=8)

    def set_history(self, history: list[dict[str, Any]]) -> None:
        """Show a whole history (e.g. of a loaded model)."""
        self.history = list(history)
        self.draw()

    def append(self, entry: dict[str, Any]) -> None:
        """Add one record (``TrainRecord.to_dict()``) and redraw if the last draw is old."""
        self.history.append(entry)
        if time.monotonic() - self._drawn_at > REDRAW_INTERVAL:
            self.draw()

    def draw(self) -> None:
        """Redraw every curve."""
        self._drawn_at = time.monotonic()
        self.axes.clear()
        self._style()
        steps = [entry["step"] for entry in self.history]
        for term in _TERMS:
            values = [entry.get(f"loss_{term}") for entry in self.history]
            if steps and all(v is not None for v in values) and any(values):
                width = 1.6 if term == "total" else 0.9
                self.axes.plot(steps, _smooth(values), label=term, linewidth=width)
        if self.axes.lines:
            self.axes.set_yscale("log")
            legend = self.axes.legend(fontsize=6, ncol=2, frameon=False, loc="upper right")
            for text in legend.get_texts():
                text.set_color("#d0d0d0")
        self.canvas.draw_idle()


def _smooth(values: list[float], window: int = 10) -> np.ndarray:
    """Average each value with the ``window - 1`` before it.

    Single steps are noisy (a patch with one object has no push term); the
    trend is what a user reads.
    """
    values = np.maximum(np.asarray(values, dtype=float), 1e-6)
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    ends = np.arange(1, len(values) + 1)
    return (cumulative[ends] - cumulative[ends - counts]) / counts
