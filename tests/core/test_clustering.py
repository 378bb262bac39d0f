"""Clustering of embeddings into instances: synthetic embeddings with known instances."""

from __future__ import annotations

import numpy as np
import pytest

from napari_spoco.core import segment as exported_segment
from napari_spoco.core.clustering import (
    METHODS,
    embeddings_to_rgb,
    foreground_probability,
    segment,
)
from napari_spoco.core.visualize import embeddings_to_rgb as visualize_rgb

DIMS = 16


def _embed(truth, groups, *, noise=0.05, seed=0, centres=None):
    """Embeddings (D, *spatial): object k gets centre groups[k] (0 = background) plus noise."""
    rng = np.random.default_rng(seed)
    if centres is None:
        centres = rng.normal(0, 3, (max(groups.values()) + 1, DIMS)).astype(np.float32)
        centres[0] = 0  # background
    group_of = np.zeros(truth.max() + 1, dtype=int)
    for label, group in groups.items():
        group_of[label] = group
    embeddings = np.moveaxis(centres[group_of[truth]], -1, 0)
    return (embeddings + rng.normal(0, noise, embeddings.shape)).astype(np.float32)


def _scene_2d():
    """Touching objects 1|2 (distinct embeddings), 3 and 4 share one embedding apart."""
    truth = np.zeros((64, 64), dtype=np.int32)
    truth[8:24, 8:24] = 1
    truth[8:24, 24:40] = 2
    truth[40:56, 6:20] = 3
    truth[40:56, 40:56] = 4
    truth[30:36, 50:60] = 5
    return truth, {1: 1, 2: 2, 3: 3, 4: 3, 5: 4}


def _scene_3d():
    truth = np.zeros((20, 40, 40), dtype=np.int32)
    truth[4:14, 4:16, 4:16] = 1
    truth[4:14, 4:16, 16:28] = 2  # touches 1
    truth[6:16, 26:36, 4:14] = 3
    truth[6:16, 26:36, 26:36] = 4  # same embedding as 3, apart
    return truth, {1: 1, 2: 2, 3: 3, 4: 3}


def _same_partition(a, b):
    """True if a and b are the same labeling up to renumbering, with 0 mapped to 0."""
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("scene", [_scene_2d, _scene_3d], ids=["2d", "3d"])
def test_mutex_watershed_recovers_instances_exactly(scene):
    truth, groups = scene()
    labels = segment(_embed(truth, groups))
    assert labels.dtype == np.uint32 and labels.shape == truth.shape
    assert _same_partition(labels, truth)
    assert set(np.unique(labels)) == set(range(len(groups) + 1))  # consecutive


@pytest.mark.parametrize("strides", [1, 3, (1, 2)])
def test_mutex_watershed_strides_and_offsets(strides):
    truth, groups = _scene_2d()
    labels = segment(_embed(truth, groups), strides=strides, offsets=(2, 6))
    assert _same_partition(labels, truth)


def test_result_does_not_depend_on_input_ids_and_is_deterministic():
    truth, groups = _scene_2d()
    permuted = {label: {1: 4, 2: 3, 3: 1, 4: 2}[group] for label, group in groups.items()}
    first = segment(_embed(truth, groups))
    assert np.array_equal(first, segment(_embed(truth, groups)))
    assert _same_partition(first, segment(_embed(truth, permuted, seed=1)))
    relabeled = np.where(truth > 0, 10 - truth, 0)  # same scene, other ids in the truth
    assert _same_partition(
        first, segment(_embed(relabeled, {10 - k: g for k, g in groups.items()}))
    )


def test_foreground_mask_is_respected():
    truth, groups = _scene_2d()
    embeddings = _embed(truth, groups)
    mask = np.zeros(truth.shape, dtype=bool)
    mask[:, :32] = True
    labels = segment(embeddings, foreground=mask)
    assert not labels[~mask].any()
    # Inside the mask nothing is background-removed: the background is one segment too.
    expected = np.where(mask, truth + 1, 0)
    assert _same_partition(labels, expected)
    assert _same_partition(segment(embeddings, foreground=mask.astype(np.uint8)), expected)


@pytest.mark.parametrize("method", ["mutex_watershed", "mean_shift"])
def test_auto_foreground_finds_background_embedding(method):
    truth, groups = _scene_2d()
    labels = segment(_embed(truth, groups), method, foreground="auto")
    assert _same_partition(labels, truth)


def test_min_size_removes_small_segments():
    truth, groups = _scene_2d()
    truth[58:61, 58:61] = 6  # 9 pixels
    groups[6] = 5
    embeddings = _embed(truth, groups)
    assert _same_partition(segment(embeddings, min_size=1), truth)
    assert _same_partition(segment(embeddings), np.where(truth == 6, 0, truth))


def test_background_joins_similar_segments_unless_disabled():
    truth = np.zeros((48, 48), dtype=np.int32)
    truth[:, 20:28] = 1  # a wall splitting the background in two
    truth[5:15, 32:42] = 2
    centres = np.zeros((3, DIMS), np.float32)
    centres[1, 0], centres[2, 1] = 6.0, -6.0
    embeddings = _embed(truth, {1: 1, 2: 2}, centres=centres)
    embeddings[2, :, 28:] += 0.4  # right background: close to, not equal to, the left one
    assert _same_partition(segment(embeddings), truth)
    kept = segment(embeddings, remove_background=False)
    assert len(np.unique(kept)) == 4 and kept.min() == 1  # left, right background kept


