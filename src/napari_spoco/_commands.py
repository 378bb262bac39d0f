"""What each command of :mod:`napari_spoco.cli` does, on files.

Every handler first reads and checks all its inputs (raising ``ValueError``
with the file name), then logs and works, so that bad input fails before
any output is written. Heavy modules load inside the handlers: ``--help``
stays fast.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("napari_spoco")

_SCORES = ("sbd", "abs_dic", "ap50", "map", "arand", "dic", "precision", "recall", "f1")


# --------------------------------------------------------------------------- training


def train(args: argparse.Namespace) -> None:
    """``train``: images + sparse annotations (+ optional starting model) → model file."""
    _train(args, pretraining=False)


def pretrain(args: argparse.Namespace) -> None:
    """``pretrain``: unlabeled images → a starting model (consistency term only)."""
    _train(args, pretraining=True)


def _train(args: argparse.Namespace, *, pretraining: bool) -> None:
    from .core.bioimageio import load_checkpoint_or_package
    from .core.training import Trainer

    images = _read_images(args.images)
    dims = _spatial_dims(images, args.channel_axis)
    if pretraining:
        labels = [np.zeros(_spatial_shape(a, args.channel_axis), np.uint8) for _, a in images]
    else:
        labels = _read_labels(args.labels, images, args.channel_axis)
    start = getattr(args, "from_model", None)
    checkpoint = load_checkpoint_or_package(start) if start else None
    config = _train_config(
        args, dims, _channels(images, args.channel_axis), checkpoint, pretraining
    )
    trainer = Trainer(config, device=args.device, checkpoint=checkpoint)
    trainer.set_data([a for _, a in images], labels, channel_axis=args.channel_axis)
    out = Path(args.out)
    what = "pretraining (consistency only)" if pretraining else "training"
    logger.info(
        "%s on %d image(s) for %d steps on %s, learning rate %g%s",
        what, len(images), config.iterations, trainer.device, trainer.learning_rate,
        f", starting from {start}" if start else "",
    )  # fmt: skip
    _run_with_bar(trainer, out, args.quiet)
    _write_history(out, trainer.history)
    logger.info("wrote %s and its training history", out)


#: ``train`` flags (``cli._add_extensions``) that map one to one onto LossConfig fields.
_EXTENSION_FLAGS = (
    "triplet_weight", "triplet_margin", "triplet_anchors", "triplet_on",
    "dispersive_weight", "dispersive_tau", "dispersive_on",
)  # fmt: skip


def _train_config(args, dims, channels, checkpoint, pretraining):
    from dataclasses import replace

    from .core.config import (
        DEFAULT_PATCH_SHAPE,
        LossConfig,
        TrainConfig,
        model_config_for,
        object_scale_for_diameter,
    )  # fmt: skip
    from .core.training import pretraining_loss

    if checkpoint is not None:
        model = checkpoint.config.model
        if (model.spatial_dims, model.in_channels) != (dims, channels):
            raise ValueError(
                f"the starting model reads {model.in_channels}-channel {model.spatial_dims}D "
                f"images, the images are {channels}-channel {dims}D"
            )
        trained = checkpoint.config.loss
        loss = LossConfig(delta_v=trained.delta_v, delta_d=trained.delta_d)
        scale = checkpoint.config.object_scale
    else:
        model = model_config_for(
            dims, channels, size=args.size, heads=not args.no_heads,
            anisotropic_pooling=args.anisotropic,
        )  # fmt: skip
        loss, scale = LossConfig(), 1.0
    if args.object_size is not None:
        scale = object_scale_for_diameter(args.object_size)
    if pretraining:
        loss = pretraining_loss(loss)
    else:
        extensions = {n: getattr(args, n) for n in _EXTENSION_FLAGS if getattr(args, n) is not None}
        loss = replace(loss, background_id=args.background_id, **extensions)
    if checkpoint is None and loss.triplet_weight > 0 and loss.triplet_on == "bottleneck":
        model = replace(model, bottleneck_projection=True)
    return TrainConfig(
        model=model, loss=loss, iterations=args.iterations, batch_size=args.batch_size,
        patch_shape=tuple(args.patch) if args.patch else DEFAULT_PATCH_SHAPE[dims],
        learning_rate=args.lr, object_scale=scale, seed=args.seed,
    )  # fmt: skip


def _run_with_bar(trainer: Any, out: Path, quiet: bool) -> None:
    from tqdm import tqdm

    total = trainer.config.iterations
    with tqdm(total=total, unit="step", disable=quiet, file=sys.stderr, mininterval=0.5) as bar:

        def report(record: Any) -> None:
            bar.set_postfix(loss=f"{record.losses['total']:.4f}", refresh=False)
            bar.update(trainer.config.report_every if bar.n < total else 0)

        trainer.run(callback=report, checkpoint_path=out)


def _write_history(model_path: Path, history: list[dict]) -> None:
    """``MODEL_history.json`` and ``MODEL_history.csv`` beside the model file."""
    from .core.io import write_csv, write_json

    stem = model_path.with_name(f"{model_path.stem}_history")
    write_json(stem.with_suffix(".json"), history)
    write_csv(stem.with_suffix(".csv"), history)


# --------------------------------------------------------------------------- inputs


def _read_images(paths: Sequence[str]) -> list[tuple[Path, np.ndarray]]:
    from .core.io import expand_paths, read_image

    return [(path, read_image(path)) for path in expand_paths(paths)]


def _spatial_dims(images: list[tuple[Path, np.ndarray]], channel_axis: int | None) -> int:
    dims = {path: array.ndim - (channel_axis is not None) for path, array in images}
    for path, value in dims.items():
        if value not in (2, 3):
            extra = " plus the channel axis" if channel_axis is not None else ""
            raise ValueError(f"{path}: expected a 2D or 3D image{extra}, got {value} spatial axes")
    if len(set(dims.values())) > 1:
        listed = ", ".join(f"{p.name} {d}D" for p, d in dims.items())
        raise ValueError(f"images mix 2D and 3D: {listed}")
    return next(iter(dims.values()))


def _spatial_shape(array: np.ndarray, channel_axis: int | None) -> tuple[int, ...]:
    if channel_axis is None:
        return array.shape
    return tuple(s for i, s in enumerate(array.shape) if i != channel_axis % array.ndim)


def _channels(images: list[tuple[Path, np.ndarray]], channel_axis: int | None) -> int:
    counts = {p: 1 if channel_axis is None else a.shape[channel_axis] for p, a in images}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{p.name} {c}" for p, c in counts.items())
        raise ValueError(f"images have different numbers of channels: {listed}")
    return next(iter(counts.values()))


def _read_labels(paths: Sequence[str], images: list, channel_axis: int | None) -> list:
    from .core.io import expand_paths, read_image

    label_paths = expand_paths(paths)
    if len(label_paths) != len(images):
        raise ValueError(f"{len(images)} images but {len(label_paths)} annotations")
    labels = []
    for (image_path, image), path in zip(images, label_paths, strict=True):
        label = read_image(path)
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{path}: annotations must be integer labels, got {label.dtype}")
        if label.shape != _spatial_shape(image, channel_axis):
            raise ValueError(
                f"{path} has shape {label.shape}, but {image_path.name} has spatial shape "
                f"{_spatial_shape(image, channel_axis)}"
            )
        if label.size and label.min() < 0:
            raise ValueError(f"{path}: annotation ids must be >= 0 (0 = not annotated)")
        labels.append(label)
    if not any(label.any() for label in labels):
        names = ", ".join(p.name for p in label_paths)
        raise ValueError(f"nothing is annotated in {names}: paint at least one object")
    return labels


def _check_fits(image: Any, path: Path, model: Any, channel_axis: int | None) -> None:
    expected = model.spatial_dims + (channel_axis is not None)
    if image.ndim != expected:
        raise ValueError(
            f"{path}: the model needs {expected} axes ({model.spatial_dims}D"
            f"{' + channels' if channel_axis is not None else ''}), got shape {image.shape}"
        )
    channels = 1 if channel_axis is None else image.shape[channel_axis]
    if channels != model.in_channels:
        raise ValueError(
            f"{path}: the model reads {model.in_channels} channel(s), the image has {channels}"
        )


# --------------------------------------------------------------------------- prediction


def predict(args: argparse.Namespace) -> None:
    """``predict``: model + images → ``NAME_instances`` (and ``NAME_embeddings.zarr``)."""
    from .core.bioimageio import load_checkpoint_or_package
    from .core.io import expand_paths, image_name, open_image

    checkpoint = load_checkpoint_or_package(args.model)
    segment_config = _segment_config(args)
    images = [(path, open_image(path)) for path in expand_paths(args.images)]
    for path, image in images:
        _check_fits(image, path, checkpoint.config.model, args.channel_axis)
    out = Path(args.out)
    network = None
    for path, image in images:
        name = image_name(path)
        if _blockwise(args, path, math.prod(_spatial_shape(image, args.channel_axis))):
            _predict_blockwise(args, checkpoint, image, out, name, segment_config)
            continue
        if network is None:
            network = _network(checkpoint, args.device)
        _predict_whole(args, checkpoint, network, np.asarray(image), out, name, segment_config)


def _network(checkpoint: Any, device: str) -> Any:
    from .core.device import resolve_device
    from .core.model import build_model

    network = build_model(checkpoint.config.model)
    network.load_state_dict(checkpoint.model_state)
    return network.to(resolve_device(device)).eval()


def _predict_whole(args, checkpoint, network, image, out, name, config) -> None:
    from .core.inference import predict as predict_image
    from .core.inference import segment_prediction
    from .core.io import write_prediction, write_tiff

    prediction = predict_image(
        network, image, loss=checkpoint.config.loss, object_scale=checkpoint.config.object_scale,
        channel_axis=args.channel_axis, tile_shape=args.tile,
    )  # fmt: skip
    instances = segment_prediction(prediction, config)
    if args.embeddings:
        write_prediction(out / f"{name}_embeddings.zarr", prediction)
    write_tiff(out / f"{name}_instances.tif", instances)
    logger.info("%s: %d instances → %s", name, instances.max(), out / f"{name}_instances.tif")


def _predict_blockwise(args, checkpoint, image, out, name, config) -> None:
    from .bigdata import predict_blockwise, segment_blockwise, segment_prediction_blockwise

    blocks = _block_options(args)
    target = out / f"{name}_instances.zarr"
    from .core.device import resolve_device

    # Cluster workers pick their own device; "auto" means CPU there.
    local = args.scheduler is None or args.device != "auto"
    device = str(resolve_device(args.device)) if local else None
    run = {"device": device, "tile_shape": args.tile, "channel_axis": args.channel_axis}
    if args.embeddings:
        blockwise = {key: value for key, value in blocks.items() if key != "halo"}
        with _Bar(args, f"{name}: predicting") as progress:
            prediction = predict_blockwise(
                checkpoint, image, out=out / f"{name}_embeddings.zarr", progress=progress,
                **run, **blockwise,
            )  # fmt: skip
        with _Bar(args, f"{name}: segmenting") as progress:
            result = segment_prediction_blockwise(
                prediction, segment_config=config, out=target, progress=progress, **blocks
            )
    else:
        with _Bar(args, f"{name}: segmenting") as progress:
            result = segment_blockwise(
                checkpoint, image, segment_config=config, out=target, progress=progress,
                **run, **blocks,
            )  # fmt: skip
    logger.info("%s: block-wise instances → %s (%s)", name, target, result.shape)


def segment(args: argparse.Namespace) -> None:
    """``segment``: saved predictions → instances, with any clustering method."""
    from .bigdata import segment_prediction_blockwise
    from .core.inference import segment_prediction
    from .core.io import (
        expand_paths,
        image_name,
        open_prediction,
        prediction_from_array,
        write_tiff,
    )

    config = _segment_config(args)
    arrays = [(path, open_prediction(path)) for path in expand_paths(args.embeddings)]
    out = Path(args.out)
    for path, array in arrays:
        name = image_name(path).removesuffix("_embeddings")
        if _blockwise(args, None, math.prod(array.shape[1:])):
            target = out / f"{name}_instances.zarr"
            with _Bar(args, f"{name}: segmenting") as progress:
                segment_prediction_blockwise(
                    array, segment_config=config, out=target, progress=progress,
                    **_block_options(args),
                )  # fmt: skip
        else:
            prediction = prediction_from_array(np.asarray(array[...]), dict(array.attrs))
            target = write_tiff(
                out / f"{name}_instances.tif", segment_prediction(prediction, config)
            )
        logger.info("%s: instances → %s", name, target)


def _segment_config(args: argparse.Namespace) -> Any:
    from .core.config import SegmentConfig

    return SegmentConfig(
        method=args.method, foreground=args.foreground,
        foreground_threshold=args.foreground_threshold, delta_d=args.delta_d,
        seed_threshold=args.seed_threshold, min_size=args.min_size,
    )  # fmt: skip


def _blockwise(args: argparse.Namespace, path: Path | None, pixels: int) -> bool:
    from .bigdata import LARGE_IMAGE_PIXELS

    is_zarr = path is not None and path.is_dir()
    return bool(args.block_shape or args.scheduler or is_zarr or pixels > LARGE_IMAGE_PIXELS)


def _block_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "block_shape": args.block_shape, "halo": args.halo, "n_threads": args.n_threads,
        "scheduler": args.scheduler,
    }  # fmt: skip


class _Bar:
    """A tqdm bar whose ``progress(done, total)`` callback block-wise functions call."""

    def __init__(self, args: argparse.Namespace, title: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(desc=title, unit="task", disable=args.quiet, file=sys.stderr)

    def __enter__(self) -> Any:
        def progress(done: int, total: int) -> None:
            self._bar.total = total
            self._bar.update(done - self._bar.n)

        return progress

    def __exit__(self, *_: object) -> None:
        self._bar.close()


# --------------------------------------------------------------------------- evaluation


def evaluate(args: argparse.Namespace) -> None:
    """``evaluate``: predicted vs ground-truth labels → printed table and CSV."""
    from .core.io import expand_paths, read_image, write_csv
    from .core.metrics import evaluate as score

    predicted, truth = expand_paths(args.pred), expand_paths(args.gt)
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions but {len(truth)} ground-truth images")
    pairs = []
    for pred_path, gt_path in zip(predicted, truth, strict=True):
        pred, gt = read_image(pred_path), read_image(gt_path)
        for path, array in ((pred_path, pred), (gt_path, gt)):
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"{path}: expected integer labels, got {array.dtype}")
        if pred.shape != gt.shape:
            raise ValueError(f"{pred_path} has shape {pred.shape}, {gt_path} has {gt.shape}")
        pairs.append((pred_path, pred, gt))
    rows = [{"image": p.name, **_ordered(score(gt, pred))} for p, pred, gt in pairs]
    rows.append({"image": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in _SCORES}})
    print(_table(rows))
    write_csv(args.out, rows)
    logger.info("wrote %s", args.out)


def _ordered(scores: dict[str, float]) -> dict[str, float]:
    return {key: scores[key] for key in _SCORES}


def _table(rows: list[dict[str, Any]]) -> str:
    headers = {"image": "image", "sbd": "SBD", "abs_dic": "|DiC|", "ap50": "AP@0.5",
               "map": "mAP", "arand": "ARand"}  # fmt: skip
    cells = [[str(r["image"])] + [f"{r[k]:.3f}" for k in list(headers)[1:]] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers.values())]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers.values(), widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(lines)


# --------------------------------------------------------------------------- bioimage.io


def export_bioimageio(args: argparse.Namespace) -> None:
    """``export-bioimageio``: model file + test image → validated bioimage.io zip."""
    from .core.bioimageio import export_bioimageio as export
    from .core.checkpoint import load_checkpoint
    from .core.io import read_image

    checkpoint = load_checkpoint(args.model)
    image = read_image(args.test_image)
    out = export(
        checkpoint, args.out, test_image=image, channel_axis=args.channel_axis, name=args.name,
        authors=args.author, license=args.license, validate=not args.no_validate,
    )  # fmt: skip
    logger.info("wrote %s%s", out, "" if args.no_validate else " (validated by bioimageio.core)")


def import_bioimageio(args: argparse.Namespace) -> None:
    """``import-bioimageio``: napari-spoco bioimage.io package → model file."""
    from .core.bioimageio import import_bioimageio as read_package
    from .core.checkpoint import save_checkpoint

    out = save_checkpoint(args.out, read_package(args.package))
    logger.info("wrote %s", out)
