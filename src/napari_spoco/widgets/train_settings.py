"""The Train section's settings: basic controls, an advanced fold, and the config they build."""

from __future__ import annotations

from magicgui.widgets import ComboBox
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..core.checkpoint import Checkpoint
from ..core.config import LossConfig, TrainConfig
from ..core.device import available_devices
from ..core.pretrained import BUILTIN_MODELS
from ..core.recipe import DEFAULT_PATCH_SHAPE, MODEL_PRESETS, default_iterations, train_config
from ..core.settings import LOSS_SETTINGS, TRAIN_SETTINGS, choices_of
from ._forms import setting_box, values_of
from ._state import TrainingData
from ._tooltips import TOOLTIPS

__all__ = ["FROM_FILE", "TrainSettings"]

#: Network choice that asks for a model file to fine-tune.
FROM_FILE = "fine-tune a model file…"

#: Choices of "Objects touch", by index: decide from the painting (the first, whose text
#: shows what the painting says), or say so.
_OBJECTS_TOUCH = (None, True, False)
_AUTO_TOUCH = "auto (painting: {})"


def _spin(
    value: float, low: float, high: float, *, decimals: int = 0, step: float = 1
) -> QSpinBox | QDoubleSpinBox:
    """Integer spin box, or a float one with ``decimals`` places."""
    if decimals == 0:
        box = QSpinBox()
        box.setRange(int(low), int(high))
        box.setSingleStep(int(step))
        box.setValue(int(value))
        return box
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box


