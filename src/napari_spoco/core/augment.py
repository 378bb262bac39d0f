"""Augmentations that teach the network invariances the data cannot show.

Geometric transforms (flips, 90° rotations, scaling, elastic deformation) are
applied identically to image and labels. Photometric transforms (contrast,
gamma, noise, blur) act on the image only and are drawn independently for the
student and the teacher view, which is what the consistency term compares.
Uneven staining (:func:`vary_object_contrast`) needs dense labels to know where
each object is, and is drawn once for both views.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["geometric_augment", "photometric_augment", "vary_object_contrast"]

# Pixels past an object's label that dim with it: the reach of a blurred edge at the
# network's reference size (docs/benchmarks.md, "uneven staining").
_RIM = 2


def geometric_augment(
    image: torch.Tensor,
    labels: torch.Tensor,
    out_shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    elastic_strength: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip, rotate by 90°, resample to ``out_shape`` and deform one crop.

    Parameters
    ----------
    image : Tensor, shape (C, *spatial), float32
        Crop, possibly larger or smaller than ``out_shape`` (that ratio is the
        scale augmentation).
    labels : Tensor, shape (*spatial), int64
        Labels of the same crop; resampled with nearest neighbour so ids survive.
    out_shape : tuple of int
        Spatial shape of the result.
    rng : numpy.random.Generator
        Source of randomness (seeded by the trainer).
    elastic_strength : float
        Largest displacement in output pixels; 0 disables the deformation.

    Returns
    -------
    image, labels : Tensor
        Shapes (C, *out_shape) and (*out_shape).
    """
    spatial_dims = labels.ndim
    for axis in range(spatial_dims):
        if rng.random() < 0.5:
            image, labels = image.flip(axis + 1), labels.flip(axis)
    if image.shape[-1] == image.shape[-2] and out_shape[-1] == out_shape[-2]:
        turns = int(rng.integers(4))
        image = torch.rot90(image, turns, dims=(-2, -1))
        labels = torch.rot90(labels, turns, dims=(-2, -1))
    grid = _identity_grid(out_shape) + _elastic_displacement(out_shape, rng, elastic_strength)
    grid = grid.unsqueeze(0)
    warped = F.grid_sample(
        image[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    warped_labels = F.grid_sample(
        labels[None, None].to(torch.float64),
        grid.to(torch.float64),
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )
    return warped[0], warped_labels[0, 0].round().to(torch.int64)


def _identity_grid(shape: tuple[int, ...]) -> torch.Tensor:
    """Normalised sampling coordinates, last axis ordered (x, y[, z]) as grid_sample wants."""
    axes = [torch.linspace(-1 + 1 / n, 1 - 1 / n, n) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh[::-1], dim=-1)


def _elastic_displacement(
    shape: tuple[int, ...], rng: np.random.Generator, strength: float
) -> torch.Tensor:
    """Smooth random field: coarse Gaussian noise upsampled cubically, in grid units.

    Only Y and X are displaced; stacks are usually too thin in Z for it.
    """
    if strength <= 0:
        return torch.zeros(*shape, len(shape))
    control = [max(2, math.ceil(n / 64)) + 1 for n in shape[-2:]]
    noise = torch.from_numpy(rng.normal(0.0, strength / 2, size=(2, *control)).astype(np.float32))
    field = F.interpolate(noise[None], size=shape[-2:], mode="bicubic", align_corners=True)[0]
    field = field / torch.tensor(shape[-2:][::-1], dtype=torch.float32).view(2, 1, 1) * 2
    # field[0] displaces X (grid_sample's first coordinate); broadcast over Z for volumes.
    displacement = torch.zeros(*shape, len(shape))
    displacement[..., :2] = field.permute(1, 2, 0).expand(*shape[:-2], *shape[-2:], 2)
    return displacement


def photometric_augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Jitter contrast, brightness and gamma, then blur and add noise, per sample.

    Parameters
    ----------
    batch : Tensor, shape (B, C, *spatial)
        Normalised images (roughly in [0, 1]).
    generator : torch.Generator
        CPU generator; student and teacher views draw different values from it.
    """
    batch_size = batch.shape[0]
    view = (batch_size,) + (1,) * (batch.ndim - 1)

    def uniform(low: float, high: float) -> torch.Tensor:
        values = torch.rand(batch_size, generator=generator) * (high - low) + low
        return values.view(view).to(batch.device)

    gamma = torch.exp(uniform(-0.3, 0.3))
    positive = batch.clamp(min=0)
    out = positive.pow(gamma) + (batch - positive)
    out = out * uniform(0.75, 1.25) + uniform(-0.1, 0.1)
    sigmas = uniform(0.0, 1.0).flatten().tolist()
    blurred = [_gaussian_blur(x, s) if s > 0.5 else x for x, s in zip(out, sigmas, strict=True)]
    out = torch.stack(blurred)
    noise = torch.randn(out.shape, generator=generator).to(out.device)
    return out + noise * uniform(0.0, 0.08)


def vary_object_contrast(
    batch: torch.Tensor,
    labels: torch.Tensor,
    probability: float,
    generator: torch.Generator,
    *,
    background_id: int | None = None,
) -> torch.Tensor:
    """Scale each object's contrast against its patch's background by its own factor.

    In a share ``probability`` of the patches, every object's intensities, and
    those of the background within ``_RIM`` pixels of it, are pulled towards the
    median of the patch's background by a factor drawn in [0.1, 1]. Where a few
    nuclei are saturated, the others end up at a tenth of the normalised range;
    one gamma per patch never shows that, and a generalist trained without it
    missed such nuclei (docs/benchmarks.md).

    Parameters
    ----------
    batch : Tensor, shape (B, C, *spatial)
        Normalised images.
    labels : Tensor, shape (B, *spatial)
        Dense instance labels: 0 (and ``background_id``) is background, every
        positive value one object; negative values are left as they are.
    probability : float
        Share of the patches that are changed.
    generator : torch.Generator
        CPU generator, as for :func:`photometric_augment`.

    Returns
    -------
    Tensor, same shape as ``batch``
        A patch without background pixels or without objects is returned unchanged.
    """
    out = batch.clone()
    for index, (image, objects) in enumerate(zip(batch, labels, strict=True)):
        if torch.rand(1, generator=generator).item() >= probability:
            continue
        background = objects == 0
        if background_id is not None:
            background |= objects == background_id
        inside = (objects > 0) & ~background
        if not background.any() or not inside.any():
            continue
        ids, which = torch.unique(objects[inside], return_inverse=True)
        factors = torch.rand(len(ids), generator=generator) * 0.9 + 0.1
        gain = torch.ones(objects.shape, dtype=image.dtype, device=image.device)
        gain[inside] = factors.to(image.device, image.dtype)[which]
        # The blur of a nucleus reaches past its label; dim that rim with it, or a
        # dimmed object keeps a bright halo no real dim nucleus has. Where rims meet,
        # the dimmer object wins.
        pool = F.max_pool2d if background.ndim == 2 else F.max_pool3d
        dimming = pool((1 - gain)[None, None], 2 * _RIM + 1, stride=1, padding=_RIM)[0, 0]
        gain = torch.where(background, 1 - dimming, gain)
        level = image[:, background].median(dim=1).values.view(-1, *[1] * background.ndim)
        out[index] = level + (image - level) * gain
    return out


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (C, *spatial) tensor along Y and X."""
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = image.unsqueeze(1)  # channels as batch
    conv = F.conv2d if image.ndim == 3 else F.conv3d
    for axis in (-1, -2):
        shape = [1, 1] + [1] * (image.ndim - 1)
        shape[axis] = kernel.numel()
        pad = [0] * (2 * (image.ndim - 1))
        pad[2 * (-axis - 1)] = pad[2 * (-axis - 1) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out.squeeze(1)
