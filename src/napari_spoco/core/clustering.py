"""Turn pixel embeddings into an instance segmentation.

:func:`segment` is the one entry point (method, foreground mask, margins);
:func:`foreground_probability` maps each pixel's distance to the background
embedding to [0, 1]; :func:`embeddings_to_rgb` (re-exported from
:mod:`.visualize`) shows the embedding. Specification:
``docs/segmentation.md``, "Methods".

Only numpy is imported here; skimage, sklearn, hdbscan and the mutex-watershed
backend load on first use, so ``import napari_spoco.core`` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._mutex import (
    DEFAULT_OFFSETS,
    drop_background_segments,
    embedding_mode,
    foreground_map,
    mutex_watershed,
    nearest_centre,
    segment_means,
)
from .clustering_methods import CLUSTERING_METHODS, METHODS
from .config import LossConfig
from .visualize import embeddings_to_rgb

__all__ = [
    "METHODS",
    "embeddings_to_rgb",
    "foreground_probability",
    "remove_small_segments",
    "segment",
]

#: Keywords of :func:`segment` that users do not set, per method; the settings they may
#: change, and their defaults, are listed with the methods (``clustering_methods``).
_INTERNAL_PARAMS: dict[str, dict[str, Any]] = {
    "mutex_watershed": {"offsets": DEFAULT_OFFSETS},
    "hdbscan": {"max_samples": 16384},
    "mean_shift": {"max_samples": 16384},
    "consistency": {"teacher": None, "max_samples": 16384, "n_anchors": 100},
}
#: Method-specific keywords of :func:`segment` and their defaults.
_METHOD_PARAMS: dict[str, dict[str, Any]] = {
    name: {**_INTERNAL_PARAMS[name], **{s.name: s.default for s in method.settings}}
    for name, method in CLUSTERING_METHODS.items()
}
#: Rounds of subsample clustering in the point methods (see ``_cluster_points``).
_ROUNDS = 4


def segment(
    embeddings: NDArray[np.floating],
    method: str = "mutex_watershed",
    foreground: NDArray[np.bool_] | str | None = None,
    *,
    delta_v: float = LossConfig.delta_v,
    delta_d: float = LossConfig.delta_d,
    min_size: int = 16,
    remove_background: bool = True,
    seed: int = 0,
    **params: Any,
) -> NDArray[np.uint32]:
    """Cluster pixel embeddings into instances.

    Parameters
    ----------
    embeddings : ndarray of float, shape (D, Y, X) or (D, Z, Y, X)
        Pixel embeddings, channels first.
    method : {"mutex_watershed", "hdbscan", "mean_shift", "consistency"}
        ``"mutex_watershed"`` (default) clusters every pixel on a graph of
        neighbour affinities and is by far the fastest. The others cluster a
        random subsample (``max_samples`` pixels) in embedding space, assign
        every pixel to the nearest cluster centre, cluster the pixels farther
        than ``delta_d`` from all centres again (up to 4 rounds, so that a
        subsample does not miss small objects; what remains is noise, filled
        by a watershed from its neighbours) and split clusters into connected
        components. ``"consistency"`` is mean shift that drops clusters on
        which the teacher embedding disagrees (paper, Algorithm 1).
    foreground : ndarray of bool, shape (*spatial), or "auto", optional
        Only these pixels are clustered; the rest is 0. ``"auto"`` uses
        ``foreground_probability(embeddings) > 0.5`` (background embedding
        estimated as the embedding mode). Much faster than None for the mutex
        watershed when background dominates: the huge background segment is
        what makes its mutex bookkeeping expensive (benchmarks/clustering_speed.py).
    delta_v, delta_d : float
        Pull and push margins of the loss the embeddings were trained with:
        ``delta_v`` is the cluster bandwidth and ``delta_d`` sets the affinity
        ``([2 delta_d - d]_+ / (2 delta_d))^2`` of two embeddings at distance ``d``.
    min_size : int
        Segments with fewer pixels become 0 (background).
    remove_background : bool
        With ``foreground=None`` only: the largest segment and every segment whose
        mean embedding has affinity > 0.5 to its mean become 0. Switch off for
        images that objects fill completely (e.g. tissue).
    seed : int
        Seed of the random subsampling, so results are repeatable.
    **params
        Method-specific settings (defaults in brackets). mutex_watershed:
        ``offsets`` [(3, 9, 27)], long-range mutex edge lengths along each
        axis; ``strides`` [2], int or one per axis: mutex edges only on that
        grid (1 = all; larger is faster, too large merges small touching
        objects). hdbscan: ``min_cluster_size`` [50] pixels (scaled to the
        subsample), ``max_samples`` [16384]. mean_shift: ``max_samples``.
        consistency: ``teacher`` (required, same shape as ``embeddings``: the
        teacher's embedding of a second view), ``max_samples``,
        ``n_anchors`` [100] pixels drawn per cluster, ``iou_threshold`` [0.6].

    Returns
    -------
    ndarray of uint32, shape (*spatial)
        Instances labeled 1..n (consecutive), 0 = background.

    Raises
    ------
    ValueError
        On a wrong shape, dtype, method, margin or parameter value.
    TypeError
        On a parameter the method does not take.

    Examples
    --------
    >>> emb = np.zeros((2, 8, 8), np.float32)
    >>> emb[0, 2:6, 2:6] = 5.0
    >>> labels = segment(emb, min_size=1)
    >>> labels.dtype, int(labels.max()), int((labels > 0).sum())
    (dtype('uint32'), 1, 16)
    """
    embeddings = _check_embeddings(embeddings, "embeddings")
    mask = _check_foreground(foreground, embeddings.shape[1:])
    options = _check_params(method, params, embeddings)
    LossConfig(delta_v=delta_v, delta_d=delta_d)  # validates the margins
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ValueError(f"min_size must be an integer >= 0, got {min_size!r}")
    if isinstance(mask, str):
        background = embedding_mode(embeddings, delta_v=delta_v, seed=seed)
        mask = foreground_map(embeddings, background, delta_d) > 0.5
    if method == "mutex_watershed":
        labels = mutex_watershed(embeddings, mask, delta_d=delta_d, **options)
    else:
        labels = _cluster_points(
            embeddings, mask, method, options, delta_v=delta_v, delta_d=delta_d, seed=seed
        )
    labels = labels.astype(np.intp, copy=False)
    if mask is None and remove_background:
        labels = drop_background_segments(labels, embeddings, delta_d)
    return remove_small_segments(labels, min_size)


def foreground_probability(
    embeddings: NDArray[np.floating],
    background_embedding: NDArray[np.floating] | None = None,
    *,
    delta_v: float = LossConfig.delta_v,
    delta_d: float = LossConfig.delta_d,
    seed: int = 0,
) -> NDArray[np.float32]:
    """Probability-like foreground map: ``1 - affinity`` to the background embedding.

    It is 0 at the background embedding, above 0.5 where a pixel would not
    join the background in :func:`segment` and 1 from ``2 delta_d`` on, so
    ``foreground_probability(...) > 0.5`` is a foreground mask for :func:`segment`.

    Parameters
    ----------
    embeddings : ndarray of float, shape (D, Y, X) or (D, Z, Y, X)
        Pixel embeddings, channels first.
    background_embedding : ndarray of float, shape (D,), optional
        Embedding of the background, e.g. the mean over background scribbles.
        If None, it is estimated as the embedding *mode*: among up to 2048
        random pixels, the one with the most others within ``delta_v``; the
        estimate is the mean of those neighbours. This assumes background is
        the most common embedding (true for sparse nuclei, not for tissue).
    delta_v, delta_d : float
        Margins of the loss (see :func:`segment`).
    seed : int
        Seed of the pixels used for the mode estimate.

    Returns
    -------
    ndarray of float32, shape (*spatial)
        Values in [0, 1].

    Raises
    ------
    ValueError
        On a wrong shape or dtype.
    """
    embeddings = _check_embeddings(embeddings, "embeddings")
    LossConfig(delta_v=delta_v, delta_d=delta_d)
    if background_embedding is None:
        background = embedding_mode(embeddings, delta_v=delta_v, seed=seed)
    else:
        background = np.asarray(background_embedding, dtype=np.float32)
        if background.shape != embeddings.shape[:1]:
            raise ValueError(
                f"background_embedding must have shape ({embeddings.shape[0]},), "
                f"got {background.shape}"
            )
    return foreground_map(embeddings, background, delta_d)


# --------------------------------------------------------------------------- validation
def _check_embeddings(embeddings: Any, name: str) -> NDArray[np.float32]:
    """(D, *spatial) float32 C-contiguous copy/view of finite embeddings, or ValueError."""
    array = np.asarray(embeddings)
    if array.ndim not in (3, 4) or 0 in array.shape:
        raise ValueError(
            f"{name} must have shape (D, Y, X) or (D, Z, Y, X) with no empty axis, "
            f"got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be a float array, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got NaN or inf values")
    return array


def _check_foreground(foreground: Any, spatial: tuple[int, ...]) -> NDArray[np.bool_] | str | None:
    """Bool mask of the spatial shape (0/1 integers accepted), None or "auto"; else ValueError."""
    if foreground is None or (isinstance(foreground, str) and foreground == "auto"):
        return foreground
    if isinstance(foreground, str):
        raise ValueError(f"foreground must be a bool mask, None or 'auto', got {foreground!r}")
    mask = np.asarray(foreground)
    if mask.shape != spatial:
        raise ValueError(
            f"foreground must have the spatial shape of the embeddings {spatial}, got {mask.shape}"
        )
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"foreground must be a bool mask, got dtype {mask.dtype}")
        mask = mask.astype(bool)
    return np.ascontiguousarray(mask)


def _check_params(method: str, params: dict[str, Any], embeddings: NDArray) -> dict[str, Any]:
    """Method-specific keywords with defaults filled in, checked."""
    if method not in _METHOD_PARAMS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    defaults = _METHOD_PARAMS[method]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise TypeError(f"method {method!r} takes {sorted(defaults)}, got unknown {unknown}")
    options = {**defaults, **params}
    ndim = embeddings.ndim - 1
    if "strides" in options:
        strides = options["strides"]
        strides = (strides,) * ndim if np.isscalar(strides) else tuple(strides)
        options["strides"] = _positive_ints(strides, "strides", length=ndim)
        options["offsets"] = _positive_ints(options["offsets"], "offsets")
    for key in ("min_cluster_size", "max_samples", "n_anchors"):
        if key in options:
            options[key] = _positive_ints([options[key]], key, minimum=2)[0]
    if "iou_threshold" in options and not 0 <= options["iou_threshold"] <= 1:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {options['iou_threshold']}")
    if method == "consistency":
        if options["teacher"] is None:
            raise ValueError("method 'consistency' needs teacher= (teacher embeddings)")
        options["teacher"] = _check_embeddings(options["teacher"], "teacher")
        if options["teacher"].shape != embeddings.shape:
            raise ValueError(
                f"teacher must have the shape of embeddings {embeddings.shape}, "
                f"got {options['teacher'].shape}"
            )
    return options


def _positive_ints(
    values: Sequence[Any], name: str, *, length: int | None = None, minimum: int = 1
) -> tuple[int, ...]:
    """Tuple of integers >= ``minimum`` (of ``length`` items if given), or ValueError."""
    values = tuple(values)
    ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if not ok or any(v < minimum for v in values) or (length is not None and len(values) != length):
        size = "" if length is None else f"{length} "
        raise ValueError(f"{name} must be {size}integers >= {minimum}, got {values}")
    return tuple(int(v) for v in values)


# --------------------------------------------------------------------------- post-processing
def remove_small_segments(labels: NDArray[np.integer], min_size: int) -> NDArray[np.uint32]:
    """Zero segments below ``min_size`` pixels, then number the rest 1..n (uint32)."""
    from skimage.segmentation import relabel_sequential

    counts = np.bincount(labels.ravel())
    small = counts < min_size
    small[0] = True
    if small[1:].any():
        labels = np.where(small[labels], 0, labels)
    relabeled, _, _ = relabel_sequential(labels)
    return relabeled.astype(np.uint32, copy=False)


# --------------------------------------------------------------------------- point clustering
def _cluster_points(
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
