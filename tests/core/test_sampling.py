import numpy as np
import pytest
import torch

from napari_spoco.core.augment import geometric_augment, photometric_augment, vary_object_contrast
from napari_spoco.core.sampling import PatchSampler


def _sparse_pair(size=(300, 400), objects=((150, 200),), radius=6):
    image = np.random.default_rng(0).random((1, *size), dtype=np.float32)
    labels = np.zeros(size, dtype=np.uint16)
    yy, xx = np.indices(size)
    for index, (cy, cx) in enumerate(objects, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = index
    return image, labels


def test_object_bias_shows_a_tiny_annotation_in_every_patch():
    image, labels = _sparse_pair(size=(1000, 1000), objects=((500, 300),))
    sampler = PatchSampler(
        [image], [labels], patch_shape=(64, 64), rng=np.random.default_rng(0), object_fraction=1.0
    )
    _, patches = sampler.sample(16)
    assert all((patch > 0).any() for patch in patches)


def test_pairs_of_different_sizes_and_small_images_are_padded():
    pairs = [_sparse_pair((40, 30), ((20, 15),)), _sparse_pair((200, 250), ((100, 100), (50, 60)))]
    sampler = PatchSampler(
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        patch_shape=(64, 64),
        rng=np.random.default_rng(1),
    )
    images, labels = sampler.sample(8)
    assert images.shape == (8, 1, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (8, 64, 64) and labels.dtype == torch.int64
    assert sampler.n_objects == 3


def test_background_scribbles_are_not_patch_centres():
    image, labels = _sparse_pair()
    labels[:5] = 9
    sampler = PatchSampler(
        [image], [labels], patch_shape=(32, 32), rng=np.random.default_rng(0), background_id=9
    )
    assert sampler.n_objects == 1


def test_geometric_augmentation_moves_image_and_labels_together():
    rng = np.random.default_rng(3)
    labels = torch.zeros(48, 48, dtype=torch.int64)
    labels[10:20, 5:30] = 4
    labels[30:40, 30:45] = 1000
    image = (labels > 0).float()[None]
    for _ in range(10):
        out_image, out_labels = geometric_augment(image, labels, (40, 40), rng)
        assert set(torch.unique(out_labels).tolist()) <= {0, 4, 1000}
        inside = out_labels > 0
        assert out_image[0][inside].mean() > 0.9
        assert out_image[0][~inside].mean() < 0.1


def test_geometric_augmentation_3d():
    labels = torch.zeros(8, 32, 32, dtype=torch.int64)
    labels[2:6, 8:20, 8:20] = 3
    out_image, out_labels = geometric_augment(
        labels[None].float(), labels, (8, 24, 24), np.random.default_rng(0)
    )
    assert out_image.shape == (1, 8, 24, 24) and out_labels.shape == (8, 24, 24)
    assert (out_labels == 3).any()


def test_photometric_views_differ_but_keep_structure():
    generator = torch.Generator().manual_seed(0)
    batch = torch.zeros(2, 1, 64, 64)
    batch[:, :, 16:48, 16:48] = 1.0
    first, second = photometric_augment(batch, generator), photometric_augment(batch, generator)
    assert not torch.allclose(first, second)
    for view in (first, second):
        assert view[:, :, 24:40, 24:40].mean() > view[:, :, :8, :8].mean() + 0.3


def test_uneven_staining_gives_each_object_and_its_rim_one_contrast_and_leaves_the_rest():
    labels = torch.zeros(3, 32, 32, dtype=torch.int64)
    labels[:, 4:12, 4:12], labels[:, 16:28, 16:28] = 1, 2
    batch = torch.where(labels > 0, 1.0, 0.2)[:, None]
    batch[:, :, 2:14, 2:14] += 0.1  # a blurred edge: brighter within 2 px of object 1
    dimmed = vary_object_contrast(batch, labels, 1.0, torch.Generator().manual_seed(0))
    far = torch.ones(32, 32, dtype=torch.bool)
    far[2:14, 2:14] = far[14:30, 14:30] = False
    assert torch.equal(dimmed[:, 0, far], batch[:, 0, far])
    for image in dimmed[:, 0]:
        # One factor per object, in [0.1, 1] of the contrast it had (0.9 and 0.8) ...
        factors = [(image[4:12, 4:12] - 0.2) / 0.9, (image[16:28, 16:28] - 0.2) / 0.8]
        assert all(torch.allclose(f, f[0, 0].expand_as(f)) for f in factors)
        assert all(0.1 - 1e-6 <= f[0, 0] <= 1 + 1e-6 for f in factors)
        # ... and its rim of background dims by the same factor, so no bright halo stays.
        assert torch.allclose(image[2, 2:14] - 0.2, factors[0][0, 0] * 0.1)
        assert torch.allclose(image[14:30, 14] - 0.2, torch.zeros(16), atol=1e-6)
    assert not torch.allclose(dimmed[0, 0, 8, 8], dimmed[0, 0, 20, 20])
    untouched = vary_object_contrast(batch, labels, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(untouched, batch)
    # Background scribbles (--background-id) are background, not an object to dim.
    scribbled = torch.where(labels == 2, 1000, labels)
    kept = vary_object_contrast(
        batch, scribbled, 1.0, torch.Generator().manual_seed(0), background_id=1000
    )
    assert torch.equal(kept[:, 0][scribbled == 1000], batch[:, 0][scribbled == 1000])
    assert (kept[:, 0][scribbled == 1] < 1.0).all()


def test_mismatched_pair_is_rejected():
    image, labels = _sparse_pair()
    with pytest.raises(ValueError, match="does not match"):
        PatchSampler([image], [labels[:-1]], patch_shape=(32, 32), rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="integer"):
        PatchSampler(
            [image], [labels.astype(float)], patch_shape=(32, 32), rng=np.random.default_rng(0)
        )
