"""The Segment section's clustering controls and the SegmentConfig they build."""

from __future__ import annotations

from psygnal import Signal
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QSpinBox,
    QWidget,
)

from ..core.clustering_methods import CLUSTERING_METHODS, MethodSetting
from ..core.config import FOREGROUND_SOURCES, SegmentConfig
from ._tooltips import TOOLTIPS

__all__ = ["SegmentSettings"]


class SegmentSettings(QWidget):
    """Clustering method, foreground source, thresholds; emits ``changed`` on any edit."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        defaults = SegmentConfig()
        self.method = QComboBox()
        for index, method in enumerate(CLUSTERING_METHODS.values()):
            self.method.addItem(method.name)
            self.method.setItemData(index, method.tooltip, Qt.ItemDataRole.ToolTipRole)
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
        #: A box per setting of each clustering method, shown while that method is chosen.
        self.method_settings = {
            name: {setting.name: _setting_box(setting) for setting in method.settings}
            for name, method in CLUSTERING_METHODS.items()
        }
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
        )
        for label, key, widget in rows:
            form.addRow(label, widget)
            widget.setToolTip(TOOLTIPS[key])
        for name, method in CLUSTERING_METHODS.items():
            for setting in method.settings:
                form.addRow(setting.label, self.method_settings[name][setting.name])
        form.addRow(self.raw_embeddings)
        self.raw_embeddings.setToolTip(TOOLTIPS["raw_embeddings"])
        self._form = form
        for box in (self.method, self.foreground):
            box.currentTextChanged.connect(self._edited)
        boxes = [self.foreground_threshold, self.merge_margin, self.seed_threshold, self.min_size]
        boxes += [box for settings in self.method_settings.values() for box in settings.values()]
        for box in boxes:
            box.valueChanged.connect(self._edited)
        self._show_method_rows()

    def _edited(self, *_: object) -> None:
        self._show_method_rows()
        self.changed.emit()

    def _show_method_rows(self) -> None:
        method = self.method.currentText()
        visible = {
            box: name == method
            for name, settings in self.method_settings.items()
            for box in settings.values()
        }
        visible[self.foreground_threshold] = self.foreground.currentText() == "head"
        for widget, show in visible.items():  # (QFormLayout.setRowVisible is Qt >= 6.4 only)
            widget.setVisible(show)
            self._form.labelForField(widget).setVisible(show)

    def is_fast(self) -> bool:
        """Whether re-clustering is quick enough to follow every edit."""
        return CLUSTERING_METHODS[self.method.currentText()].fast

    def config(self) -> SegmentConfig:
        """Return the SegmentConfig these controls describe."""
        method = self.method.currentText()
        params = {name: box.value() for name, box in self.method_settings[method].items()}
        return SegmentConfig(
            method=method,
            foreground=self.foreground.currentText(),
            foreground_threshold=self.foreground_threshold.value(),
            delta_d=self.merge_margin.value() or None,
            seed_threshold=self.seed_threshold.value() or None,
            min_size=self.min_size.value(),
            params=params,
        )


def _setting_box(setting: MethodSetting) -> QAbstractSpinBox:
    """Make a spin box with the setting's range, step, default and tooltip."""
    if isinstance(setting.default, int):
        box = QSpinBox()
        box.setRange(int(setting.low), int(setting.high))
        box.setSingleStep(int(setting.step))
        box.setValue(setting.default)
    else:
        box = _double(setting.default, setting.low, setting.high, setting.step)
    box.setToolTip(setting.tooltip)
    return box


def _double(value: float, low: float, high: float, step: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(2)
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box
