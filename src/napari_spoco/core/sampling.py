"""Draw training patches from sparsely annotated images.

A user may paint five nuclei in a 2000×2000 image. Uniform random crops would
miss them most of the time, so most patches are centred near a randomly chosen
annotated object (every object equally likely, whichever image it is in); the
rest are uniform crops that show the network the unannotated context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from .augment import geometric_augment

__all__ = ["PatchSampler", "validate_pair"]


@dataclass(frozen=True)
class _Pair:
    image: NDArray[np.float32]  # (C, *spatial)
    labels: NDArray[np.int64]  # (*spatial)
    boxes: tuple[tuple[slice, ...], ...]  # bounding box of each annotated object


def validate_pair(image: NDArray, labels: NDArray, spatial_dims: int) -> None:
    """Check that a prepared (C, *spatial) image and its annotation fit together.

    Raises
    ------
    ValueError, TypeError
        With the expected and the actual shape or dtype.
    """
    if image.ndim != spatial_dims + 1:
        raise ValueError(
            f"image must be (C, *spatial) with {spatial_dims} spatial axes, got {image.shape}"
        )
    if labels.shape != image.shape[1:]:
        raise ValueError(
            f"annotation shape {labels.shape} does not match image shape {image.shape[1:]}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"annotation must be an integer label image, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("annotation ids must be >= 0 (0 = not annotated)")


class PatchSampler:
    """Random, object-biased, augmented patches from (image, annotation) pairs.

    Parameters
    ----------
    images : sequence of ndarray, each (C, *spatial) float32
        Prepared images (see :func:`napari_spoco.core.image.prepare_image`); sizes may differ.
    labels : sequence of ndarray, each (*spatial) int
        Sparse annotations: 0 = not annotated, k >= 1 = object k.
    patch_shape : tuple of int
        Spatial shape of every patch.
    rng : numpy.random.Generator
        Seeded source of randomness.
    object_fraction : float
        Share of patches centred on an annotated object.
    augment : bool
        Apply flips, rotations, scaling and elastic deformation.
    scale_range : tuple of float
        Range of the random zoom factor (log-uniform).
    background_id : int, optional
        Label of background scribbles; those are not used as patch centres.
    mirror_labels : bool
        Where a patch reaches past the image, mirror the labels like the image
        instead of marking them 0. Dense labels need this: there 0 means
        background, which a mirrored object is not.
    """

    def __init__(
        self,
        images: Sequence[NDArray],
        labels: Sequence[NDArray],
        *,
        patch_shape: tuple[int, ...],
        rng: np.random.Generator,
        object_fraction: float = 0.75,
        augment: bool = True,
        scale_range: tuple[float, float] = (0.8, 1.25),
        background_id: int | None = None,
        mirror_labels: bool = False,
    ) -> None:
        if len(images) != len(labels) or not images:
            raise ValueError(
                f"need one annotation per image, got {len(images)} images "
                f"and {len(labels)} annotations"
            )
        spatial_dims = len(patch_shape)
        self._pairs: list[_Pair] = []
        for image, label in zip(images, labels, strict=True):
            validate_pair(image, label, spatial_dims)
            self._pairs.append(
                _Pair(image, label.astype(np.int64), _object_boxes(label, background_id))
            )
        self.patch_shape = tuple(patch_shape)
        self.object_fraction = object_fraction
        self.augment = augment
        self.scale_range = scale_range
        self.mirror_labels = mirror_labels
        self._rng = rng
        self._object_index = [
            (p, o) for p, pair in enumerate(self._pairs) for o in range(len(pair.boxes))
        ]
        areas = np.array([pair.labels.size for pair in self._pairs], dtype=np.float64)
        self._image_weights = areas / areas.sum()

    @property
    def n_objects(self) -> int:
        """Annotated objects over all images (background scribbles excluded)."""
        return len(self._object_index)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return a batch: images (B, C, *patch) float32 and labels (B, *patch) int64."""
        images, labels = zip(*(self._sample_one() for _ in range(batch_size)), strict=True)
        return torch.stack(images), torch.stack(labels)

    def _sample_one(self) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self._rng
        crop_shape = self._crop_shape()
        if self._object_index and rng.random() < self.object_fraction:
            pair_index, object_index = self._object_index[rng.integers(len(self._object_index))]
            pair = self._pairs[pair_index]
            box = pair.boxes[object_index]
            centre = [rng.integers(s.start, s.stop) for s in box]
            start = [
                int(c - rng.uniform(0.25, 0.75) * n)
                for c, n in zip(centre, crop_shape, strict=True)
            ]
        else:
            pair = self._pairs[rng.choice(len(self._pairs), p=self._image_weights)]
            start = [
                int(rng.integers(0, size - n + 1)) if size >= n else -((n - size) // 2)
                for size, n in zip(pair.labels.shape, crop_shape, strict=True)
            ]
        image, labels = _padded_crop(pair, start, crop_shape, self.mirror_labels)
        image_t, labels_t = torch.from_numpy(image), torch.from_numpy(labels)
        if not self.augment:
            return image_t, labels_t
        return geometric_augment(image_t, labels_t, self.patch_shape, rng)

    def _crop_shape(self) -> tuple[int, ...]:
        """Crop size before resampling to the patch: the zoom augmentation (Y and X only)."""
        if not self.augment:
            return self.patch_shape
        low, high = np.log(self.scale_range)
        zoom = float(np.exp(self._rng.uniform(low, high)))
        shape = list(self.patch_shape)
        shape[-2:] = [max(8, round(n / zoom)) for n in shape[-2:]]
        return tuple(shape)


def _object_boxes(labels: NDArray, background_id: int | None) -> tuple[tuple[slice, ...], ...]:
    ids = np.unique(labels)
    ids = ids[(ids != 0) & (ids != background_id)]
    if ids.size == 0:
        return ()
    # Map ids to 1..n first: find_objects allocates one entry per id up to the maximum.
    compact = np.searchsorted(ids, labels) + 1
    compact[~np.isin(labels, ids)] = 0
    return tuple(box for box in ndimage.find_objects(compact) if box is not None)


def _padded_crop(
    pair: _Pair, start: list[int], shape: tuple[int, ...], mirror_labels: bool
) -> tuple[NDArray, NDArray]:
    """Cut ``shape`` at ``start``; outside the image, mirror the image and mark labels 0."""
    inside = tuple(
        slice(max(0, s), min(size, s + n))
        for s, n, size in zip(start, shape, pair.labels.shape, strict=True)
    )
    padding = [
        (sl.start - s, s + n - sl.stop) for sl, s, n in zip(inside, start, shape, strict=True)
    ]
    image = pair.image[(slice(None), *inside)]
    labels = pair.labels[inside]
    if any(before or after for before, after in padding):
        image = np.pad(image, [(0, 0), *padding], mode="symmetric")
        labels = np.pad(labels, padding, mode="symmetric" if mirror_labels else "constant")
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(labels)
