"""Clustering in embedding space: HDBSCAN, mean shift and consistency (the point methods).

These cluster a random subsample of pixels as points in embedding space, assign
every pixel to the nearest cluster centre and split clusters into connected
components; see :func:`napari_spoco.core.clustering.segment` for the rules.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .affinity import segment_means

__all__ = ["cluster_points", "nearest_centre"]

#: Rounds of subsample clustering (see :func:`cluster_points`).
_ROUNDS = 4


def cluster_points(
    embeddings: NDArray[np.float32],
    mask: NDArray[np.bool_] | None,
    method: str,
    options: dict[str, Any],
    *,
    delta_v: float,
    delta_d: float,
    seed: int,
) -> NDArray[np.intp]:
    """Cluster subsamples in embedding space, assign all pixels, split into components.

    A subsample of a big image holds few pixels of each small object, so
    objects can be missed. Pixels farther than ``delta_d`` from every centre
    found so far are therefore clustered again (new subsample, at most
    ``_ROUNDS`` rounds); what is left is noise, flooded from its neighbours.
    """
    from skimage.measure import label
    from skimage.segmentation import watershed

    shape, flat = embeddings.shape[1:], embeddings.reshape(len(embeddings), -1)
    remaining = np.flatnonzero(mask) if mask is not None else np.arange(flat.shape[1])
    labels = np.zeros(flat.shape[1], dtype=np.intp)
    distance = np.zeros(flat.shape[1], dtype=np.float32)
    rng = np.random.default_rng(seed)
    kept = [np.zeros(1, dtype=bool)]  # per label id, 0 first
    for _ in range(_ROUNDS if remaining.size else 0):
        sample = remaining
        if remaining.size > options["max_samples"]:
            sample = np.sort(rng.choice(remaining, options["max_samples"], replace=False))
        centres, keep = _fit(flat, sample, remaining.size, method, options, delta_v, rng)
        if len(centres) == 0:
            break
        nearest, distance[remaining] = nearest_centre(flat, remaining, centres)
        assigned = distance[remaining] <= delta_d
        labels[remaining[assigned]] = nearest[assigned] + sum(len(k) for k in kept)
        kept.append(keep)
        exhaustive = sample.size == remaining.size
        remaining = remaining[~assigned]
        if exhaustive or remaining.size == 0:
            break
    labels = labels.reshape(shape)
    if remaining.size:
        noise = np.zeros(labels.size, dtype=bool)
        noise[remaining] = True
        noise = noise.reshape(shape)
        labels = watershed(distance.reshape(shape), markers=labels, mask=noise | (labels > 0))
    labels = np.where(np.concatenate(kept), np.arange(sum(len(k) for k in kept)), 0)[labels]
    return label(labels, background=0, connectivity=1).astype(np.intp, copy=False)


def _fit(
    flat: NDArray,
    sample: NDArray[np.intp],
    population: int,
    method: str,
    options: dict[str, Any],
    delta_v: float,
    rng: np.random.Generator,
) -> tuple[NDArray, NDArray[np.bool_]]:
    """Cluster centres (K, D) of the sampled pixels and which of them to keep (K,)."""
    points = np.ascontiguousarray(flat[:, sample].T)
    scaled = max(2, round(options.get("min_cluster_size", 2) * sample.size / population))
    if sample.size < 2 or (method == "hdbscan" and sample.size < scaled):
        return np.zeros((0, len(flat))), np.zeros(0, dtype=bool)  # too few to cluster
    if method == "hdbscan":
        centres = _hdbscan_centres(points, scaled, delta_v)
        return centres, np.ones(len(centres), dtype=bool)
    centres, sample_labels = _mean_shift(points, delta_v)
    if method != "consistency":
        return centres, np.ones(len(centres), dtype=bool)
    teacher = options["teacher"].reshape(len(flat), -1)
    teacher_points = np.ascontiguousarray(teacher[:, sample].T)
    keep = _consistent_clusters(sample_labels, len(centres), teacher_points, delta_v, options, rng)
    return centres, keep


def _hdbscan_centres(points: NDArray, min_cluster_size: int, delta_v: float) -> NDArray:
    """Mean embedding (K, D) of each HDBSCAN cluster of ``points`` (M, D); noise is ignored."""
    import hdbscan
    from threadpoolctl import threadpool_limits

    clusterer = hdbscan.HDBSCAN(
        min_cluster_size=min_cluster_size,
        cluster_selection_epsilon=float(delta_v),
        core_dist_n_jobs=1,
    )
    with threadpool_limits(1):  # see _mean_shift
        sample_labels = clusterer.fit_predict(points.astype(np.float64))
    found = sample_labels >= 0
    if not found.any():
        return np.zeros((0, points.shape[1]))
    return segment_means(sample_labels[found], points[found].T)


def _mean_shift(points: NDArray, delta_v: float) -> tuple[NDArray, NDArray[np.intp]]:
    """Mean-shift centres (K, D) and the cluster (M,) of each of ``points`` (M, D).

    Bin seeding, with one change: sklearn's ``bin_seeding`` starts from bin
    *centres*, which in 16-d lie about ``delta_v`` from the data (rounding error
    adds up over the channels), so whole clusters got no seed and were merged
    into a neighbour. We seed from the *mean of the points* in each occupied
    ``delta_v`` bin instead: one seed per bin, always inside the data.

    sklearn runs each seed's neighbour query on an OpenMP pool; for one query
    point that is pure overhead (4096 points: 5 s with 2 busy cores, 0.3 s on
    one thread), hence ``threadpool_limits(1)``.
    """
    from sklearn.cluster import MeanShift
    from threadpoolctl import threadpool_limits

    _, bins = np.unique(np.round(points / delta_v).astype(np.int64), axis=0, return_inverse=True)
    bins = bins.ravel()
    seeds = segment_means(bins, points.T)
    with threadpool_limits(1):
        shift = MeanShift(bandwidth=delta_v, seeds=seeds, cluster_all=True).fit(points)
    return shift.cluster_centers_, shift.labels_.astype(np.intp)


def _consistent_clusters(
    sample_labels: NDArray[np.intp],
    n_clusters: int,
    teacher_points: NDArray,
    delta_v: float,
    options: dict[str, Any],
    rng: np.random.Generator,
) -> NDArray[np.bool_]:
    """Keep (K,) clusters whose median IoU with teacher ``delta_v``-balls is >= the threshold.

    For each cluster, up to ``n_anchors`` of its sampled pixels are drawn; the
    ball of each anchor is the set of sampled pixels within ``delta_v`` of it in
    the teacher's embedding. IoUs are measured on the subsample (the whole image
    would cost K x n_anchors x N distances).
    """
    counts = np.bincount(sample_labels, minlength=n_clusters)
    order = np.argsort(sample_labels, kind="stable")
    groups = np.split(order, np.cumsum(counts)[:-1])
    anchors_per_cluster = [
        rng.choice(g, min(options["n_anchors"], g.size), replace=False) for g in groups
    ]
    owner = np.repeat(np.arange(n_clusters), [a.size for a in anchors_per_cluster])
    anchors = np.concatenate(anchors_per_cluster)
    squared_norms = np.einsum("md,md->m", teacher_points, teacher_points)
    iou = np.empty(anchors.size)
    for start in range(0, anchors.size, 256):
        part, who = anchors[start : start + 256], owner[start : start + 256]
        cross = teacher_points[part] @ teacher_points.T
        ball = squared_norms[part, None] - 2 * cross + squared_norms[None, :] < delta_v**2
        inter = (ball & (sample_labels[None, :] == who[:, None])).sum(1)
        iou[start : start + 256] = inter / (ball.sum(1) + counts[who] - inter)
    split = np.split(iou, np.cumsum([a.size for a in anchors_per_cluster])[:-1])
    medians = np.array([np.median(part) if part.size else 0.0 for part in split])
    return medians >= options["iou_threshold"]


def nearest_centre(
    flat: NDArray, pixels: NDArray[np.intp], centres: NDArray
) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """Index of the nearest centre (K, D) and the distance to it, for each of ``pixels``."""
    centres = centres.astype(np.float32)
    centre_norms = np.einsum("kd,kd->k", centres, centres)
    nearest = np.empty(pixels.size, dtype=np.intp)
    squared = np.empty(pixels.size, dtype=np.float32)
    chunk = max(1024, 2**22 // len(centres))  # (K, chunk) distances: <= 16 MB
    for start in range(0, pixels.size, chunk):
        points = flat[:, pixels[start : start + chunk]]
        part = centre_norms[:, None] - 2 * (centres @ points) + (points * points).sum(0)
        best = part.argmin(0)
        nearest[start : start + chunk] = best
        squared[start : start + chunk] = part[best, np.arange(best.size)]
    return nearest, np.sqrt(np.maximum(squared, 0, out=squared), out=squared)
