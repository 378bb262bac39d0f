"""Bring raw microscopy arrays into the form the network reads.

The network sees float32 (C, *spatial) arrays, each channel normalised by its
own percentiles, so that images from different microscopes, bit depths and
exposure settings land in the same intensity range.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

__all__ = [
    "MIN_SIZE",
    "check_image_size",
    "check_image_values",
    "looks_rgb",
    "normalize_percentile",
    "percentile_bounds",
    "prepare_image",
    "rescale_spatial",
    "rgb_to_grey",
]

#: Smallest Y/X extent (pixels, after the object-size rescaling) the network is trained on.
MIN_SIZE = 16


def check_image_values(image: ArrayLike, *, name: str = "image") -> None:
    """Reject images the network cannot read, with a reason a user can act on.

    Raises
    ------
    TypeError
        If the pixels are not real numbers (e.g. complex, text, objects).
    ValueError
        If the image is empty or holds NaN or infinite values.
    """
    image = np.asarray(image)
    real = np.issubdtype(image.dtype, np.number) or image.dtype == bool
    if not real or np.issubdtype(image.dtype, np.complexfloating):
        raise TypeError(
            f"{name} has pixel type {image.dtype}, which is not supported: "
            "convert it to integers or floats"
        )
    if image.size == 0:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError(
            f"{name} contains NaN or infinite pixels: replace them (e.g. by 0) before training"
        )


def looks_rgb(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` is probably (Y, X, 3 or 4) colour, by napari's rule.

    napari guesses RGB(A) for arrays of 3 or more axes whose last axis holds 3
    or 4 values; we only apply it to three axes, where it cannot be a Z stack
    of 3 or 4 planes (those come as (Z, Y, X), with Z first).
    """
    return len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 4


def rgb_to_grey(image: ArrayLike) -> NDArray[np.float32]:
    """Mean of the R, G and B channels of a (Y, X, 3 or 4) image (alpha is dropped).

    A single-channel model (the nuclei generalist) reads colour images this
    way; the channel mean keeps stained nuclei distinct in any stain colour,
    where luminance weights would favour green.
    """
    image = np.asarray(image)
    return image[..., :3].astype(np.float32).mean(axis=-1)


def check_image_size(spatial_shape: tuple[int, ...], object_scale: float = 1.0) -> None:
    """Reject images whose Y or X extent, after rescaling, is below :data:`MIN_SIZE`.

    Raises
    ------
    ValueError
        Naming the size after rescaling and what to change.
    """
    scaled = [round(n * object_scale) for n in spatial_shape[-2:]]
    if min(scaled) < MIN_SIZE:
        raise ValueError(
            f"the image is too small for the network: {tuple(spatial_shape[-2:])} pixels in Y/X "
            f"become {tuple(scaled)} at object scale {object_scale:.2f}; it needs at least "
            f"{MIN_SIZE} (use a larger image or a smaller object diameter)"
        )


def percentile_bounds(
    image: ArrayLike, *, low: float = 1.0, high: float = 99.8
) -> tuple[NDArray, NDArray]:
    """Each channel's ``low`` and ``high`` percentiles of a (C, *spatial) image."""
    flat = np.asarray(image, dtype=np.float32).reshape(np.shape(image)[0], -1)
    lo, hi = np.percentile(flat, [low, high], axis=1)
    return lo, hi


def normalize_percentile(
    image: ArrayLike,
    *,
    low: float = 1.0,
    high: float = 99.8,
    bounds: tuple[NDArray, NDArray] | None = None,
) -> NDArray[np.float32]:
    """Map each channel's ``low``/``high`` percentiles to 0/1 (values may exceed [0, 1]).

    Parameters
    ----------
    image : array_like, shape (C, *spatial)
        Channel-first image.
    bounds : tuple of ndarray, optional
        Per-channel values to map to 0 and 1 instead of this image's
        percentiles: a block of a large image takes the whole image's.

    Returns
    -------
    ndarray of float32, same shape
        Normalised image; a constant channel becomes all zeros.
    """
    image = np.asarray(image, dtype=np.float32)
    lo, hi = percentile_bounds(image, low=low, high=high) if bounds is None else bounds
    scale = np.where(hi - lo > 1e-12, hi - lo, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (image.ndim - 1)
    return (image - lo.reshape(shape).astype(np.float32)) / scale.reshape(shape)


def prepare_image(
    image: ArrayLike, *, spatial_dims: int, channel_axis: int | None = None
) -> NDArray[np.float32]:
    """Return ``image`` as normalised float32 (C, *spatial).

    Parameters
    ----------
    image : array_like
        (Y, X) or (Z, Y, X) single-channel, or with one extra channel axis.
    spatial_dims : int
        2 or 3.
    channel_axis : int, optional
        Axis holding channels; ``None`` means the image has no channel axis.

    Raises
    ------
    ValueError
        If the number of axes does not match ``spatial_dims`` and ``channel_axis``.
    """
    image = np.asarray(image)
    expected = spatial_dims + (channel_axis is not None)
    if image.ndim != expected:
        what = "with" if channel_axis is not None else "without"
        raise ValueError(
            f"expected a {spatial_dims}D image {what} a channel axis ({expected} axes), "
            f"got shape {image.shape}"
        )
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise TypeError(f"image must hold real numbers, got dtype {image.dtype}")
    image = image[np.newaxis] if channel_axis is None else np.moveaxis(image, channel_axis, 0)
    return normalize_percentile(image)


def rescale_spatial(array: NDArray, factor: float, *, order: int, channel_first: bool) -> NDArray:
    """Resize the Y and X axes of ``array`` by ``factor`` (Z, if any, is kept).

    The object-size hint rescales images so that objects match the network's
    receptive field; Z is left alone because stacks are usually coarse in Z.
    ``order`` 0 (nearest) is for labels, 1 (linear) for images and embeddings.
    """
    if factor == 1.0:
        return array
    zoom = [1.0] * array.ndim
    zoom[-1] = zoom[-2] = factor
    if channel_first:
        zoom[0] = 1.0
    return ndimage.zoom(array, zoom, order=order, mode="nearest", grid_mode=True)
