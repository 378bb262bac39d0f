"""Score an instance segmentation against ground truth, one image at a time.

Every metric takes ``(gt, pred)``: two integer label images (2D (Y, X) or 3D
(Z, Y, X)) of equal shape, where 0 is background and every other id is one
object. Ids need not be consecutive and may be any non-negative integer up to
the dtype's maximum (uint64 included). Objects are defined by id, not by
connectivity. Definitions: ``docs/segmentation.md``, section "Metrics".

All overlaps come from one contingency table (pixel counts per pair of gt and
pred ids, :mod:`.contingency`); :func:`evaluate` builds it once for all metrics.

Empty images never crash and never divide by zero. The conventions are:

=========================  ==============  ==============  ==============
metric                     both empty      gt empty only   pred empty only
=========================  ==============  ==============  ==============
SBD                        1               0               0
AP, mAP, precision,        1               0               0
recall, F1
Adapted Rand error         0               1               skimage value
=========================  ==============  ==============  ==============

The Adapted Rand error follows ``skimage.metrics.adapted_rand_error``, which
ignores gt background and treats pred background as one more segment; see
:func:`adapted_rand_error` for its remaining undefined cases.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .contingency import Overlap, Pairs, check_labels, overlap_table, true_positives

__all__ = [
    "MAP_THRESHOLDS",
    "absolute_difference_in_count",
    "adapted_rand_error",
    "average_precision",
    "difference_in_count",
    "evaluate",
    "mean_average_precision",
    "precision_recall_f1",
    "symmetric_best_dice",
]

#: IoU thresholds 0.50, 0.55, ..., 0.95 averaged by :func:`mean_average_precision`
#: (rounded, so that each equals its decimal literal).
MAP_THRESHOLDS: NDArray[np.float64] = np.round(np.arange(0.5, 1.0, 0.05), 2)
MAP_THRESHOLDS.setflags(write=False)


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"IoU threshold must be in [0, 1), got {threshold}")
    return threshold


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, with 0/0 = 1 (nothing to find, nothing found)."""
    return 1.0 if denominator == 0 else float(numerator) / float(denominator)


def _sbd(overlap: Overlap) -> float:
    if overlap.n_gt == 0 or overlap.n_pred == 0:
        return float(overlap.n_gt == overlap.n_pred)
    gt_sizes, pred_sizes = overlap.sizes()
    both = (overlap.gt > 0) & (overlap.pred > 0)
    gt, pred, inter = overlap.gt[both], overlap.pred[both], overlap.counts[both]
    dice = 2.0 * inter / (gt_sizes[gt] + pred_sizes[pred])
    best_for_gt, best_for_pred = np.zeros(overlap.n_gt + 1), np.zeros(overlap.n_pred + 1)
    np.maximum.at(best_for_gt, gt, dice)  # index 0 (background) stays unused
    np.maximum.at(best_for_pred, pred, dice)
    return float(min(best_for_gt[1:].mean(), best_for_pred[1:].mean()))


def _ap(overlap: Overlap, iou_pairs: Pairs, threshold: float) -> float:
    tp = true_positives(overlap, iou_pairs, threshold)
    return _ratio(tp, overlap.n_gt + overlap.n_pred - tp)


def _precision_recall_f1(
    overlap: Overlap, iou_pairs: Pairs, threshold: float
) -> tuple[float, float, float]:
    n_gt, n_pred = overlap.n_gt, overlap.n_pred
    if (n_gt == 0) != (n_pred == 0):
        return 0.0, 0.0, 0.0
    tp = true_positives(overlap, iou_pairs, threshold)
    return _ratio(tp, n_pred), _ratio(tp, n_gt), _ratio(2 * tp, n_gt + n_pred)


def _arand(overlap: Overlap) -> float:
    in_gt = overlap.gt > 0  # skimage ignores gt background, keeps pred background
    counts = overlap.counts[in_gt].astype(np.float64)
    n = counts.sum()
    if n == 0:
        return float(overlap.n_pred > 0)
    gt_sizes = np.bincount(overlap.gt[in_gt], counts)
    pred_sizes = np.bincount(overlap.pred[in_gt], counts)
    # Twice the number of pixel pairs sharing a label in both / in gt / in pred.
    pairs_both = counts @ counts - n
    pairs_gt = gt_sizes @ gt_sizes - n
    pairs_pred = pred_sizes @ pred_sizes - n
    denominator = 0.5 * pairs_gt + 0.5 * pairs_pred
    if denominator == 0:
        return 0.0  # all segments are single pixels in both: identical partitions
    return float(1.0 - pairs_both / denominator)


