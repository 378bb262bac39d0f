import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_spoco.core.config import ModelConfig
from napari_spoco.core.model import build_model
from napari_spoco.core.prediction import predict_image
from napari_spoco.core.tiling import _axis_windows, _tile_starts, predict_embeddings


def _model(seed: int = 0, **settings) -> torch.nn.Module:
    """Seeded model whose batch-norm layers are not the identity in eval mode."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**settings))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def _image(shape: tuple[int, ...], seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Smooth, normalised random image with structure at several scales."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    image = (image - image.mean()) / image.std()
    return image.astype(np.float32)


def _whole(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(image)[None])[0].numpy()


# --------------------------------------------------------------------------- shapes


def test_2d_odd_size_shape_and_dtype():
    model = _model(depth=2, base_features=8)
    image = _image((1, 70, 93))
    embeddings = predict_embeddings(model, image, tile_shape=(32, 32))
    assert embeddings.shape == (16, 70, 93)
    assert embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all()


def test_3d_odd_size_shape_and_dtype():
    model = _model(spatial_dims=3, depth=2, base_features=4, embedding_dim=6)
    image = _image((1, 11, 21, 19))
    embeddings = predict_embeddings(model, image, tile_shape=(8, 12, 12))
    assert embeddings.shape == (6, 11, 21, 19)
    assert embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all()


def test_image_smaller_than_tile_is_one_whole_image_pass():
    model = _model(base_features=8)
    image = _image((1, 20, 30))
    embeddings = predict_embeddings(model, image)  # default 512 x 512 tiles
    assert embeddings.shape == (16, 20, 30)
    np.testing.assert_allclose(embeddings, _whole(model, image), atol=1e-5)


def test_float64_multichannel_input():
    model = _model(in_channels=2, depth=2, base_features=8, embedding_dim=4)
    image = _image((2, 40, 50)).astype(np.float64)
    embeddings = predict_embeddings(model, image, tile_shape=(16, 16), device="cpu")
    assert embeddings.shape == (4, 40, 50)
    assert embeddings.dtype == np.float32


# --------------------------------------------------------------------------- stitching


@pytest.mark.parametrize(
    ("shape", "overlap", "batch_size"),
    [
        # Overlap 0.25 of 32 px = 8 px, whose outer quarter (2 px) is discarded.
        ((70, 93), 0.25, 1),
        ((70, 93), 0.25, 3),
        # Tiles 9 px apart: the windows do not quite sum to one (see
        # test_windows_of_dense_grid_do_not_sum_to_one), so this needs the
        # normalisation by the accumulated weight.
        ((50, 50), 0.5, 4),
    ],
)
def test_local_model_2d_tiled_equals_whole(shape, overlap, batch_size):
    # depth=1: two 3x3 convolutions, so the tile border disturbs 2 px.
    model = _model(depth=1, base_features=8)
    image = _image((1, *shape))
    tiled = predict_embeddings(
        model, image, tile_shape=(32, 32), overlap=overlap, batch_size=batch_size
    )
    np.testing.assert_allclose(tiled, _whole(model, image), atol=1e-5)


def test_local_model_3d_tiled_equals_whole():
    model = _model(spatial_dims=3, depth=1, base_features=4, embedding_dim=4)
    image = _image((1, 30, 37, 41))
    tiled = predict_embeddings(model, image, tile_shape=(16, 16, 16), overlap=0.5)
    np.testing.assert_allclose(tiled, _whole(model, image), atol=1e-5)


def test_local_model_too_little_overlap_shows_seams():
    # Control for the tests above: 61 x 90 px in 32 px tiles with 3 px overlap
    # discards no border pixel, so the comparison really detects border effects.
    model = _model(depth=1, base_features=8)
    image = _image((1, 61, 90))
    tiled = predict_embeddings(model, image, tile_shape=(32, 32), overlap=0.1)
    assert np.abs(tiled - _whole(model, image)).max() > 1e-2


def test_default_model_tiled_matches_whole_image():
    model = _model()  # default 4-level U-Net, receptive field far beyond the overlap
    image = _image((1, 150, 170), sigma=1.0)
    whole = _whole(model, image)
    tiled = predict_embeddings(model, image, tile_shape=(64, 64), batch_size=4)
    error = np.abs(tiled - whole).mean()
    assert error < 0.05 * whole.std()
    assert np.corrcoef(tiled.ravel(), whole.ravel())[0, 1] > 0.99
    # A tile misplaced by even one pixel would cost more than this.
    for axis in (-1, -2):
        shift_error = np.abs(np.roll(whole, 1, axis=axis) - whole)[:, 1:-1, 1:-1].mean()
        assert error < 0.25 * shift_error


# --------------------------------------------------------------------------- tiling helpers


@pytest.mark.parametrize("size", [1, 7, 32, 33, 64, 70, 93, 200, 1000])
@pytest.mark.parametrize(("tile", "overlap"), [(32, 0), (32, 8), (32, 16), (16, 5), (8, 1)])
def test_tile_starts_cover_image_and_keep_overlap(size, tile, overlap):
    starts = _tile_starts(size, tile, overlap)
    length = min(tile, size)
    assert starts[0] == 0
    assert starts[-1] + length == size  # last tile flush with the end
    assert all(0 < b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))
    windows = _axis_windows(starts, length)
    total = np.zeros(size)
    for start, window in zip(starts, windows, strict=True):
        assert window.shape == (length,)
        total[start : start + length] += window
    assert (total > 0).all()  # no unweighted pixel, including the image borders


def _window_sum(size: int, tile: int, overlap: int) -> np.ndarray:
    starts = _tile_starts(size, tile, overlap)
    total = np.zeros(size)
    for start, window in zip(starts, _axis_windows(starts, tile), strict=True):
        total[start : start + tile] += window
    return total


def test_windows_are_a_partition_of_unity_for_moderate_overlap():
    assert _tile_starts(80, 32, 8) == [0, 24, 48]
    np.testing.assert_allclose(_window_sum(80, 32, 8), 1.0, atol=1e-6)


def test_windows_of_dense_grid_do_not_sum_to_one():
    # Where a tile's two ramps overlap, the sum is off by a little: why
    # predict_embeddings divides by the accumulated weight.
    assert _tile_starts(50, 32, 16) == [0, 9, 18]
    total = _window_sum(50, 32, 16)
    assert (total > 0).all()
    assert np.abs(total - 1).max() > 1e-3


# --------------------------------------------------------------------------- side effects


def test_progress_reports_every_batch_up_to_total():
    model = _model(depth=2, base_features=8)
    calls = []
    predict_embeddings(
        model,
        _image((1, 70, 93)),
        tile_shape=(32, 32),
        batch_size=4,
        progress=lambda done, total: calls.append((done, total)),
    )
    totals = {total for _, total in calls}
    assert len(totals) == 1
    total = totals.pop()
    assert total == 3 * 4  # 70 px -> 3 tiles, 93 px -> 4 tiles
    done = [d for d, _ in calls]
    assert done == [4, 8, 12]


@pytest.mark.parametrize("training", [True, False])
def test_model_state_is_restored(training):
    model = _model(depth=2, base_features=8)
    model.train(training)
    before = {name: (p.data_ptr(), p.detach().clone()) for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    predict_embeddings(model, _image((1, 40, 50)), tile_shape=(16, 16))
    assert all(m.training == training for m in model.modules())
    for name, p in model.named_parameters():
        assert p.grad is None
        assert p.is_contiguous()  # channels_last was undone
        assert p.data_ptr() == before[name][0]
        assert torch.equal(p, before[name][1])
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name])  # batch-norm statistics untouched
    # The model still trains afterwards.
    model.train()
    model(torch.zeros(2, 1, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# --------------------------------------------------------------------------- validation


def test_wrong_channel_count_is_rejected():
    model = _model(depth=2, base_features=8)
    with pytest.raises(ValueError, match=r"must have 1 channel\(s\) on axis 0 .*got 3"):
        predict_embeddings(model, np.zeros((3, 32, 32), np.float32))


def test_wrong_ndim_is_rejected():
    model = _model(depth=2, base_features=8)
    with pytest.raises(ValueError, match=r"must have 3 axes \(C, Y, X\) for a 2D model, got 2"):
        predict_embeddings(model, np.zeros((32, 32), np.float32))
    model_3d = _model(spatial_dims=3, depth=2, base_features=4)
    with pytest.raises(ValueError, match=r"must have 4 axes \(C, Z, Y, X\) .* got 3"):
        predict_embeddings(model_3d, np.zeros((1, 32, 32), np.float32))


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"tile_shape": (32,)}, ValueError, "tile_shape must be 2 positive integers"),
        ({"tile_shape": (32, 0)}, ValueError, "tile_shape must be 2 positive integers"),
        ({"overlap": 8}, ValueError, r"overlap must be a fraction .* got 8"),
        ({"overlap": -0.1}, ValueError, "overlap must be a fraction"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
        ({"progress": 3}, TypeError, "progress must be callable"),
    ],
)
def test_bad_settings_are_rejected(settings, error, message):
    model = _model(depth=2, base_features=8)
    with pytest.raises(error, match=message):
        predict_embeddings(model, np.zeros((1, 32, 32), np.float32), **settings)


def test_bad_image_values_are_rejected():
    model = _model(depth=2, base_features=8)
    with pytest.raises(TypeError, match="floating-point array, got dtype uint8"):
        predict_embeddings(model, np.zeros((1, 32, 32), np.uint8))
    image = np.zeros((1, 32, 32), np.float32)
    image[0, 3, 4] = np.nan
    with pytest.raises(ValueError, match="finite"):
        predict_embeddings(model, image)
    with pytest.raises(ValueError, match="must not be empty"):
        predict_embeddings(model, np.zeros((1, 0, 32), np.float32))


def test_predict_image_applies_the_training_scale_and_returns_full_size():
    model = build_model(ModelConfig(depth=2, base_features=4))
    image = np.random.default_rng(0).random((50, 61, 3)).astype(np.float32) * 1000
    with pytest.raises(ValueError, match="channel"):
        predict_image(model, image, channel_axis=-1)
    model = build_model(ModelConfig(depth=2, base_features=4, in_channels=3))
    full = predict_image(model, image, channel_axis=-1)
    half = predict_image(model, image, channel_axis=-1, object_scale=0.5)
    assert full.shape == half.shape == (16, 50, 61)
    assert not np.allclose(full, half)  # the network really saw a resized image


@pytest.mark.parametrize(("shape", "object_scale"), [((5, 5), 1.0), ((1, 1), 1.0), ((40, 40), 0.3)])
def test_predict_image_refuses_images_too_small_for_the_network(shape, object_scale):
    model = build_model(ModelConfig(depth=2, base_features=4))
    with pytest.raises(ValueError, match="too small for the network"):
        predict_image(model, np.ones(shape, np.float32), object_scale=object_scale)


# --------------------------------------------------------------------------- orientations


@pytest.mark.parametrize("tile_shape", [None, (32, 32)])
def test_augmented_prediction_turns_with_the_image(tile_shape):
    """Averaged over the eight orientations, a quarter turn or a flip of the image turns the
    prediction the same way; a single pass does not (the network is not equivariant)."""
    model = _model(depth=2, base_features=8)
    image = _image((1, 64, 64))
    plain = predict_embeddings(model, image, tile_shape=tile_shape)
    averaged = predict_embeddings(model, image, tile_shape=tile_shape, augment=True)
    for turn in (
        lambda a: np.rot90(a, 1, axes=(-2, -1)),
        lambda a: a[..., ::-1],
        lambda a: np.swapaxes(a, -1, -2),
    ):
        turned = np.ascontiguousarray(turn(image))
        expected = turn(averaged)
        got = predict_embeddings(model, turned, tile_shape=tile_shape, augment=True)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert not np.allclose(predict_embeddings(model, turned, tile_shape=tile_shape),
                               turn(plain), atol=1e-3)  # fmt: skip


def test_augmented_3d_prediction_turns_in_the_yx_plane():
    model = _model(spatial_dims=3, depth=2, base_features=4, embedding_dim=6)
    image = _image((1, 8, 24, 24))
    averaged = predict_embeddings(model, image, augment=True)
    turned = np.ascontiguousarray(np.rot90(image, 1, axes=(-2, -1)))
    got = predict_embeddings(model, turned, augment=True)
    np.testing.assert_allclose(got, np.rot90(averaged, 1, axes=(-2, -1)), atol=1e-4)
