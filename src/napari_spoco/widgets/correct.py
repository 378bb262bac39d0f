"""Correct: turn good predicted instances into annotation, remove or merge wrong ones.

On the instances layer: a click (while "Click to accept" is on) or ``A`` copies
the instance under the cursor into the annotation as a new object; ``D``
deletes it from the prediction; ``R`` gives it the layer's selected label
(pick one instance with the colour picker, then press R over the others to
merge them). Then press Train again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..core.annotation import next_free_id, promote_all_instances, promote_instance
from ._state import Pair, SpocoState
from ._tooltips import TOOLTIPS

if TYPE_CHECKING:
    import napari

    from .annotate import AnnotateSection

__all__ = ["CorrectSection"]


class CorrectSection(QWidget):
    """Accept, delete and merge predicted instances of the current image."""

    def __init__(
        self, viewer: napari.viewer.Viewer, state: SpocoState, annotate: AnnotateSection
    ) -> None:
        super().__init__()
        self.viewer, self.state, self.annotate = viewer, state, annotate
        self.click_button = QPushButton("Click to accept")
        self.click_button.setCheckable(True)
        self.accept_all_button = QPushButton("Accept all")
        self.status = QLabel(
            "Segment first. Then click good instances (or press A over them) to add them to "
            "the annotation, D deletes a wrong one, R merges it into the selected label."
        )
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.click_button)
        buttons.addWidget(self.accept_all_button)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        self.click_button.setToolTip(TOOLTIPS["click_accept"])
        self.accept_all_button.setToolTip(TOOLTIPS["accept_all"])
        self.accept_all_button.clicked.connect(self.accept_all)
        self.click_button.toggled.connect(self._click_mode)
        self._bound: list[Any] = []

    # ------------------------------------------------------------------ targets
    def _pair(self) -> Pair | None:
        return self.state.pair_for(self.annotate.annotation())

    def _instances_layer(self, pair: Pair | None) -> Any | None:
        if pair is None:
            return None
        name = f"{pair.image.name} instances"
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def attach(self, image_name: str) -> None:
        """Bind the keys and the click to the instances layer of ``image_name``."""
        name = f"{image_name} instances"
        if name not in self.viewer.layers:
            return
        layer = self.viewer.layers[name]
        if layer in self._bound:
            return
        layer.bind_key("a", lambda _: self.accept_at_cursor(), overwrite=True)
        layer.bind_key("d", lambda _: self.delete_at_cursor(), overwrite=True)
        layer.bind_key("r", lambda _: self.merge_at_cursor(), overwrite=True)
        layer.mouse_drag_callbacks.append(self._clicked)
        self._bound.append(layer)

    def _frame_index(self, layer: Any, pair: Pair, position: Any) -> tuple[Any, int]:
        """(frame slice, instance id) at ``position`` (world coordinates)."""
        index = np.round(layer.world_to_data(position)).astype(int)
        index = np.clip(index, 0, np.asarray(layer.data.shape) - 1)
        frame = (int(index[0]),) if pair.axes.has_time else ()
        return frame, int(layer.data[tuple(index)])

    # ------------------------------------------------------------------ actions
    def accept_at(self, position: Any) -> int:
        """Copy the instance at ``position`` into the annotation; return its new id (0: none)."""
        pair = self._pair()
        layer = self._instances_layer(pair)
        if layer is None:
            show_info("Segment the image first: there are no instances to accept yet.")
            return 0
        frame, instance_id = self._frame_index(layer, pair, position)
        if instance_id == 0:
            return 0
        annotation = pair.annotation
        new_id = next_free_id(annotation.data, background_id=pair.background_id)
        written = promote_instance(
            annotation.data[frame], np.asarray(layer.data[frame]), instance_id, new_id
        )
        if written == 0:
            show_info("That instance is already annotated.")
            return 0
        annotation.refresh()
        self._edited(f"Accepted instance {instance_id} as object {new_id}.")
        return new_id

    def accept_at_cursor(self) -> int:
        """Accept the instance under the mouse cursor."""
        return self.accept_at(self.viewer.cursor.position)

    def delete_at_cursor(self) -> None:
        """Remove the instance under the cursor from the prediction."""
        self._relabel_at(self.viewer.cursor.position, lambda layer: 0)

    def merge_at_cursor(self) -> None:
        """Give the instance under the cursor the instances layer's selected label."""
        self._relabel_at(self.viewer.cursor.position, lambda layer: layer.selected_label)

    def _relabel_at(self, position: Any, new_label: Any) -> None:
        pair = self._pair()
        layer = self._instances_layer(pair)
        if layer is None:
            return
        frame, instance_id = self._frame_index(layer, pair, position)
        if instance_id == 0:
            return
        target = new_label(layer)
        data = layer.data[frame] if frame else layer.data
        data[data == instance_id] = target
        layer.refresh()
        self.status.setText(f"Instance {instance_id} → {target or 'removed'}.")

    def accept_all(self) -> None:
        """Copy every instance that touches nothing painted into the annotation."""
        pair = self._pair()
        layer = self._instances_layer(pair)
        if layer is None:
            show_warning("Segment the image first: there are no instances to accept yet.")
            return
        if layer.data.shape != pair.annotation.data.shape:
            show_warning("The instances do not fit the annotation; segment the image again.")
            return
        count = promote_all_instances(
            pair.annotation.data, np.asarray(layer.data), background_id=pair.background_id
        )
        pair.annotation.refresh()
        self._edited(f"Accepted {count} instances.")

    def _edited(self, message: str) -> None:
        self.status.setText(message + " Press Train to learn from them.")
        self.state.annotations_edited.emit()
        self.annotate.refresh_pairs()

    # ------------------------------------------------------------------ click mode
    def _click_mode(self, on: bool) -> None:
        layer = self._instances_layer(self._pair())
        if on and layer is None:
            show_info("Segment the image first: there are no instances to click yet.")
            self.click_button.setChecked(False)
            return
        if layer is not None:
            self.attach(layer.name.removesuffix(" instances"))
            self.viewer.layers.selection.active = layer
            layer.mode = "pan_zoom"

    def _clicked(self, layer: Any, event: Any) -> Any:
        """Mouse callback: accept on a click without drag, while click mode is on."""
        if not self.click_button.isChecked() or layer.mode != "pan_zoom":
            return
        start = tuple(event.position)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = True
            yield
        if not moved or tuple(event.position) == start:
            self.accept_at(event.position)