def symmetric_best_dice(gt: ArrayLike, pred: ArrayLike) -> float:
    """Symmetric best Dice (SBD) of the CVPPP leaf segmentation challenge.

    ``BD(A, B) = 1/M sum_i max_j 2|A_i ∩ B_j| / (|A_i| + |B_j|)`` over the M
    objects of A, and ``SBD = min(BD(pred, gt), BD(gt, pred))``; background is
    excluded. Symmetric in its arguments.

    Parameters
    ----------
    gt, pred : array_like of int, shape (Y, X) or (Z, Y, X)
        Ground-truth and predicted label images, 0 = background.

    Returns
    -------
    float
        SBD in [0, 1]; 1 if both images are empty, 0 if only one is.

    Raises
    ------
    TypeError
        If a label image is not of integer (or bool) dtype.
    ValueError
        If the shapes differ, are not 2D/3D, or an id is negative.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 0]] * 2)
    >>> symmetric_best_dice(gt, np.array([[7, 7, 7, 0]] * 2))
    0.8
    """
    return _sbd(overlap_table(*check_labels(gt, pred)))


def difference_in_count(gt: ArrayLike, pred: ArrayLike) -> int:
    """Difference in count (DiC): number of pred objects minus number of gt objects.

    Parameters
    ----------
    gt, pred : array_like of int, shape (Y, X) or (Z, Y, X)
        Ground-truth and predicted label images, 0 = background.

    Returns
    -------
    int
        Signed DiC; positive when ``pred`` has more objects (over-segmentation).

    Raises
    ------
    TypeError, ValueError
        On invalid label images, as in :func:`symmetric_best_dice`.

    Examples
    --------
    >>> difference_in_count(np.array([[1, 2, 0]] * 2), np.array([[5, 0, 0]] * 2))
    -1
    """
    overlap = overlap_table(*check_labels(gt, pred))
    return overlap.n_pred - overlap.n_gt


def absolute_difference_in_count(gt: ArrayLike, pred: ArrayLike) -> int:
    """Absolute difference in count, ``|DiC|`` (see :func:`difference_in_count`).

    Examples
    --------
    >>> absolute_difference_in_count(np.array([[1, 2, 0]] * 2), np.array([[5, 0, 0]] * 2))
    1
    """
    return abs(difference_in_count(gt, pred))


def average_precision(gt: ArrayLike, pred: ArrayLike, *, threshold: float = 0.5) -> float:
    """Average precision at one IoU threshold, as in the 2018 Data Science Bowl.

    A gt and a pred object match when their IoU exceeds ``threshold`` (strictly),
    each object matching at most one other. ``AP = TP / (TP + FP + FN)`` with TP
    the number of matches, FP the unmatched pred and FN the unmatched gt objects.
    For ``threshold >= 0.5`` an object can have at most one partner with IoU above
    the threshold, so the matching is unique; below 0.5 the largest one-to-one
    matching is used. Symmetric in its arguments.

    Parameters
    ----------
    gt, pred : array_like of int, shape (Y, X) or (Z, Y, X)
        Ground-truth and predicted label images, 0 = background.
    threshold : float, optional
        IoU threshold in [0, 1).

    Returns
    -------
    float
        AP in [0, 1]; 1 if both images are empty, 0 if only one is.

    Raises
    ------
    TypeError, ValueError
        On invalid label images (see :func:`symmetric_best_dice`) or a threshold
        outside [0, 1).

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2]] * 2)
    >>> average_precision(gt, np.array([[3, 3, 3, 0]] * 2))  # IoU 2/3: TP 1, FN 1
    0.5
    """
    threshold = _check_threshold(threshold)
    overlap = overlap_table(*check_labels(gt, pred))
    return _ap(overlap, overlap.object_pairs(), threshold)


def mean_average_precision(
    gt: ArrayLike, pred: ArrayLike, *, thresholds: ArrayLike = MAP_THRESHOLDS
) -> float:
    """Mean of :func:`average_precision` over IoU thresholds (default 0.50, 0.55, ..., 0.95).

    Parameters
    ----------
    gt, pred : array_like of int, shape (Y, X) or (Z, Y, X)
        Ground-truth and predicted label images, 0 = background.
    thresholds : array_like of float, shape (T,), optional
        IoU thresholds, each in [0, 1).

    Returns
    -------
    float
        mAP in [0, 1]; 1 if both images are empty, 0 if only one is.

    Raises
    ------
    TypeError, ValueError
        On invalid label images or thresholds (none given, or outside [0, 1)).

    Examples
    --------
    >>> gt = np.array([[1, 1, 1, 0]] * 2)
    >>> mean_average_precision(gt, gt * 4)
    1.0
    """
    values = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("expected at least one IoU threshold, got none")
    checked = [_check_threshold(t) for t in values]
    overlap = overlap_table(*check_labels(gt, pred))
    pairs = overlap.object_pairs()
    return float(np.mean([_ap(overlap, pairs, t) for t in checked]))


