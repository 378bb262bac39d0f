"""The one list of user settings: every entry names a config field and fits its default."""

import dataclasses

import pytest

from napari_spoco.core.clustering_methods import CLUSTERING_METHODS
from napari_spoco.core.config import ALL_LOSS_TERMS, LossConfig, SegmentConfig, TrainConfig
from napari_spoco.core.settings import (
    LOSS_SETTINGS,
    SEGMENT_SETTINGS,
    TRAIN_SETTINGS,
    choices_of,
    config_value,
)


@pytest.mark.parametrize(
    ("settings", "config_class"),
    [(LOSS_SETTINGS, LossConfig), (TRAIN_SETTINGS, TrainConfig), (SEGMENT_SETTINGS, SegmentConfig)],
)
def test_every_setting_is_a_field_whose_default_lies_in_its_range(settings, config_class):
    fields = {field.name for field in dataclasses.fields(config_class)}
    defaults = config_class()
    for name, setting in settings.items():
        assert name == setting.name and name in fields
        assert setting.tooltip.endswith(".") and setting.low < setting.high and setting.step > 0
        default = getattr(defaults, name)
        if default is None:
            assert setting.special is not None  # the box can show "not set"
        else:
            assert setting.low <= default <= setting.high
            assert config_value(setting, default) == default


def test_every_loss_term_and_method_setting_is_listed():
    assert {f"{term}_weight" for term in ALL_LOSS_TERMS} <= set(LOSS_SETTINGS)
    for method in CLUSTERING_METHODS.values():
        for setting in method.settings:
            assert setting.low <= setting.default <= setting.high


def test_special_values_mean_not_set_and_integers_stay_integers():
    assert config_value(SEGMENT_SETTINGS["seed_threshold"], 0.0) is None
    assert config_value(SEGMENT_SETTINGS["seed_threshold"], 0.3) == 0.3
    assert config_value(LOSS_SETTINGS["ring_width"], -1.0) is None
    ring = config_value(LOSS_SETTINGS["ring_width"], 3.0)
    assert ring == 3 and isinstance(ring, int)
    assert choices_of(LossConfig, "triplet_on") == ("embedding", "bottleneck")
