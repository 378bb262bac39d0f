"""What the panel's sections share: annotation pairs, the trainer, cached predictions.

An annotation Labels layer is linked to its image through its metadata
(``layer.metadata["spoco"]``: the image's name and id, axes, background id,
whether to train on it), so the link survives re-ordering, renaming, saving and
re-opening; the image keeps its id in its own ``metadata["spoco"]``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from psygnal import Signal

from ..core.annotation import object_ids
from ..core.axes import Axes, nonempty_frames
from ..core.image import check_image_values
from ..core.recipe import touching_objects

if TYPE_CHECKING:
    import napari

    from ..core.checkpoint import Checkpoint
    from ..core.prediction import Prediction
    from ..core.training import Trainer
    from ..core.uncertainty import Doubt

__all__ = ["CachedPrediction", "Pair", "SpocoState", "TrainingData", "link_annotation"]

METADATA_KEY = "spoco"


@dataclass(frozen=True)
class Pair:
    """An image layer and the annotation layer painted on it."""

    image: Any
    annotation: Any
    axes: Axes
    background_id: int | None
    use: bool

    def object_count(self) -> int:
        """Annotated objects (background scribbles excluded)."""
        return len(object_ids(self.annotation.data, background_id=self.background_id))

    def painted_objects(self) -> list[np.ndarray]:
        """Return the annotation's painted frames, objects only (background scribbles as 0)."""
        labels = np.asarray(self.annotation.data)
        frames = [labels if t is None else labels[t] for t in nonempty_frames(labels, self.axes)]
        if self.background_id is None:
            return frames
        return [np.where(frame == self.background_id, 0, frame) for frame in frames]


@dataclass(frozen=True)
class TrainingData:
    """Copies of the annotated frames, made on the main thread before training starts."""

    images: list[np.ndarray]
    annotations: list[np.ndarray]
    axes: Axes
    channels: int
    n_objects: int
    background_id: int | None


@dataclass
class CachedPrediction:
    """A prediction kept for instant re-clustering, with what it was made from."""

    prediction: Prediction
    image_name: str
    model_step: int
    time_index: int | None = None


def link_annotation(
    annotation: Any, image: Any, axes: str, *, background_id: int | None = None
) -> None:
    """Record in ``annotation``'s metadata that it annotates ``image`` read as ``axes``."""
    annotation.metadata[METADATA_KEY] = {
        "image": image.name,
        "image_id": image_identity(image.metadata),
        "axes": axes,
        "background_id": background_id,
        "use": True,
    }


def image_identity(metadata: dict) -> str:
    """Return the id under which annotations find an image, set once in its ``metadata``.

    Links by name alone break when the image is renamed, or when napari renames
    an opened image because one of the same name is already open ("nuclei [1]").
    """
    own = metadata.setdefault(METADATA_KEY, {})
    return own.setdefault("id", uuid.uuid4().hex)


def _linked_image(layers: Any, link: dict) -> Any | None:
    """Return the image layer ``link`` points to, or None.

    By id, preferring the linked name among layers that share one (a duplicated
    layer copies its metadata); else by name, for links made before images had ids.
    """
    images = [layer for layer in layers if isinstance(layer, Image)]
    wanted = link.get("image_id")
    same_id = [i for i in images if wanted and i.metadata.get(METADATA_KEY, {}).get("id") == wanted]
    named = [i for i in images if i.name == link.get("image")]
    return next(iter([i for i in same_id if i in named] + same_id + named), None)


