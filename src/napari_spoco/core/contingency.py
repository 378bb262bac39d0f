"""The contingency table of two label images: which objects overlap, and by how much.

Every metric of :mod:`.metrics` is computed from it (pixel counts per pair of
gt and pred ids), built with vectorised numpy by :func:`overlap_table`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from scipy.sparse.csgraph import maximum_bipartite_matching

__all__ = ["Overlap", "Pairs", "check_labels", "overlap_table", "true_positives"]

# Ids are renumbered with a lookup table, and the contingency table is counted
# in a dense array, while these arrays have at most this many entries (or as
# many as there are runs of pixels, if more); beyond, both fall back to sorting.
_DENSE_LIMIT = 1 << 20

# Overlapping (gt, pred) object pairs, 0-based indices, and their IoU.
Pairs = tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]


@dataclass(frozen=True)
class Overlap:
    """Sparse contingency table of two label images.

    Objects are renumbered 1..n_gt and 1..n_pred (in order of their ids); index 0
    is background. Entry k says that ``counts[k]`` pixels have gt index ``gt[k]``
    and pred index ``pred[k]``; only non-zero counts are stored.
    """

    n_gt: int
    n_pred: int
    gt: NDArray[np.intp]
    pred: NDArray[np.intp]
    counts: NDArray[np.int64]

    def sizes(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Pixel counts per gt index (n_gt + 1,) and per pred index (n_pred + 1,)."""
        gt_sizes = np.bincount(self.gt, self.counts, self.n_gt + 1).astype(np.int64)
        pred_sizes = np.bincount(self.pred, self.counts, self.n_pred + 1).astype(np.int64)
        return gt_sizes, pred_sizes

    def object_pairs(self) -> Pairs:
        """Overlapping (gt, pred) object pairs, 0-based, with their IoU."""
        gt_sizes, pred_sizes = self.sizes()
        both = (self.gt > 0) & (self.pred > 0)
        gt, pred, inter = self.gt[both], self.pred[both], self.counts[both]
        iou = inter / (gt_sizes[gt] + pred_sizes[pred] - inter)
        return gt - 1, pred - 1, iou


def check_labels(gt: ArrayLike, pred: ArrayLike) -> tuple[NDArray, NDArray]:
    """Return ``gt`` and ``pred`` as arrays after checking shape, dtype and range."""
    arrays = {"gt": np.asarray(gt), "pred": np.asarray(pred)}
    for name, labels in arrays.items():
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
            raise TypeError(
                f"{name} must be an integer label image, got dtype {labels.dtype}"
                " (cast float labels with .astype(int) if they hold whole numbers)"
            )
        if labels.ndim not in (2, 3):
            raise ValueError(
                f"{name} must be a 2D (Y, X) or 3D (Z, Y, X) label image, got shape {labels.shape}"
            )
        if np.issubdtype(labels.dtype, np.signedinteger) and labels.size and labels.min() < 0:
            raise ValueError(f"{name} label ids must be >= 0, got minimum {labels.min()}")
    if arrays["gt"].shape != arrays["pred"].shape:
        raise ValueError(
            "gt and pred must have the same shape, "
            f"got gt {arrays['gt'].shape} and pred {arrays['pred'].shape}"
        )
    return arrays["gt"], arrays["pred"]


def _renumber(ids: NDArray) -> tuple[NDArray[np.intp], int]:
    """Map id 0 to 0 and the other ids, in increasing order, to 1..n; return (indices, n)."""
    top = int(ids.max()) if ids.size else 0
    if top <= max(_DENSE_LIMIT, ids.size):  # lookup table over the id range, no sort
        ids = ids.astype(np.intp, copy=False)
        present = np.zeros(top + 1, dtype=bool)
        present[ids] = True
        present[0] = False
        lookup = np.cumsum(present, dtype=np.intp)
        return lookup[ids], int(lookup[-1])
    unique, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.astype(np.intp, copy=False).reshape(-1)
    if unique[0] == 0:
        return inverse, unique.size - 1
    return inverse + 1, unique.size


def overlap_table(gt: NDArray, pred: NDArray) -> Overlap:
    """Contingency table of two validated label images of equal shape."""
    gt, pred = gt.reshape(-1), pred.reshape(-1)
    # Compress both images into runs of pixels whose (gt, pred) pair is constant
    # along the flattened last axis: label images have few runs, so the sorting
    # below works on far fewer elements than there are pixels.
    change = np.ones(gt.size, dtype=bool)
    np.not_equal(gt[1:], gt[:-1], out=change[1:])
    change[1:] |= pred[1:] != pred[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(starts, append=gt.size)
    gt_index, n_gt = _renumber(gt[starts])
    pred_index, n_pred = _renumber(pred[starts])
    width = n_pred + 1
    cells = (n_gt + 1) * width
    key = gt_index * width + pred_index
    if cells <= max(_DENSE_LIMIT, key.size):
        table = np.bincount(key, weights=lengths, minlength=cells)
        key = np.flatnonzero(table)
        counts = table[key]
    else:
        key, inverse = np.unique(key, return_inverse=True)
        counts = np.bincount(inverse.reshape(-1), weights=lengths, minlength=key.size)
    return Overlap(n_gt, n_pred, key // width, key % width, counts.astype(np.int64))


def true_positives(overlap: Overlap, iou_pairs: Pairs, threshold: float) -> int:
    """Size of the largest one-to-one matching of objects with IoU > ``threshold``."""
    gt, pred, iou = iou_pairs
    hit = iou > threshold
    if threshold >= 0.5 or not hit.any():
        # IoU(A, B) > 1/2 means |A ∩ B| > |A ∪ B| / 2 >= |B| / 2: more than half of
        # B lies in A. Disjoint objects cannot both hold more than half of B (and
        # vice versa), so every object has at most one such partner.
        return int(np.count_nonzero(hit))
    graph = sparse.csr_array(
        (np.ones(np.count_nonzero(hit), np.int8), (gt[hit], pred[hit])),
        shape=(overlap.n_gt, overlap.n_pred),
    )
    return int(np.count_nonzero(maximum_bipartite_matching(graph, perm_type="column") >= 0))
