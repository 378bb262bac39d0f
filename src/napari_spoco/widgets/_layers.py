"""Layer helpers for the widgets: pick layers by type, find and update result layers.

The panel's result layers (instances, foreground, previews...) carry their
image and role in their metadata, so the panel finds them even after a user
renames them; a new one is named "<image> <role>".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import QComboBox, QWidget

if TYPE_CHECKING:
    import napari

__all__ = ["RESULT_KEY", "LayerComboBox", "result_layer", "show_layer", "show_result"]

#: Metadata key of a result layer: ``{"image": image layer name, "role": role}``.
RESULT_KEY = "spoco_result"


class LayerComboBox(QComboBox):
    """Names of the viewer's layers of one type, kept current as layers come and go.

    A plain combo box rather than magicgui's layer widget: that one finds its
    viewer through its Qt parents, so it stays empty until the panel is docked.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        layer_type: type,
        *,
        none_text: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._layer_type = layer_type
        self._none_text = none_text
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        viewer.layers.events.inserted.connect(self._watch_name)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)

    def refresh(self, *_: Any) -> None:
        """Re-read the layer list, keeping the current choice when it still exists."""
        current = self.currentText()
        names = [layer.name for layer in self._viewer.layers if isinstance(layer, self._layer_type)]
        if self._none_text is not None:
            names.insert(0, self._none_text)
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    def layer(self) -> Any | None:
        """Return the chosen layer, or None."""
        name = self.currentText()
        if name == self._none_text or name not in self._viewer.layers:
            return None
        return self._viewer.layers[name]

    def set_layer(self, layer: Any) -> None:
        """Choose ``layer`` (it must be of this box's type)."""
        self.refresh()
        self.setCurrentText(layer.name)


def show_layer(
    viewer: napari.viewer.Viewer,
    name: str,
    data: np.ndarray,
    kind: str,
    *,
    placement: dict[str, Any] | None = None,
    **properties: Any,
) -> Any:
    """Add a layer called ``name``, or replace the data of the existing one.

    ``placement`` (``scale``, ``translate``) is applied every time, so results
    sit on their image; ``properties`` apply to a new layer only, so a user's
    changes to colours or opacity survive an update.
    """
    placement = placement or {}
    layer_type = {"image": Image, "labels": Labels}[kind]
    if name in viewer.layers and isinstance(viewer.layers[name], layer_type):
        layer = viewer.layers[name]
        if layer.ndim != np.ndim(data) - (1 if properties.get("rgb") else 0):
            viewer.layers.remove(name)
        else:
            layer.data = data
            for key, value in placement.items():
                setattr(layer, key, value)
            return layer
    elif name in viewer.layers:
        viewer.layers.remove(name)
    adder = getattr(viewer, f"add_{kind}")
    return adder(data, name=name, **placement, **properties)


def result_layer(viewer: napari.viewer.Viewer, image_name: str, role: str) -> Any | None:
    """Return the ``role`` layer of image ``image_name``, or None.

    The panel's own layer is found by its metadata, under any name; else a
    layer with the default name "<image> <role>" counts (instances a user
    opened from a file, say).
    """
    tag = {"image": image_name, "role": role}
    tagged = (layer for layer in viewer.layers if layer.metadata.get(RESULT_KEY) == tag)
    default = f"{image_name} {role}"
    return next(tagged, viewer.layers[default] if default in viewer.layers else None)


def show_result(
    viewer: napari.viewer.Viewer,
    image_name: str,
    role: str,
    data: np.ndarray,
    kind: str,
    **options: Any,
) -> Any:
    """Add or update the ``role`` layer of ``image_name`` (see :func:`show_layer`)."""
    existing = result_layer(viewer, image_name, role)
    name = existing.name if existing is not None else f"{image_name} {role}"
    layer = show_layer(viewer, name, data, kind, **options)
    layer.metadata[RESULT_KEY] = {"image": image_name, "role": role}
    return layer