@pytest.mark.parametrize("method", ["hdbscan", "mean_shift", "consistency"])
def test_point_methods_recover_simple_case(method):
    truth, groups = _scene_2d()
    embeddings = _embed(truth, groups)
    params = {"teacher": _embed(truth, groups, seed=7)} if method == "consistency" else {}
    labels = segment(embeddings, method, **params)
    assert _same_partition(labels, truth)


def test_point_methods_subsample_deterministically_and_respect_mask():
    truth, groups = _scene_2d()
    embeddings = _embed(truth, groups)
    mask = truth > 0
    first = segment(embeddings, "mean_shift", foreground=mask, max_samples=600, seed=3)
    assert np.array_equal(first, segment(embeddings, "mean_shift", mask, max_samples=600, seed=3))
    assert _same_partition(first, truth)
    labels = segment(embeddings, "hdbscan", max_samples=2500, min_cluster_size=30)
    assert _same_partition(labels, truth)


def test_point_methods_recluster_pixels_far_from_all_centres():
    # 64 of 4096 pixels: the first round misses objects; later rounds cluster what is left.
    truth, groups = _scene_2d()
    labels = segment(_embed(truth, groups), "hdbscan", max_samples=64, min_cluster_size=20)
    assert _same_partition(labels, truth)


def test_consistency_drops_cluster_where_teacher_disagrees():
    truth, groups = _scene_2d()
    embeddings = _embed(truth, groups)
    teacher = _embed(truth, groups, seed=7)
    rng = np.random.default_rng(1)
    teacher[:, truth == 2] = rng.normal(0, 3, (DIMS, int((truth == 2).sum())))
    labels = segment(embeddings, "consistency", teacher=teacher)
    assert not labels[truth == 2].any()
    assert _same_partition(labels, np.where(truth == 2, 0, truth))


def test_foreground_probability_high_on_objects_low_on_background():
    truth, groups = _scene_2d()
    embeddings = _embed(truth, groups)
    for background in (None, embeddings[:, truth == 0].mean(axis=1)):
        probability = foreground_probability(embeddings, background)
        assert probability.dtype == np.float32 and probability.shape == truth.shape
        assert probability[truth > 0].min() > 0.9
        assert probability[truth == 0].max() < 0.3  # noise: |e - b| ~ 0.2 gives 0.1
    mask = foreground_probability(embeddings) > 0.5
    assert _same_partition(segment(embeddings, foreground=mask), truth)


def test_embeddings_to_rgb_is_reexported_not_duplicated():
    assert embeddings_to_rgb is visualize_rgb
    assert exported_segment is segment
    assert METHODS == ("mutex_watershed", "hdbscan", "mean_shift", "consistency")


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((np.zeros((8, 8), np.float32),), {}, ValueError, "got shape \\(8, 8\\)"),
        ((np.zeros((2, 8, 8), np.int64),), {}, ValueError, "float array, got dtype int64"),
        ((np.full((2, 8, 8), np.nan),), {}, ValueError, "finite"),
        ((np.zeros((2, 8, 8)),), {"foreground": np.ones((8, 9), bool)}, ValueError, "\\(8, 9\\)"),
        ((np.zeros((2, 8, 8)),), {"foreground": np.full((8, 8), 0.5)}, ValueError, "bool mask"),
        ((np.zeros((2, 8, 8)),), {"foreground": "yes"}, ValueError, "None or 'auto'"),
        ((np.zeros((2, 8, 8)), "kmeans"), {}, ValueError, "method must be one of"),
        ((np.zeros((2, 8, 8)),), {"bandwidth": 1}, TypeError, "unknown \\['bandwidth'\\]"),
        ((np.zeros((2, 8, 8)),), {"strides": (1, 2, 3)}, ValueError, "strides must be 2"),
        ((np.zeros((2, 8, 8)),), {"delta_v": 3.0}, ValueError, "delta_d must exceed"),
        ((np.zeros((2, 8, 8)),), {"min_size": -1}, ValueError, "min_size"),
        ((np.zeros((2, 8, 8)), "consistency"), {}, ValueError, "needs teacher"),
        (
            (np.zeros((2, 8, 8)), "consistency"),
            {"teacher": np.zeros((3, 8, 8))},
            ValueError,
            "teacher must have the shape",
        ),
    ],
)
def test_bad_input_raises(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        segment(*args, **kwargs)


def test_foreground_probability_rejects_bad_background():
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        foreground_probability(np.zeros((2, 8, 8)), np.zeros(3))


@pytest.mark.parametrize("method", ["mutex_watershed", "hdbscan"])
def test_empty_foreground_gives_empty_labels(method):
    truth, groups = _scene_2d()
    labels = segment(_embed(truth, groups), method, foreground=np.zeros(truth.shape, bool))
    assert labels.dtype == np.uint32 and not labels.any()
