"""Correct: turn good predicted instances into annotation, remove or merge wrong ones.

On the instances layer: a click (while "Click to accept" is on) or ``A`` copies
the instance under the cursor into the annotation as a new object; ``D``
deletes it from the prediction; ``R`` gives it the layer's selected label
(pick one instance with the colour picker, then press R over the others to
merge them). Then press Train again.

After each segmentation the section lists the instances most likely wrong
(``core.uncertainty``), worst first and with the reason; "Go to" centres the
view on one, and the same accept, delete and merge act on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.annotation import next_free_id, promote_all_instances, promote_instance
from ..core.uncertainty import Doubt
from ._layers import result_layer
from ._state import Pair, SpocoState
from ._tooltips import TOOLTIPS

if TYPE_CHECKING:
    import napari


__all__ = ["CorrectSection"]

#: "Go to" shows at least this many image pixels across, so a small piece has context.
_FEWEST_PIXELS_SHOWN = 96


class CorrectSection(QWidget):
    """Accept, delete and merge predicted instances of the current image."""

    def __init__(self, viewer: napari.viewer.Viewer, state: SpocoState) -> None:
        super().__init__()
        self.viewer, self.state = viewer, state
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
        self.doubt_list = QListWidget()
        self.doubt_list.setMaximumHeight(150)
        self.doubt_buttons = {
            key: QPushButton(text)
            for key, text in (
                ("goto", "Go to"),
                ("accept_doubt", "Accept"),
                ("delete_doubt", "Delete"),
                ("merge_doubt", "Merge"),
            )
        }
        doubt_row = QHBoxLayout()
        for button in self.doubt_buttons.values():
            doubt_row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("Most likely wrong:"))
        layout.addWidget(self.doubt_list)
        layout.addLayout(doubt_row)
        self.click_button.setToolTip(TOOLTIPS["click_accept"])
        self.accept_all_button.setToolTip(TOOLTIPS["accept_all"])
        self.doubt_list.setToolTip(TOOLTIPS["doubts"])
        for key, button in self.doubt_buttons.items():
            button.setToolTip(TOOLTIPS[key])
        self.accept_all_button.clicked.connect(self.accept_all)
        self.click_button.toggled.connect(self._click_mode)
        self.doubt_buttons["goto"].clicked.connect(lambda: self.go_to(self.chosen_doubt()))
        self.doubt_buttons["accept_doubt"].clicked.connect(lambda: self._act_on_doubt("accept"))
        self.doubt_buttons["delete_doubt"].clicked.connect(lambda: self._act_on_doubt("delete"))
        self.doubt_buttons["merge_doubt"].clicked.connect(lambda: self._act_on_doubt("merge"))
        self.doubt_list.currentRowChanged.connect(self._update_doubt_buttons)
        self.doubt_list.itemDoubleClicked.connect(lambda _: self.go_to(self.chosen_doubt()))
        state.doubts_changed.connect(self.show_doubts)
        self._doubts: list[tuple[int | None, Doubt]] = []
        self._doubts_of = ""  # the image they belong to
        self._update_doubt_buttons()
        self._bound: list[Any] = []

    # ------------------------------------------------------------------ targets
    def _pair(self) -> Pair | None:
        return self.state.chosen_pair()

    def _instances_layer(self, pair: Pair | None) -> Any | None:
        if pair is None:
            return None
        return result_layer(self.viewer, pair.image.name, "instances")

    def attach(self, image_name: str) -> None:
        """Bind the keys and the click to the instances layer of ``image_name``."""
        layer = result_layer(self.viewer, image_name, "instances")
        if layer is None:
            return
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
        return self.accept_instance(pair, layer, frame, instance_id)

    def accept_instance(self, pair: Pair, layer: Any, frame: tuple, instance_id: int) -> int:
        """Copy instance ``instance_id`` of ``frame`` into the annotation; return its new id."""
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
        self.relabel_instance(layer, frame, instance_id, new_label(layer))

    def relabel_instance(self, layer: Any, frame: tuple, instance_id: int, target: int) -> None:
        """Give instance ``instance_id`` of ``frame`` the label ``target`` (0 removes it)."""
        if instance_id == 0:
            return
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
        self.state.pairs_changed.emit()  # the Annotate section re-counts at once

    # ------------------------------------------------------------------ likely mistakes
    def show_doubts(self, image_name: str) -> None:
        """List the instances of ``image_name`` most likely wrong (after a segmentation)."""
        self._doubts = list(self.state.doubts.get(image_name, []))
        self._doubts_of = image_name
        self.doubt_list.clear()
        for t, doubt in self._doubts:
            where = f"t={t} · " if t is not None else ""
            what = f"#{doubt.label}" if doubt.label else "unlabelled region"
            text = f"{where}{what}: {doubt.why} ({doubt.score:.2f})"
            self.doubt_list.addItem(QListWidgetItem(text))
        if self._doubts:
            self.doubt_list.setCurrentRow(0)
        self._update_doubt_buttons()

    def chosen_doubt(self) -> tuple[int | None, Doubt] | None:
        """Return the listed instance the user chose (the current row), or None."""
        row = self.doubt_list.currentRow()
        return self._doubts[row] if 0 <= row < len(self._doubts) else None

    def go_to(self, chosen: tuple[int | None, Doubt] | None) -> None:
        """Centre the view on a listed instance, zoomed so that its neighbours show too."""
        layer = self._doubt_layer()
        if chosen is None or layer is None:
            return
        t, doubt = chosen
        prefix = () if t is None else (t,)
        world = list(layer.data_to_world((*prefix, *doubt.centre)))
        # The layer's axes are the viewer's last ones: move the sliders (time, Z) there too.
        point = list(self.viewer.dims.point)
        point[len(point) - len(world) :] = world
        displayed = list(self.viewer.dims.displayed)
        for axis, value in enumerate(point):
            if axis not in displayed:
                self.viewer.dims.set_point(axis, value)
        camera = getattr(self.viewer, "scene", self.viewer).camera
        camera.center = tuple(point[axis] for axis in displayed)
        canvas = getattr(self.viewer, "canvas", None)  # napari >= 0.9; older keeps the zoom
        if canvas is not None:
            sizes = [stop - start for start, stop in doubt.bbox[-2:]]
            pixel = min(abs(s) for s in layer.scale[-2:])
            view = max(3 * max(sizes), _FEWEST_PIXELS_SHOWN) * pixel  # world units across
            camera.zoom = 0.9 * min(canvas.size) / view
        self.viewer.layers.selection.active = layer
        layer.visible = True

    def _doubt_layer(self) -> Any | None:
        return result_layer(self.viewer, self._doubts_of, "instances")

    def _act_on_doubt(self, action: str) -> None:
        """Accept, delete or merge the chosen listed instance, then drop it from the list."""
        chosen = self.chosen_doubt()
        layer = self._doubt_layer()
        pair = self._pair()
        if chosen is None or layer is None:
            return
        t, doubt = chosen
        frame = () if t is None else (t,)
        if action == "accept":
            if pair is None or pair.image.name != self._doubts_of:
                show_info(f"Choose {self._doubts_of}'s annotation in Annotate to accept into it.")
                return
            if not self.accept_instance(pair, layer, frame, doubt.label):
                return  # nothing was accepted: the instance stays listed
        else:
            target = 0 if action == "delete" else int(layer.selected_label)
            self.relabel_instance(layer, frame, doubt.label, target)
        row = self.doubt_list.currentRow()
        del self._doubts[row]
        self.doubt_list.takeItem(row)
        self._update_doubt_buttons()

    def _update_doubt_buttons(self, *_: Any) -> None:
        chosen = self.chosen_doubt()
        self.doubt_buttons["goto"].setEnabled(chosen is not None)
        is_instance = chosen is not None and chosen[1].label > 0  # a missed region is painted
        for key in ("accept_doubt", "delete_doubt", "merge_doubt"):
            self.doubt_buttons[key].setEnabled(is_instance)

    # ------------------------------------------------------------------ click mode
    def _click_mode(self, on: bool) -> None:
        pair = self._pair()
        layer = self._instances_layer(pair)
        if on and layer is None:
            show_info("Segment the image first: there are no instances to click yet.")
            self.click_button.setChecked(False)
            return
        if layer is not None:
            self.attach(pair.image.name)
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
