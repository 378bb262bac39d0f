"""Score a network on held-out images while it trains, to choose checkpoints by accuracy.

Long runs (a generalist takes hours) need a number that says when to stop and
which checkpoint to keep; the training loss does not, because it falls long
after segmentation has stopped improving. AP@0.5 on images never trained on does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .config import LossConfig, SegmentConfig
from .metrics import average_precision
from .model import EmbeddingUNet
from .prediction import predict
from .segmentation import segment_prediction

__all__ = ["ValidationSet", "validation_scores"]


@dataclass(frozen=True)
class ValidationSet:
    """Held-out images with dense ground truth, each with the scale it is predicted at.

    ``scales`` are the resize factors that bring each image's objects to the
    network's reference size (from the ground truth: this measures the
    network, not the size estimate); ``names`` label the per-image scores.
    """

    names: Sequence[str]
    images: Sequence[ArrayLike]
    labels: Sequence[ArrayLike]
    scales: Sequence[float]
    channel_axis: int | None = None

    def __post_init__(self) -> None:
        counts = {len(self.names), len(self.images), len(self.labels), len(self.scales)}
        if len(counts) != 1:
            raise ValueError("a validation set needs one name, label image and scale per image")
        if not self.images:
            raise ValueError("a validation set needs at least one image")


def validation_scores(
    model: EmbeddingUNet,
    data: ValidationSet,
    *,
    loss: LossConfig | None = None,
    segment_config: SegmentConfig | None = None,
) -> dict[str, float]:
    """AP@0.5 of ``model`` on every image of ``data``, keyed by name, in the given order.

    The model is put in eval mode and returned to the mode it was in, so a
    training loop can call this between steps.
    """
    was_training = model.training
    model.eval()
    try:
        scores = {}
        for name, image, truth, scale in zip(
            data.names, data.images, data.labels, data.scales, strict=True
        ):
            prediction = predict(
                model, image, loss=loss, object_scale=scale, channel_axis=data.channel_axis
            )
            instances = segment_prediction(prediction, segment_config)
            scores[name] = average_precision(np.asarray(truth), instances, threshold=0.5)
        return scores
    finally:
        model.train(was_training)
