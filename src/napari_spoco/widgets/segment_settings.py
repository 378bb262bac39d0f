"""The Segment section's clustering controls and the SegmentConfig they build."""

from __future__ import annotations

from psygnal import Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget

from ..core.clustering import METHODS
from ..core.config import FOREGROUND_SOURCES, SegmentConfig
from ._tooltips import TOOLTIPS

__all__ = ["SegmentSettings"]

#: Methods that re-cluster within a second on a typical image (re-run on every change).
FAST_METHODS = ("mutex_watershed",)


class SegmentSettings(QWidget):
    """Clustering method, foreground source, thresholds; emits ``changed`` on any edit."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        defaults = SegmentConfig()
        self.method = QComboBox()
        self.method.addItems(list(METHODS))
        self.foreground = QComboBox()
        self.foreground.addItems(list(FOREGROUND_SOURCES))
        self.foreground_threshold = _double(defaults.foreground_threshold, 0.01, 0.99, 0.05)
        self.merge_margin = _double(0.0, 0.0, 50.0, 0.5)
        self.merge_margin.setSpecialValueText("auto")
        self.seed_threshold = _double(defaults.seed_threshold or 0.0, 0.0, 0.99, 0.05)
        self.seed_threshold.setSpecialValueText("off")
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 10_000_000)
        self.min_size.setValue(defaults.min_size)
        self.strides = QSpinBox()
        self.strides.setRange(1, 16)
        self.strides.setValue(2)
        self.min_cluster_size = QSpinBox()
        self.min_cluster_size.setRange(2, 1_000_000)
        self.min_cluster_size.setValue(50)
        self.iou_threshold = _double(0.6, 0.0, 1.0, 0.05)
        self.raw_embeddings = QCheckBox("Add raw embedding channels (hidden layer)")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        rows = (
            ("Clustering", "method", self.method),
            ("Foreground", "foreground", self.foreground),
            ("Foreground threshold", "foreground_threshold", self.foreground_threshold),
            ("Merge margin", "merge_margin", self.merge_margin),
            ("Split at cores above", "seed_threshold", self.seed_threshold),
            ("Minimum size (px)", "min_size", self.min_size),
            ("Mutex strides", "method", self.strides),
            ("Min cluster size", "method", self.min_cluster_size),
            ("IoU threshold", "method", self.iou_threshold),
        )
        for label, key, widget in rows:
            form.addRow(label, widget)
            widget.setToolTip(TOOLTIPS[key])
        form.addRow(self.raw_embeddings)
        self.raw_embeddings.setToolTip(TOOLTIPS["raw_embeddings"])
        self._form = form
        for box in (self.method, self.foreground):
            box.currentTextChanged.connect(self._edited)
        for box in (
            self.foreground_threshold,
            self.merge_margin,
            self.seed_threshold,
            self.min_size,
            self.strides,
            self.min_cluster_size,
            self.iou_threshold,
        ):
            box.valueChanged.connect(self._edited)
        self._show_method_rows()

    def _edited(self, *_: object) -> None:
        self._show_method_rows()
        self.changed.emit()

    def _show_method_rows(self) -> None:
        method = self.method.currentText()
        visible = {
            self.strides: method == "mutex_watershed",
            self.min_cluster_size: method == "hdbscan",
            self.iou_threshold: method == "consistency",
            self.foreground_threshold: self.foreground.currentText() == "head",
        }
        for widget, show in visible.items():  # (QFormLayout.setRowVisible is Qt >= 6.4 only)
            widget.setVisible(show)
            self._form.labelForField(widget).setVisible(show)

    def is_fast(self) -> bool:
        """Whether re-clustering is quick enough to follow every edit."""
        return self.method.currentText() in FAST_METHODS

    def config(self) -> SegmentConfig:
        """Return the SegmentConfig these controls describe."""
        method = self.method.currentText()
        params: dict[str, object] = {}
        if method == "mutex_watershed":
            params["strides"] = self.strides.value()
        elif method == "hdbscan":
            params["min_cluster_size"] = self.min_cluster_size.value()
        elif method == "consistency":
            params["iou_threshold"] = self.iou_threshold.value()
        return SegmentConfig(
            method=method,
            foreground=self.foreground.currentText(),
            foreground_threshold=self.foreground_threshold.value(),
            delta_d=self.merge_margin.value() or None,
            seed_threshold=self.seed_threshold.value() or None,
            min_size=self.min_size.value(),
            params=params,
        )


def _double(value: float, low: float, high: float, step: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(2)
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box
