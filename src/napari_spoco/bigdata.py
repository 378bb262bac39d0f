"""Predict and segment images larger than memory, block by block, with dask.

The image is cut into blocks (``block_shape``, also the chunk shape of the
zarr output). Every block is read with a margin (``halo``) so that the
network sees the context it would see in the whole image; only the block's
core is written. Images are normalised with percentiles computed once from
(a sample of) the whole image, as every block must see the same intensities.

Segmentation clusters each block with an overlap of ``halo`` pixels and joins
objects across block faces (:mod:`napari_spoco.core.stitching`): no object
is split at a face and no id is used twice.

By default the blocks run on dask's threaded scheduler (``n_threads``
workers; the network itself runs one block at a time per process, with
torch's own threads). Pass ``scheduler`` (a ``tcp://`` address or a
``distributed.Client``) to run on a dask.distributed cluster; its workers
must see the output path.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._blocks import (
    Layout,
    Scheduler,
    Source,
    blocks_for,
    check_lengths,
    compute,
    finalize_output,
    make_output,
)
from .core.checkpoint import Checkpoint, network_from_checkpoint
from .core.config import REFERENCE_DIAMETER, LossConfig, ModelConfig, SegmentConfig
from .core.io import (
    instances_attributes,
    prediction_attributes,
    prediction_from_array,
    prediction_to_array,
)
from .core.model import EmbeddingUNet
from .core.prediction import Prediction, augment_or_default
from .core.pretrained import load_model_source
from .core.segmentation import segment_prediction
from .core.stitching import block_lookup_tables, global_offsets, match_labels, merge_labels

__all__ = [
    "DEFAULT_BLOCK_SHAPE",
    "LARGE_IMAGE_PIXELS",
    "predict_blockwise",
    "receptive_radius",
    "segment_blockwise",
    "segment_prediction_blockwise",
]

#: Images with more pixels than this go block-wise in the CLI (the GUI may share it).
LARGE_IMAGE_PIXELS = 4096 * 4096
#: Block shape (pixels of the input image) when none is given.
DEFAULT_BLOCK_SHAPE: dict[int, tuple[int, ...]] = {2: (1024, 1024), 3: (64, 256, 256)}
# One forward pass at a time per process: torch parallelises it already, and
# predict_embeddings swaps the model's tensors while it runs.
_INFERENCE_LOCK = threading.Lock()

ModelSource = EmbeddingUNet | Checkpoint | str | os.PathLike
Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class _Model:
    """Network plus what prediction needs to know about its training."""

    network: EmbeddingUNet
    loss: LossConfig
    object_scale: float
    percentiles: tuple[float, float]
    augment: bool


def _resolve_model(
    model: ModelSource, loss: LossConfig | None, object_scale: float | None, augment: bool | None
) -> _Model:
    if isinstance(model, str | os.PathLike):
        model = load_model_source(model)
    if isinstance(model, Checkpoint):
        norm = model.normalization
        network = network_from_checkpoint(model)
        loss, object_scale = loss or model.config.loss, object_scale or model.config.object_scale
        percentiles = (float(norm.get("low", 1.0)), float(norm.get("high", 99.8)))
    elif isinstance(model, EmbeddingUNet):
        network, loss, object_scale = model, loss or LossConfig(), object_scale or 1.0
        percentiles = (1.0, 99.8)
    else:
        raise TypeError(
            f"model must be a model file or name, Checkpoint or EmbeddingUNet, got {model!r}"
        )
    augment = augment_or_default(augment, network.config.spatial_dims)
    return _Model(network, loss, object_scale, percentiles, augment)


def receptive_radius(config: ModelConfig) -> tuple[int, ...]:
    """Pixels per axis beyond which the network's output does not depend on the input.

    Two 3×3 convolutions per level on the way down and up, the pooling and
    upsampling steps between levels and the heads' extra convolution, each
    counted at its level's scale. A halo this wide makes block-wise
    prediction equal whole-image prediction.
    """
    radius = np.full(config.spatial_dims, 1 + 2)  # heads' 3x3 conv + the last level's pair
    scale = np.ones(config.spatial_dims, dtype=int)
    for factor in config.pooling_factors:
        factor = np.asarray(factor)
        radius += 4 * scale + 2 * (factor - 1) * scale  # convs down and up, pool and upsample
        scale = scale * factor
    radius += 2 * scale - 2  # the deepest level's pair, at its scale
    return tuple(int(r) for r in radius)


def predict_blockwise(
    model: ModelSource,
    image: ArrayLike,
    *,
    block_shape: Sequence[int] | None = None,
    halo: Sequence[int] | None = None,
    channel_axis: int | None = None,
    out: str | os.PathLike | None = None,
    roi: tuple[slice, ...] | None = None,
    loss: LossConfig | None = None,
    object_scale: float | None = None,
    device: str | None = None,
    tile_shape: Sequence[int] | None = None,
    augment: bool | None = None,
    n_threads: int | None = None,
    scheduler: Scheduler = None,
    progress: Progress | None = None,
) -> Any:
    """Predict embeddings and head maps block by block into a chunked zarr array.

    Parameters
    ----------
    model : path, built-in name, Checkpoint or EmbeddingUNet
        Trained model: a model file, a bioimage.io package or a built-in name
        (``core.pretrained.load_model_source``). A bare network needs ``loss``
        and ``object_scale``.
    image : array_like
        (Y, X) or (Z, Y, X), with a channel axis at ``channel_axis`` if any:
        a numpy, zarr or dask array or a :class:`napari_spoco.core.io.LazyImage`.
    block_shape : sequence of int, optional
        Core of each block and chunk of the output, per spatial axis (default
        :data:`DEFAULT_BLOCK_SHAPE`).
    halo : sequence of int, optional
        Context read around each block (default: the receptive field, scaled
        to image pixels, which makes the result equal whole-image prediction).
        Block shape and halo are rounded up to the network's size divisor.
    out : path, optional
        Zarr folder to write (atomically); ``None`` keeps the result in memory.
    roi : tuple of slice, optional
        Only blocks that intersect this spatial region are predicted.
    loss, object_scale : optional
        Override the checkpoint's margins and training scale.
    device, tile_shape, augment : optional
        Passed to :func:`napari_spoco.core.tiling.predict_embeddings`;
        ``device=None`` runs where the network is (the CPU for a model file);
        ``augment=None`` follows :func:`~napari_spoco.core.prediction.augment_or_default`.
    n_threads, scheduler, progress : optional
        Threaded workers, a dask.distributed scheduler, ``progress(done, total)``.

    Returns
    -------
    zarr.Array
        Shape (C, *spatial), float32: embedding channels, then a probability
        map per head; its attributes describe the layout
        (:func:`napari_spoco.core.io.prediction_from_array` reads it).
    """
    spec = _resolve_model(model, loss, object_scale, augment)
    source = Source.of(image, channel_axis, spec.network.config)
    blocks = _layout(spec, source.shape, block_shape, halo, roi, context=None)
    config = spec.network.config
    attributes = prediction_attributes(
        config.embedding_dim, config.heads, spec.loss.delta_v, spec.loss.delta_d
    )
    bounds = source.percentiles(spec.percentiles, blocks.cores)
    shape = (config.output_channels, *source.shape)
    with make_output(out, shape, (shape[0], *blocks.block_shape), "float32", attributes,
                     scheduler) as (array, runner):  # fmt: skip
        model_ref, source_ref = runner.share(spec), runner.share(source)
        tasks = [
            runner.delayed(_predict_block)(
                model_ref, source_ref, block, bounds, array, device, tile_shape
            )
            for block in blocks.blocks
        ]
        compute(runner, tasks, n_threads, progress)
    return finalize_output(out, array)


def segment_blockwise(
    model: ModelSource,
    image: ArrayLike,
    *,
    segment_config: SegmentConfig | None = None,
    block_shape: Sequence[int] | None = None,
    halo: Sequence[int] | None = None,
    channel_axis: int | None = None,
    out: str | os.PathLike | None = None,
    roi: tuple[slice, ...] | None = None,
    loss: LossConfig | None = None,
    object_scale: float | None = None,
    device: str | None = None,
    tile_shape: Sequence[int] | None = None,
    augment: bool | None = None,
    n_threads: int | None = None,
    scheduler: Scheduler = None,
    progress: Progress | None = None,
) -> Any:
    """Predict and cluster block by block, and stitch the blocks into one label volume.

    Each block is predicted with the network's receptive field as context
    and clustered with ``halo`` pixels of overlap (default: two object
    diameters at the model's training scale); objects are then joined across
    block faces. Parameters are those of :func:`predict_blockwise`, plus
    ``segment_config`` (:class:`~napari_spoco.core.config.SegmentConfig`).

    Returns
    -------
    zarr.Array
        uint32 instances of the image's spatial shape, 0 = background,
        objects 1..n, chunked by ``block_shape``.
    """
    spec = _resolve_model(model, loss, object_scale, augment)
    source = Source.of(image, channel_axis, spec.network.config)
    context = _to_image_pixels(receptive_radius(spec.network.config), spec)
    blocks = _layout(spec, source.shape, block_shape, halo, roi, context=context)
    bounds = source.percentiles(spec.percentiles, blocks.cores)
    return _segment(source, blocks, segment_config, out, n_threads, scheduler, progress,
                    spec=spec, bounds=bounds, device=device, tile_shape=tile_shape)  # fmt: skip


def segment_prediction_blockwise(
    prediction: Any,
    *,
    segment_config: SegmentConfig | None = None,
    block_shape: Sequence[int] | None = None,
    halo: Sequence[int] | None = None,
    out: str | os.PathLike | None = None,
    roi: tuple[slice, ...] | None = None,
    n_threads: int | None = None,
    scheduler: Scheduler = None,
    progress: Progress | None = None,
) -> Any:
    """Cluster a saved prediction (:func:`predict_blockwise`, ``predict --embeddings``) by blocks.

    ``halo`` defaults to 64 pixels per axis; other parameters and the result
    are those of :func:`segment_blockwise`.
    """
    attributes = dict(prediction.attrs)
    source = Source(prediction, channel_axis=0, shape=tuple(prediction.shape[1:]))
    dims = len(source.shape)
    block_shape = tuple(block_shape or DEFAULT_BLOCK_SHAPE[dims])
    halo = tuple(halo or (64,) * dims)
    blocks = Layout.build(source.shape, block_shape, halo, roi, context=(0,) * dims)
    return _segment(source, blocks, segment_config, out, n_threads, scheduler, progress,
                    attributes=attributes)  # fmt: skip


# --------------------------------------------------------------------------- layout


def _layout(spec: _Model, shape, block_shape, halo, roi, context) -> Layout:
    config = spec.network.config
    dims = config.spatial_dims
    if halo is None:
        if context is None:
            halo = _to_image_pixels(receptive_radius(config), spec)
        else:
            diameter = math.ceil(2 * REFERENCE_DIAMETER / spec.object_scale)
            halo = (max(32, diameter),) * dims
    block_shape = tuple(block_shape or DEFAULT_BLOCK_SHAPE[dims])
    check_lengths(dims, block_shape=block_shape, halo=tuple(halo))
    divisor = config.size_divisor
    block_shape = tuple(-(-int(b) // d) * d for b, d in zip(block_shape, divisor, strict=True))
    halo = tuple(-(-int(h) // d) * d for h, d in zip(halo, divisor, strict=True))
    context = context if context is None else tuple(
        -(-c // d) * d for c, d in zip(context, divisor, strict=True)
    )  # fmt: skip
    return Layout(block_shape, halo, blocks_for(shape, block_shape, halo, context, roi))


def _to_image_pixels(radius: tuple[int, ...], spec: _Model) -> tuple[int, ...]:
    """Model-pixel distances in image pixels (the training scale resizes Y and X only)."""
    scale = [1.0] * (len(radius) - 2) + [spec.object_scale] * 2
    return tuple(math.ceil(r / s) for r, s in zip(radius, scale, strict=True))


# --------------------------------------------------------------------------- tasks


def _predict_region(
    spec: _Model, image: NDArray, bounds: tuple[NDArray, NDArray], device: str | None,
    tile_shape: Sequence[int] | None,
) -> Prediction:  # fmt: skip
    """Predict like ``core.prediction.predict``, with the whole image's percentiles."""
    from .core.image import normalize_percentile
    from .core.prediction import embed_at_scale

    prepared = normalize_percentile(image, bounds=bounds)
    with _INFERENCE_LOCK:
        output = embed_at_scale(
            spec.network, prepared, spec.object_scale, tile_shape=tile_shape, device=device,
            augment=spec.augment,
        )  # fmt: skip
    return Prediction.from_output(output, spec.network, spec.loss)


def _crop(prediction: Prediction, inner: tuple[slice, ...]) -> Prediction:
    maps = {
        name: None if value is None else value[inner]
        for name, value in (
            ("foreground", prediction.foreground),
            ("distance", prediction.distance),
        )
    }
    embeddings = np.ascontiguousarray(prediction.embeddings[(slice(None), *inner)])
    return dataclasses.replace(prediction, embeddings=embeddings, **maps)


def _predict_block(spec, source, block, bounds, out, device, tile_shape) -> None:
    prediction = _predict_region(spec, source.read(block.outer), bounds, device, tile_shape)
    out[(slice(None), *block.core)] = prediction_to_array(_crop(prediction, block.inner))


def _segment_block(source, block, config, spec, bounds, attributes, out, device, tile_shape):
    """Cluster one block with its overlap; write its core; keep the face strips."""
    piece = source.read(block.outer)
    if spec is not None:
        prediction = _crop(_predict_region(spec, piece, bounds, device, tile_shape), block.context)
    else:
        prediction = prediction_from_array(piece, attributes)
    labels = segment_prediction(prediction, config)
    core = labels[block.inner_of_overlap]
    out[block.core] = core
    present = np.unique(core)
    return {
        "count": int(labels.max()),
        "present": present[present > 0],
        "strips": {face: labels[region] for face, region in block.strips.items()},
    }


def _summary(result: dict) -> tuple[int, NDArray]:
    return result["count"], result["present"]


def _match(lower: dict, upper: dict, axis: int) -> NDArray[np.int64]:
    return match_labels(lower["strips"][(axis, +1)], upper["strips"][(axis, -1)])


def _relabel_block(out, region, lookup) -> None:
    out[region] = lookup[np.asarray(out[region])]


def _segment(source, blocks, config, out, n_threads, scheduler, progress, *, spec=None,
             bounds=None, attributes=None, device=None, tile_shape=None):  # fmt: skip
    config = config or SegmentConfig()
    if config.method == "consistency":
        raise ValueError(
            "block-wise segmentation cannot use method 'consistency' (needs a teacher)"
        )
    if min(blocks.halo) < 2:
        raise ValueError(f"block-wise segmentation needs a halo of >= 2 pixels, got {blocks.halo}")
    marker = instances_attributes()  # lets a later run replace this output
    with make_output(out, source.shape, blocks.block_shape, "uint32", marker, scheduler) as (
        array, runner,
    ):  # fmt: skip
        spec_ref, source_ref = runner.share(spec), runner.share(source)
        results = [
            runner.delayed(_segment_block)(
                source_ref, block, config, spec_ref, bounds, attributes, array, device, tile_shape
            )
            for block in blocks.blocks
        ]
        index = {block.index: i for i, block in enumerate(blocks.blocks)}
        faces = [
            (i, index[neighbour], axis)
            for i, block in enumerate(blocks.blocks)
            for axis, neighbour in block.upper_neighbours()
            if neighbour in index
        ]
        summaries = [runner.delayed(_summary)(r) for r in results]
        matches = [runner.delayed(_match)(results[i], results[j], a) for i, j, a in faces]
        first = [*summaries, *matches]
        total = len(first) + len(blocks.blocks)
        done = compute(runner, first, n_threads, _phase(progress, 0, total))
        counts = [count for count, _ in done[: len(summaries)]]
        offsets = global_offsets(counts)
        pairs = [
            np.stack([pair[:, 0] + offsets[i], pair[:, 1] + offsets[j]], axis=1)
            for (i, j, _), pair in zip(faces, done[len(summaries) :], strict=True)
        ]
        present = [p + o for (_, p), o in zip(done[: len(summaries)], offsets, strict=True)]
        lookup = merge_labels(
            int(sum(counts)),
            np.concatenate([np.zeros((0, 2), np.int64), *pairs]),
            np.concatenate([np.zeros(0, np.int64), *present]),
        )
        tables = block_lookup_tables(counts, lookup)
        relabels = [
            runner.delayed(_relabel_block)(array, block.core, table)
            for block, table in zip(blocks.blocks, tables, strict=True)
        ]
        compute(runner, relabels, n_threads, _phase(progress, len(first), total))
    return finalize_output(out, array)


def _phase(progress: Progress | None, start: int, total: int) -> Progress | None:
    """Progress of one phase of a run, counted on from the ``start`` tasks done before it."""
    if progress is None:
        return None
    return lambda done, _: progress(start + done, total)
