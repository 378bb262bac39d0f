"""From a trained model and a raw image to instances: the path every front end takes.

:func:`predict` runs the network (tiled) and splits its output into the
embedding and the head maps; :func:`segment_prediction` turns that into an
instance label image as a :class:`~napari_spoco.core.config.SegmentConfig`
says. The napari widgets, the command line and the block-wise big-data path
all call these two, so a change here changes every front end alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .annotation import median_object_diameter, object_scale_from_annotations
from .clustering import foreground_probability, remove_small_segments, segment
from .config import LossConfig, SegmentConfig, TrainConfig
from .model import EmbeddingUNet, split_output
from .prediction import predict_image

__all__ = [
    "Prediction",
    "estimate_object_diameter",
    "predict",
    "prediction_scale",
    "segment_prediction",
    "split_at_cores",
]


@dataclass(frozen=True)
class Prediction:
    """What the network says about every pixel.

    Attributes
    ----------
    embeddings : ndarray of float32, shape (D, *spatial)
        Pixel embeddings.
    foreground : ndarray of float32, shape (*spatial), or None
        Foreground probability from the foreground head, if the model has one.
    distance : ndarray of float32, shape (*spatial), or None
        Normalised inner distance from the distance head, if the model has one.
    delta_v, delta_d : float
        Margins the model was trained with.
    """

    embeddings: NDArray[np.float32]
    foreground: NDArray[np.float32] | None = None
    distance: NDArray[np.float32] | None = None
    delta_v: float = LossConfig.delta_v
    delta_d: float = LossConfig.delta_d

    @classmethod
    def from_output(
        cls, output: NDArray[np.float32], model: EmbeddingUNet, loss: LossConfig | None = None
    ) -> Prediction:
        """Split raw network output (C, *spatial) into embedding and head probabilities."""
        embeddings, heads = split_output(output, model.config)
        probabilities = {name: _sigmoid(logits) for name, logits in heads.items()}
        loss = loss or LossConfig()
        return cls(
            embeddings=np.ascontiguousarray(embeddings),
            foreground=probabilities.get("foreground"),
            distance=probabilities.get("distance"),
            delta_v=loss.delta_v,
            delta_d=loss.delta_d,
        )


def _sigmoid(logits: NDArray) -> NDArray[np.float32]:
    return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)


def predict(
    model: EmbeddingUNet,
    image: ArrayLike,
    *,
    loss: LossConfig | None = None,
    object_scale: float = 1.0,
    channel_axis: int | None = None,
    **tiling: object,
) -> Prediction:
    """Run ``model`` on a raw image and return its embedding and head maps.

    Parameters
    ----------
    model : EmbeddingUNet
        Trained network.
    image : array_like
        Raw (Y, X) or (Z, Y, X) image, or with a channel axis at ``channel_axis``.
    loss : LossConfig, optional
        Loss settings the model was trained with (their margins guide clustering).
    object_scale : float
        Y/X resize factor used in training (``TrainConfig.object_scale``).
    channel_axis : int, optional
        Axis holding channels, ``None`` for single-channel images.
    **tiling
        ``tile_shape``, ``overlap``, ``batch_size``, ``device``, ``progress`` of
        :func:`napari_spoco.core.prediction.predict_embeddings`.

    Returns
    -------
    Prediction
        At the image's own spatial size.
    """
    output = predict_image(
        model, image, object_scale=object_scale, channel_axis=channel_axis, **tiling
    )
    return Prediction.from_output(output, model, loss)


def segment_prediction(
    prediction: Prediction,
    config: SegmentConfig | None = None,
    *,
    teacher: NDArray[np.float32] | None = None,
    seed: int = 0,
) -> NDArray[np.uint32]:
    """Cluster a prediction into instances labeled 1..n (0 = background).

    The foreground mask comes from the foreground head when the model has
    one (else from the embedding mode); the embeddings are clustered inside
    it; with a distance head, a cluster that holds several object cores (inner
    distance above ``seed_threshold``) is split between them by a watershed
    on the distance, which separates touching objects the embedding merged.

    Parameters
    ----------
    prediction : Prediction
        Output of :func:`predict`.
    config : SegmentConfig, optional
        Method and thresholds; defaults to ``SegmentConfig()``.
    teacher : ndarray, optional
        Teacher embeddings of a second view, for ``method="consistency"``.
    seed : int
        Seed of the random subsampling of the point-clustering methods.

    Returns
    -------
    ndarray of uint32, shape (*spatial)
    """
    config = config or SegmentConfig()
    mask = _foreground_mask(prediction, config)
    delta_d = config.delta_d if config.delta_d is not None else 2 * prediction.delta_d
    params = dict(config.params)
    if config.method == "consistency":
        params["teacher"] = teacher
    labels = segment(
        prediction.embeddings,
        config.method,
        mask,
        delta_v=prediction.delta_v,
        delta_d=delta_d,
        min_size=0,
        seed=seed,
        **params,
    )
    if prediction.distance is not None and config.seed_threshold is not None:
        labels = split_at_cores(labels, prediction.distance, config.seed_threshold)
    return remove_small_segments(labels, config.min_size)


def estimate_object_diameter(
    model: EmbeddingUNet,
    image: ArrayLike,
    *,
    loss: LossConfig | None = None,
    channel_axis: int | None = None,
    segment_config: SegmentConfig | None = None,
    **tiling: object,
) -> float | None:
    """Median object diameter (pixels) in ``image``, measured by segmenting it; None if empty.

    For models without a scale of their own (``TrainConfig.scale_per_image``)
    when nothing is painted and no size is given. The image is segmented at
    its own size; if the objects found are far from the network's reference
    size, it is segmented again at the scale they suggest, where the network
    sees objects of the size it was trained on, and measured again.
    """
    diameter = None
    scale = 1.0
    for _ in range(2):
        prediction = predict(
            model, image, loss=loss, object_scale=scale, channel_axis=channel_axis, **tiling
        )
        instances = segment_prediction(prediction, segment_config)
        measured = median_object_diameter(instances)
        if measured is None:
            return diameter
        diameter = measured
        new_scale = object_scale_from_annotations([], diameter=diameter)
        if 0.8 < new_scale / scale < 1.25:
            break
        scale = new_scale
    return diameter


def prediction_scale(
    model: EmbeddingUNet,
    config: TrainConfig,
    image: ArrayLike,
    *,
    diameter: float | None = None,
    annotations: Sequence[ArrayLike] = (),
    background_id: int | None = None,
    channel_axis: int | None = None,
    **tiling: object,
) -> float:
    """Resize factor to predict ``image`` at: the one rule the panel and the command line share.

    A given ``diameter`` wins, then the model's own training scale. A model
    without one (``config.scale_per_image``, the generalists) takes the size of
    the objects painted in ``annotations``, else the size it measures itself
    (:func:`estimate_object_diameter`), else the reference size.
    """
    if diameter is None and not config.scale_per_image:
        return config.object_scale
    scale = object_scale_from_annotations(
        annotations, diameter=diameter, background_id=background_id
    )
    if scale is None:
        measured = estimate_object_diameter(
            model, image, loss=config.loss, channel_axis=channel_axis, **tiling
        )
        scale = object_scale_from_annotations([], diameter=measured) if measured else 1.0
    return scale


def _foreground_mask(prediction: Prediction, config: SegmentConfig) -> NDArray[np.bool_] | None:
    if config.foreground == "none":
        return None
    if config.foreground == "head" and prediction.foreground is not None:
        return prediction.foreground > config.foreground_threshold
    probability = foreground_probability(
        prediction.embeddings, delta_v=prediction.delta_v, delta_d=prediction.delta_d
    )
    return probability > 0.5


def split_at_cores(
    labels: NDArray[np.integer], distance: NDArray[np.floating], threshold: float
) -> NDArray[np.uint32]:
    """Split every segment that holds several object cores between them.

    A core is a connected region where ``distance > threshold`` inside one
    segment; a segment with two or more is divided by a watershed on
    ``-distance`` from its cores; segments with at most one core are kept.

    Parameters
    ----------
    labels : ndarray of int, shape (*spatial)
        Segments, 0 = background.
    distance : ndarray of float, shape (*spatial)
        Normalised inner distance (1 at object centres).
    threshold : float
        Core level, in (0, 1).

    Returns
    -------
    ndarray of uint32, same shape
        Segments labeled 1..n.
    """
    from skimage.measure import label
    from skimage.segmentation import relabel_sequential, watershed

    labels = np.asarray(labels).astype(np.int64, copy=False)
    cores = (distance > threshold) & (labels > 0)
    # A core that two segments share becomes two markers: cores never merge segments.
    stride = int(labels.max()) + 1
    markers = label(cores, connectivity=1).astype(np.int64) * stride + labels
    markers[~cores] = 0
    markers = relabel_sequential(markers)[0]
    marker_segment = np.zeros(int(markers.max()) + 1, dtype=np.int64)
    marker_segment[markers.ravel()] = labels.ravel()
    cores_per_segment = np.bincount(marker_segment[1:], minlength=stride)
    split = cores_per_segment >= 2
    if not split[1:].any():
        return relabel_sequential(labels)[0].astype(np.uint32)
    region = split[labels]
    flooded = watershed(-distance, np.where(region, markers, 0), mask=region)
    offset = int(labels.max())
    result = np.where(region, flooded + offset, labels)
    return relabel_sequential(result)[0].astype(np.uint32)
