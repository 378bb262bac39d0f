import pytest
import torch

from napari_spoco.core.config import ModelConfig
from napari_spoco.core.model import build_model, split_output


@pytest.mark.parametrize("norm", ["batch", "group", "instance"])
@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 37, 50), (1, 1, 9, 9)])
def test_2d_any_size_gives_same_spatial_shape(norm, shape):
    model = build_model(ModelConfig(depth=4, base_features=8, norm=norm))
    out = model(torch.randn(shape))
    assert out.shape == (shape[0], 16, *shape[2:])
    assert torch.isfinite(out).all()


def test_3d_anisotropic_pooling_keeps_thin_stacks():
    config = ModelConfig(
        spatial_dims=3, depth=3, base_features=8, norm="group", anisotropic_pooling=True
    )
    assert config.size_divisor == (2, 4, 4)
    out = build_model(config)(torch.randn(1, 1, 5, 30, 33))
    assert out.shape == (1, 16, 5, 30, 33)


def test_multichannel_input_and_embedding_dim():
    model = build_model(ModelConfig(in_channels=3, embedding_dim=8, depth=2, base_features=4))
    assert model(torch.randn(1, 3, 20, 20)).shape == (1, 8, 20, 20)


def test_default_is_a_small_cpu_network():
    model = build_model(ModelConfig())
    n_params = sum(p.numel() for p in model.parameters())
    assert 2e5 < n_params < 2e6
    assert len(model.encoders) == 4


def test_gradients_reach_every_parameter():
    model = build_model(ModelConfig(depth=3, base_features=8))
    model(torch.randn(2, 1, 32, 32)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs",
    [{"spatial_dims": 4}, {"depth": 0}, {"norm": "layer"}, {"norm": "group", "base_features": 12}],
)
def test_invalid_architecture_is_rejected(kwargs):
    with pytest.raises(ValueError):
        ModelConfig(**kwargs)


def test_heads_add_output_channels_that_split_off():
    config = ModelConfig(depth=2, base_features=8, foreground_head=True, distance_head=True)
    assert config.heads == ("foreground", "distance") and config.output_channels == 18
    out = build_model(config)(torch.randn(2, 1, 24, 24))
    embeddings, heads = split_output(out, config, axis=1)
    assert embeddings.shape == (2, 16, 24, 24)
    assert {name: tuple(h.shape) for name, h in heads.items()} == {
        "foreground": (2, 24, 24),
        "distance": (2, 24, 24),
    }
    single, single_heads = split_output(out[0].detach().numpy(), config)
    assert single.shape == (16, 24, 24) and single_heads["distance"].shape == (24, 24)
    with pytest.raises(ValueError, match="channels"):
        split_output(out[:, :16], config, axis=1)


def test_model_without_heads_keeps_the_original_layout():
    # Model files written before the heads existed must still load.
    plain = build_model(ModelConfig(depth=2, base_features=8))
    assert plain.extra_heads is None
    assert not any(key.startswith("extra_heads") for key in plain.state_dict())


def test_moving_the_foreground_threshold_gives_the_stricter_mask_at_one_half():
    torch.manual_seed(0)
    config = ModelConfig(depth=2, base_features=8, foreground_head=True, distance_head=True)
    model = build_model(config).eval()
    image = torch.randn(1, 1, 32, 32)
    before = split_output(model(image), config, axis=1)
    model.move_foreground_threshold(0.6)
    after = split_output(model(image), config, axis=1)
    probability = {name: torch.sigmoid(out[1]["foreground"]) for name, out in
                   (("before", before), ("after", after))}  # fmt: skip
    assert torch.equal(probability["before"] > 0.6, probability["after"] > 0.5)
    assert (probability["before"] > 0.5).sum() > (probability["after"] > 0.5).sum()
    # Nothing else moves: the embedding and the distance head are untouched.
    assert torch.equal(before[0], after[0])
    assert torch.equal(before[1]["distance"], after[1]["distance"])
    with pytest.raises(ValueError, match="no foreground head"):
        build_model(ModelConfig(depth=2, base_features=8)).move_foreground_threshold(0.6)
