"""The Segment section's clustering controls and the SegmentConfig they build."""

from __future__ import annotations

from psygnal import Signal
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QWidget

from ..core.clustering_methods import CLUSTERING_METHODS
from ..core.config import FOREGROUND_SOURCES, SegmentConfig
from ..core.settings import SEGMENT_SETTINGS
from ._forms import setting_box, values_of
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
        #: A box per SegmentConfig setting, and per setting of each clustering method (shown
        #: while that method is chosen), from the core's lists.
        self.boxes = {
            name: setting_box(setting, getattr(defaults, name))
            for name, setting in SEGMENT_SETTINGS.items()
        }
        self.method_settings = {
            name: {
                setting.name: setting_box(setting, setting.default) for setting in method.settings
            }
            for name, method in CLUSTERING_METHODS.items()
        }
        self.raw_embeddings = QCheckBox("Add raw embedding channels (hidden layer)")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        for label, key, widget in (
            ("Clustering", "method", self.method),
            ("Foreground", "foreground", self.foreground),
        ):
            form.addRow(label, widget)
            widget.setToolTip(TOOLTIPS[key])
        for box in self.boxes.values():
            form.addRow(box.label, box.native)
        for method_boxes in self.method_settings.values():
            for box in method_boxes.values():
                form.addRow(box.label, box.native)
        form.addRow(self.raw_embeddings)
        self.raw_embeddings.setToolTip(TOOLTIPS["raw_embeddings"])
        self._form = form
        for combo in (self.method, self.foreground):
            combo.currentTextChanged.connect(self._edited)
        boxes = list(self.boxes.values())
        boxes += [box for settings in self.method_settings.values() for box in settings.values()]
        for box in boxes:
            box.changed.connect(self._edited)
        self._show_method_rows()

    def _edited(self, *_: object) -> None:
        self._show_method_rows()
        self.changed.emit()

    def _show_method_rows(self) -> None:
        method = self.method.currentText()
        visible = {
            box.native: name == method
            for name, settings in self.method_settings.items()
            for box in settings.values()
        }
        threshold = self.boxes["foreground_threshold"].native
        visible[threshold] = self.foreground.currentText() == "head"
        for widget, show in visible.items():  # (QFormLayout.setRowVisible is Qt >= 6.4 only)
            widget.setVisible(show)
            self._form.labelForField(widget).setVisible(show)

    def is_fast(self) -> bool:
        """Whether re-clustering is quick enough to follow every edit."""
        return CLUSTERING_METHODS[self.method.currentText()].fast

    def config(self) -> SegmentConfig:
        """Return the SegmentConfig these controls describe."""
        method = self.method.currentText()
        method_settings = {s.name: s for s in CLUSTERING_METHODS[method].settings}
        params = values_of(self.method_settings[method], method_settings)
        chosen = values_of(self.boxes, SEGMENT_SETTINGS)
        return SegmentConfig(
            method=method, foreground=self.foreground.currentText(), params=params, **chosen
        )