class TrainSettings(QWidget):
    """Controls of the Train section; :meth:`build_config` turns them into a TrainConfig."""

    def __init__(self) -> None:
        super().__init__()
        loss, train = LossConfig(), TrainConfig()
        self.controls: dict[str, QWidget] = {}
        self.size_box = QComboBox()
        self.size_box.addItems([model.label for model in BUILTIN_MODELS.values()])
        self.size_box.addItems([f"new {size} network" for size in MODEL_PRESETS])
        self.size_box.addItem(FROM_FILE)
        self.size_box.setCurrentIndex(0)
        self.device_box = QComboBox()
        self.device_box.addItems(available_devices())
        # Boxes for config fields come from the core's list of settings; the defaults are
        # the config classes' own, except where the recipe decides (None: "auto").
        self.train_boxes = {
            name: setting_box(setting, getattr(train, name))
            for name, setting in TRAIN_SETTINGS.items()
        }
        self.loss_boxes = {
            name: setting_box(setting, None if name == "ring_width" else getattr(loss, name))
            for name, setting in LOSS_SETTINGS.items()
        }
        # Starts on the built-in generalist (the first choice): a fine-tuning run, on a
        # painting that does not (yet) say objects touch.
        self._fine_tune, self._painting_touches = True, False
        self._recipe_iterations = default_iterations(fine_tune=True)
        self.iterations = self.train_boxes["iterations"]
        self.iterations.value = self._recipe_iterations
        self.delta_v, self.delta_d = self.loss_boxes["delta_v"], self.loss_boxes["delta_d"]
        self.triplet_on = ComboBox(
            choices=choices_of(LossConfig, "triplet_on"), value=loss.triplet_on,
            tooltip=TOOLTIPS["triplet_on"],
        )  # fmt: skip
        # Not config fields (the diameter is the recipe's input, the previews the panel's),
        # so plain Qt boxes.
        self.object_diameter = _spin(0, 0, 10_000, decimals=1)
        self.object_diameter.setSpecialValueText("auto")
        self.objects_touch = QComboBox()
        self.objects_touch.addItems([_AUTO_TOUCH.format("apart"), "yes", "no"])
        self.objects_touch.currentIndexChanged.connect(lambda _: self.follow_recipe())
        self.preview_every = _spin(5, 0, 600, decimals=1)
        self.segment_when_done = QCheckBox("Segment the image when training ends")
        self.segment_when_done.setChecked(True)
        learning_rate = self.train_boxes["learning_rate"]
        basic = QFormLayout()
        for label, key, widget in (
            ("Network", "model_choice", self.size_box),
            ("Device", "device", self.device_box),
            (self.iterations.label, "iterations", self.iterations.native),
            (learning_rate.label, "learning_rate", learning_rate.native),
            ("Object diameter", "object_diameter", self.object_diameter),
            ("Objects touch", "objects_touch", self.objects_touch),
            ("Preview every (s)", "preview_every", self.preview_every),
        ):
            basic.addRow(label, widget)
            self.controls[key] = widget
        basic.addRow(self.segment_when_done)
        self.controls["segment_when_done"] = self.segment_when_done

        # The patch is a tuple in the config, shown as a side and a depth.
        self.patch_size = _spin(DEFAULT_PATCH_SHAPE[2][-1], 16, 1024, step=16)
        self.patch_depth = _spin(DEFAULT_PATCH_SHAPE[3][0], 4, 256, step=4)
        advanced_form = QFormLayout()
        rows = [
            ("Patch size", "patch_size", self.patch_size),
            ("Patch depth (3D)", "patch_depth", self.patch_depth),
            ("Triplet on", "triplet_on", self.triplet_on.native),
        ]
        shown_above = ("iterations", "learning_rate")
        boxes = {**self.train_boxes, **self.loss_boxes}
        rows += [
            (box.label, name, box.native) for name, box in boxes.items() if name not in shown_above
        ]
        for label, key, widget in rows:
            advanced_form.addRow(label, widget)
            self.controls[key] = widget
        advanced_body = QWidget()
        advanced_body.setLayout(advanced_form)
        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(advanced_body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(basic)
        layout.addWidget(self.advanced)
        for key, widget in self.controls.items():
            if key in TOOLTIPS:  # the settings' boxes carry theirs from the core
                widget.setToolTip(TOOLTIPS[key])

    def build_config(self, data: TrainingData, start: Checkpoint | None = None) -> TrainConfig:
        """Combine the settings with what the data says, by the core's recipe.

        Raises
        ------
        ValueError
            If a combination of settings is invalid (the message names the field).
        """
        patch = self.patch_size.value()
        is_3d = data.axes.spatial_dims == 3
        loss = values_of(self.loss_boxes, LOSS_SETTINGS)
        train = values_of(self.train_boxes, TRAIN_SETTINGS)
        return train_config(
            data.annotations,
            spatial_dims=data.axes.spatial_dims,
            channels=data.channels,
            start=start,
            size=self.network_size(),
            object_diameter=self.object_diameter.value() or None,
            background_id=data.background_id,
            objects_touch=_OBJECTS_TOUCH[self.objects_touch.currentIndex()],
            ring=loss.pop("ring_width"),
            loss={**loss, "triplet_on": self.triplet_on.value},
            patch_shape=(self.patch_depth.value(), patch, patch) if is_3d else (patch, patch),
            **train,
        )

    def follow_recipe(
        self, *, fine_tune: bool | None = None, painting_touches: bool | None = None
    ) -> None:
        """Show the recipe's steps for this start and painting, unless the user changed them.

        ``None`` keeps what was last said.
        """
        if fine_tune is not None:
            self._fine_tune = fine_tune
        if painting_touches is not None:
            self._painting_touches = painting_touches
            said = "they touch" if painting_touches else "apart"
            self.objects_touch.setItemText(0, _AUTO_TOUCH.format(said))
        told = _OBJECTS_TOUCH[self.objects_touch.currentIndex()]
        touching = self._painting_touches if told is None else told
        iterations = default_iterations(self._fine_tune, touching)
        if self.iterations.value == self._recipe_iterations:
            self.iterations.value = iterations
        self._recipe_iterations = iterations

    def show_margins(self, trained: LossConfig | None) -> None:
        """Show the margins the next training uses: a trained model's own, else the defaults.

        An embedding learned with one pair of margins is read and fine-tuned with the
        same pair (the command line keeps them too), so choosing a model sets these
        boxes; a user may still change them afterwards.
        """
        trained = trained or LossConfig()
        for box, value in ((self.delta_v, trained.delta_v), (self.delta_d, trained.delta_d)):
            box.min, box.max = min(box.min, value), max(box.max, value)  # a model's own
            box.value = value

    def network_size(self) -> str:
        """Size preset of a new network ("medium" while a model file is chosen)."""
        text = self.size_box.currentText()
        return next((size for size in MODEL_PRESETS if text == f"new {size} network"), "medium")

    def builtin_choice(self) -> str | None:
        """Name of the built-in model chosen as the network, or None."""
        text = self.size_box.currentText()
        return next((m.name for m in BUILTIN_MODELS.values() if m.label == text), None)

    def show_model(self, shown: str | None) -> None:
        """Show what the next training starts from: a model file or built-in model's entry.

        ``None`` means a new network: the chosen size stays, or medium after a model.
        """
        index = self.size_box.findText(shown) if shown else -1
        for i in reversed(range(self.size_box.count())):
            if self.size_box.itemText(i).startswith("model file: ") and i != index:
                self.size_box.removeItem(i)
        if shown and index < 0:
            self.size_box.addItem(shown)
        current = self.size_box.currentText()
        new_network = current if current.startswith("new ") else "new medium network"
        self.size_box.blockSignals(True)
        self.size_box.setCurrentText(shown or new_network)
        self.size_box.blockSignals(False)
