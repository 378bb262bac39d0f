"""What the axes of an image mean: time, channels, Z, Y, X.

napari shows any array; the network needs to know which axes are spatial,
which hold channels and which are time points. An axes string such as
``"TZYX"`` or ``"YXC"`` says so. Time points are separate images: each frame
is trained and segmented on its own. Annotations have the image's shape
without the channel axis.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["AXES_CHOICES", "Axes", "guess_axes", "nonempty_frames"]

#: Interpretations offered per number of image axes, most likely first.
AXES_CHOICES: dict[int, tuple[str, ...]] = {
    2: ("YX",),
    3: ("ZYX", "TYX", "CYX", "YXC"),
    4: ("TZYX", "CZYX", "ZCYX", "TCYX", "TYXC"),
    5: ("TCZYX", "TZCYX"),
}


@dataclass(frozen=True)
class Axes:
    """An axes string (letters T, C, Z, Y, X, each at most once, ending in YX or YXC).

    Examples
    --------
    >>> axes = Axes("TCYX")
    >>> axes.spatial_dims, axes.channel_axis, axes.labels_shape((5, 2, 64, 80))
    (2, 0, (5, 64, 80))
    """

    spec: str

    def __post_init__(self) -> None:
        spec = self.spec
        valid = all(spec.count(a) <= 1 for a in "TCZYX") and set(spec) <= set("TCZYX")
        if not valid or not (spec.endswith("YX") or spec.endswith("YXC")):
            raise ValueError(
                f"axes must use T, C, Z, Y, X at most once each and end in YX or YXC, got {spec!r}"
            )
        if "T" in spec and spec.index("T") != 0:
            raise ValueError(f"the time axis must come first, got {spec!r}")

    @property
    def has_time(self) -> bool:
        """Whether the first axis holds time points."""
        return "T" in self.spec

    @property
    def frame_spec(self) -> str:
        """Axes of one time point."""
        return self.spec.replace("T", "")

    @property
    def spatial_dims(self) -> int:
        """2 for (Y, X) frames, 3 for (Z, Y, X)."""
        return 3 if "Z" in self.spec else 2

    @property
    def channel_axis(self) -> int | None:
        """Channel axis within one frame, or None."""
        return self.frame_spec.index("C") if "C" in self.spec else None

    def channels(self, image_shape: tuple[int, ...]) -> int:
        """Return the number of channels of an image of this shape."""
        self.check_image(image_shape)
        return image_shape[self.spec.index("C")] if "C" in self.spec else 1

    def labels_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of an annotation that fits an image of ``image_shape``."""
        self.check_image(image_shape)
        return tuple(n for n, a in zip(image_shape, self.spec, strict=True) if a != "C")

    def check_image(self, image_shape: tuple[int, ...]) -> None:
        """Raise ValueError unless the image has one axis per letter."""
        if len(image_shape) != len(self.spec):
            raise ValueError(
                f"axes {self.spec!r} need a {len(self.spec)}-axis image, got shape {image_shape}"
            )

    def check_labels(self, image_shape: tuple[int, ...], labels_shape: tuple[int, ...]) -> None:
        """Raise ValueError unless ``labels_shape`` fits the image."""
        expected = self.labels_shape(image_shape)
        if tuple(labels_shape) != expected:
            raise ValueError(
                f"the annotation must have shape {expected} to fit the image "
                f"{tuple(image_shape)} ({self.spec}), got {tuple(labels_shape)}"
            )

    def frames(self, image: NDArray, labels: NDArray | None = None) -> Iterator[tuple]:
        """Yield ``(time_index, image_frame, labels_frame)``; index None without T."""
        if not self.has_time:
            yield None, image, labels
            return
        for t in range(image.shape[0]):
            yield t, image[t], None if labels is None else labels[t]


def guess_axes(shape: tuple[int, ...], *, rgb: bool = False) -> str:
    """Most likely axes of an image of ``shape`` (napari's ``rgb`` flag means YXC).

    A short leading axis (<= 4) of a 3- or 4-axis image is read as channels,
    anything longer as Z.

    Examples
    --------
    >>> guess_axes((512, 512)), guess_axes((3, 512, 512)), guess_axes((40, 256, 256))
    ('YX', 'CYX', 'ZYX')
    >>> guess_axes((512, 512, 3), rgb=True)
    'YXC'
    """
    ndim = len(shape)
    if ndim not in AXES_CHOICES:
        raise ValueError(f"images need 2 to 5 axes, got shape {shape}")
    if rgb:
        return {3: "YXC", 4: "TYXC"}.get(ndim, AXES_CHOICES[ndim][0])
    if ndim in (3, 4) and shape[0] <= 4:
        return "CYX" if ndim == 3 else "CZYX"
    return AXES_CHOICES[ndim][0]


def nonempty_frames(labels: NDArray, axes: Axes) -> list[int | None]:
    """Time indices whose annotation holds anything (``[None]`` without T if annotated)."""
    if not axes.has_time:
        return [None] if np.any(labels) else []
    flat = np.asarray(labels).reshape(labels.shape[0], -1)
    return [int(t) for t in np.flatnonzero(flat.any(axis=1))]
