"""Where the segmentation is probably wrong: a pixel map and a ranked list of instances.

A user who painted a few objects cannot check hundreds of instances by eye.
The network says itself where it is unsure, in three ways that cost no
ground truth:

* **foreground ambiguity**: the foreground probability near 0.5, at doubtful
  borders and faint objects (``1 - |2p - 1|``);
* **spread**: pixels far from their instance's mean embedding. Training pulls
  an object's pixels within ``delta_v`` of its centre and pushes centres
  ``2 * delta_d`` apart, so a pixel more than ``delta_d`` from its centre is
  nearer to where another object's centre would be: a likely merge;
* **disagreement**: the distance between the student's and the EMA teacher's
  embedding of the same pixel, relative to ``delta_d`` (when the teacher's
  embeddings are given).

Each is scaled to [0, 1]; the map is their maximum. Per instance, the
components become reasons: *merge* (its spread stands out, or it is much larger
than the painted objects), *split* (much smaller than them), *shape* (much less
convex than the image's other instances), *border* (ambiguous foreground over it
and around its outline), *unsure* (disagreement). Foreground without an
instance becomes a *missed* candidate. An instance's score is its largest
reason, and :func:`assess` sorts by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from .clustering import foreground_probability
from .config import REFERENCE_DIAMETER
from .prediction import Prediction

__all__ = [
    "REASONS",
    "Doubt",
    "assess",
    "object_size",
    "painted_object_area",
]

#: Why an instance is doubted, as the panel and the CSV say it.
REASONS = {
    "merge": "may hold several objects",
    "split": "may be a piece of an object",
    "shape": "unlike the others in shape",
    "border": "unsure border",
    "unsure": "the network is unsure here",
    "missed": "possibly a missed object",
}
#: Foreground probability above which pixels outside every instance may be a missed object.
MISSED_PROBABILITY = 0.3
#: Pixels around an instance that belong to its soft rim, not to a missed object.
_RIM = 2
#: Distances (pixels) from an instance's outline where its border is judged.
_BAND = (1.5, 3.5)
#: How many robust standard deviations above the image's median make a statistic count
#: fully (:func:`_stands_out`), and the least spread assumed (statistics lie in [0, 1]),
#: so that a few near-identical instances do not make tiny differences count. At 3, one
#: instance in seven scored 1 and their order was arbitrary; 6 keeps most apart (chosen
#: on DSB ``val``, docs/benchmarks.md "Which nuclei to correct").
_OUTLIER_MADS = 6.0
_LEAST_SPREAD = 0.05


@dataclass(frozen=True)
class Doubt:
    """One instance (or missed region) that is probably wrong, and why.

    ``label`` is the instance id, 0 for a missed region; ``scores`` holds every
    reason's score in [0, 1], ``reason`` the largest; ``centre`` and ``bbox``
    (start, stop per axis) are in pixels of the label image.
    """

    label: int
    score: float
    reason: str
    scores: dict[str, float]
    centre: tuple[float, ...]
    bbox: tuple[tuple[int, int], ...]
    area: int

    @property
    def why(self) -> str:
        """The reason in words, for a list a user reads."""
        return REASONS[self.reason]

    @staticmethod
    def columns(ndim: int) -> list[str]:
        """Names of :meth:`to_row`'s columns for an image of ``ndim`` spatial axes."""
        axes = "zyx"[-ndim:]
        return [
            "label", "score", "reason", "why", *(f"score_{name}" for name in REASONS),
            *(f"centre_{a}" for a in axes), *(f"{a}_start" for a in axes),
            *(f"{a}_stop" for a in axes), "area",
        ]  # fmt: skip

    def to_row(self) -> dict[str, object]:
        """Flatten for a table (CSV): label, score, reason, every reason's score, place."""
        axes = "zyx"[-len(self.centre) :]
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "reason": self.reason,
            "why": self.why,
            **{f"score_{name}": round(self.scores.get(name, 0.0), 4) for name in REASONS},
            **{f"centre_{a}": round(c, 1) for a, c in zip(axes, self.centre, strict=True)},
            **{f"{a}_start": b[0] for a, b in zip(axes, self.bbox, strict=True)},
            **{f"{a}_stop": b[1] for a, b in zip(axes, self.bbox, strict=True)},
            "area": self.area,
        }


