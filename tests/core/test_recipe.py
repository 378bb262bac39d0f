"""The one recipe: the training settings that data, start and choices call for."""

import numpy as np
import pytest

from napari_spoco.core.checkpoint import Checkpoint
from napari_spoco.core.config import REFERENCE_DIAMETER, TrainConfig
from napari_spoco.core.recipe import (
    FINE_TUNE_ITERATIONS,
    NEW_NETWORK_ITERATIONS,
    TOUCHING_ITERATIONS,
    model_config_for,
    train_config,
)


def _discs(diameter: int, count: int = 3, shape=(256, 256)) -> np.ndarray:
    """``count`` painted discs of ``diameter`` pixels, apart from each other."""
    yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for i in range(count):
        centre = (diameter * (1 + 1.5 * i), diameter)
        labels[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < (diameter / 2) ** 2] = i + 1
    return labels


def _start(**model) -> Checkpoint:
    config = TrainConfig(model=model_config_for(2, 1, size="small", **model), object_scale=0.5)
    return Checkpoint(config=config, model_state={})


def test_the_painted_objects_set_the_scale_and_the_start_sets_the_network():
    painted = [_discs(REFERENCE_DIAMETER * 2)]  # objects twice the network's reference size
    new = train_config(painted, spatial_dims=2, channels=1)
    assert new.object_scale == pytest.approx(0.5, rel=0.1)
    assert new.iterations == NEW_NETWORK_ITERATIONS and new.model.base_features == 16
    tuned = train_config(painted, spatial_dims=2, channels=1, start=_start())
    assert tuned.iterations == FINE_TUNE_ITERATIONS
    assert tuned.model == _start().config.model
    given = train_config(painted, spatial_dims=2, channels=1, object_diameter=REFERENCE_DIAMETER)
    assert given.object_scale == 1.0
    nothing_painted = train_config([], spatial_dims=2, channels=1, start=_start())
    assert nothing_painted.object_scale == 0.5  # the start model's own scale


def test_dense_pretraining_and_projection_rules():
    dense = train_config([_discs(24)], spatial_dims=2, channels=1, dense=True)
    assert dense.scale_per_image and dense.object_scale == 1.0
    assert dense.loss.consistency_weight == 0 and not dense.loss.sparse
    # Dense patches show whole images: batch norm learns their statistics, even from a
    # trained start (kept, a nuclei start left phase-contrast cells' foreground at 4-8x).
    from_start = train_config([_discs(24)], spatial_dims=2, channels=1, dense=True, start=_start())
    assert from_start.keep_norm_statistics is False
    sparse = train_config([_discs(24)], spatial_dims=2, channels=1, start=_start())
    assert sparse.keep_norm_statistics is None  # the trainer keeps them when fine-tuning
    pre = train_config([], spatial_dims=2, channels=1, pretraining=True)
    assert pre.loss.pull_weight == 0 and pre.loss.consistency_weight == 1
    triplet = {"triplet_weight": 0.5, "triplet_on": "bottleneck"}
    assert train_config([], spatial_dims=2, channels=1, loss=triplet).model.bottleneck_projection
    assert not train_config([], spatial_dims=2, channels=1).model.bottleneck_projection


def test_touching_objects_lose_the_ring_and_train_longer():
    touching = np.zeros((64, 64), np.int32)
    touching[10:30, 10:30], touching[10:30, 30:50] = 1, 2
    tuned = train_config([touching], spatial_dims=2, channels=1, start=_start())
    assert tuned.loss.ring_width == 0
    assert tuned.iterations == TOUCHING_ITERATIONS and tuned.learning_rate is None
    apart = train_config([_discs(12)], spatial_dims=2, channels=1, start=_start())
    assert apart.loss.ring_width > 0
    assert apart.iterations == FINE_TUNE_ITERATIONS and apart.learning_rate is None
    # The user's word and settings win over the painting's.
    told = train_config([touching], spatial_dims=2, channels=1, start=_start(), objects_touch=False)
    assert told.loss.ring_width > 0 and told.iterations == FINE_TUNE_ITERATIONS
    chosen = train_config(
        [touching], spatial_dims=2, channels=1, start=_start(), ring=4, iterations=7,
        learning_rate=2e-4,
    )  # fmt: skip
    assert (chosen.loss.ring_width, chosen.iterations, chosen.learning_rate) == (4, 7, 2e-4)


def test_a_start_that_cannot_read_the_images_is_refused():
    with pytest.raises(ValueError, match="starting model"):
        train_config([], spatial_dims=2, channels=3, start=_start())
