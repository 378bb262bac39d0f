"""Helpers for sparse annotations (0 = not annotated, k >= 1 = one object)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["keep_fraction_of_objects"]


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
