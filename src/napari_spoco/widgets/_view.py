"""Where the user is looking: the part of an image shown in the canvas, as array slices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.axes import Axes

if TYPE_CHECKING:
    import napari

__all__ = ["Region", "visible_region"]

#: Y/X extent of a preview: at least this much context, at most this much work.
MIN_SIDE, MAX_SIDE = 128, 768
#: Z half-depth of a preview slab around the current slice.
HALF_DEPTH = 8


@dataclass(frozen=True)
class Region:
    """A crop of an image: the time point (or None) and slices of the frame's spatial axes."""

    time_index: int | None
    spatial: tuple[slice, ...]

    @property
    def offset(self) -> tuple[int, ...]:
        """First pixel of the crop per spatial axis."""
        return tuple(s.start for s in self.spatial)

    def crop(self, image: np.ndarray, axes: Axes) -> np.ndarray:
        """Copy the crop out of the full image (channels kept at their axis)."""
        frame = image if self.time_index is None else image[self.time_index]
        spatial = iter(self.spatial)
        index = tuple(slice(None) if a == "C" else next(spatial) for a in axes.frame_spec)
        return np.array(frame[index])

    def placement(self, layer: Any, axes: Axes) -> dict[str, Any]:
        """Return scale and translate that put a crop-shaped result on ``layer``.

        The result has a leading T axis of length 1 when the image has time points.
        """
        keep = [i for i, a in enumerate(axes.spec) if a != "C"]
        if layer.rgb:
            keep = list(range(layer.ndim))
        scale = np.asarray(layer.scale)[keep]
        translate = np.asarray(layer.translate, dtype=float)[keep].copy()
        start = ([self.time_index] if self.time_index is not None else []) + list(self.offset)
        translate += np.asarray(start) * scale
        return {"scale": scale, "translate": translate}


def visible_region(viewer: napari.viewer.Viewer, layer: Any, axes: Axes) -> Region:
    """Return the crop of ``layer``'s data around what the canvas shows now.

    Y/X follow the canvas (clamped between :data:`MIN_SIDE` and
    :data:`MAX_SIDE` pixels around its centre); Z is a slab of
    ``2 * HALF_DEPTH`` slices around the current one; T is the current frame.
    """
    shape = layer.data.shape
    sizes = [n for n, a in zip(shape, axes.spec, strict=True) if a != "C"]
    point = np.asarray(layer.world_to_data(viewer.dims.point))
    non_channel = [a for a in axes.spec if a != "C"]
    if layer.rgb:
        point = point[: len(non_channel)]
    position = dict(zip(non_channel, point, strict=False))
    corners = np.asarray(layer.corner_pixels)
    time_index = None
    if axes.has_time:
        time_index = int(np.clip(round(position["T"]), 0, sizes[0] - 1))
    spatial = []
    for axis_index, letter in enumerate(non_channel):
        if letter == "T":
            continue
        size = sizes[axis_index]
        if letter == "Z":
            centre = int(np.clip(round(position["Z"]), 0, size - 1))
            spatial.append(_window(centre, 2 * HALF_DEPTH, size))
            continue
        low, high = corners[:, axis_index] if axis_index < corners.shape[1] else (0, size)
        low, high = int(np.clip(low, 0, size)), int(np.clip(high, 0, size))
        side = int(np.clip(high - low, MIN_SIDE, MAX_SIDE))
        spatial.append(_window((low + high) // 2, side, size))
    return Region(time_index, tuple(spatial))


def _window(centre: int, side: int, size: int) -> slice:
    """``side`` pixels around ``centre``, shifted to lie inside ``[0, size)``."""
    side = min(side, size)
    start = int(np.clip(centre - side // 2, 0, size - side))
    return slice(start, start + side)
