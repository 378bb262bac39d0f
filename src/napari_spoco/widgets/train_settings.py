"""The Train section's settings: basic controls, an advanced fold, and the config they build."""

from __future__ import annotations

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
from ..core.config import ALL_LOSS_TERMS, LossConfig, TrainConfig
from ..core.device import available_devices
from ..core.pretrained import BUILTIN_MODELS
from ..core.recipe import DEFAULT_PATCH_SHAPE, MODEL_PRESETS, default_iterations, train_config
from ._state import TrainingData
from ._tooltips import TOOLTIPS

__all__ = ["FROM_FILE", "TrainSettings"]

#: Network choice that asks for a model file to fine-tune.
FROM_FILE = "fine-tune a model file…"

#: Choices of "Objects touch": decide from the painting, or say so.
_OBJECTS_TOUCH = {"auto (from the painting)": None, "yes": True, "no": False}

#: A weight box per loss term, from the core's one list of them.
_WEIGHTS = tuple(f"{term}_weight" for term in ALL_LOSS_TERMS)


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
        defaults = LossConfig()
        self.controls: dict[str, QWidget] = {}
        self.size_box = QComboBox()
        self.size_box.addItems([model.label for model in BUILTIN_MODELS.values()])
        self.size_box.addItems([f"new {size} network" for size in MODEL_PRESETS])
        self.size_box.addItem(FROM_FILE)
        self.size_box.setCurrentIndex(0)
        self.device_box = QComboBox()
        self.device_box.addItems(available_devices())
        # Starts on the built-in generalist (the first choice): a fine-tuning run.
        self._recipe_iterations = default_iterations(fine_tune=True)
        self.iterations = _spin(self._recipe_iterations, 1, 1_000_000, step=50)
        self.learning_rate = _spin(0, 0, 1, decimals=5, step=1e-4)
        self.learning_rate.setSpecialValueText("auto")
        self.object_diameter = _spin(0, 0, 10_000, decimals=1)
        self.object_diameter.setSpecialValueText("auto")
        self.objects_touch = QComboBox()
        self.objects_touch.addItems(list(_OBJECTS_TOUCH))
        self.preview_every = _spin(5, 0, 600, decimals=1)
        self.segment_when_done = QCheckBox("Segment the image when training ends")
        self.segment_when_done.setChecked(True)
        basic = QFormLayout()
        for label, key, widget in (
            ("Network", "model_choice", self.size_box),
            ("Device", "device", self.device_box),
            ("Iterations", "iterations", self.iterations),
            ("Learning rate", "learning_rate", self.learning_rate),
            ("Object diameter", "object_diameter", self.object_diameter),
            ("Objects touch", "objects_touch", self.objects_touch),
            ("Preview every (s)", "preview_every", self.preview_every),
        ):
            basic.addRow(label, widget)
            self.controls[key] = widget
        basic.addRow(self.segment_when_done)
        self.controls["segment_when_done"] = self.segment_when_done

        self.patch_size = _spin(DEFAULT_PATCH_SHAPE[2][-1], 16, 1024, step=16)
        self.patch_depth = _spin(DEFAULT_PATCH_SHAPE[3][0], 4, 256, step=4)
        self.batch_size = _spin(4, 1, 64)
        self.delta_v = _spin(defaults.delta_v, 0.05, 10, decimals=2, step=0.1)
        self.delta_d = _spin(defaults.delta_d, 0.1, 20, decimals=2, step=0.1)
        self.kernel_threshold = _spin(defaults.kernel_threshold, 0.01, 0.99, decimals=2, step=0.05)
        self.ema_momentum = _spin(TrainConfig.ema_momentum, 0, 0.9999, decimals=4, step=0.001)
        self.ring_width = _spin(-1, -1, 50)
        self.ring_width.setSpecialValueText("auto")
        self.seed = _spin(0, 0, 2**31 - 1)
        self.triplet_on = QComboBox()
        self.triplet_on.addItems(["embedding", "bottleneck"])
        self.dispersive_tau = _spin(defaults.dispersive_tau, 0.01, 100, decimals=2, step=0.1)
        self.weights = {
            name: _spin(getattr(defaults, name), 0, 100, decimals=3, step=0.1) for name in _WEIGHTS
        }
        advanced_form = QFormLayout()
        rows = [
            ("Patch size", "patch_size", self.patch_size),
            ("Patch depth (3D)", "patch_depth", self.patch_depth),
            ("Batch size", "batch_size", self.batch_size),
            ("delta_v", "delta_v", self.delta_v),
            ("delta_d", "delta_d", self.delta_d),
            ("Kernel threshold", "kernel_threshold", self.kernel_threshold),
            ("EMA momentum", "ema_momentum", self.ema_momentum),
            ("Ring width", "ring_width", self.ring_width),
            ("Seed", "seed", self.seed),
            ("Triplet on", "triplet_on", self.triplet_on),
            ("Dispersive tau", "dispersive_tau", self.dispersive_tau),
        ]
        rows += [
            (name.replace("_weight", "").replace("_", " "), name, w)
            for name, w in self.weights.items()
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
        ring = self.ring_width.value()
        return train_config(
            data.annotations,
            spatial_dims=data.axes.spatial_dims,
            channels=data.channels,
            start=start,
            size=self.network_size(),
            object_diameter=self.object_diameter.value() or None,
            background_id=data.background_id,
            objects_touch=_OBJECTS_TOUCH[self.objects_touch.currentText()],
            ring=ring if ring >= 0 else None,
            loss={
                "delta_v": self.delta_v.value(),
                "delta_d": self.delta_d.value(),
                "kernel_threshold": self.kernel_threshold.value(),
                "triplet_on": self.triplet_on.currentText(),
                "dispersive_tau": self.dispersive_tau.value(),
                **{name: box.value() for name, box in self.weights.items()},
            },
            iterations=self.iterations.value(),
            patch_shape=(self.patch_depth.value(), patch, patch) if is_3d else (patch, patch),
            batch_size=self.batch_size.value(),
            learning_rate=self.learning_rate.value() or None,
            ema_momentum=self.ema_momentum.value(),
            seed=self.seed.value(),
        )

    def follow_recipe(self, *, fine_tune: bool) -> None:
        """Set the iterations to the recipe's for this start, unless the user changed them."""
        if self.iterations.value() == self._recipe_iterations:
            self.iterations.setValue(default_iterations(fine_tune))
        self._recipe_iterations = default_iterations(fine_tune)

    def show_margins(self, trained: LossConfig | None) -> None:
        """Show the margins the next training uses: a trained model's own, else the defaults.

        An embedding learned with one pair of margins is read and fine-tuned with the
        same pair (the command line keeps them too), so choosing a model sets these
        boxes; a user may still change them afterwards.
        """
        trained = trained or LossConfig()
        self.delta_v.setValue(trained.delta_v)
        self.delta_d.setValue(trained.delta_d)

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
