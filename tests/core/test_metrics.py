import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from skimage.metrics import adapted_rand_error as skimage_arand

from napari_spoco.core import contingency
from napari_spoco.core.contingency import overlap_table
from napari_spoco.core.metrics import (
    MAP_THRESHOLDS,
    absolute_difference_in_count,
    adapted_rand_error,
    average_precision,
    difference_in_count,
    evaluate,
    mean_average_precision,
    precision_recall_f1,
    symmetric_best_dice,
)

KEYS = {"sbd", "dic", "abs_dic", "ap50", "map", "arand", "precision", "recall", "f1"}
BOUNDED = ("sbd", "ap50", "map", "arand", "precision", "recall", "f1")


def two_squares():
    """gt: a 10x10 square (id 1) and a 6x6 square (id 2) in a 20x30 image."""
    gt = np.zeros((20, 30), np.uint16)
    gt[0:10, 0:10] = 1
    gt[12:18, 20:26] = 2
    return gt


def skimage_value(gt, pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 on empty inputs
        return skimage_arand(gt, pred)[0]


def relabel(labels, new_ids):
    """Give the k-th smallest non-zero id of ``labels`` the id ``new_ids[k]``."""
    ids, inverse = np.unique(labels, return_inverse=True)
    lookup = np.zeros(len(ids), np.uint64)
    nonzero = ids != 0
    lookup[nonzero] = new_ids[: nonzero.sum()]
    return lookup[inverse].reshape(labels.shape)


# --------------------------------------------------------------------- exact scores
def test_identical_images_score_perfectly():
    gt = two_squares()
    scores = evaluate(gt, gt)
    assert set(scores) == KEYS
    assert scores == {
        "sbd": 1.0,
        "dic": 0.0,
        "abs_dic": 0.0,
        "ap50": 1.0,
        "map": 1.0,
        "arand": 0.0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
    }
    assert all(isinstance(v, float) for v in scores.values())


def test_one_object_split_in_two():
    gt = np.zeros((6, 10), np.int32)
    gt[1:5, 1:9] = 1  # 32 pixels
    pred = gt.copy()
    pred[1:5, 5:9] = 2  # two halves of 16 pixels: IoU 1/2, Dice 2/3 each
    assert symmetric_best_dice(gt, pred) == pytest.approx(2 / 3)
    assert difference_in_count(gt, pred) == 1
    assert absolute_difference_in_count(gt, pred) == 1
    # IoU is exactly 0.5: no match at 0.5 (strict), one match just below.
    assert average_precision(gt, pred) == 0.0
    assert average_precision(gt, pred, threshold=0.49) == pytest.approx(1 / 2)
    assert precision_recall_f1(gt, pred, threshold=0.49) == pytest.approx((1 / 2, 1, 2 / 3))
    # pairs: both 2*16^2 - 32 = 480, gt 32^2 - 32 = 992, pred 480 -> 1 - 480/736
    assert adapted_rand_error(gt, pred) == pytest.approx(8 / 23)
    assert adapted_rand_error(gt, pred) == pytest.approx(skimage_value(gt, pred))


def test_one_object_missed():
    gt = two_squares()
    pred = np.where(gt == 1, 1, 0)
    assert symmetric_best_dice(gt, pred) == 0.5  # BD(gt, pred) = (1 + 0) / 2
    assert difference_in_count(gt, pred) == -1
    assert average_precision(gt, pred) == 0.5  # TP 1, FN 1
    assert mean_average_precision(gt, pred) == 0.5
    assert precision_recall_f1(gt, pred) == pytest.approx((1.0, 0.5, 2 / 3))
    assert adapted_rand_error(gt, pred) == pytest.approx(skimage_value(gt, pred))


def test_partial_overlap_at_thresholds_around_its_iou():
    gt = np.zeros((12, 16), np.uint8)
    pred = np.zeros_like(gt)
    gt[1:11, 1:11] = 1
    pred[1:11, 4:14] = 1  # shifted by 3: intersection 70, union 130
    iou = 70 / 130
    assert average_precision(gt, pred, threshold=iou - 1e-9) == 1.0
    assert average_precision(gt, pred, threshold=iou) == 0.0  # match needs IoU > threshold
    assert average_precision(gt, pred, threshold=0.53) == 1.0
    assert average_precision(gt, pred, threshold=0.54) == 0.0
    assert mean_average_precision(gt, pred) == pytest.approx(0.1)  # only 0.50 of 10 passes
    assert mean_average_precision(gt, pred, thresholds=[0.3, 0.6]) == 0.5
    assert symmetric_best_dice(gt, pred) == pytest.approx(0.7)  # 2 * 70 / 200
    # gt foreground: 70 pixels in pred 1, 30 in pred background -> 1 - 5700/7800
    assert adapted_rand_error(gt, pred) == pytest.approx(7 / 26)
    assert adapted_rand_error(gt, pred) == pytest.approx(skimage_value(gt, pred))


def test_low_threshold_uses_the_largest_one_to_one_matching():
    # 1-pixel-high strips: gt A = x0..5, B = x6..9; pred X = x3..8, Y = x0..2.
    gt = np.array([[1] * 6 + [2] * 4 + [0, 0]])
    pred = np.array([[2] * 3 + [1] * 6 + [0] * 3])
    # IoU(A, X) = 3/9, IoU(A, Y) = 3/6, IoU(B, X) = 3/7
    assert average_precision(gt, pred, threshold=0.3) == 1.0  # A-Y and B-X
    assert average_precision(gt, pred, threshold=0.45) == pytest.approx(1 / 3)
    assert precision_recall_f1(gt, pred, threshold=0.0) == (1.0, 1.0, 1.0)


def test_3d_volumes():
    gt = np.zeros((6, 8, 8), np.uint32)
    gt[1:5, 2:6, 2:6] = 3
    gt[0:2, 0:2, 6:8] = 9
    assert evaluate(gt, gt)["map"] == 1.0
    pred = gt.copy()
    pred[3:5, 2:6, 2:6] = 4  # split the 64-voxel cube into two halves along z
    scores = evaluate(gt, pred)
    # BD(gt, pred) = (2/3 + 1) / 2 but BD(pred, gt) = (2/3 + 2/3 + 1) / 3 is smaller
    assert scores["sbd"] == pytest.approx(7 / 9)
    assert scores["dic"] == 1.0 and scores["ap50"] == 0.25  # TP 1, FP 2, FN 1
    assert scores["arand"] == pytest.approx(skimage_value(gt, pred))


def test_shifted_and_permuted_ids_give_identical_scores():
    gt = two_squares()
    pred = np.zeros_like(gt)
    pred[0:10, 2:12] = 1
    pred[12:17, 20:26] = 2
    pred[19, 0:5] = 3
    expected = evaluate(gt, pred)
    big = np.iinfo(np.uint64).max
    for gt_ids, pred_ids in [
        ([7, 3], [100, 5, 40]),  # permuted, non-consecutive
        ([big, big - 1], [2**63, 1, big]),  # uint64 beyond int64
        ([2**40, 2**33], [2**31, 2**62, 9]),
    ]:
        new_gt = relabel(gt, np.array(gt_ids, np.uint64))
        new_pred = relabel(pred, np.array(pred_ids, np.uint64))
        assert evaluate(new_gt, new_pred) == pytest.approx(expected)
    signed = relabel(gt, np.array([2**62, 5], np.uint64)).astype(np.int64)
    assert evaluate(signed, pred.astype(np.uint32) * 70_000) == pytest.approx(expected)


def test_sorting_fallback_matches_dense_tables(monkeypatch):
    rng = np.random.default_rng(1)
    gt = np.kron(rng.integers(0, 30, (12, 12)), np.ones((4, 4), int))
    pred = np.roll(gt, 2, axis=1) * 3 + (rng.random(gt.shape) < 0.1)
    expected = evaluate(gt, pred)
    monkeypatch.setattr(contingency, "_DENSE_LIMIT", 1)
    assert evaluate(gt, pred) == pytest.approx(expected)
    shifted = gt.astype(np.uint64) + np.uint64(2**40) * (gt > 0).astype(np.uint64)
    assert evaluate(shifted, pred) == pytest.approx(expected)


# --------------------------------------------------------------------- empty inputs
def test_both_empty():
    empty = np.zeros((8, 8), np.uint16)
    scores = evaluate(empty, empty)
    assert scores == {**dict.fromkeys(KEYS, 1.0), "dic": 0.0, "abs_dic": 0.0, "arand": 0.0}
    assert math.isnan(skimage_value(empty, empty))  # why we define it ourselves


def test_empty_ground_truth():
    empty = np.zeros((20, 30), np.uint16)
    scores = evaluate(empty, two_squares())
    assert scores == {**dict.fromkeys(BOUNDED, 0.0), "dic": 2.0, "abs_dic": 2.0, "arand": 1.0}
    assert math.isnan(skimage_value(empty, two_squares()))


def test_empty_prediction():
    gt = two_squares()
    empty = np.zeros_like(gt)
    scores = evaluate(gt, empty)
    assert scores == {
        **dict.fromkeys(BOUNDED, 0.0),
        "dic": -2.0,
        "abs_dic": 2.0,
        "arand": pytest.approx(10 / 41),  # 1 - 11160 / ((11160 + 18360) / 2)
    }
    assert scores["arand"] == pytest.approx(skimage_value(gt, empty))
    # scikit-image convention: pred background is a segment, so one gt object
    # against an empty prediction has no Rand error.
    assert adapted_rand_error(gt == 1, empty) == 0.0


def test_arand_when_no_pixel_pair_shares_a_label():
    gt = np.zeros((4, 4), np.int64)
    gt[0, 0], gt[2, 3] = 1, 2
    pred = np.zeros_like(gt)
    pred[0, 0] = 5
    assert adapted_rand_error(gt, pred) == 0.0
    assert math.isnan(skimage_value(gt, pred))


# --------------------------------------------------------------------- skimage cross-check
@pytest.mark.parametrize("seed", range(6))
def test_adapted_rand_error_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    small_shape = (3, 5, 6) if seed % 2 else (10, 12)
    block = np.ones((1,) * (len(small_shape) - 2) + (4, 4), int)
    if seed < 2:  # independent noise
        gt = rng.integers(0, 12, np.kron(np.ones(small_shape), block).shape)
        pred = rng.integers(0, 9, gt.shape)
    else:  # blocky objects, pred = gt with 20 % of pixels relabelled
        gt = np.kron(rng.integers(0, 12, small_shape), block)
        pred = np.where(rng.random(gt.shape) < 0.2, rng.integers(0, 9, gt.shape), gt)
    assert adapted_rand_error(gt, pred) == pytest.approx(skimage_arand(gt, pred)[0], abs=1e-12)


def test_adapted_rand_error_is_not_symmetric():
    gt = np.array([[1, 1, 0, 0]])
    pred = np.array([[1, 1, 1, 1]])
    assert adapted_rand_error(gt, pred) == 0.0  # gt background is ignored
    assert adapted_rand_error(pred, gt) > 0.0  # but pred background is a segment


# --------------------------------------------------------------------- properties
shapes = st.shared(hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6), key="s")
label_images = hnp.arrays(np.uint16, shapes, elements=st.integers(0, 5))
thresholds = st.sampled_from([0.0, 0.2, 0.4, 0.5, 0.7, 0.9])


