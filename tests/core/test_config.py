import pytest

from napari_spoco.core.config import LossConfig, ModelConfig, TrainConfig, config_from_dict


def test_round_trip_through_dict():
    config = TrainConfig(
        model=ModelConfig(spatial_dims=3, norm="group"),
        loss=LossConfig(delta_v=0.4, background_id=7),
        patch_shape=(16, 64, 64),
        learning_rate=1e-3,
    )
    assert config_from_dict(config.to_dict()) == config


def test_unknown_keys_fail_loudly():
    data = TrainConfig().to_dict()
    data["loss"]["mystery"] = 1
    with pytest.raises(ValueError, match="mystery"):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: LossConfig(delta_v=1.0, delta_d=0.5), "delta_d"),
        (lambda: LossConfig(kernel_threshold=1.0), "kernel_threshold"),
        (lambda: LossConfig(pull_weight=-1), "pull_weight"),
        (lambda: TrainConfig(patch_shape=(64, 64, 64)), "patch_shape"),
        (lambda: TrainConfig(ema_momentum=1.0), "ema_momentum"),
        (lambda: TrainConfig(learning_rate=0), "learning_rate"),
        (lambda: TrainConfig(object_contrast_probability=0.5), "object_contrast_probability"),
    ],
)
def test_invalid_values_name_the_field(factory, field):
    with pytest.raises(ValueError, match=field):
        factory()