def painted_object_area(
    annotations: Sequence[ArrayLike], *, background_id: int | None = None
) -> float | None:
    """Median area (pixels) of the painted objects, the size instances are compared with."""
    areas = []
    for annotation in annotations:
        labels = np.asarray(annotation)
        if background_id is not None:
            labels = np.where(labels == background_id, 0, labels)
        counts = np.bincount(labels.ravel().astype(np.int64))[1:]
        areas.extend(counts[counts > 0].tolist())
    return float(np.median(areas)) if areas else None


def assess(
    prediction: Prediction,
    instances: ArrayLike,
    *,
    teacher: ArrayLike | None = None,
    reference_area: float | None = None,
    painted: ArrayLike | None = None,
    k: int | None = None,
) -> tuple[NDArray[np.float32], list[Doubt]]:
    """Return the uncertainty map and the instances ranked by how likely they are wrong.

    Parameters
    ----------
    prediction : Prediction
        The network's output the instances were clustered from.
    instances : array_like of int
        Instance labels (0 = background), at the prediction's size.
    teacher : array_like, optional
        The EMA teacher's embeddings of the same image: adds *unsure*.
    reference_area : float, optional
        Typical object area in pixels, from :func:`painted_object_area`;
        without it, the median instance area.
    painted : array_like of int, optional
        The user's painting on the same pixels (objects > 0): instances that
        lie mostly on painted objects are left out of the list, as the user
        has already said what is there.
    k : int, optional
        Return only the ``k`` worst.

    Returns
    -------
    map : ndarray of float32, shape (*spatial)
        In [0, 1]: the maximum of foreground ambiguity, spread (inside
        instances) and, with ``teacher``, disagreement.
    doubts : list of Doubt
        Worst first; missed regions have label 0.
    """
    labels = np.asarray(instances).astype(np.int64, copy=False)
    embeddings = prediction.embeddings
    if labels.shape != embeddings.shape[1:]:
        raise ValueError(
            f"instances of shape {labels.shape} do not match the prediction's "
            f"{embeddings.shape[1:]}"
        )
    areas = np.bincount(labels.ravel())
    ids = np.flatnonzero(areas[1:]) + 1
    if reference_area is None and len(ids):
        reference_area = float(np.median(areas[ids]))
    elif reference_area is None:
        reference_area = object_size(REFERENCE_DIAMETER, labels.ndim)
    # Pixels are judged at about the network's own resolution: large objects are
    # subsampled in Y and X until they span REFERENCE_DIAMETER-ish pixels, which
    # bounds the cost.
    step = _stride(reference_area, labels.ndim)
    view = (slice(None),) * (labels.ndim - 2) + (slice(None, None, step),) * 2
    foreground = _foreground(prediction)
    parts = _pixel_parts(
        embeddings[(slice(None), *view)],
        foreground[view],
        labels[view],
        None if teacher is None else np.asarray(teacher)[(slice(None), *view)],
        prediction.delta_v,
        prediction.delta_d,
    )
    coarse = np.maximum.reduce(list(parts.values()))
    doubt_map = _upsample(coarse, step, labels.shape)
    doubts = _instance_doubts(labels, labels[view], ids, areas[ids], parts, reference_area)
    doubts += _missed_regions(foreground, labels, reference_area)
    if painted is not None:  # the user has already said what is there
        painted = np.asarray(painted) > 0
        doubts = [d for d in doubts if _painted_share(d, labels, painted) < 0.5]
    doubts.sort(key=lambda d: (-d.score, d.label))
    return doubt_map, doubts[:k] if k is not None else doubts


def _diameter(size: float, ndim: int) -> float:
    """Diameter of a disc (2D) or ball (3D) of ``size`` pixels or voxels."""
    return 2 * np.sqrt(size / np.pi) if ndim == 2 else (6 * size / np.pi) ** (1 / 3)


def object_size(diameter: float, ndim: int) -> float:
    """Pixels (voxels) of a disc (ball) of ``diameter``: a reference size for :func:`assess`."""
    radius = diameter / 2
    return np.pi * radius**2 if ndim == 2 else 4 / 3 * np.pi * radius**3


