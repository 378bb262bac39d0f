"""Turn pixel embeddings into an instance segmentation.

:func:`segment` is the one entry point (method, foreground mask, margins);
:func:`foreground_probability` maps each pixel's distance to the background
embedding to [0, 1]; :func:`embeddings_to_rgb` (re-exported from
:mod:`..visualize`) shows the embedding. Specification:
``docs/segmentation.md``, "Methods".

One module per method family: :mod:`.mutex` (a graph of pixel affinities) and
:mod:`.points` (HDBSCAN, mean shift and consistency cluster pixels as points in
embedding space); :mod:`.affinity` holds the rules both share (the affinity of two
embeddings, where the background is). The methods and their settings are listed
once in :mod:`napari_spoco.core.clustering_methods`, outside this package so that
``core.config`` can check a method name without importing the clustering code.

Only numpy is imported here; skimage, sklearn, hdbscan and the mutex-watershed
backend load on first use, so ``import napari_spoco.core`` stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..clustering_methods import METHODS
from ..config import LossConfig
from ..visualize import embeddings_to_rgb
from ._checks import check_embeddings, check_foreground, check_params
from .affinity import drop_background_segments, embedding_mode, foreground_map
from .mutex import mutex_watershed
from .points import cluster_points

__all__ = [
    "METHODS",
    "embeddings_to_rgb",
    "foreground_probability",
    "remove_small_segments",
    "segment",
]


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
    embeddings = check_embeddings(embeddings, "embeddings")
    mask = check_foreground(foreground, embeddings.shape[1:])
    options = check_params(method, params, embeddings)
    LossConfig(delta_v=delta_v, delta_d=delta_d)  # validates the margins
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ValueError(f"min_size must be an integer >= 0, got {min_size!r}")
    if isinstance(mask, str):
        background = embedding_mode(embeddings, delta_v=delta_v, seed=seed)
        mask = foreground_map(embeddings, background, delta_d) > 0.5
    if method == "mutex_watershed":
        labels = mutex_watershed(embeddings, mask, delta_d=delta_d, **options)
    else:
        labels = cluster_points(
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
    embeddings = check_embeddings(embeddings, "embeddings")
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
