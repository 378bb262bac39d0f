"""Annotate: choose the image, create the sparse annotation layer, paint objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

from ..core.annotation import next_free_id, object_ids
from ..core.axes import AXES_CHOICES, Axes, guess_axes
from ._layers import LayerComboBox
from ._state import METADATA_KEY, SpocoState, link_annotation
from ._tooltips import TOOLTIPS

if TYPE_CHECKING:
    import napari

__all__ = ["AnnotateSection"]


class AnnotateSection(QWidget):
    """Pick image and annotation layer, start new objects and background scribbles."""

    def __init__(self, viewer: napari.viewer.Viewer, state: SpocoState) -> None:
        super().__init__()
        self.viewer, self.state = viewer, state
        self.image_box = LayerComboBox(viewer, Image)
        self.axes_box = QComboBox()
        self.annotation_box = LayerComboBox(viewer, Labels, none_text="(new)")
        self.new_layer_button = QPushButton("New annotation layer")
        self.new_object_button = QPushButton("New object")
        self.background_button = QPushButton("Paint background")
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(90)
        self.summary = QLabel()
        self.summary.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_box)
        form.addRow("Axes", self.axes_box)
        form.addRow("Annotation", self.annotation_box)
        buttons = QHBoxLayout()
        for button in (self.new_layer_button, self.new_object_button, self.background_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("Train on:"))
        layout.addWidget(self.pair_list)
        layout.addWidget(self.summary)
        for widget, key in (
            (self.image_box, "image"),
            (self.axes_box, "axes"),
            (self.annotation_box, "annotation"),
            (self.new_layer_button, "new_layer"),
            (self.new_object_button, "new_object"),
            (self.background_button, "background"),
            (self.pair_list, "pairs"),
        ):
            widget.setToolTip(TOOLTIPS[key])

        self.image_box.currentTextChanged.connect(self._image_changed)
        self.annotation_box.currentTextChanged.connect(self._annotation_changed)
        self.axes_box.currentTextChanged.connect(self._axes_changed)
        self.new_layer_button.clicked.connect(self.new_annotation_layer)
        self.new_object_button.clicked.connect(self.new_object)
        self.background_button.clicked.connect(self.paint_background)
        self.pair_list.itemChanged.connect(self._use_changed)
        viewer.layers.events.inserted.connect(self._layer_inserted)
        viewer.layers.events.removed.connect(self.refresh_pairs)
        for layer in viewer.layers:
            self._watch(layer)
        state.pairs_changed.connect(self.refresh_pairs)
        self._image_changed()
        self.refresh_pairs()

    # ------------------------------------------------------------------ choices
    def image(self) -> Image | None:
        """Return the chosen image layer."""
        return self.image_box.layer()

    def annotation(self) -> Labels | None:
        """Return the chosen annotation layer."""
        return self.annotation_box.layer()

    def axes(self) -> Axes | None:
        """How the chosen image's axes are read."""
        return Axes(self.axes_box.currentText()) if self.axes_box.currentText() else None

    def _image_changed(self, *_: Any) -> None:
        image = self.image()
        self.axes_box.blockSignals(True)
        self.axes_box.clear()
        if image is not None and image.ndim in AXES_CHOICES:
            guess = guess_axes(image.data.shape, rgb=image.rgb)
            choices = ("YXC", "TYXC") if image.rgb else AXES_CHOICES[image.ndim]
            self.axes_box.addItems([a for a in choices if len(a) == len(image.data.shape)])
            self.axes_box.setCurrentText(guess)
        self.axes_box.blockSignals(False)
        linked = [p for p in self.state.pairs() if p.image == image]
        if linked:
            self.annotation_box.set_layer(linked[0].annotation)
            self.axes_box.setCurrentText(linked[0].axes.spec)
        elif self.state.pair_for(self.annotation()) is not None:
            self.annotation_box.setCurrentIndex(0)  # "(new)": that layer belongs to another image

    def _annotation_changed(self, *_: Any) -> None:
        layer = self.annotation()
        self.state.chosen_annotation = None if layer is None else layer.name
        pair = self.state.pair_for(layer)
        if pair is not None and pair.image is not self.image():
            self.image_box.set_layer(pair.image)
            self.axes_box.setCurrentText(pair.axes.spec)

    def _axes_changed(self, spec: str) -> None:
        pair = self.state.pair_for(self.annotation())
        if pair is not None and pair.image is self.image() and spec:
            pair.annotation.metadata[METADATA_KEY]["axes"] = spec
            self.state.pairs_changed.emit()

    # ------------------------------------------------------------------ actions
    def new_annotation_layer(self) -> Labels | None:
        """Add an empty Labels layer shaped like the image (without channels) and link it."""
        image, axes = self.image(), self.axes()
        if image is None or axes is None:
            show_warning("Open an image first (File > Open, or File > Open Sample > SPOCO).")
            return None
        shape = axes.labels_shape(tuple(image.data.shape))
        spatial = [i for i, a in enumerate(axes.spec) if a != "C"]
        layer = self.viewer.add_labels(
            np.zeros(shape, dtype=np.uint32),
            name=f"{image.name} annotation",
            scale=np.asarray(image.scale)[spatial] if not image.rgb else image.scale,
            translate=np.asarray(image.translate)[spatial] if not image.rgb else image.translate,
        )
        link_annotation(layer, image, axes.spec)
        self.annotation_box.set_layer(layer)
        self.new_object()
        self.state.pairs_changed.emit()
        return layer

    def _current_pair_layer(self) -> Labels | None:
        """Return the chosen annotation layer, linked to the chosen image (linking it if needed)."""
        annotation, image, axes = self.annotation(), self.image(), self.axes()
        if annotation is None:
            return self.new_annotation_layer()
        if self.state.pair_for(annotation) is None:
            if image is None or axes is None:
                show_warning("Choose the image this annotation belongs to.")
                return None
            try:
                axes.check_labels(tuple(image.data.shape), tuple(annotation.data.shape))
            except ValueError as error:
                show_warning(f"{annotation.name!r} does not fit {image.name!r}: {error}")
                return None
            link_annotation(annotation, image, axes.spec)
            self.state.pairs_changed.emit()
        return annotation

    def new_object(self) -> None:
        """Select the next free label id and the paint brush: the next stroke is a new object."""
        layer = self._current_pair_layer()
        if layer is None:
            return
        background = layer.metadata[METADATA_KEY].get("background_id")
        layer.selected_label = next_free_id(layer.data, background_id=background)
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer

    def paint_background(self) -> None:
        """Select the background label (choosing one on first use) and the paint brush."""
        layer = self._current_pair_layer()
        if layer is None:
            return
        link = layer.metadata[METADATA_KEY]
        if link.get("background_id") is None:
            link["background_id"] = next_free_id(layer.data)
            show_info(
                f"Background scribbles use label {link['background_id']} in {layer.name!r}; "
                "a few strokes between objects give a cleaner foreground."
            )
            self.state.pairs_changed.emit()
        layer.selected_label = link["background_id"]
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer

    # ------------------------------------------------------------------ pairs
    def _layer_inserted(self, event: Any) -> None:
        layer = event.value
        self._watch(layer)
        # Counting objects reads every annotation: skip it for layers that cannot
        # change a pair (previews and results arrive while training).
        linked_images = {p.image.name for p in self.state.pairs()}
        if METADATA_KEY in layer.metadata or layer.name in linked_images:
            self.refresh_pairs()

    def _watch(self, layer: Any) -> None:
        if isinstance(layer, Labels):
            layer.events.paint.connect(self._painted)
            layer.events.data.connect(self._painted)

    @qdebounced(timeout=300)
    def _painted(self, *_: Any) -> None:
        self.refresh_pairs()
        self.state.annotations_edited.emit()

    def refresh_pairs(self, *_: Any) -> None:
        """Re-list the pairs with their object counts."""
        self.pair_list.blockSignals(True)
        self.pair_list.clear()
        total, images = 0, 0
        for pair in self.state.pairs():
            count = pair.object_count()
            extra = ""
            if pair.background_id is not None and np.any(
                pair.annotation.data == pair.background_id
            ):
                extra = " + background"
            item = QListWidgetItem(f"{pair.image.name} ← {pair.annotation.name}: {count}{extra}")
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if pair.use else Qt.CheckState.Unchecked)
            item.setData(Qt.ItemDataRole.UserRole, pair.annotation.name)
            self.pair_list.addItem(item)
            if pair.use and count:
                total, images = total + count, images + 1
        self.pair_list.blockSignals(False)
        self.summary.setText(self._summary_text(total, images))

    @staticmethod
    def _summary_text(objects: int, images: int) -> str:
        if objects == 0:
            return "No object annotated yet: press 'New object' and paint one object completely."
        text = f"{objects} object{'s' * (objects != 1)} in {images} image{'s' * (images != 1)}."
        if objects == 1:
            text += " Paint a second object: telling objects apart needs at least two."
        return text

    def _use_changed(self, item: QListWidgetItem) -> None:
        name = item.data(Qt.ItemDataRole.UserRole)
        if name in self.viewer.layers:
            link = self.viewer.layers[name].metadata[METADATA_KEY]
            link["use"] = item.checkState() == Qt.CheckState.Checked
            self.refresh_pairs()

    def object_count(self) -> int:
        """Objects annotated over all pairs in use."""
        return sum(
            len(object_ids(p.annotation.data, background_id=p.background_id))
            for p in self.state.pairs()
            if p.use
        )
