"""Live plot of the training loss: the total and every term, on a log scale."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from ..core.config import ALL_LOSS_TERMS

__all__ = ["LossPlot"]

#: The total, then every term the core can report (terms that are off stay hidden).
_TERMS = ("total", *ALL_LOSS_TERMS)


#: Seconds between redraws while training: even an update-only matplotlib draw holds
#: the GIL for tens of milliseconds, time the training thread and the viewer wait.
REDRAW_INTERVAL = 2.0


class LossPlot(QWidget):
    """Loss curves drawn from the training history; redraw when :meth:`needs_redraw` says so.

    The axes and one line per term are built once and only their data change:
    clearing and re-laying out the figure took ~150 ms per draw, a visible
    freeze of the viewer; updating the lines takes ~20 ms.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.figure = Figure(figsize=(4, 2.4))
        self.figure.patch.set_facecolor("#262930")
        self.figure.subplots_adjust(left=0.14, right=0.98, top=0.96, bottom=0.2)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.canvas.setFixedHeight(190)
        self.axes = self.figure.add_subplot()
        self._style()
        self.lines = {
            term: self.axes.plot([], [], label=term, linewidth=1.6 if term == "total" else 0.9)[0]
            for term in _TERMS
        }
        # Before any step, an empty plot would show matplotlib's default axis (-0.04 to 0.04).
        self.placeholder = self.axes.text(
            0.5, 0.5, "The loss curves appear here while training.", color="#a0a0a0",
            fontsize=8, ha="center", va="center", transform=self.axes.transAxes,
        )  # fmt: skip
        # A Qt label, not a matplotlib legend: the legend alone cost ~20 ms per draw.
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setStyleSheet("font-size: 8pt;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        layout.addWidget(self.legend)
        self.history: list[dict[str, Any]] = []
        self._drawn_at = 0.0
        self.draw()

    def _style(self) -> None:
        axes = self.axes
        axes.set_facecolor("#262930")
        axes.set_yscale("log")
        # Plain numbers ("0.1"), not matplotlib's "10^-1": mathtext doubled a draw with new ticks.
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.minorticks_off()
        axes.tick_params(colors="#d0d0d0", labelsize=7)
        for spine in axes.spines.values():
            spine.set_color("#808080")
        axes.set_xlabel("step", color="#d0d0d0", fontsize=8, labelpad=1)
        axes.set_ylabel("loss", color="#d0d0d0", fontsize=8, labelpad=1)

    def set_history(self, history: list[dict[str, Any]]) -> None:
        """Show a whole history (e.g. of a loaded model)."""
        self.history = list(history)
        self.draw()

    def append(self, entry: dict[str, Any]) -> None:
        """Add one record (``TrainRecord.to_dict()``); :meth:`draw` shows it."""
        self.history.append(entry)

    def needs_redraw(self) -> bool:
        """Say whether the last draw is older than :data:`REDRAW_INTERVAL` seconds."""
        return time.monotonic() - self._drawn_at > REDRAW_INTERVAL

    def draw(self) -> None:
        """Update every curve and the axis limits."""
        self._drawn_at = time.monotonic()
        steps = [entry["step"] for entry in self.history]
        shown = []
        for term, line in self.lines.items():
            values = [entry.get(f"loss_{term}") for entry in self.history]
            visible = bool(steps) and all(v is not None for v in values) and any(values)
            line.set_data(*((steps, _smooth(values)) if visible else ([], [])))
            line.set_visible(visible)
            if visible:
                shown.append(term)
        self.legend.setText(
            "  ".join(
                f'<font color="{to_hex(self.lines[t].get_color())}">━</font> {t}' for t in shown
            )
        )
        self.placeholder.set_visible(not shown)
        self.axes.tick_params(labelbottom=bool(shown), labelleft=bool(shown))
        self.axes.relim(visible_only=True)
        self.axes.autoscale_view()
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