def adapted_rand_error(gt: ArrayLike, pred: ArrayLike) -> float:
    """Adapted Rand error (SNEMI3D), as ``skimage.metrics.adapted_rand_error``.

    Same convention as scikit-image with its default ``ignore_labels=(0,)`` and
    ``alpha=0.5`` (this returns its first output): pixels that are background in
    ``gt`` are ignored, while background in ``pred`` counts as one more segment.
    ``1 - sum_ij n_ij(n_ij - 1) / (0.5 sum_i a_i(a_i - 1) + 0.5 sum_j b_j(b_j - 1))``
    with ``n_ij`` the contingency table restricted to gt foreground and ``a``,
    ``b`` its row and column sums. Not symmetric in its arguments.

    Where scikit-image returns NaN (no pair of pixels shares a label), we return:
    0 if both images are empty, 1 if only ``gt`` is empty, and 0 if every segment
    of both is a single pixel (identical partitions). An empty ``pred`` with a
    non-empty ``gt`` keeps scikit-image's value, which is 0 when ``gt`` has a
    single object (one segment against one segment).

    Parameters
    ----------
    gt, pred : array_like of int, shape (Y, X) or (Z, Y, X)
        Ground-truth and predicted label images, 0 = background.

    Returns
    -------
    float
        Error in [0, 1]; 0 is a perfect segmentation.

    Raises
    ------
    TypeError, ValueError
        On invalid label images, as in :func:`symmetric_best_dice`.

    Examples
    --------
    >>> gt = np.array([[1, 1, 2, 2]] * 2)
    >>> adapted_rand_error(gt, gt + 10)
    0.0
    """
    return _arand(overlap_table(*check_labels(gt, pred)))


def precision_recall_f1(
    gt: ArrayLike, pred: ArrayLike, *, threshold: float = 0.5
) -> tuple[float, float, float]:
    """Object-level precision, recall and F1 at one IoU threshold.

    Objects are matched as in :func:`average_precision`; ``precision = TP / #pred``,
    ``recall = TP / #gt`` and ``F1 = 2 TP / (#gt + #pred)``.

    Parameters
    ----------
    gt, pred : array_like of int, shape (Y, X) or (Z, Y, X)
        Ground-truth and predicted label images, 0 = background.
    threshold : float, optional
        IoU threshold in [0, 1).

    Returns
    -------
    tuple of float
        ``(precision, recall, f1)``, each in [0, 1]; all 1 if both images are
        empty, all 0 if only one is.

    Raises
    ------
    TypeError, ValueError
        On invalid label images or a threshold outside [0, 1).

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2]] * 2)
    >>> precision_recall_f1(gt, np.array([[3, 3, 3, 0]] * 2))
    (1.0, 0.5, 0.6666666666666666)
    """
    threshold = _check_threshold(threshold)
    overlap = overlap_table(*check_labels(gt, pred))
    return _precision_recall_f1(overlap, overlap.object_pairs(), threshold)


def evaluate(gt: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """All metrics of this module for one image, from one contingency table.

    Parameters
    ----------
    gt, pred : array_like of int, shape (Y, X) or (Z, Y, X)
        Ground-truth and predicted label images, 0 = background.

    Returns
    -------
    dict of str to float
        ``"sbd"``, ``"dic"`` (signed), ``"abs_dic"``, ``"ap50"`` (AP at IoU 0.5),
        ``"map"`` (over :data:`MAP_THRESHOLDS`), ``"arand"`` (Adapted Rand error,
        scikit-image convention), and ``"precision"``, ``"recall"``, ``"f1"`` at
        IoU 0.5. Counts are given as floats so that results average directly.

    Raises
    ------
    TypeError, ValueError
        On invalid label images, as in :func:`symmetric_best_dice`.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2]] * 2)
    >>> evaluate(gt, gt)["map"]
    1.0
    """
    overlap = overlap_table(*check_labels(gt, pred))
    pairs = overlap.object_pairs()
    dic = overlap.n_pred - overlap.n_gt
    precision, recall, f1 = _precision_recall_f1(overlap, pairs, 0.5)
    return {
        "sbd": _sbd(overlap),
        "dic": float(dic),
        "abs_dic": float(abs(dic)),
        "ap50": _ap(overlap, pairs, 0.5),
        "map": float(np.mean([_ap(overlap, pairs, t) for t in MAP_THRESHOLDS])),
        "arand": _arand(overlap),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