class SpocoState:
    """Shared state of one SPOCO panel (one per viewer, owned by the main widget)."""

    pairs_changed = Signal()
    annotations_edited = Signal()
    model_changed = Signal()
    training_changed = Signal(bool)
    doubts_changed = Signal(str)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.trainer: Trainer | None = None
        self.loaded_checkpoint: Checkpoint | None = None
        self.loaded_path: Path | None = None
        self.loaded_builtin: str | None = None  # name of a built-in model, when one is loaded
        self.training = False
        self.busy = False  # a prediction or clustering job is running
        self.device = "auto"  # device for a loaded model (the trainer keeps its own)
        self.predictions: dict[str, CachedPrediction] = {}
        #: Name of the annotation layer chosen in the Annotate section: the other
        #: sections act on its pair (see :meth:`chosen_pair`).
        self.chosen_annotation: str | None = None
        #: Instances most likely wrong after the last segmentation, worst first, by image
        #: name: (time index or None, Doubt). The Correct section lists them.
        self.doubts: dict[str, list[tuple[int | None, Doubt]]] = {}
        #: This panel's running jobs, which closing the panel stops and waits for.
        self.workers: list[Any] = []

    def track(self, worker: Any) -> None:
        """Keep ``worker`` in :attr:`workers` until it finishes, so the list does not grow."""
        self.workers.append(worker)

        def forget() -> None:
            if worker in self.workers:
                self.workers.remove(worker)

        worker.finished.connect(forget)

    # ------------------------------------------------------------------ model
    def inference_model(self) -> tuple[Any, Any, Any, Any] | None:
        """``(model, teacher, train_config, device)`` to predict with, or None without a model.

        The trainer's network while one exists, else the loaded model file.
        """
        if self.trainer is not None:
            trainer = self.trainer
            return trainer.model, trainer.teacher, trainer.config, trainer.device
        if self.loaded_checkpoint is None:
            return None
        from ..core.checkpoint import network_from_checkpoint
        from ..core.device import resolve_device

        checkpoint = self.loaded_checkpoint
        model = network_from_checkpoint(checkpoint)
        teacher = None
        if checkpoint.teacher_state is not None:
            teacher = network_from_checkpoint(checkpoint, teacher=True)
        return model, teacher, checkpoint.config, resolve_device(self.device)

    def load(self, checkpoint: Checkpoint | None, *, path: Path | None = None,
             builtin: str | None = None) -> None:  # fmt: skip
        """Make ``checkpoint`` (from a file or a built-in model) the model; None: no model."""
        self.trainer = None
        self.loaded_checkpoint = checkpoint
        self.loaded_path = path
        self.loaded_builtin = builtin
        self.model_changed.emit()

    def model_step(self) -> int:
        """Training steps behind the current model (0 without one)."""
        if self.trainer is not None:
            return self.trainer.step
        return self.loaded_checkpoint.step if self.loaded_checkpoint is not None else 0

    # ------------------------------------------------------------------ pairs
    def pairs(self) -> list[Pair]:
        """Every annotation layer linked to an image that is still open."""
        found = []
        for layer in self.viewer.layers:
            link = layer.metadata.get(METADATA_KEY) if isinstance(layer, Labels) else None
            image = _linked_image(self.viewer.layers, link) if link else None
            if image is None:
                continue
            found.append(
                Pair(
                    image=image,
                    annotation=layer,
                    axes=Axes(link["axes"]),
                    background_id=link.get("background_id"),
                    use=bool(link.get("use", True)),
                )
            )
        return found

    def chosen_pair(self) -> Pair | None:
        """Return the pair of the annotation layer chosen in the Annotate section, or None."""
        return next((p for p in self.pairs() if p.annotation.name == self.chosen_annotation), None)

    def pair_for(self, annotation: Any) -> Pair | None:
        """Return the pair whose annotation layer is ``annotation``.

        Compared with ``==``: a panel opened from the Plugins menu sees layers through
        napari's public-API proxies, a new proxy object at every access.
        """
        return next((p for p in self.pairs() if p.annotation == annotation), None)

    def painting_says_touch(self) -> bool:
        """Whether the objects painted in the pairs in use touch, by the recipe's rule.

        Reads the annotations only, so that it can follow every stroke.
        """
        frames = [frame for p in self.pairs() if p.use for frame in p.painted_objects()]
        return touching_objects(frames)

    def training_data(self) -> TrainingData:
        """Copy the annotated frames of every pair in use.

        Raises
        ------
        ValueError
            With a message for the user: nothing to train on, or pairs that
            disagree in dimensionality or channels.
        """
        pairs = [p for p in self.pairs() if p.use]
        if not pairs:
            raise ValueError(
                "No annotation to train on: choose an image, press 'New annotation layer' "
                "and paint a few objects."
            )
        images, annotations, objects, layouts = [], [], 0, set()
        for pair in pairs:
            image_data, labels = pair.image.data, pair.annotation.data
            pair.axes.check_labels(np.shape(image_data), np.shape(labels))
            labels = np.asarray(labels)
            for t in nonempty_frames(labels, pair.axes):
                frame_image = np.asarray(image_data if t is None else image_data[t])
                frame_labels = np.array(labels if t is None else labels[t], copy=True)
                check_image_values(frame_image, name=f"image {pair.image.name!r}")
                if not object_ids(frame_labels, background_id=pair.background_id).size:
                    continue
                images.append(frame_image)
                annotations.append(frame_labels)
                objects += len(object_ids(frame_labels, background_id=pair.background_id))
                channels = pair.axes.channels(np.shape(image_data))
                layouts.add((pair.axes.frame_spec, channels, pair.background_id))
        if not images:
            raise ValueError(
                "No annotated object yet: select the annotation layer, press 'New object' "
                "and paint one object completely (0 means 'not annotated')."
            )
        if len(layouts) > 1:
            raise ValueError(
                "The images used for training must agree in axes, channels and background "
                f"label; got {sorted(layouts, key=str)}. Untick the pairs that differ."
            )
        frame_spec, channels, background_id = layouts.pop()
        return TrainingData(images, annotations, Axes(frame_spec), channels, objects, background_id)
