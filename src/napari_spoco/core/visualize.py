"""Turn 16-channel embeddings into pictures a person can read."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["embeddings_to_rgb"]


def embeddings_to_rgb(
    embeddings: NDArray, *, max_samples: int = 50_000, seed: int = 0
) -> NDArray[np.float32]:
    """Project embeddings on their 3 principal components, scaled to [0, 1] as RGB.

    Pixels of one object share a colour and different objects differ, so the
    picture shows at a glance whether the network separates instances.

    Parameters
    ----------
    embeddings : ndarray, shape (D, *spatial)
        Pixel embeddings.
    max_samples : int
        Pixels used to fit the projection (a random subset keeps it fast).
    seed : int
        Seed of that subset, so the colours are repeatable.

    Returns
    -------
    ndarray of float32, shape (*spatial, 3)
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim < 3:
        raise ValueError(f"embeddings must be (D, *spatial), got shape {embeddings.shape}")
    dims = embeddings.shape[0]
    flat = embeddings.reshape(dims, -1).T
    rng = np.random.default_rng(seed)
    sample = flat[rng.choice(len(flat), min(max_samples, len(flat)), replace=False)]
    mean = sample.mean(axis=0)
    _, _, components = np.linalg.svd(sample - mean, full_matrices=False)
    components = components[:3]
    if len(components) < 3:
        components = np.pad(components, ((0, 3 - len(components)), (0, 0)))
    projected = (flat - mean) @ components.T
    low, high = np.percentile(projected, [1, 99], axis=0)
    rgb = np.clip((projected - low) / np.where(high > low, high - low, 1.0), 0, 1)
    return rgb.reshape(*embeddings.shape[1:], 3).astype(np.float32)
