"""Segment: predict embeddings of a whole image in a worker, cluster them, show the layers."""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from napari.utils import progress
from napari.utils.notifications import show_info, show_warning
from psygnal import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import ensure_main_thread, qdebounced

from ..core.axes import Axes, guess_axes
from ..core.clustering_methods import CLUSTERING_METHODS
from ..core.prediction import augment_or_default
from ..core.settings import AUGMENT_CHOICES
from ._jobs import DOUBTS_LISTED, blockwise_job, cluster_job, predict_job
from ._layers import LayerComboBox, result_layer, show_result
from ._pacer import Pacer
from ._run import start_worker
from ._state import CachedPrediction, SpocoState
from ._tooltips import TOOLTIPS
from .segment_settings import SegmentSettings

if TYPE_CHECKING:
    import napari


__all__ = ["SegmentSection"]

#: The temporary folder behind each layer shown lazily from a block-wise result, by the
#: layer's unique id (the panel may see layers through napari's short-lived proxies). A
#: folder lives as long as its layer shows it: a new result or removing the layer frees
#: it, and TemporaryDirectory's own finaliser removes what is left at exit.
_SCRATCH_OF_LAYER: dict[Any, tempfile.TemporaryDirectory] = {}


def _free_scratch(event: Any) -> None:
    """Remove the folder a removed layer read its data from."""
    scratch = _SCRATCH_OF_LAYER.pop(event.value.unique_id, None)
    if scratch is not None:
        scratch.cleanup()