@settings(max_examples=60, deadline=None)
@given(label_images, label_images, thresholds)
def test_swapping_gt_and_pred(gt, pred, threshold):
    assert symmetric_best_dice(gt, pred) == symmetric_best_dice(pred, gt)
    ap = average_precision(gt, pred, threshold=threshold)
    assert ap == average_precision(pred, gt, threshold=threshold)
    assert mean_average_precision(gt, pred) == mean_average_precision(pred, gt)
    precision, recall, f1 = precision_recall_f1(gt, pred, threshold=threshold)
    assert precision_recall_f1(pred, gt, threshold=threshold) == (recall, precision, f1)
    assert difference_in_count(gt, pred) == -difference_in_count(pred, gt)


@settings(max_examples=60, deadline=None)
@given(label_images, label_images, st.integers(0, 2**32 - 1))
def test_relabelling_by_a_random_permutation(gt, pred, seed):
    rng = np.random.default_rng(seed)
    new_ids = rng.permutation(np.array([3, 17, 2**20, 2**35, 2**63 + 11], np.uint64))
    scores = evaluate(gt, pred)
    assert evaluate(relabel(gt, new_ids), pred) == pytest.approx(scores)
    assert evaluate(gt, relabel(pred, rng.permutation(new_ids))) == pytest.approx(scores)


