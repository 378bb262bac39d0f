import numpy as np
import pytest

from napari_spoco.core.annotation import keep_fraction_of_objects
from napari_spoco.core.image import prepare_image, rescale_spatial
from napari_spoco.core.visualize import embeddings_to_rgb


def test_prepare_image_moves_channels_first_and_normalises_each():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(100, 10, (40, 50)), rng.normal(5000, 800, (40, 50))], axis=-1)
    prepared = prepare_image(image, spatial_dims=2, channel_axis=-1)
    assert prepared.shape == (2, 40, 50) and prepared.dtype == np.float32
    for channel in prepared:
        low, high = np.percentile(channel, [1, 99.8])
        assert low == pytest.approx(0, abs=1e-5) and high == pytest.approx(1, abs=1e-5)


def test_prepare_image_constant_channel_and_bad_input():
    assert not prepare_image(np.full((5, 8, 8), 7, np.uint16), spatial_dims=3).any()
    with pytest.raises(ValueError, match="expected a 2D image without a channel axis"):
        prepare_image(np.zeros((3, 8, 8)), spatial_dims=2)
    with pytest.raises(TypeError, match="real numbers"):
        prepare_image(np.zeros((8, 8), complex), spatial_dims=2)


def test_rescale_keeps_z_channels_and_label_ids():
    labels = np.zeros((4, 20, 20), np.uint32)
    labels[:, 5:15, 5:15] = 4_000_000_000
    scaled = rescale_spatial(labels, 0.5, order=0, channel_first=False)
    assert scaled.shape == (4, 10, 10)
    assert set(np.unique(scaled)) == {0, 4_000_000_000}
    image = np.zeros((2, 30, 40), np.float32)
    assert rescale_spatial(image, 2.0, order=1, channel_first=True).shape == (2, 60, 80)


def test_keep_fraction_of_objects_is_seeded_and_sparse():
    labels = np.repeat(np.arange(1, 101), 4).reshape(20, 20)
    kept = keep_fraction_of_objects(labels, 0.1, seed=3)
    assert len(np.unique(kept)) - 1 == 10
    assert np.array_equal(kept, keep_fraction_of_objects(labels, 0.1, seed=3))
    assert np.all((kept == 0) | (kept == labels))
    with pytest.raises(ValueError):
        keep_fraction_of_objects(labels, 0)


def test_embeddings_to_rgb_gives_separated_objects_distinct_colours():
    embeddings = np.zeros((16, 10, 20), np.float32)
    embeddings[0, :, 10:] = 5.0
    embeddings[1, 5:, :] = 3.0
    rgb = embeddings_to_rgb(embeddings)
    assert rgb.shape == (10, 20, 3) and rgb.min() >= 0 and rgb.max() <= 1
    corners = [rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]]
    assert min(np.abs(a - b).sum() for i, a in enumerate(corners) for b in corners[i + 1 :]) > 0.3
