"""Helpers for sparse annotations (0 = not annotated, k >= 1 = one object)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .config import object_scale_for_diameter

__all__ = [
    "keep_fraction_of_objects",
    "median_object_diameter",
    "object_scale_from_annotations",
    "next_free_id",
    "object_ids",
    "touching_fraction",
    "promote_all_instances",
    "promote_instance",
    "simulate_background_scribbles",
]


def keep_fraction_of_objects(
    labels: ArrayLike, fraction: float, *, seed: int = 0, minimum: int = 1
) -> NDArray:
    """Simulate a sparse annotation: keep a random ``fraction`` of the objects, 0 elsewhere.

    This is how the paper's SPOCO@p settings are made from dense ground truth;
    the demo and the benchmarks use it to stand in for a user's painting.

    Parameters
    ----------
    labels : array_like of int
        Dense instance labels, 0 = background.
    fraction : float
        Share of objects to keep, in (0, 1].
    seed : int
        Seed of the random choice.
    minimum : int
        Keep at least this many objects (when there are that many).

    Examples
    --------
    >>> keep_fraction_of_objects([[1, 2], [3, 0]], 0.34, seed=0).astype(bool).sum()
    np.int64(1)
    """
    labels = np.asarray(labels)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    ids = np.unique(labels)
    ids = ids[ids != 0]
    count = min(len(ids), max(minimum, round(fraction * len(ids))))
    kept = np.random.default_rng(seed).choice(ids, size=count, replace=False)
    return np.where(np.isin(labels, kept), labels, 0).astype(labels.dtype)


def object_ids(labels: ArrayLike, *, background_id: int | None = None) -> NDArray:
    """Sorted ids of the annotated objects (0 and the background id excluded).

    Examples
    --------
    >>> object_ids([[0, 3], [7, 3]], background_id=7).tolist()
    [3]
    """
    ids = np.unique(np.asarray(labels))
    return ids[(ids != 0) & (ids != (background_id if background_id is not None else 0))]


def next_free_id(labels: ArrayLike, *, background_id: int | None = None) -> int:
    """Smallest id above every object and the background id: the id for a new object.

    Examples
    --------
    >>> next_free_id([[0, 3], [1, 0]])
    4
    >>> next_free_id([[0, 0]], background_id=5)
    6
    """
    labels = np.asarray(labels)
    highest = int(labels.max()) if labels.size else 0
    return max(highest, background_id or 0) + 1


def touching_fraction(
    annotations: Sequence[ArrayLike], *, background_id: int | None = None
) -> float:
    """Fraction of the painted objects that share a border with another painted object.

    Touching cells painted side by side meet edge to edge; nuclei painted apart
    never do. Face neighbours count; background scribbles are not objects.

    Examples
    --------
    >>> labels = np.zeros((4, 9), int)
    >>> labels[:, :3], labels[:, 3:6], labels[0, 8] = 1, 2, 3
    >>> round(touching_fraction([labels]), 2)
    0.67
    """
    touching = total = 0
    for annotation in annotations:
        objects = np.asarray(annotation)
        if background_id is not None:
            objects = np.where(objects == background_id, 0, objects)
        ids: set[int] = set()
        for axis in range(objects.ndim):
            first = np.take(objects, range(1, objects.shape[axis]), axis=axis)
            second = np.take(objects, range(objects.shape[axis] - 1), axis=axis)
            border = (first > 0) & (second > 0) & (first != second)
            ids |= set(first[border].tolist()) | set(second[border].tolist())
        touching += len(ids)
        total += len(object_ids(objects))
    return touching / total if total else 0.0


def median_object_diameter(labels: ArrayLike, *, background_id: int | None = None) -> float | None:
    """Median equivalent diameter (pixels, in Y/X) of the annotated objects; None without any.

    The object-size hint rescales Y and X only, so for 3D labels each object
    counts with its largest Y/X cross-section.

    Examples
    --------
    >>> disc = np.add.outer(np.arange(-5, 6) ** 2, np.arange(-5, 6) ** 2) <= 25
    >>> round(median_object_diameter(disc.astype(int)), 1)
    10.2
    """
    labels = np.asarray(labels)
    ids = object_ids(labels, background_id=background_id)
    if ids.size == 0:
        return None
    objects = np.where(np.isin(labels, ids), labels, 0)
    if labels.ndim == 2:
        areas = np.bincount(objects.ravel())[ids]
    else:
        planes = objects.reshape(-1, *objects.shape[-2:])
        per_plane = np.stack([np.bincount(p.ravel(), minlength=ids.max() + 1) for p in planes])
        areas = per_plane.max(axis=0)[ids]
    return float(np.median(2 * np.sqrt(areas / np.pi)))


def object_scale_from_annotations(
    annotations: Sequence[ArrayLike],
    *,
    diameter: float | None = None,
    background_id: int | None = None,
) -> float | None:
    """Resize factor for training and prediction: from ``diameter``, else from the painted objects.

    The panel and the command line both call this, so that the same painting
    gives the same scale everywhere. The median over images of each image's
    median diameter is used; None when no diameter is given and nothing is
    painted. The factor is kept within 0.05-4: only the size of real objects
    counts, and a stray painted pixel would otherwise blow the image up.
    """
    if diameter is None:
        measured = [median_object_diameter(a, background_id=background_id) for a in annotations]
        measured = [d for d in measured if d is not None]
        if not measured:
            return None
        diameter = float(np.median(measured))
    return float(np.clip(object_scale_for_diameter(diameter), 0.05, 4.0))


def promote_instance(
    annotation: NDArray, instances: ArrayLike, instance_id: int, new_id: int
) -> int:
    """Copy predicted instance ``instance_id`` into ``annotation`` (in place) as ``new_id``.

    Only pixels that are not annotated yet are written, so promoting never
    overwrites what the user painted. Returns the number of pixels written.

    Examples
    --------
    >>> annotation = np.array([[0, 0], [2, 0]])
    >>> promote_instance(annotation, np.array([[5, 5], [5, 0]]), 5, 3), annotation.tolist()
    (2, [[3, 3], [2, 0]])
    """
    instances = np.asarray(instances)
    if instances.shape != annotation.shape:
        raise ValueError(
            f"instances shape {instances.shape} does not match annotation shape {annotation.shape}"
        )
    if instance_id == 0:
        raise ValueError("instance id 0 is background, not an instance")
    target = (instances == instance_id) & (annotation == 0)
    annotation[target] = new_id
    return int(target.sum())


def promote_all_instances(
    annotation: NDArray, instances: ArrayLike, *, background_id: int | None = None
) -> int:
    """Copy every instance that touches no annotated pixel into ``annotation`` (in place).

    Each becomes a new object with the next free id; instances overlapping
    anything painted (objects or background scribbles) are left out, so a
    prediction never edits the user's work. Returns the number promoted.

    Examples
    --------
    >>> annotation = np.array([[1, 0, 0], [0, 0, 0]])
    >>> promote_all_instances(annotation, np.array([[4, 4, 0], [0, 0, 6]])), annotation.tolist()
    (1, [[1, 0, 0], [0, 0, 2]])
    """
    instances = np.asarray(instances)
    if instances.shape != annotation.shape:
        raise ValueError(
            f"instances shape {instances.shape} does not match annotation shape {annotation.shape}"
        )
    ids = np.unique(instances)
    ids = ids[ids != 0]
    touched = np.unique(instances[annotation != 0])
    free = ids[~np.isin(ids, touched)]
    if free.size == 0:
        return 0
    first = next_free_id(annotation, background_id=background_id)
    lookup = np.zeros(int(ids.max()) + 1, dtype=annotation.dtype)
    lookup[free] = np.arange(first, first + free.size, dtype=annotation.dtype)
    new = lookup[instances]
    annotation[new != 0] = new[new != 0]
    return int(free.size)


def simulate_background_scribbles(
    labels: ArrayLike,
    *,
    strokes: int = 8,
    length: int = 80,
    margin: int = 2,
    seed: int = 0,
) -> NDArray[np.bool_]:
    """Stand in for a user's background strokes: random walks through dense-label background.

    Each stroke starts at a random background pixel at least ``margin`` pixels
    from every object and wanders ``length`` steps, 3 pixels wide, without
    entering that margin, as a brush dragged between objects would. Works on
    2D labels and on every Z slice's Y/X plane of 3D labels (strokes are
    placed in random slices). The demo and the benchmarks use it.

    Parameters
    ----------
    labels : array_like of int
        Dense instance labels, 0 = background.

    Returns
    -------
    ndarray of bool, same shape
        The scribbled pixels (empty when there is no such background).
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    allowed = ndimage.distance_transform_edt(labels == 0) > margin
    scribbles = np.zeros(labels.shape, dtype=bool)
    candidates = np.argwhere(allowed)
    if candidates.size == 0:
        return scribbles
    rng = np.random.default_rng(seed)
    steps = np.array([(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)])
    for _ in range(strokes):
        position = candidates[rng.integers(len(candidates))].copy()
        direction = steps[rng.integers(len(steps))]
        for _ in range(length):
            index = tuple(position[:-2]) + tuple(slice(max(0, p - 1), p + 2) for p in position[-2:])
            scribbles[index] = True
            if rng.random() < 0.2:
                direction = steps[rng.integers(len(steps))]
            proposal = position.copy()
            proposal[-2:] = np.clip(position[-2:] + direction, 0, np.array(labels.shape[-2:]) - 1)
            if allowed[tuple(proposal)]:
                position = proposal
            else:
                direction = steps[rng.integers(len(steps))]
    return scribbles & allowed
