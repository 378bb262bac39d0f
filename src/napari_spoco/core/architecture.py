"""The network's architecture settings (:class:`ModelConfig`): depth, widths, heads.

:mod:`.config` imports it with the training, loss and segmentation settings; it
has a module of its own to keep modules short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ModelConfig", "Norm", "require"]

Norm = Literal["batch", "group", "instance"]


def require(condition: bool, message: str) -> None:
    """Raise ValueError with ``message`` unless ``condition``: how every settings class checks."""
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the U-Net embedding network.

    Parameters
    ----------
    spatial_dims : int
        2 for images (Y, X), 3 for volumes (Z, Y, X).
    in_channels : int
        Number of image channels the network reads.
    embedding_dim : int
        Length D of each pixel's embedding vector.
    depth : int
        Number of resolution levels (``depth - 1`` poolings).
    base_features : int
        Feature maps at the first level; doubled at every level.
    norm : {"batch", "group", "instance"}
        Normalisation layer; group norm suits the small batches of 3D.
    groups : int
        Groups for group norm.
    anisotropic_pooling : bool
        3D only: pool only Y and X at the first level, for stacks whose Z
        spacing is much coarser than their pixel size.
    foreground_head : bool
        One more output channel: the logit of "this pixel belongs to an object".
    distance_head : bool
        One more output channel: the logit of the normalised inner distance
        (1 at an object's centre, falling to 0 at its border and outside).
    bottleneck_projection : bool
        A small 1×1 projection of the deepest encoder features to
        ``embedding_dim`` channels, trained by the triplet term when
        ``LossConfig.triplet_on == "bottleneck"``; it adds no output channel.
    """

    spatial_dims: int = 2
    in_channels: int = 1
    embedding_dim: int = 16
    depth: int = 4
    base_features: int = 16
    norm: Norm = "batch"
    groups: int = 8
    anisotropic_pooling: bool = False
    foreground_head: bool = False
    distance_head: bool = False
    bottleneck_projection: bool = False

    def __post_init__(self) -> None:
        require(
            self.spatial_dims in (2, 3), f"spatial_dims must be 2 or 3, got {self.spatial_dims}"
        )
        require(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}")
        require(self.embedding_dim >= 2, f"embedding_dim must be >= 2, got {self.embedding_dim}")
        require(1 <= self.depth <= 7, f"depth must be in 1..7, got {self.depth}")
        require(self.base_features >= 1, f"base_features must be >= 1, got {self.base_features}")
        require(
            self.norm in ("batch", "group", "instance"),
            f"norm must be 'batch', 'group' or 'instance', got {self.norm!r}",
        )
        if self.norm == "group":
            require(
                self.base_features % self.groups == 0,
                f"base_features ({self.base_features}) must be divisible by groups ({self.groups})",
            )

    @property
    def output_channels(self) -> int:
        """Channels the network outputs: the embedding, then one per enabled head."""
        return self.embedding_dim + len(self.heads)

    @property
    def heads(self) -> tuple[str, ...]:
        """Names of the enabled extra outputs, in channel order after the embedding."""
        return tuple(
            name
            for name, enabled in (
                ("foreground", self.foreground_head),
                ("distance", self.distance_head),
            )
            if enabled
        )

    @property
    def pooling_factors(self) -> tuple[tuple[int, ...], ...]:
        """Down-sampling factor per axis for each of the ``depth - 1`` poolings."""
        factors = []
        for level in range(self.depth - 1):
            if self.spatial_dims == 3 and self.anisotropic_pooling and level == 0:
                factors.append((1, 2, 2))
            else:
                factors.append((2,) * self.spatial_dims)
        return tuple(factors)

    @property
    def size_divisor(self) -> tuple[int, ...]:
        """Input sizes must be multiples of this per axis (the model pads otherwise)."""
        divisor = [1] * self.spatial_dims
        for factor in self.pooling_factors:
            divisor = [d * f for d, f in zip(divisor, factor, strict=True)]
        return tuple(divisor)

    def reads(self, spatial_dims: int, channels: int) -> bool:
        """Whether the network reads ``channels``-channel ``spatial_dims``D images."""
        return (spatial_dims, channels) == (self.spatial_dims, self.in_channels)

    def check_reads(
        self, spatial_dims: int, channels: int, *, what: str = "the image", model: str = "the model"
    ) -> None:
        """Raise ValueError unless the network reads ``channels``-channel ``spatial_dims``D images.

        The one rule the trainer, the panel, the command line, block-wise
        prediction and the bioimage.io export apply before they use a model.
        """
        if not self.reads(spatial_dims, channels):
            raise ValueError(
                f"{model} reads {self.in_channels}-channel {self.spatial_dims}D images, "
                f"{what} is {channels}-channel {spatial_dims}D"
            )