class SegmentSection(QWidget):
    """Predict, cluster and re-cluster; results appear as layers named after the image."""

    segmented = Signal(str)  # image layer name

    def __init__(self, viewer: napari.viewer.Viewer, state: SpocoState) -> None:
        super().__init__()
        self.viewer, self.state = viewer, state
        viewer.layers.events.removed.connect(_free_scratch)
        self.image_box = LayerComboBox(viewer, Image)
        self.scope = QComboBox()
        self.scope.addItems(["current time point", "all time points"])
        self.augment = QComboBox()  # each item carries its AUGMENT_CHOICES value
        for name, value in AUGMENT_CHOICES.items():
            self.augment.addItem("auto (on in 2D)" if value is None else name, value)
        self.settings = SegmentSettings()
        self.predict_button = QPushButton("Segment")
        self.recluster_button = QPushButton("Re-cluster")
        self.progress = QProgressBar()
        self.status = QLabel("Train or load a model, then press Segment.")
        self.status.setWordWrap(True)
        self._pacer = Pacer(self)
        form = QFormLayout()
        form.addRow("Image", self.image_box)
        form.addRow("Time points", self.scope)
        form.addRow("Eight orientations", self.augment)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.recluster_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.settings)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        for widget, key in (
            (self.image_box, "segment_image"),
            (self.scope, "segment_scope"),
            (self.augment, "augment"),
            (self.predict_button, "predict"),
            (self.recluster_button, "recluster"),
        ):
            widget.setToolTip(TOOLTIPS[key])
        self.predict_button.clicked.connect(lambda: self.predict())
        self.recluster_button.clicked.connect(self.recluster)
        self.settings.changed.connect(self._settings_changed)
        self.image_box.currentTextChanged.connect(self._update_controls)
        state.training_changed.connect(self._update_controls)
        self._pbar: Any = None
        self._teachers: dict[str, list] = {}
        self._update_controls()

    # ------------------------------------------------------------------ helpers
    def _axes_of(self, layer: Image) -> Axes:
        linked = [p for p in self.state.pairs() if p.image is layer]
        if linked:
            return linked[0].axes
        return Axes(guess_axes(tuple(layer.data.shape), rgb=layer.rgb))

    def _painted(self, layer: Image) -> tuple[list[np.ndarray], int | None]:
        """Copy the annotations painted on ``layer``; return them with their background id."""
        linked = [p for p in self.state.pairs() if p.image == layer]
        annotations = [np.array(p.annotation.data) for p in linked]
        return annotations, linked[0].background_id if linked else None

    def _update_controls(self, *_: Any) -> None:
        layer = self.image_box.layer()
        has_time = layer is not None and self._axes_of(layer).has_time
        self.scope.setEnabled(has_time)
        idle = not self.state.training and not self.state.busy
        self.predict_button.setEnabled(idle)
        self.recluster_button.setEnabled(
            idle and layer is not None and layer.name in self._teachers
        )

    def _set_busy(self, busy: bool) -> None:
        self.state.busy = busy
        self._update_controls()

    # ------------------------------------------------------------------ predict
    def predict(self, layer: Image | None = None) -> Any:
        """Embed the chosen image (or ``layer``) in a worker, then cluster it."""
        if self.state.training or self.state.busy:
            show_info("Wait until training or the current segmentation has finished.")
            return None
        layer = layer or self.image_box.layer()
        found = self.state.inference_model()
        if layer is None:
            show_warning("Open an image to segment first.")
            return None
        if found is None:
            show_warning("No model yet: paint a few objects and press Train, or load a model file.")
            return None
        model, teacher, config, device = found
        axes = self._axes_of(layer)
        channels = axes.channels(tuple(layer.data.shape))
        try:
            model.config.check_reads(
                axes.spatial_dims, channels, what=f"{layer.name!r} ({axes.spec})", model="The model"
            )
        except ValueError as error:
            show_warning(f"{error}. Check its axes.")
            return None
        augment = augment_or_default(self.augment.currentData(), axes.spatial_dims)
        if self._is_large(layer, axes):
            return self._predict_blockwise(layer, axes, config, device, augment)
        frames = self._frames(layer, axes)
        method = CLUSTERING_METHODS[self.settings.method.currentText()]
        use_teacher = teacher if method.needs_teacher else None
        self.image_box.set_layer(layer)
        self._set_busy(True)
        self._pbar = progress(total=100, desc=f"SPOCO: segmenting {layer.name}")
        self.progress.setRange(0, 100)
        self.status.setText(f"Predicting {layer.name}…")
        worker = start_worker(
            self, predict_job, model, use_teacher, config, frames, axes.channel_axis, device,
            self._report, self._painted(layer), augment,
            on_return=lambda results: self._predicted(layer, axes, results),
            on_error=lambda _: self._failed(),
        )  # fmt: skip
        self.state.track(worker)
        return worker

    @staticmethod
    def _is_large(layer: Image, axes: Axes) -> bool:
        """Images too big for one prediction in memory take the block-wise path."""
        from .. import bigdata

        if axes.has_time:
            return False
        spatial = [n for n, a in zip(layer.data.shape, axes.spec, strict=True) if a != "C"]
        return int(np.prod(spatial)) > bigdata.LARGE_IMAGE_PIXELS

    def _predict_blockwise(
        self, layer: Image, axes: Axes, config: Any, device: Any, augment: bool
    ) -> Any:
        """Segment block by block; the result is a lazily shown zarr-backed layer."""
        checkpoint = (
            self.state.trainer.checkpoint() if self.state.trainer else self.state.loaded_checkpoint
        )
        try:
            segment_config = self.settings.config()
        except ValueError as error:
            show_warning(str(error))
            return None
        self._set_busy(True)
        self._pbar = progress(total=100, desc=f"SPOCO: segmenting {layer.name} block-wise")
        self.status.setText(f"{layer.name} is large: segmenting block by block…")
        scratch = tempfile.TemporaryDirectory(prefix="napari-spoco-")

        def failed() -> None:
            scratch.cleanup()
            self._failed()

        worker = start_worker(
            self, blockwise_job, checkpoint, layer.data, segment_config, axes.channel_axis, device,
            augment, self._report, scratch.name,
            on_return=lambda result: self._blockwise_done(layer, axes, result, scratch),
            on_error=lambda _: failed(),
        )  # fmt: skip
        self.state.track(worker)
        return worker

    def _blockwise_done(
        self, layer: Image, axes: Axes, instances: Any, scratch: tempfile.TemporaryDirectory
    ) -> None:
        import dask.array as da

        self._close_pbar()
        keep = [i for i, a in enumerate(axes.spec) if a != "C"]
        placement = {
            "scale": layer.scale if layer.rgb else np.asarray(layer.scale)[keep],
            "translate": layer.translate if layer.rgb else np.asarray(layer.translate)[keep],
        }
        lazy = da.from_zarr(instances)
        shown = show_result(
            self.viewer, layer.name, "instances", lazy, "labels", placement=placement
        )
        previous = _SCRATCH_OF_LAYER.get(shown.unique_id)
        _SCRATCH_OF_LAYER[shown.unique_id] = scratch
        if previous is not None:  # the layer no longer reads the old result
            previous.cleanup()
        self.status.setText(
            f"{layer.name}: segmented block-wise; the instances are read from "
            f"{instances.store} as you browse (File > Save Selected Layers keeps them)."
        )
        self._set_busy(False)
        self.segmented.emit(layer.name)

    def _frames(self, layer: Image, axes: Axes) -> list[tuple[int | None, np.ndarray]]:
        if not axes.has_time:
            return [(None, np.asarray(layer.data))]
        if self.scope.currentText() == "all time points":
            return [(t, np.asarray(layer.data[t])) for t in range(layer.data.shape[0])]
        t = int(
            np.clip(round(layer.world_to_data(self.viewer.dims.point)[0]), 0, len(layer.data) - 1)
        )
        return [(t, np.asarray(layer.data[t]))]

    @ensure_main_thread
    def _report(self, done: int, total: int) -> None:
        value = int(100 * done / max(total, 1))
        self.progress.setValue(value)
        if self._pbar is not None:
            self._pbar.n = value
            self._pbar.refresh()

    def _predicted(self, layer: Image, axes: Axes, results: list) -> None:
        step = self.state.model_step()
        cached = [CachedPrediction(p, layer.name, step, t) for t, p, _ in results]
        self.state.predictions[layer.name] = cached
        self._teachers[layer.name] = [teacher for _, _, teacher in results]
        if self.settings.raw_embeddings.isChecked():
            raw = results[-1][1].embeddings
            show_result(self.viewer, layer.name, "raw embeddings", raw, "image", visible=False)
        self._close_pbar()
        self._set_busy(False)
        self.recluster(layer)

    def _failed(self) -> None:
        self._close_pbar()
        self._set_busy(False)
        self.status.setText("Segmentation failed (see the notification).")

    def _close_pbar(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    # ------------------------------------------------------------------ cluster
    @qdebounced(timeout=300)
    def _settings_changed(self) -> None:
        if self.settings.is_fast() and not self.state.busy:
            self.recluster()

    def recluster(self, layer: Image | None = None) -> Any:
        """Cluster the cached embeddings of the image with the current settings."""
        layer = layer or self.image_box.layer()
        if layer is None or layer.name not in self.state.predictions or self.state.busy:
            return None
        try:
            config = self.settings.config()
        except ValueError as error:
            show_warning(str(error))
            return None
        teachers = self._teachers.get(layer.name, [])
        if CLUSTERING_METHODS[config.method].needs_teacher and any(t is None for t in teachers):
            show_info(f"{config.method} clustering needs the teacher: press Segment again.")
            return None
        cached = self.state.predictions[layer.name]
        self._set_busy(True)
        self.status.setText(f"Clustering {layer.name} ({config.method})…")
        worker = start_worker(
            self, cluster_job, cached, config, teachers, self._painted(layer),
            on_return=lambda results: self._clustered(layer, results),
            on_error=lambda _: self._failed(),
        )  # fmt: skip
        self.state.track(worker)
        return worker

    def _clustered(self, layer: Image, results: list) -> None:
        axes = self._axes_of(layer)
        keep = [i for i, a in enumerate(axes.spec) if a != "C"]
        scale = layer.scale if layer.rgb else np.asarray(layer.scale)[keep]
        translate = layer.translate if layer.rgb else np.asarray(layer.translate)[keep]
        placement = {"scale": scale, "translate": translate}
        shape = axes.labels_shape(tuple(layer.data.shape))
        instances, mask, rgb, doubt = self._full_arrays(layer.name, shape, results)
        # Ids are 1..n per frame (core.clustering.remove_small_segments), so max is the count.
        count = sum(int(frame[1].max(initial=0)) for frame in results)
        doubts = sorted(
            ((frame[0], d) for frame in results for d in frame[5]), key=lambda item: -item[1].score
        )[:DOUBTS_LISTED]
        # New layers cost ~100 ms each on the main thread: one per event-loop turn.
        self._pacer.submit(f"{layer.name} embeddings", lambda: show_result(
            self.viewer, layer.name, "embeddings", rgb, "image", placement=placement, rgb=True,
            visible=False,
        ))  # fmt: skip
        self._pacer.submit(f"{layer.name} foreground", lambda: show_result(
            self.viewer, layer.name, "foreground", mask, "labels", placement=placement,
            opacity=0.3, visible=False,
        ))  # fmt: skip
        self._pacer.submit(f"{layer.name} uncertainty", lambda: show_result(
            self.viewer, layer.name, "uncertainty", doubt, "image", placement=placement,
            colormap="magma", contrast_limits=(0.0, 1.0), blending="additive", visible=False,
        ))  # fmt: skip

        def show_instances() -> None:
            show_result(self.viewer, layer.name, "instances", instances, "labels",
                        placement=placement)  # fmt: skip
            for role in ("preview", "preview instances"):
                preview = result_layer(self.viewer, layer.name, role)
                if preview is not None:
                    preview.visible = False
            self.status.setText(f"{count} instances in {layer.name}.")
            self._set_busy(False)
            self.state.doubts[layer.name] = doubts
            self.segmented.emit(layer.name)
            self.state.doubts_changed.emit(layer.name)

        self._pacer.submit(f"{layer.name} instances", show_instances)

    def _full_arrays(self, name: str, shape: tuple[int, ...], results: list) -> tuple:
        """Instances, mask, colours and uncertainty at the image's size; frames fill their slot."""
        if results[0][0] is None:
            return results[0][1:5]
        old = result_layer(self.viewer, name, "instances")
        instances = np.zeros(shape, dtype=np.uint32)
        if old is not None and old.data.shape == shape:
            instances = np.array(old.data, dtype=np.uint32)
        mask = np.zeros(shape, dtype=np.uint8)
        rgb = np.zeros((*shape, 3), dtype=np.float32)
        doubt = np.zeros(shape, dtype=np.float32)
        for t, *arrays, _ in results:
            instances[t], mask[t], rgb[t], doubt[t] = arrays
        return instances, mask, rgb, doubt
