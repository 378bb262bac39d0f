"""Reading and checking the command line's inputs: images, labels, and whether they fit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("napari_spoco")


def read_images(
    paths: Sequence[str], channel_axis: int | None, *, grey: bool = False
) -> tuple[list[tuple[Path, np.ndarray]], int | None]:
    """Read images; colour (Y, X, 3 or 4) ones become grey with ``grey``, else RGB channels.

    Without ``--channel-axis``, images whose last axis holds 3 or 4 values are
    taken as RGB(A), as napari does, and the first line of output says so.
    """
    from ..core.image import looks_rgb, rgb_to_grey
    from ..core.io import expand_paths, read_image

    images = [(path, read_image(path)) for path in expand_paths(paths)]
    if channel_axis is not None:
        return images, channel_axis
    colour = [path for path, array in images if looks_rgb(array.shape)]
    if grey:
        if colour:
            logger.info("converting %d colour image(s) to grey (--grey)", len(colour))
        return [(p, rgb_to_grey(a) if p in colour else a) for p, a in images], None
    if not colour:
        return images, None
    if len(colour) < len(images):
        raise ValueError(
            f"{colour[0].name} is a colour image but others are not: pass --grey to read "
            "them all as grey, or --channel-axis"
        )
    logger.info("reading the images as RGB (last axis = channels), as napari does; "
                "pass --channel-axis or --grey to read them otherwise")  # fmt: skip
    return images, -1


def spatial_dims_of(images: list[tuple[Path, np.ndarray]], channel_axis: int | None) -> int:
    dims = {path: array.ndim - (channel_axis is not None) for path, array in images}
    for path, value in dims.items():
        if value not in (2, 3):
            extra = " plus the channel axis" if channel_axis is not None else ""
            raise ValueError(f"{path}: expected a 2D or 3D image{extra}, got {value} spatial axes")
    if len(set(dims.values())) > 1:
        listed = ", ".join(f"{p.name} {d}D" for p, d in dims.items())
        raise ValueError(f"images mix 2D and 3D: {listed}")
    return next(iter(dims.values()))


def spatial_shape_of(array: np.ndarray, channel_axis: int | None) -> tuple[int, ...]:
    if channel_axis is None:
        return array.shape
    return tuple(s for i, s in enumerate(array.shape) if i != channel_axis % array.ndim)


def channels_of(images: list[tuple[Path, np.ndarray]], channel_axis: int | None) -> int:
    counts = {p: 1 if channel_axis is None else a.shape[channel_axis] for p, a in images}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{p.name} {c}" for p, c in counts.items())
        raise ValueError(f"images have different numbers of channels: {listed}")
    return next(iter(counts.values()))


def read_labels(
    paths: Sequence[str], images: list, channel_axis: int | None
) -> tuple[list[Path], list[np.ndarray]]:
    from ..core.io import expand_paths, read_image

    label_paths = expand_paths(paths)
    if len(label_paths) != len(images):
        raise ValueError(f"{len(images)} images but {len(label_paths)} annotations")
    labels = []
    for (image_path, image), path in zip(images, label_paths, strict=True):
        label = read_image(path)
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{path}: annotations must be integer labels, got {label.dtype}")
        if label.shape != spatial_shape_of(image, channel_axis):
            raise ValueError(
                f"{path} has shape {label.shape}, but {image_path.name} has spatial shape "
                f"{spatial_shape_of(image, channel_axis)}"
            )
        if label.size and label.min() < 0:
            raise ValueError(f"{path}: annotation ids must be >= 0 (0 = not annotated)")
        labels.append(label)
    if not any(label.any() for label in labels):
        names = ", ".join(p.name for p in label_paths)
        raise ValueError(f"nothing is annotated in {names}: paint at least one object")
    return label_paths, labels


def check_fits(
    image: Any, path: Path, model: Any, channel_axis: int | None, *, object_scale: float = 1.0
) -> None:
    from ..core.image import check_image_size

    channels = 1 if channel_axis is None else image.shape[channel_axis]
    dims = image.ndim - (channel_axis is not None)
    try:
        model.check_reads(dims, channels, what=f"an image of shape {image.shape}")
        check_image_size(spatial_shape_of(image, channel_axis), object_scale)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
