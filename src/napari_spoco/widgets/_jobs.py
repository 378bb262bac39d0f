"""Bodies of the Segment section's worker jobs (they run off the main thread, touch no layer)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..core.image import check_image_values
from ..core.prediction import Prediction, predict
from ..core.segmentation import prediction_scale, segment_prediction
from ..core.uncertainty import assess, painted_object_area
from ..core.visualize import embeddings_to_rgb
from ._state import CachedPrediction

__all__ = ["DOUBTS_LISTED", "blockwise_job", "cluster_job", "predict_job"]

#: How many of the instances most likely wrong the Correct section lists.
DOUBTS_LISTED = 10


def predict_job(model, teacher, config, frames, channel_axis, device, report, painted=None,  # noqa: ANN001, PLR0913
                augment=False):  # fmt: skip
    """Worker body: embed every frame (tiled), with the teacher too when it is needed.

    ``painted`` is ``(annotations, background_id)``: the objects painted on the
    image, whose size sets the scale for a model without one of its own.
    ``augment``: average the eight orientations (the size is measured without).
    """
    annotations, background_id = painted or ((), None)
    results = []
    for done, (t, image) in enumerate(frames):
        check_image_values(image)
        scale = prediction_scale(
            model, config, image, annotations=annotations, background_id=background_id,
            channel_axis=channel_axis, device=device,
        )  # fmt: skip
        options = {
            "loss": config.loss,
            "object_scale": scale,
            "channel_axis": channel_axis,
            "device": device,
            "augment": augment,
        }
        tiles = lambda i, n, done=done: report(done * n + i, len(frames) * n)  # noqa: E731
        prediction = predict(model, image, progress=tiles, **options)
        teacher_embeddings = None
        if teacher is not None:
            teacher_embeddings = predict(teacher, image, **options).embeddings
        results.append((t, prediction, teacher_embeddings))
    return results


def blockwise_job(checkpoint, image, config, channel_axis, device, augment, report, folder):  # noqa: ANN001, PLR0913
    """Worker body for images above :data:`~napari_spoco.bigdata.LARGE_IMAGE_PIXELS`.

    Predicts and clusters block by block into a zarr store in ``folder``, so
    neither the image nor the result has to fit in memory; returns the zarr array.
    """
    from ..bigdata import segment_blockwise

    out = Path(folder) / "instances.zarr"
    return segment_blockwise(
        checkpoint, image, segment_config=config, channel_axis=channel_axis, out=out,
        device=device, augment=augment, progress=report,
    )  # fmt: skip


def cluster_job(cached: list[CachedPrediction], config, teachers, painted=None) -> list:  # noqa: ANN001
    """Worker body: per cached frame, instances, foreground mask, embedding colours, doubts.

    Doubts are the uncertainty map and the :data:`DOUBTS_LISTED` instances most
    likely wrong; ``painted`` (annotations, background id) gives the object size
    they are compared with, and instances already painted are not listed.
    """
    annotations, background_id = painted or ((), None)
    timed = bool(cached) and cached[0].time_index is not None  # an id may recur in every frame
    frames = [frame for a in annotations for frame in a] if timed else annotations
    area = painted_object_area(frames, background_id=background_id)
    out = []
    for entry, teacher in zip(cached, teachers, strict=True):
        prediction: Prediction = entry.prediction
        instances = segment_prediction(prediction, config, teacher=teacher)
        if prediction.foreground is not None and config.foreground == "head":
            mask = prediction.foreground > config.foreground_threshold
        else:
            mask = instances > 0
        rgb = embeddings_to_rgb(prediction.embeddings)
        objects = _painted_objects(annotations, background_id, entry.time_index, instances.shape)
        try:
            doubt, ranked = assess(
                prediction, instances, teacher=teacher, reference_area=area, painted=objects,
                k=DOUBTS_LISTED,
            )  # fmt: skip
        except (MemoryError, ValueError) as error:  # the instances matter more than the doubts
            warnings.warn(f"no list of likely mistakes this time: {error}", stacklevel=1)
            doubt, ranked = np.zeros(instances.shape, np.float32), []
        out.append((entry.time_index, instances, mask.astype(np.uint8), rgb, doubt, ranked))
    return out


def _painted_objects(annotations, background_id, time_index, shape) -> np.ndarray:  # noqa: ANN001
    """Pixels of painted objects (not background strokes) in the frame ``time_index``."""
    objects = np.zeros(shape, bool)
    for annotation in annotations:
        frame = annotation[time_index] if time_index is not None else annotation
        if frame.shape == shape:
            objects |= (frame > 0) & (frame != background_id)
    return objects
