"""Training the way a GUI drives it: annotations and the view change while it runs.

:func:`train_with_previews` wraps :meth:`Trainer.steps` and, every few
seconds, segments the region the user is looking at with the current network,
so the viewer can show the embedding and the instances improve live. The GUI
thread hands new annotations and the current view to the training thread
through an :class:`Inbox`.

Why an inbox and not the generator's ``send``: a worker thread delivers one
sent value per step and a newer value replaces an unread one, so a view change
sent just after a paint stroke would silently drop the stroke. The inbox keeps
the latest of each kind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .config import SegmentConfig
from .prediction import Prediction, predict
from .segmentation import segment_prediction
from .training import Trainer, TrainRecord, TrainResult
from .visualize import embeddings_to_rgb

__all__ = [
    "Inbox",
    "Preview",
    "PreviewRequest",
    "StepReport",
    "NewTrainingData",
    "make_preview",
    "train_with_previews",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreviewRequest:
    """A region of an image to segment with the current network.

    Attributes
    ----------
    image : ndarray
        Raw pixels of the region, spatial axes plus an optional channel axis.
    offset : tuple of int
        Position of the region's first pixel in the full image (spatial axes).
    channel_axis : int, optional
        Axis of ``image`` holding channels.
    segment : SegmentConfig
        How to cluster the preview.
    """

    image: NDArray
    offset: tuple[int, ...]
    channel_axis: int | None = None
    segment: SegmentConfig = SegmentConfig()


@dataclass(frozen=True)
class Preview:
    """The network's current view of a region: embedding colours and instances."""

    step: int
    offset: tuple[int, ...]
    rgb: NDArray[np.float32]
    instances: NDArray[np.uint32]
    prediction: Prediction


@dataclass(frozen=True)
class StepReport:
    """One training step's report, with a preview when one was due."""

    record: TrainRecord
    preview: Preview | None = None


@dataclass(frozen=True)
class NewTrainingData:
    """New training data posted by the GUI: arguments of :meth:`Trainer.set_data`."""

    images: list[NDArray]
    annotations: list[NDArray]
    channel_axis: int | None = None


class Inbox:
    """Thread-safe hand-over of the latest annotations and preview request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: NewTrainingData | None = None
        self._preview: PreviewRequest | None = None

    def post_data(
        self,
        images: Sequence[NDArray],
        annotations: Sequence[NDArray],
        *,
        channel_axis: int | None = None,
    ) -> None:
        """Replace the training data from the next step on (arrays must not change later)."""
        with self._lock:
            self._data = NewTrainingData(list(images), list(annotations), channel_axis)

    def take_data(self) -> NewTrainingData | None:
        """Return the data posted since the last call, or None."""
        with self._lock:
            data, self._data = self._data, None
        return data

    def post_preview(self, request: PreviewRequest | None) -> None:
        """Preview this region from now on (None: stop previewing)."""
        with self._lock:
            self._preview = request

    @property
    def preview(self) -> PreviewRequest | None:
        """The current preview request."""
        with self._lock:
            return self._preview


def make_preview(trainer: Trainer, request: PreviewRequest) -> Preview:
    """Segment ``request``'s region with the trainer's current network."""
    config = trainer.config
    prediction = predict(
        trainer.model,
        request.image,
        loss=config.loss,
        object_scale=config.object_scale,
        channel_axis=request.channel_axis,
        device=trainer.device,
    )
    return Preview(
        step=trainer.step,
        offset=request.offset,
        rgb=embeddings_to_rgb(prediction.embeddings),
        instances=segment_prediction(prediction, request.segment),
        prediction=prediction,
    )


def train_with_previews(
    trainer: Trainer,
    iterations: int | None = None,
    *,
    inbox: Inbox | None = None,
    preview_every: float = 5.0,
    checkpoint_path: str | None = None,
) -> Generator[StepReport, None, TrainResult]:
    """Run :meth:`Trainer.steps`, yielding one :class:`StepReport` per report.

    Data posted to ``inbox`` is used from the next step on. When ``inbox``
    holds a preview request, a preview is attached to the first update at
    least ``preview_every`` seconds after the previous one, and to the last.
    A preview that fails (e.g. a region too small for the network) is logged
    and skipped: it must never stop the training.
    """
    total = trainer.config.iterations if iterations is None else iterations
    last_step = trainer.step + total
    steps = trainer.steps(iterations, checkpoint_path=checkpoint_path)
    last_preview = time.monotonic()
    while True:
        # Between steps the generator is suspended, so the data can be swapped here.
        update = inbox.take_data() if inbox is not None else None
        if update is not None:
            trainer.set_data(update.images, update.annotations, channel_axis=update.channel_axis)
        try:
            record = next(steps)
        except StopIteration as finished:
            return finished.value
        request = inbox.preview if inbox is not None else None
        preview = None
        due = time.monotonic() - last_preview >= preview_every
        if request is not None and (due or record.step >= last_step):
            try:
                preview = make_preview(trainer, request)
            except (ValueError, TypeError) as error:
                logger.warning("preview skipped: %s", error)
            last_preview = time.monotonic()
        yield StepReport(record, preview)