def _stride(reference_area: float, ndim: int) -> int:
    """Y/X subsampling step that keeps a typical object at least REFERENCE_DIAMETER wide."""
    return max(1, int(_diameter(reference_area, ndim) // REFERENCE_DIAMETER))


def _painted_share(doubt: Doubt, labels: NDArray, painted: NDArray[np.bool_]) -> float:
    """Share of an instance (or, for a missed region, of its box) that the user painted."""
    box = tuple(slice(a, b) for a, b in doubt.bbox)
    region = labels[box] == doubt.label if doubt.label else labels[box] == 0
    return float(painted[box][region].mean()) if region.any() else 0.0


def _upsample(coarse: NDArray, step: int, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """Repeat each coarse pixel ``step`` times in Y and X and crop to ``shape``."""
    for axis in (-2, -1):
        coarse = np.repeat(coarse, step, axis=axis)
    return np.ascontiguousarray(coarse[tuple(slice(0, n) for n in shape)], dtype=np.float32)


def _foreground(prediction: Prediction) -> NDArray[np.float32]:
    if prediction.foreground is not None:
        return prediction.foreground
    return foreground_probability(
        prediction.embeddings, delta_v=prediction.delta_v, delta_d=prediction.delta_d
    )


def _pixel_parts(
    embeddings: NDArray,
    foreground: NDArray,
    labels: NDArray,
    teacher: NDArray | None,
    delta_v: float,
    delta_d: float,
) -> dict[str, NDArray[np.float32]]:
    """Each pixel component in [0, 1], by the reason it feeds."""
    parts = {"border": (1 - np.abs(2 * foreground - 1)).astype(np.float32)}
    flat = labels.ravel()
    inside = np.flatnonzero(flat)  # only instance pixels have a centre to be far from
    owner = flat[inside]
    points = embeddings.reshape(len(embeddings), -1)[:, inside]
    counts = np.maximum(np.bincount(owner, minlength=flat.max(initial=0) + 1), 1)
    centres = np.stack([np.bincount(owner, p, minlength=len(counts)) for p in points]) / counts
    distance = np.linalg.norm(points - centres.astype(np.float32)[:, owner], axis=0)
    spread = np.zeros(flat.size, np.float32)
    spread[inside] = np.clip((distance - delta_v) / (delta_d - delta_v), 0, 1)
    parts["merge"] = spread.reshape(labels.shape)
    if teacher is not None:
        gap = np.linalg.norm(embeddings - teacher.astype(np.float32), axis=0)
        parts["unsure"] = np.clip(gap / delta_d, 0, 1).astype(np.float32)
    return parts


def _instance_doubts(
    labels: NDArray,
    coarse_labels: NDArray,
    ids: NDArray,
    areas: NDArray,
    parts: dict[str, NDArray[np.float32]],
    reference_area: float,
) -> list[Doubt]:
    """Score each instance: against the other instances of the image, and the painted size.

    Spread, border ambiguity and convexity vary with the data and the model, so
    each counts by how far it stands out from the image's instances (robust
    z-score, :func:`_stands_out`); size counts against the painted objects.
    Pixel components and shape come from the subsampled ``coarse_labels`` (an
    instance too small to appear there has none); size, place and extent from
    the full-resolution ``labels``.
    """
    from skimage.measure import regionprops

    if not len(ids):
        return []
    # The worst tenth of an instance's pixels says "merge"; an average would hide it.
    spread = _stands_out(_upper_decile(parts["merge"], coarse_labels, ids))
    with np.errstate(invalid="ignore"):  # an instance missing from the coarse grid: nan → 0
        # Ambiguity over the instance and the band around its outline: a faint
        # object or a doubtful border.
        around = np.where(coarse_labels > 0, coarse_labels, _border_band(coarse_labels))
        border = _stands_out(np.nan_to_num(ndimage.mean(parts["border"], around, ids)))
        unsure = None
        if "unsure" in parts:
            unsure = np.nan_to_num(ndimage.mean(parts["unsure"], coarse_labels, ids))
    shape = np.zeros(len(ids))
    if labels.ndim == 2:  # nuclei and most cells are convex; merges and pieces often not
        solidity = {r.label: r.solidity for r in regionprops(coarse_labels)}
        shape = _stands_out(np.array([1 - solidity.get(label, 1.0) for label in ids]))
    # Twice or half the painted objects' diameter counts fully: 2 octaves of area in 2D, 3 of
    # volume in 3D.
    size = np.log2(areas / reference_area) / labels.ndim
    boxes = ndimage.find_objects(labels)
    centres = ndimage.center_of_mass(np.ones(labels.shape, np.uint8), labels, ids)
    doubts = []
    for n, label in enumerate(ids):
        bbox = tuple((s.start, s.stop) for s in boxes[label - 1])
        # An object cut by the image's edge is small for a reason, not a piece.
        cut = any(a == 0 or b == side for (a, b), side in zip(bbox, labels.shape, strict=True))
        scores = {
            "merge": float(max(spread[n], np.clip(size[n], 0, 1))),
            "split": 0.0 if cut else float(np.clip(-size[n], 0, 1)),
            "shape": 0.0 if cut else float(shape[n]),
            "border": float(border[n]),
        }
        if unsure is not None:
            scores["unsure"] = float(unsure[n])
        doubts.append(_doubt(int(label), scores, centres[n], bbox, int(areas[n])))
    return doubts


def _stands_out(values: NDArray) -> NDArray:
    """Score in [0, 1] how far each value lies above the others.

    0 at the median, 1 at :data:`_OUTLIER_MADS` robust standard deviations
    (1.4826 MAD, at least :data:`_LEAST_SPREAD`) above it.
    """
    values = np.asarray(values, float)
    median = np.median(values)
    spread = max(1.4826 * np.median(np.abs(values - median)), _LEAST_SPREAD)
    return np.clip((values - median) / (_OUTLIER_MADS * spread), 0, 1)


def _missed_regions(probability: NDArray, labels: NDArray, reference_area: float) -> list[Doubt]:
    """Find foreground the clustering left out, at least a quarter of an object large.

    The soft rim just outside every instance (probability falling through 0.5)
    is not a missed object: pixels within :data:`_RIM` of an instance are left
    out, and what remains is opened by the same radius, so thin slivers go too.
    """
    from skimage.measure import label, regionprops
    from skimage.segmentation import expand_labels

    candidates = (probability > MISSED_PROBABILITY) & (expand_labels(labels, _RIM) == 0)
    candidates = ndimage.binary_opening(candidates, iterations=_RIM)
    doubts = []
    for region in regionprops(label(candidates), intensity_image=probability):
        if region.area < reference_area / 4:
            continue
        confidence = float(np.clip(region.intensity_mean / 0.5, 0, 1))
        extent = float(np.clip(region.area / (reference_area / 2), 0, 1))
        scores = {"missed": confidence * extent}
        doubts.append(_doubt(0, scores, region.centroid, _bounds(region), int(region.area)))
    return doubts


def _bounds(region: object) -> tuple[tuple[int, int], ...]:
    """(start, stop) per axis of a regionprops region's bounding box."""
    bbox = region.bbox
    ndim = len(bbox) // 2
    return tuple((int(bbox[i]), int(bbox[i + ndim])) for i in range(ndim))


def _doubt(
    label: int,
    scores: dict[str, float],
    centre: Sequence[float],
    bbox: tuple[tuple[int, int], ...],
    area: int,
) -> Doubt:
    reason = max(scores, key=scores.get)
    return Doubt(
        label=label,
        score=scores[reason],
        reason=reason,
        scores=scores,
        centre=tuple(float(c) for c in centre),
        bbox=tuple((int(a), int(b)) for a, b in bbox),
        area=area,
    )


def _upper_decile(values: NDArray, labels: NDArray, index: NDArray) -> NDArray:
    """90th percentile of ``values`` per label in ``index``."""
    order = np.argsort(labels, axis=None, kind="stable")
    sorted_labels = labels.ravel()[order]
    sorted_values = values.ravel()[order]
    result = np.zeros(len(index))
    starts = np.searchsorted(sorted_labels, index, side="left")
    stops = np.searchsorted(sorted_labels, index, side="right")
    for n, (start, stop) in enumerate(zip(starts, stops, strict=True)):
        if stop > start:
            result[n] = np.percentile(sorted_values[start:stop], 90)
    return result


def _border_band(labels: NDArray) -> NDArray:
    """Labels of the band 2-3 pixels either side of each instance's outline (0 elsewhere).

    At the outline itself the foreground probability is near 0.5 by definition
    (the mask's threshold); a crisp border leaves the band clear, a doubtful one
    does not.
    """
    from skimage.segmentation import expand_labels, find_boundaries

    from_outline = ndimage.distance_transform_edt(~find_boundaries(labels, mode="thick"))
    near = expand_labels(labels, _BAND[1])
    return np.where((from_outline >= _BAND[0]) & (from_outline <= _BAND[1]), near, 0)
