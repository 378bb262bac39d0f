"""Train: run the SPOCO trainer in a napari worker thread, with progress, loss plot and preview."""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info, show_warning
from psygnal import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget
from superqt.utils import qdebounced

from ..core.config import ModelConfig
from ..core.image import check_image_size
from ..core.interactive import Inbox, PreviewRequest, StepReport, train_with_previews
from ..core.pretrained import BUILTIN_MODELS, load_model_source
from ..core.recipe import training_warnings
from ..core.training import Trainer, TrainResult
from ._layers import result_layer, show_result
from ._pacer import Pacer
from ._run import start_worker
from ._state import SpocoState, TrainingData
from ._tooltips import TOOLTIPS
from ._view import visible_region
from .loss_plot import LossPlot
from .train_settings import FROM_FILE, TrainSettings

if TYPE_CHECKING:
    import napari


__all__ = ["TrainSection"]


def _training_job(
    trainer: Trainer, data: TrainingData, iterations: int, inbox: Inbox, preview_every: float
) -> Generator[StepReport, None, TrainResult]:
    """Worker body: prepare the data (slow for big images), then train with previews."""
    trainer.set_data(data.images, data.annotations, channel_axis=data.axes.channel_axis)
    return (yield from train_with_previews(
        trainer, iterations, inbox=inbox, preview_every=preview_every
    ))  # fmt: skip


def _warm_up_optimizer() -> None:
    """Build a throw-away Adam optimiser, off the GUI thread.

    The first optimiser of a process imports ``torch._dynamo`` (1.3–2.7 s on
    our 2-core test machine). Done when the panel opens, so that pressing Train does not
    freeze the viewer for that long.
    """
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