@settings(max_examples=60, deadline=None)
@given(label_images, label_images)
def test_scores_are_bounded_and_arand_agrees_with_skimage(gt, pred):
    scores = evaluate(gt, pred)
    for key in BOUNDED:
        assert 0.0 <= scores[key] <= 1.0, key
    assert scores["abs_dic"] == abs(scores["dic"])
    expected = skimage_value(gt, pred)
    if not math.isnan(expected):
        assert scores["arand"] == pytest.approx(expected, abs=1e-12)


huge_label_images = hnp.arrays(
    np.uint64, shapes, elements=st.sampled_from([0, 1, 7, 2**40, 2**64 - 1])
)


@settings(max_examples=60, deadline=None)
@given(huge_label_images, huge_label_images)
def test_contingency_table_counts_every_pixel_pair(gt, pred):
    overlap = overlap_table(gt, pred)
    gt_ids, pred_ids = np.unique(gt), np.unique(pred)
    gt_ids, pred_ids = gt_ids[gt_ids != 0], pred_ids[pred_ids != 0]
    assert (overlap.n_gt, overlap.n_pred) == (gt_ids.size, pred_ids.size)
    pairs, counts = np.unique(np.stack([gt.ravel(), pred.ravel()]), axis=1, return_counts=True)
    expected = {(int(g), int(p)): int(c) for (g, p), c in zip(pairs.T, counts, strict=True)}
    as_ids = [0, *map(int, gt_ids)], [0, *map(int, pred_ids)]
    got = {
        (as_ids[0][g], as_ids[1][p]): int(c)
        for g, p, c in zip(overlap.gt, overlap.pred, overlap.counts, strict=True)
    }
    assert got == expected


