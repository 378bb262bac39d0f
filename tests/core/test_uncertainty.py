"""Where the segmentation is probably wrong: planted mistakes come first."""

import numpy as np
import pytest
from scipy import ndimage

from napari_spoco.core.prediction import Prediction
from napari_spoco.core.uncertainty import assess, painted_object_area


def _scene(seed=0):
    """Twelve discs, each with its own embedding; a crisp, slightly blurred foreground."""
    rng = np.random.default_rng(seed)
    shape, radius = (160, 200), 9
    yy, xx = np.indices(shape)
    truth = np.zeros(shape, np.uint32)
    centres = [(25 + 36 * (i // 5), 22 + 38 * (i % 5)) for i in range(12)]
    for n, (y, x) in enumerate(centres, start=1):
        truth[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = n
    codes = rng.normal(size=(13, 8)) * 3.0  # centres ~4+ apart: beyond 2 * delta_d
    embeddings = codes[truth].transpose(2, 0, 1) + rng.normal(0, 0.1, (8, *shape))
    foreground = ndimage.gaussian_filter((truth > 0).astype(np.float32), 1.0)
    prediction = Prediction(
        embeddings=embeddings.astype(np.float32), foreground=foreground, delta_v=0.5, delta_d=2.0
    )
    return prediction, truth, centres


def test_a_planted_merge_and_a_planted_missed_object_come_first():
    prediction, truth, centres = _scene()
    instances = truth.copy()
    instances[instances == 2] = 1  # the clustering merged objects 1 and 2 (neighbours)
    instances[instances == 7] = 0  # and missed object 7
    _, ranked = assess(prediction, instances, reference_area=np.pi * 9**2)
    first, second = sorted(ranked[:2], key=lambda d: d.label)
    assert (first.label, first.reason) == (0, "missed")
    assert np.allclose(first.centre, centres[6], atol=1.5)
    assert (second.label, second.reason) == (1, "merge")
    assert min(first.score, second.score) > 0.8
    assert max(d.score for d in ranked[2:]) < 0.3  # the correct ones are not doubted
    painted = np.isin(truth, [1, 2])  # the user painted the merged pair: nothing to check
    _, ranked = assess(prediction, instances, reference_area=np.pi * 9**2, painted=painted)
    assert 1 not in {d.label for d in ranked} and ranked[0].reason == "missed"


def test_a_fragment_is_a_split_and_teacher_disagreement_is_unsure():
    prediction, truth, _ = _scene(seed=1)
    instances = truth.copy()
    instances[(instances == 4) & (np.indices(truth.shape)[1] > 22 + 38 * 3 + 4)] = 20  # a sliver
    teacher = prediction.embeddings.copy()
    teacher[:, truth == 9] += 3.0  # the teacher sees object 9 elsewhere
    area = painted_object_area([np.where(truth == 3, 3, 0), np.where(truth == 5, 5, 0)])
    _, ranked = assess(prediction, instances, teacher=teacher, reference_area=area)
    ranked = {d.label: d for d in ranked}
    assert ranked[20].reason == "split" and ranked[20].score > 0.8
    assert ranked[9].reason == "unsure" and ranked[9].score > 0.8
    assert ranked[3].score < 0.3


def test_the_map_is_high_where_the_network_is_unsure():
    prediction, truth, _ = _scene()
    instances = truth.copy()
    instances[instances == 2] = 1
    doubt, _ = assess(prediction, instances)
    assert doubt.shape == truth.shape and doubt.dtype == np.float32
    assert 0 <= doubt.min() and doubt.max() <= 1
    assert doubt[truth == 2].mean() > 0.8  # inside the merge
    assert doubt[truth == 3].mean() < 0.2
    with pytest.raises(ValueError, match="do not match"):
        assess(prediction, instances[:10])


def test_large_objects_are_judged_on_a_subsampled_grid_with_the_same_verdict():
    """Objects four times the reference size: the map and the ranking keep the planted errors."""
    prediction, truth, centres = _scene()
    big = lambda a: np.repeat(np.repeat(a, 4, axis=-2), 4, axis=-1)  # noqa: E731
    large = type(prediction)(
        embeddings=big(prediction.embeddings), foreground=big(prediction.foreground),
        delta_v=0.5, delta_d=2.0,
    )  # fmt: skip
    instances = big(truth)
    instances[instances == 2] = 1
    instances[instances == 7] = 0
    doubt, ranked = assess(large, instances, reference_area=16 * np.pi * 9**2)
    assert doubt.shape == instances.shape
    assert {(d.label, d.reason) for d in ranked[:2]} == {(0, "missed"), (1, "merge")}
    missed = next(d for d in ranked if d.label == 0)
    assert np.allclose(missed.centre, 4 * np.asarray(centres[6]) + 1.5, atol=4)


def test_the_soft_rim_around_objects_is_not_a_missed_object():
    """A foreground that falls off over a few pixels leaves a ring between 0.3 and 0.5."""
    yy, xx = np.indices((200, 200))
    instances = np.zeros((200, 200), np.int64)
    distance = np.full((200, 200), np.inf)
    for n in range(16):
        y, x = 25 + 50 * (n // 4), 25 + 50 * (n % 4)
        d = np.hypot(yy - y, xx - x) - 12
        instances[d <= 0] = n + 1
        distance = np.minimum(distance, d)
    foreground = (1 / (1 + np.exp(distance / 1.5))).astype(np.float32)
    codes = np.random.default_rng(0).normal(size=(17, 4)) * 3.0  # one embedding per object
    embeddings = codes[instances].transpose(2, 0, 1).astype(np.float32)
    _, ranked = assess(Prediction(embeddings=embeddings, foreground=foreground), instances)
    assert not [d for d in ranked if d.reason == "missed"]


def test_stacks_are_judged_in_3d_without_losing_small_objects():
    prediction, truth, centres = _scene()
    stack = lambda a: np.stack([a] * 6, axis=-3)  # noqa: E731
    volume = Prediction(
        embeddings=stack(prediction.embeddings),
        foreground=stack(prediction.foreground),
        delta_v=0.5,
        delta_d=2.0,
    )
    instances = stack(truth)
    instances[instances == 2] = 1
    doubt, ranked = assess(volume, instances)
    assert doubt.shape == instances.shape
    assert (ranked[0].label, ranked[0].reason) == (1, "merge")
    assert len(ranked[0].centre) == 3


def test_doubts_that_both_stand_out_keep_their_order():
    """Two faint objects, one fainter: the fainter comes first, not the one with the lower id.

    A statistic used to count fully at three robust standard deviations, and one instance
    in seven then tied at 1 and was listed by id (docs/benchmarks.md, "Which nuclei to
    correct").
    """
    prediction, truth, _ = _scene()
    foreground = prediction.foreground.copy()
    foreground[truth == 5] = 0.8  # faint
    foreground[truth == 11] = 0.62  # fainter
    faint = type(prediction)(
        embeddings=prediction.embeddings, foreground=foreground, delta_v=0.5, delta_d=2.0
    )
    _, ranked = assess(faint, truth, reference_area=np.pi * 9**2)
    assert [d.label for d in ranked[:2]] == [11, 5]
    assert ranked[0].reason == ranked[1].reason == "border"
    assert ranked[0].score > ranked[1].score > 0.5