class TrainSection(QWidget):
    """Start/stop training; show progress, speed, ETA, loss curves and a live preview."""

    finished = Signal(bool)  # True when the run ended normally (not stopped, no error)
    model_file_requested = Signal()

    def __init__(self, viewer: napari.viewer.Viewer, state: SpocoState) -> None:
        super().__init__()
        self.viewer, self.state = viewer, state
        self.settings = TrainSettings()
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.reset_button = QPushButton("Start over")
        self.progress = QProgressBar()
        self.status = QLabel("No model yet.")
        self.status.setWordWrap(True)
        self.plot = LossPlot()
        buttons = QHBoxLayout()
        for button, key in (
            (self.train_button, "train"),
            (self.stop_button, "stop"),
            (self.reset_button, "reset"),
        ):
            button.setToolTip(TOOLTIPS[key])
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.settings)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        self.train_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.reset_button.clicked.connect(self.reset)
        self.worker: Any = None
        self._inbox: Inbox | None = None
        self._run_start, self._iterations, self._speed = 0, 0, None
        self._preview_region = None
        self._completed = False
        self._pacer = Pacer(self)
        state.model_changed.connect(self._show_model)
        state.annotations_edited.connect(self._annotations_edited)
        state.annotations_edited.connect(self._painting_changed)
        state.pairs_changed.connect(self._painting_changed)
        self.settings.device_box.currentTextChanged.connect(self._device_changed)
        self.settings.size_box.currentTextChanged.connect(self._network_chosen)
        self._device_changed(self.settings.device_box.currentText())
        self._network_chosen(self.settings.size_box.currentText())
        self._update_buttons()
        # A plain daemon thread, not a napari worker: it reports nothing, and a Qt pool
        # thread still running when the viewer closes (within seconds of opening) tried
        # to signal a deleted object and aborted Python at exit.
        threading.Thread(target=_warm_up_optimizer, name="spoco-warm-up", daemon=True).start()

    # ------------------------------------------------------------------ start / stop
    def start(self) -> None:
        """Check the annotations, build or continue the trainer and start the worker."""
        if self.state.training:
            return
        if self.state.busy:
            show_info("Wait for the segmentation to finish, then press Train.")
            return
        try:
            data = self.state.training_data()
            trainer = self._prepare_trainer(data)
            for image in data.images:
                shape = np.shape(image)
                spatial = [n for n, a in zip(shape, data.axes.spec, strict=True) if a != "C"]
                check_image_size(tuple(spatial), trainer.config.object_scale)
        except (ValueError, TypeError) as error:
            show_warning(str(error))
            return
        for warning in training_warnings(trainer.config, data.annotations):
            show_warning(warning)
        self.state.trainer = trainer
        self._inbox = Inbox()
        self._post_preview()
        self._iterations = trainer.config.iterations
        self._run_start = trainer.step
        self.progress.setRange(0, self._iterations)
        self.progress.setValue(0)
        self.worker = start_worker(
            self,
            _training_job,
            trainer,
            data,
            self._iterations,
            self._inbox,
            self.settings.preview_every.value(),
            on_yield=self._on_update,
            on_return=self._on_return,
            on_finish=self._on_finish,
            progress={"total": self._iterations, "desc": "SPOCO training"},
        )
        self.state.track(self.worker)
        self.state.training = True
        self.state.training_changed.emit(True)
        self._camera().events.connect(self._view_changed)
        self.viewer.dims.events.current_step.connect(self._view_changed)
        self._update_buttons()
        self.status.setText(f"Training on {data.n_objects} objects in {len(data.images)} image(s)…")

    def _prepare_trainer(self, data: TrainingData) -> Trainer:
        """Continue the current trainer, fine-tune a loaded model or start a new network."""
        trainer = self.state.trainer
        if trainer is not None:
            _check_model_fits(trainer.config.model, data, "current model", "press 'Start over'")
            config = self.settings.build_config(data)
            trainer.reconfigure(replace(config, model=trainer.config.model))
            return trainer
        checkpoint = self.state.loaded_checkpoint
        builtin = self.state.loaded_builtin
        if (
            checkpoint is not None
            and builtin is not None
            and not _fits(checkpoint.config.model, data)
        ):
            # The default choice meets images it cannot read: a new network, as a user expects.
            show_info(
                f"The {BUILTIN_MODELS[builtin].label} reads 2D single-channel images; "
                f"training a new medium network for these {data.channels}-channel "
                f"{data.axes.spatial_dims}D images."
            )
            checkpoint = None
            self.settings.follow_recipe(fine_tune=False)
        elif checkpoint is not None:
            _check_model_fits(checkpoint.config.model, data, "loaded model", "choose a new network")
        config = self.settings.build_config(data, start=checkpoint)
        device = self.settings.device_box.currentText()
        return Trainer(config, device=device, checkpoint=checkpoint)

    def _camera(self) -> Any:
        """Return the canvas camera (``viewer.scene.camera`` since napari 0.9)."""
        return getattr(self.viewer, "scene", self.viewer).camera

    def _network_chosen(self, text: str) -> None:
        builtin = self.settings.builtin_choice()
        if text == FROM_FILE:
            self.model_file_requested.emit()
            self._show_model()  # back to the loaded file, or a new network if none was chosen
        elif builtin is not None and self.state.loaded_builtin != builtin:
            try:
                checkpoint = load_model_source(builtin)
            except (ValueError, FileNotFoundError) as error:
                show_warning(f"Could not load the {text}: {error}")
                return
            self.state.load(checkpoint, builtin=builtin)
        elif text.startswith("new ") and self.state.loaded_checkpoint is not None:
            self.state.load(None)  # a new network replaces the loaded model

    def _device_changed(self, name: str) -> None:
        self.state.device = name

    def stop(self) -> None:
        """Ask the trainer to stop after the current step (the worker then returns)."""
        if self.state.trainer is not None and self.state.training:
            self.state.trainer.request_stop()
            self.status.setText("Stopping after this step…")

    def reset(self) -> None:
        """Forget the current network (and a loaded model file)."""
        if self.state.training:
            show_info("Stop the training first.")
            return
        self.plot.set_history([])
        self.state.load(None)
        self._network_chosen(self.settings.size_box.currentText())  # back to the chosen start

    # ------------------------------------------------------------------ worker slots
    def _on_update(self, update: StepReport) -> None:
        record = update.record
        done = record.step - self._run_start
        self.progress.setValue(done)
        speed = record.seconds_per_step
        self._speed = speed if self._speed is None else 0.9 * self._speed + 0.1 * speed
        remaining = (self._iterations - done) * self._speed
        self.status.setText(
            f"step {record.step}  ·  loss {record.losses['total']:.3f}  ·  "
            f"{1 / max(self._speed, 1e-9):.2f} it/s  ·  ETA {_duration(remaining)}"
        )
        self.plot.append(record.to_dict())
        if self.plot.needs_redraw():
            self._pacer.submit("loss plot", self.plot.draw)
        if update.preview is not None:
            self._show_preview(update.preview)

    def _show_preview(self, preview: Any) -> None:
        pair = self.state.chosen_pair()
        if pair is None:
            return
        region = self._preview_region
        if region is None or region.offset != preview.offset:
            return
        lead = (1,) if region.time_index is not None else ()
        placement = region.placement(pair.image, pair.axes)
        rgb = preview.rgb.reshape(lead + preview.rgb.shape)
        instances = preview.instances.reshape(lead + preview.instances.shape)
        self._pacer.submit(
            "preview embedding",
            lambda: self._show_preview_layer(
                pair, "preview", rgb, "image", placement=placement, rgb=True, opacity=0.6
            ),
        )
        self._pacer.submit(
            "preview instances",
            lambda: self._show_preview_layer(
                pair, "preview instances", instances, "labels", placement=placement
            ),
        )

    def _show_preview_layer(
        self, pair: Any, role: str, data: Any, kind: str, **properties: Any
    ) -> None:
        """Update a preview layer; after adding one, give the brush back to the annotation.

        napari selects every new layer, and a user painting while training
        expects to keep painting. Selected in a later turn (see :class:`Pacer`).
        """
        added = result_layer(self.viewer, pair.image.name, role) is None
        show_result(self.viewer, pair.image.name, role, data, kind, **properties)

        def select_annotation() -> None:
            if pair.annotation in self.viewer.layers:  # it may have gone in the meantime
                self.viewer.layers.selection.active = pair.annotation

        if added:
            self._pacer.submit("select annotation", select_annotation)

    def _on_return(self, result: TrainResult) -> None:
        word = "Stopped" if result.stopped else "Finished"
        self.status.setText(f"{word} at step {result.step} ({result.steps_done} steps this run).")
        self._completed = not result.stopped

    def _on_finish(self) -> None:
        """After return or error: release the panel, then announce how the run ended."""
        self.state.training = False
        self.plot.draw()
        self.worker = None
        self._camera().events.disconnect(self._view_changed)
        self.viewer.dims.events.current_step.disconnect(self._view_changed)
        self.state.training_changed.emit(False)
        self._update_buttons()
        self.state.model_changed.emit()
        completed, self._completed = self._completed, False
        self.finished.emit(completed)

    def _annotations_edited(self) -> None:
        """Hand new strokes to the running training (used from its next step)."""
        if not self.state.training or self._inbox is None:
            return
        try:
            data = self.state.training_data()
        except (ValueError, TypeError):
            return  # e.g. the only object was erased: keep training on the last good data
        self._inbox.post_data(data.images, data.annotations, channel_axis=data.axes.channel_axis)

    def _painting_changed(self) -> None:
        """Let the recipe's steps follow the painting (more where painted objects touch)."""
        self.settings.follow_recipe(painting_touches=self.state.painting_says_touch())

    # ------------------------------------------------------------------ preview region
    @qdebounced(timeout=400)
    def _view_changed(self, *_: Any) -> None:
        self._post_preview()

    def _post_preview(self) -> None:
        pair = self.state.chosen_pair()
        self._preview_region = None
        if self._inbox is None or pair is None or self.settings.preview_every.value() == 0:
            return
        region = visible_region(self.viewer, pair.image, pair.axes)
        self._preview_region = region
        crop = region.crop(pair.image.data, pair.axes)
        self._inbox.post_preview(PreviewRequest(crop, region.offset, pair.axes.channel_axis))

    # ------------------------------------------------------------------ display
    def _show_model(self) -> None:
        path, builtin = self.state.loaded_path, self.state.loaded_builtin
        if path:
            self.settings.show_model(f"model file: {path.name}")
        elif builtin:
            self.settings.show_model(BUILTIN_MODELS[builtin].label)
        elif self.state.trainer is None:
            self.settings.show_model(None)
        trainer = self.state.trainer
        start = trainer.config if trainer is not None else None
        start = start or getattr(self.state.loaded_checkpoint, "config", None)
        self.settings.follow_recipe(fine_tune=start is not None)
        self.settings.show_margins(start.loss if start is not None else None)
        if trainer is None and self.state.loaded_checkpoint is None:
            self.status.setText("No model yet: the next training starts a new network.")
        elif trainer is None and builtin is not None:
            self.plot.set_history([])
            self.status.setText(
                f"{BUILTIN_MODELS[builtin].label}: Segment works before you paint; paint a few "
                "objects and press Train to fine-tune it on your images."
            )
        elif trainer is None:
            history = self.state.loaded_checkpoint.history
            self.plot.set_history(history)
            self.status.setText("Loaded model: press Train to fine-tune it, or segment with it.")
        self._update_buttons()

    def _update_buttons(self) -> None:
        training = self.state.training
        self.train_button.setEnabled(not training)
        self.train_button.setText("Continue training" if self.state.trainer else "Train")
        self.stop_button.setEnabled(training)
        self.reset_button.setEnabled(not training and self.state.trainer is not None)
        self.settings.size_box.setEnabled(self.state.trainer is None)
        self.settings.device_box.setEnabled(self.state.trainer is None)


def _fits(model: ModelConfig, data: TrainingData) -> bool:
    return model.reads(data.axes.spatial_dims, data.channels)


def _check_model_fits(model: ModelConfig, data: TrainingData, which: str, remedy: str) -> None:
    """Refuse images whose dimensionality or channel count the model cannot read."""
    try:
        model.check_reads(
            data.axes.spatial_dims, data.channels, what="these images", model=f"The {which}"
        )
    except ValueError as error:
        raise ValueError(f"{error}: {remedy}.") from None


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
