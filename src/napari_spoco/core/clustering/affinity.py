"""Affinity between pixel embeddings, and where the background is: rules every method shares.

The embedding network is trained so that pixels of one object lie within
``delta_v`` of their mean and object means lie ``2 delta_d`` apart. The
affinity of two pixels at embedding distance ``d`` is therefore
``a = ([2 delta_d - d]_+ / (2 delta_d))^2`` (1 for identical embeddings, 0 from
the push margin on).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "affinity_from_distance",
    "drop_background_segments",
    "embedding_mode",
    "foreground_map",
    "segment_means",
]


def affinity_from_distance(distance: NDArray, delta_d: float) -> NDArray[np.float32]:
    """Affinity ``([2 delta_d - d]_+ / (2 delta_d))^2`` of embedding distances, in [0, 1].

    Parameters
    ----------
    distance : ndarray of float
        Euclidean embedding distances, any shape.
    delta_d : float
        Push margin of the loss: means of different objects are ``2 delta_d`` apart.

    Returns
    -------
    ndarray of float32, same shape
        1 for identical embeddings, 0 from ``2 delta_d`` on.
    """
    margin = 2.0 * delta_d
    out = np.subtract(margin, distance, dtype=np.float32)
    np.maximum(out, 0, out=out)
    out *= 1.0 / margin
    out *= out
    return out


def segment_means(labels: NDArray[np.intp], embeddings: NDArray) -> NDArray[np.float64]:
    """Mean embedding (n_labels, D) of every label id 0..max (zeros for absent ids)."""
    flat = labels.ravel()
    counts = np.maximum(np.bincount(flat), 1)
    sums = [
        np.bincount(flat, weights=channel.ravel(), minlength=len(counts)) for channel in embeddings
    ]
    return np.stack(sums, axis=1) / counts[:, None]


def drop_background_segments(
    labels: NDArray[np.intp], embeddings: NDArray, delta_d: float
) -> NDArray[np.intp]:
    """Largest segment, and segments whose mean has affinity > 0.5 to its mean, become 0.

    Without a foreground mask nothing tells background from objects except
    that it is usually the largest region; background split by objects into
    several segments is re-joined through the affinity of the means.
    """
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    if counts.max() == 0:
        return labels
    means = segment_means(labels, embeddings)
    background = means[np.argmax(counts)]
    distance = np.linalg.norm(means - background, axis=1)
    joins = affinity_from_distance(distance, delta_d) > 0.5
    lookup = np.where(joins, 0, np.arange(len(counts)))
    return lookup[labels]


def foreground_map(
    embeddings: NDArray[np.float32], background: NDArray, delta_d: float
) -> NDArray[np.float32]:
    """``1 - affinity`` of every pixel (*spatial) to the background embedding (D,)."""
    squared = np.zeros(embeddings.shape[1:], dtype=np.float32)
    for channel, value in zip(embeddings, background.astype(np.float32), strict=True):
        squared += np.square(channel - value)
    return 1.0 - affinity_from_distance(np.sqrt(squared, out=squared), delta_d)


def embedding_mode(embeddings: NDArray, *, delta_v: float, seed: int) -> NDArray[np.float64]:
    """Mean of the ``delta_v``-neighbours of the densest of up to 2048 random pixels."""
    flat = embeddings.reshape(len(embeddings), -1)
    rng = np.random.default_rng(seed)
    picked = rng.choice(flat.shape[1], min(2048, flat.shape[1]), replace=False)
    points = flat[:, picked].T.astype(np.float64)
    norms = np.einsum("md,md->m", points, points)
    within = norms[:, None] - 2 * (points @ points.T) + norms[None, :] < delta_v**2
    return points[within[np.argmax(within.sum(1))]].mean(axis=0)