@settings(max_examples=60, deadline=None)
@given(label_images, label_images, st.floats(0.5, 0.99))
def test_matches_above_half_iou_are_unique(gt, pred, threshold):
    gt_index, pred_index, iou = overlap_table(gt, pred).object_pairs()
    hit = iou > threshold
    assert len(np.unique(gt_index[hit])) == len(np.unique(pred_index[hit])) == hit.sum()


# --------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    gt = two_squares()
    with pytest.raises(ValueError, match=r"same shape, got gt \(20, 30\) and pred \(20, 31\)"):
        evaluate(gt, np.zeros((20, 31), int))
    with pytest.raises(TypeError, match="pred must be an integer label image, got dtype float64"):
        symmetric_best_dice(gt, gt.astype(float))
    with pytest.raises(TypeError, match="gt must be an integer label image, got dtype float32"):
        adapted_rand_error(gt.astype(np.float32), gt)
    with pytest.raises(ValueError, match=r"2D \(Y, X\) or 3D \(Z, Y, X\) label image, got shape"):
        average_precision(np.zeros(5, int), np.zeros(5, int))
    with pytest.raises(ValueError, match="label ids must be >= 0, got minimum -1"):
        difference_in_count(gt, np.full(gt.shape, -1))
    with pytest.raises(ValueError, match=r"IoU threshold must be in \[0, 1\), got 1.0"):
        average_precision(gt, gt, threshold=1.0)
    with pytest.raises(ValueError, match="at least one IoU threshold"):
        mean_average_precision(gt, gt, thresholds=[])


def test_default_thresholds_and_keyword_only_settings():
    np.testing.assert_array_equal(
        MAP_THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    )
    assert not MAP_THRESHOLDS.flags.writeable
    with pytest.raises(TypeError):
        average_precision(two_squares(), two_squares(), 0.5)
