"""U-Net that maps an image to a D-dimensional embedding per pixel or voxel.

Architecture as in the SPOCO paper: DoubleConv blocks (norm → 3×3 conv →
ReLU, twice), max-pool down, nearest-neighbour up + concatenation, and a final
1×1 convolution to ``embedding_dim`` channels, followed by one channel per
optional head (foreground, inner distance; logits). Inputs of any size work:
the forward pass pads to the down-sampling factor and crops back. An optional
projection of the deepest encoder features serves an auxiliary training term
only (``ModelConfig.bottleneck_projection``); it is not part of the output.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

__all__ = ["EmbeddingUNet", "build_model", "split_output"]

T = TypeVar("T", torch.Tensor, np.ndarray)


def _norm_layer(config: ModelConfig, channels: int) -> nn.Module:
    dims = config.spatial_dims
    if config.norm == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if config.norm == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    return nn.GroupNorm(min(config.groups, channels), channels)


class _DoubleConv(nn.Sequential):
    """Two norm → conv → ReLU units; the first norm sees the raw input channels."""

    def __init__(self, config: ModelConfig, in_channels: int, out_channels: int) -> None:
        conv = nn.Conv2d if config.spatial_dims == 2 else nn.Conv3d
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            # Group norm needs channels divisible by groups: skip it on the raw input.
            if config.norm != "group" or channels_in % config.groups == 0:
                layers.append(_norm_layer(config, channels_in))
            layers += [conv(channels_in, out_channels, 3, padding=1, bias=False), nn.ReLU(True)]
        super().__init__(*layers)


class EmbeddingUNet(nn.Module):
    """U-Net embedding network, 2D or 3D.

    Parameters
    ----------
    config : ModelConfig
        Architecture settings.

    Examples
    --------
    >>> net = EmbeddingUNet(ModelConfig(depth=3, base_features=8))
    >>> net(torch.zeros(1, 1, 37, 50)).shape
    torch.Size([1, 16, 37, 50])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_features * 2**level for level in range(config.depth)]
        self.encoders = nn.ModuleList()
        channels = config.in_channels
        for width in widths:
            self.encoders.append(_DoubleConv(config, channels, width))
            channels = width
        self.decoders = nn.ModuleList(
            _DoubleConv(config, widths[level] + widths[level + 1], widths[level])
            for level in reversed(range(config.depth - 1))
        )
        conv = nn.Conv2d if config.spatial_dims == 2 else nn.Conv3d
        self.head = conv(widths[0], config.embedding_dim, 1)
        # The heads get a 3x3 layer of their own: as a linear read-out of the
        # features the embedding terms shape, they learned too slowly.
        self.extra_heads = (
            nn.Sequential(
                conv(widths[0], widths[0], 3, padding=1),
                nn.ReLU(True),
                conv(widths[0], len(config.heads), 1),
            )
            if config.heads
            else None
        )
        pool = nn.MaxPool2d if config.spatial_dims == 2 else nn.MaxPool3d
        self.pools = nn.ModuleList(pool(factor) for factor in config.pooling_factors)
        # Created only on request, so that files of networks without it keep their keys.
        self.projection = (
            nn.Sequential(
                conv(widths[-1], widths[-1], 1),
                nn.ReLU(True),
                conv(widths[-1], config.embedding_dim, 1),
            )
            if config.bottleneck_projection
            else None
        )

    @torch.no_grad()
    def move_foreground_threshold(self, threshold: float) -> None:
        """Shift the foreground head so that its probability 0.5 falls where ``threshold`` was.

        A trained model's best decision point, measured on validation images, then
        holds wherever its output is read, with no setting of its own; training
        moves it again as the head learns the painted objects. The mask at 0.5
        afterwards is exactly the mask at ``threshold`` before (one bias moves).

        Raises
        ------
        ValueError
            If the model has no foreground head or ``threshold`` is not in (0, 1).
        """
        if "foreground" not in self.config.heads or self.extra_heads is None:
            raise ValueError("this model has no foreground head")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        channel = self.config.heads.index("foreground")
        self.extra_heads[-1].bias[channel] -= math.log(threshold / (1 - threshold))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Map ``image`` (B, C, *spatial) to (B, D + heads, *spatial), see :func:`split_output`."""
        return self.forward_features(image)[0]

    def forward_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the output of :meth:`forward` and the deepest encoder features behind it.

        The training terms that act on the bottleneck (``core.extensions``)
        need those features; prediction and exported models use ``forward``.

        Returns
        -------
        output : torch.Tensor
            (B, D + heads, *spatial), as :meth:`forward`.
        bottleneck : torch.Tensor
            (B, F, *padded_spatial / size_divisor): the input is padded to a
            multiple of :attr:`ModelConfig.size_divisor` (at the end of each
            axis) before it is encoded.
        """
        spatial = image.shape[2:]
        divisor = self.config.size_divisor
        padding: list[int] = []
        for size, div in zip(reversed(spatial), reversed(divisor), strict=True):
            padding += [0, (-size) % div]
        x = F.pad(image, padding, mode="reflect" if _can_reflect(spatial, padding) else "replicate")
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = self.pools[level - 1](x)
            x = encoder(x)
            skips.append(x)
        for decoder, skip in zip(self.decoders, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = decoder(torch.cat([skip, x], dim=1))
        embeddings = self.head(x)
        if self.extra_heads is not None:
            embeddings = torch.cat([embeddings, self.extra_heads(x)], dim=1)
        crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
        return embeddings[crop], skips[-1]


def _can_reflect(spatial: torch.Size, padding: list[int]) -> bool:
    """Reflect padding needs the pad to be smaller than the axis it pads."""
    pads_per_axis = padding[1::2][::-1]
    return all(pad < size for pad, size in zip(pads_per_axis, spatial, strict=True))


def build_model(config: ModelConfig) -> EmbeddingUNet:
    """Create a freshly initialised embedding network for ``config``."""
    return EmbeddingUNet(config)


def split_output(output: T, config: ModelConfig, axis: int = 0) -> tuple[T, dict[str, T]]:
    """Split network output into the embedding and a logit map per head.

    Parameters
    ----------
    output : torch.Tensor or numpy.ndarray
        Network output with ``config.output_channels`` channels on ``axis``.
    config : ModelConfig
        Architecture that produced it.
    axis : int
        Channel axis: 0 for one image (C, *spatial), 1 for a batch.

    Returns
    -------
    embeddings : same type as ``output``
        The first ``config.embedding_dim`` channels.
    heads : dict of str to the same type
        Each head's channel (axis removed), keyed by :attr:`ModelConfig.heads`.
    """
    if output.shape[axis] != config.output_channels:
        raise ValueError(
            f"expected {config.output_channels} channels on axis {axis}, "
            f"got shape {tuple(output.shape)}"
        )
    index = [slice(None)] * output.ndim
    index[axis] = slice(0, config.embedding_dim)
    embeddings = output[tuple(index)]
    heads = {}
    for offset, name in enumerate(config.heads):
        index[axis] = config.embedding_dim + offset
        heads[name] = output[tuple(index)]
    return embeddings, heads
