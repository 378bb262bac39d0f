"""From the network's output to instances, and the object size to predict at.

:func:`segment_prediction` turns a :class:`~napari_spoco.core.prediction.Prediction`
into an instance label image as a :class:`~napari_spoco.core.config.SegmentConfig`
says; :func:`prediction_scale` decides the resize factor the network runs at. The
napari widgets, the command line and the block-wise big-data path all call these,
so a change here changes every front end alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .annotation import median_object_diameter, object_scale_from_annotations
from .clustering import foreground_probability, remove_small_segments, segment
from .config import (
    REFERENCE_DIAMETER,
    LossConfig,
    SegmentConfig,
    TrainConfig,
    object_scale_for_diameter,
)
from .model import EmbeddingUNet
from .prediction import Prediction, predict

__all__ = [
    "estimate_object_diameter",
    "prediction_scale",
    "segment_prediction",
    "split_at_cores",
]


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


#: Scales the model measures objects at when nobody gives their size: large objects first.
SIZE_LADDER = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
#: Side, in network pixels, of the central crop measured at each scale: bounds the cost.
_PROBE_SIDE = 512
#: Fewest objects, and smallest size relative to the reference, that count as a measurement.
_PROBE_MIN_OBJECTS = 3
_PROBE_MIN_RELATIVE_SIZE = 0.75
#: Segments come out larger than the objects: on the DSB ``val`` split the nuclei
#: generalist measured the median diameter 1.10 times the true one
#: (``benchmarks/generalist.py``). Measurements are divided by it.
MEASURED_OVER_TRUE_DIAMETER = 1.10


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
    when nothing is painted and no size is given. A network shown objects much
    larger than it was trained on cuts them into pieces of about its reference
    size, so measured at too fine a scale the pieces look right. Objects shown
    smaller than the reference are found whole but measure small. So the
    scales of :data:`SIZE_LADDER` are tried from coarse to fine, each on a
    central crop, and the first where at least three objects reach 3/4 of the
    reference size wins; the image is then measured once more at the scale
    that suggests. With the nuclei generalist this came within 35 % of the true
    median diameter on 88 % of the DSB ``val`` images (98 % of the fluorescent
    ones; ``benchmarks/generalist.py``), where segmenting at the image's own
    size first had measured ~90 px NIH3T3 nuclei as 10-20 px fragments.
    """
    image = np.asarray(image)
    measurements: list[tuple[float, float]] = []  # (scale, diameter in image pixels)
    for scale in SIZE_LADDER:
        diameter, count = _measure_at(
            model, image, scale, loss, channel_axis, segment_config, tiling
        )
        if diameter is None:
            continue
        measurements.append((scale, diameter))
        if (
            count >= _PROBE_MIN_OBJECTS
            and diameter * scale >= _PROBE_MIN_RELATIVE_SIZE * REFERENCE_DIAMETER
        ):
            refined, _ = _measure_at(
                model,
                image,
                object_scale_for_diameter(diameter),
                loss,
                channel_axis,
                segment_config,
                tiling,
            )
            return (refined or diameter) / MEASURED_OVER_TRUE_DIAMETER
    if not measurements:
        return None
    # Nothing reached the reference size: the measurement closest to it is the best guess.
    closest = min(measurements, key=lambda m: abs(np.log(m[1] * m[0] / REFERENCE_DIAMETER)))
    return closest[1] / MEASURED_OVER_TRUE_DIAMETER


def _measure_at(
    model: EmbeddingUNet,
    image: NDArray,
    scale: float,
    loss: LossConfig | None,
    channel_axis: int | None,
    segment_config: SegmentConfig | None,
    tiling: dict,
) -> tuple[float | None, int]:
    """Median diameter (image pixels) and count of the objects in a central crop at ``scale``.

    (None, 0) when the crop would be too small at that scale to hold a few
    objects of the reference size.
    """
    spatial = [
        a for a in range(image.ndim) if channel_axis is None or a != channel_axis % image.ndim
    ]
    side = round(_PROBE_SIDE / scale)
    region = [slice(None)] * image.ndim
    for axis in spatial[-2:]:
        size = image.shape[axis]
        if size * scale < 4 * REFERENCE_DIAMETER:
            return None, 0
        begin = max(0, (size - side) // 2)
        region[axis] = slice(begin, begin + side)
    prediction = predict(
        model,
        image[tuple(region)],
        loss=loss,
        object_scale=scale,
        channel_axis=channel_axis,
        **tiling,
    )
    instances = segment_prediction(prediction, segment_config)
    return median_object_diameter(instances), int(instances.max())


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
