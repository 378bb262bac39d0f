"""Tiled inference: embed images of any size with bounded memory.

The network sees overlapping tiles, several per forward pass, and the tile
outputs are blended with a smooth weight window. Pixels near a tile edge that
borders another tile see zero padding instead of their real neighbours, so the
window discards them (weight 0) and cross-fades to the neighbouring tile with a
raised-cosine ramp. Tile edges that lie on the image border keep full weight,
so every pixel is covered by at least one tile with positive weight, and the
sum is normalised by the accumulated weight. Memory grows with the image (one
float32 accumulator for the embeddings and one for the weights), not with the
number of tiles.

With ``augment``, every tile also goes through the network flipped and turned by
quarter turns in its last two axes (the eight orientations of a square), and the
outputs, turned back, are averaged: test-time augmentation, which made the
nuclei generalist's instances more accurate (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
import torch

from .model import EmbeddingUNet

__all__ = ["DEFAULT_TILE_SHAPE", "ORIENTATIONS", "predict_embeddings"]

logger = logging.getLogger(__name__)

#: Tile shape used when ``tile_shape`` is None, per number of spatial axes.
DEFAULT_TILE_SHAPE: dict[int, tuple[int, ...]] = {2: (512, 512), 3: (32, 128, 128)}

ProgressCallback = Callable[[int, int], None]

#: The eight orientations of a square as (axes flipped, then last two axes swapped).
ORIENTATIONS: tuple[tuple[tuple[int, ...], bool], ...] = tuple(
    (flips, swap) for swap in (False, True) for flips in ((), (-1,), (-2,), (-1, -2))
)


def predict_embeddings(
    model: EmbeddingUNet,
    image: npt.NDArray[np.floating],
    *,
    tile_shape: Sequence[int] | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    progress: ProgressCallback | None = None,
    augment: bool = False,
) -> npt.NDArray[np.float32]:
    """Embed every pixel of ``image``, tile by tile, without gradients.

    Whole microscopy images rarely fit through a U-Net at once, so the image
    is cut into overlapping tiles whose outputs are blended smoothly; seams
    would otherwise show up as false boundaries in the clustering.

    Parameters
    ----------
    model : EmbeddingUNet
        Trained network. It is run in eval mode; its train/eval mode, device
        and memory format are restored before returning (see Notes).
    image : ndarray of float, shape (C, Y, X) or (C, Z, Y, X)
        Normalised image, channels first; ``C == model.config.in_channels``
        and the number of spatial axes equals ``model.config.spatial_dims``.
    tile_shape : sequence of int, optional
        Tile size per spatial axis. Defaults to (512, 512) in 2D and
        (32, 128, 128) in 3D. Sizes are rounded up to a multiple of
        ``model.config.size_divisor`` and clipped to the image size (an axis
        shorter than a tile is one tile, padded inside the model).
    overlap : float
        Minimum overlap of neighbouring tiles as a fraction of the tile size
        per axis, in [0, 0.5] (``int(overlap * tile)`` pixels). Tiles are
        spread evenly, so the actual overlap is often larger. The outer
        quarter of each overlap is discarded and the rest cross-faded, so the
        overlap should exceed four times the distance over which the tile
        border disturbs the output.
    batch_size : int
        Number of tiles per forward pass.
    device : torch.device or str, optional
        Where to run the network; defaults to the device of its parameters.
    progress : callable, optional
        Called as ``progress(done_tiles, total_tiles)`` after every batch.
    augment : bool
        Average the outputs over the :data:`ORIENTATIONS` of each tile (in 3D,
        turned in the Y/X plane): eight forward passes instead of one.

    Returns
    -------
    embeddings : ndarray of float32, shape (D, Y, X) or (D, Z, Y, X)
        One ``D = model.config.embedding_dim`` vector per pixel, on the CPU.

    Raises
    ------
    TypeError
        If ``image`` is not a floating-point array or ``progress`` is not callable.
    ValueError
        If the image shape does not match the model, it contains NaN or
        infinite values, or a setting is out of range.

    Notes
    -----
    In 2D the network runs in ``torch.channels_last`` memory format, which
    was 1.6-1.7 times faster on CPU. To get there without copying the model,
    the ``.data`` of its parameters and buffers is swapped for converted
    tensors (on ``device``) and the original tensors are put back afterwards,
    so the model is unchanged on return. Do not train the same model object
    from another thread while this runs.

    Examples
    --------
    >>> from napari_spoco.core.config import ModelConfig
    >>> from napari_spoco.core.model import build_model
    >>> model = build_model(ModelConfig(depth=2, base_features=8))
    >>> image = np.zeros((1, 40, 70), dtype=np.float32)
    >>> predict_embeddings(model, image, tile_shape=(32, 32)).shape
    (16, 40, 70)
    """
    image = _check_image(model, image)
    spatial_dims = model.config.spatial_dims
    _check_settings(spatial_dims, tile_shape, overlap, batch_size, progress)
    requested = DEFAULT_TILE_SHAPE[spatial_dims] if tile_shape is None else tuple(tile_shape)
    tile = tuple(
        min(-(-int(t) // div) * div, size)
        for t, div, size in zip(requested, model.config.size_divisor, image.shape[1:], strict=True)
    )
    starts = [
        _tile_starts(size, t, int(overlap * t))
        for size, t in zip(image.shape[1:], tile, strict=True)
    ]
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    memory_format = torch.channels_last if _use_channels_last(spatial_dims) else None
    logger.debug("predicting %s in %s tiles of %s", image.shape, [len(s) for s in starts], tile)
    with _inference_ready(model, device, memory_format), torch.inference_mode():
        layout = memory_format or torch.contiguous_format
        forward = (
            functools.partial(_averaged_over_orientations, model, layout) if augment else model
        )
        return _accumulate(
            forward, model.config.output_channels, image, tile, starts, batch_size, device,
            memory_format, progress,
        )  # fmt: skip


def _use_channels_last(spatial_dims: int) -> bool:
    """Channels-last halves CPU time for 2D convolutions; 3D was not measured."""
    return spatial_dims == 2


def _check_image(model: EmbeddingUNet, image: npt.ArrayLike) -> npt.NDArray[np.floating]:
    """Reject images whose axes, channels, dtype or values do not fit ``model``."""
    image = np.asarray(image)
    dims = model.config.spatial_dims
    axes = "(C, Y, X)" if dims == 2 else "(C, Z, Y, X)"
    if image.ndim != dims + 1:
        raise ValueError(
            f"image must have {dims + 1} axes {axes} for a {dims}D model, "
            f"got {image.ndim} axes with shape {image.shape}"
        )
    if image.shape[0] != model.config.in_channels:
        raise ValueError(
            f"image must have {model.config.in_channels} channel(s) on axis 0 {axes}, "
            f"got {image.shape[0]} (shape {image.shape})"
        )
    if min(image.shape[1:]) < 1:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image must be a normalised floating-point array, got dtype {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError("image must contain only finite values, got NaN or infinity")
    return image


def _check_settings(
    spatial_dims: int,
    tile_shape: Sequence[int] | None,
    overlap: float,
    batch_size: int,
    progress: ProgressCallback | None,
) -> None:
    """Reject tiling settings that cannot produce a valid tile grid."""
    if tile_shape is not None:
        shape = tuple(tile_shape)
        if len(shape) != spatial_dims or not all(
            isinstance(t, (int, np.integer)) and t >= 1 for t in shape
        ):
            raise ValueError(
                f"tile_shape must be {spatial_dims} positive integers (one per spatial axis), "
                f"got {tile_shape!r}"
            )
    if not 0 <= overlap <= 0.5:
        raise ValueError(f"overlap must be a fraction of the tile in [0, 0.5], got {overlap!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``size`` pixels, the last flush with the end.

    The fewest tiles that overlap by at least ``overlap`` pixels are spread
    evenly, so all neighbours overlap by about the same amount.
    """
    if tile >= size:
        return [0]
    span = size - tile
    intervals = math.ceil(span / (tile - overlap))
    return [i * span // intervals for i in range(intervals + 1)]


def _edge_ramp(length: int, overlap: int) -> npt.NDArray[np.float64]:
    """Weights rising from a tile edge that a neighbour overlaps by ``overlap`` pixels.

    The first ``overlap // 4`` pixels get weight 0 (they see padding, not the
    image), then a raised cosine rises to 1. Two tiles sharing the overlap get
    ramps that sum to 1 there (sin² + cos²).
    """
    if overlap == 0:
        return np.ones(length)
    margin = overlap // 4
    distance = np.arange(length) + 0.5
    ramp = np.clip((distance - margin) / (overlap - 2 * margin), 0.0, 1.0)
    return np.sin(0.5 * np.pi * ramp) ** 2


def _axis_windows(starts: list[int], tile: int) -> list[npt.NDArray[np.float32]]:
    """One 1D weight window per tile along an axis; image-border edges keep weight 1."""
    windows = []
    for i, start in enumerate(starts):
        before = starts[i - 1] + tile - start if i > 0 else 0
        after = start + tile - starts[i + 1] if i + 1 < len(starts) else 0
        window = _edge_ramp(tile, before) * _edge_ramp(tile, after)[::-1]
        windows.append(window.astype(np.float32))
    return windows


@contextlib.contextmanager
def _inference_ready(
    model: torch.nn.Module, device: torch.device, memory_format: torch.memory_format | None
) -> Iterator[None]:
    """Put ``model`` in eval mode on ``device``/``memory_format``; undo it on exit.

    The original parameter and buffer tensors are kept and put back, so
    optimisers holding the parameters and the model's own state are untouched.
    """
    was_training = model.training
    tensors = [*model.parameters(), *model.buffers()]
    originals = [t.data for t in tensors]
    try:
        model.eval()
        for t in tensors:
            layout = memory_format if memory_format is not None and t.dim() == 4 else None
            t.data = t.data.to(device, memory_format=layout or torch.preserve_format)
        yield
    finally:
        for t, original in zip(tensors, originals, strict=True):
            t.data = original
        model.train(was_training)


def _averaged_over_orientations(
    model: EmbeddingUNet, layout: torch.memory_format, x: torch.Tensor
) -> torch.Tensor:
    """Run ``model`` on each of the :data:`ORIENTATIONS` of ``x``; average, turned back."""
    total = None
    for flips, swap in ORIENTATIONS:
        turned = x.flip(flips) if flips else x
        if swap:
            turned = turned.transpose(-1, -2)
        output = model(turned.contiguous(memory_format=layout))
        if swap:
            output = output.transpose(-1, -2)
        output = output.flip(flips) if flips else output
        total = output.float() if total is None else total + output.float()
    return total / len(ORIENTATIONS)


def _accumulate(  # noqa: PLR0913
    forward: Callable[[torch.Tensor], torch.Tensor],
    output_channels: int,
    image: npt.NDArray[np.floating],
    tile: tuple[int, ...],
    starts: list[list[int]],
    batch_size: int,
    device: torch.device,
    memory_format: torch.memory_format | None,
    progress: ProgressCallback | None,
) -> npt.NDArray[np.float32]:
    """Run the tiles batch by batch and blend them into one embedding array."""
    spatial = image.shape[1:]
    embeddings = np.zeros((output_channels, *spatial), dtype=np.float32)
    weights = np.zeros(spatial, dtype=np.float32)
    windows = [_axis_windows(axis_starts, t) for axis_starts, t in zip(starts, tile, strict=True)]
    grid = list(itertools.product(*(range(len(s)) for s in starts)))
    for first in range(0, len(grid), batch_size):
        batch = grid[first : first + batch_size]
        regions = [
            tuple(slice(starts[a][i], starts[a][i] + tile[a]) for a, i in enumerate(index))
            for index in batch
        ]
        inputs = np.stack([image[(slice(None), *region)] for region in regions])
        x = torch.from_numpy(inputs.astype(np.float32, copy=False))
        x = x.to(device, memory_format=memory_format or torch.contiguous_format)
        outputs = forward(x).float().contiguous().cpu().numpy()
        for index, region, output in zip(batch, regions, outputs, strict=True):
            weight = functools.reduce(
                np.multiply.outer, (w[i] for w, i in zip(windows, index, strict=True))
            )
            output *= weight  # in place: no extra (D, *tile) temporary
            embeddings[(slice(None), *region)] += output
            weights[region] += weight
        if progress is not None:
            progress(first + len(batch), len(grid))
    embeddings /= weights
    return embeddings
