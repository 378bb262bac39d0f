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
import os
import sys
from collections.abc import Callable, Sequence
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


class Stopped(Exception):
    """Training stopped early on SIGINT or SIGTERM, after saving where it was."""


def _train(args: argparse.Namespace, *, pretraining: bool) -> None:
    from .core.checkpoint import load_checkpoint
    from .core.pretrained import BUILTIN_MODELS, load_model_source
    from .core.training import Trainer, training_warnings

    out = Path(args.out)
    images, channel_axis = _read_images(args.images, args.channel_axis, grey=args.grey)
    dims = _spatial_dims(images, channel_axis)
    dense = getattr(args, "dense", False)
    if pretraining:
        labels = [np.zeros(_spatial_shape(a, channel_axis), np.uint8) for _, a in images]
        label_paths = []
    else:
        label_paths, labels = _read_labels(args.labels, images, channel_axis)
    _check_output(out, [p for p, _ in images] + label_paths)
    resume = getattr(args, "resume", False)
    channels = _channels(images, channel_axis)
    start = None if resume else _start_model(args, dims, channels)
    if resume:
        checkpoint = load_checkpoint(out)
        config = _resumed_config(checkpoint, args)
    else:
        checkpoint = load_model_source(start) if start else None
        config = _train_config(args, dims, channels, checkpoint, pretraining, labels)
    scales = _dense_scales(labels) if dense else None
    validation = _validation_set(args, channel_axis) if getattr(args, "val_images", None) else None
    if config.iterations < 1:
        raise ValueError(f"--iterations must be at least 1, got {config.iterations}")
    trainer = Trainer(config, device=args.device, checkpoint=checkpoint, resume=resume)
    trainer.set_data([a for _, a in images], labels, channel_axis=channel_axis, scales=scales)
    what = "pretraining (consistency only)" if pretraining else "training"
    if resume:
        origin = f", resuming {out} at step {checkpoint.step}"
    elif start in BUILTIN_MODELS:
        origin = f", starting from the built-in {start} model (--from scratch: a new network)"
    elif start:
        origin = f", starting from {start}"
    else:
        origin = ", from a new network"
    logger.info(
        "%s on %d image(s) for %d steps on %s, learning rate %g, object scale %s%s",
        what, len(images), config.iterations, trainer.device, trainer.learning_rate,
        "per image" if dense else f"{config.object_scale:.3g}", origin,
    )  # fmt: skip
    for warning in training_warnings(trainer.config, labels, scales):
        logger.warning("warning: %s", warning)
    result = _run_with_bar(trainer, out, args, validation)
    _write_history(out, trainer.history)
    if result.stopped:
        raise Stopped(
            f"stopped at step {result.step}; saved {out}; continue with the same command "
            "and --resume"
        )
    logger.info("wrote %s and its training history", out)


def _start_model(args: argparse.Namespace, dims: int, channels: int) -> str | None:
    """Choose what training starts from: --from, else the built-in model for such images.

    A new network is built for ``--from scratch``, for pretraining and dense
    training, and when its architecture is asked for (``--size``, ``--no-heads``,
    ``--isotropic``).
    """
    from .core.pretrained import SCRATCH, default_start_model

    chosen = getattr(args, "from_model", None)
    if chosen is not None:
        return None if chosen == SCRATCH else chosen
    architecture = args.size is not None or args.no_heads or args.isotropic
    if args.command == "pretrain" or getattr(args, "dense", False) or architecture:
        return None
    return default_start_model(dims, channels)


def _check_output(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output that is one of the inputs or cannot be written, before any work."""
    resolved = out.resolve()
    for path in inputs:
        if path.resolve() == resolved:
            raise ValueError(f"--out {out} is also an input; choose another file name")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a model file name such as model.pt")
    folder = resolved.parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write {out}: {folder} is not writable")


def _resumed_config(checkpoint: Any, args: argparse.Namespace) -> Any:
    """Return the interrupted run's settings; only --iterations may change (to extend it)."""
    from dataclasses import replace

    if args.iterations is None:
        return checkpoint.config
    return replace(checkpoint.config, iterations=args.iterations)


def _dense_scales(labels: Sequence[np.ndarray]) -> list[float]:
    """Each image's resize factor from its own objects (images of many magnifications)."""
    from .core.annotation import object_scale_from_annotations

    return [object_scale_from_annotations([label]) or 1.0 for label in labels]


def _validation_set(args: argparse.Namespace, channel_axis: int | None) -> Any:
    from .core.io import image_name
    from .core.validation import ValidationSet

    if not args.val_labels:
        raise ValueError("--val-images needs --val-labels (dense ground truth, one per image)")
    images, _ = _read_images(args.val_images, channel_axis, grey=args.grey)
    _, labels = _read_labels(args.val_labels, images, channel_axis)
    return ValidationSet(
        names=[image_name(p) for p, _ in images], images=[a for _, a in images],
        labels=labels, scales=_dense_scales(labels), channel_axis=channel_axis,
    )  # fmt: skip


#: ``train`` flags (``cli._add_extensions``) that map one to one onto LossConfig fields.
_EXTENSION_FLAGS = (
    "triplet_weight", "triplet_margin", "triplet_anchors", "triplet_on",
    "dispersive_weight", "dispersive_tau", "dispersive_on",
)  # fmt: skip


def _train_config(args, dims, channels, checkpoint, pretraining, labels):
    from .core.recipe import train_config

    extensions = {
        n: getattr(args, n) for n in _EXTENSION_FLAGS if getattr(args, n, None) is not None
    }
    touch = getattr(args, "objects_touch", "auto")
    return train_config(
        labels, spatial_dims=dims, channels=channels, start=checkpoint,
        size=args.size or "medium", heads=not args.no_heads, anisotropic_pooling=not args.isotropic,
        object_diameter=args.object_size, background_id=getattr(args, "background_id", None),
        objects_touch={"auto": None, "yes": True, "no": False}[touch], loss=extensions,
        dense=getattr(args, "dense", False), pretraining=pretraining, iterations=args.iterations,
        patch_shape=args.patch, batch_size=args.batch_size, learning_rate=args.lr,
        seed=args.seed, invert_probability=args.random_invert, report_every=args.log_every,
    )  # fmt: skip


def _run_with_bar(trainer: Any, out: Path, args: argparse.Namespace, validation: Any) -> Any:
    """Train with a progress bar; save every ``--checkpoint-every`` steps and on SIGINT/SIGTERM."""
    import signal

    from tqdm import tqdm

    config = trainer.config
    done_before = trainer.step - trainer.run_start_step if args.resume else 0
    scores = _Validation(out, trainer, validation, args.val_every) if validation else None

    def stop(signum: int, frame: Any) -> None:
        logger.info("received %s: saving and stopping", signal.Signals(signum).name)
        trainer.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tqdm(
            total=config.iterations, initial=done_before, unit="step", disable=args.quiet,
            file=sys.stderr, mininterval=0.5,
        ) as bar:  # fmt: skip

            def report(record: Any) -> None:
                bar.set_postfix(loss=f"{record.losses['total']:.4f}", refresh=False)
                bar.update(record.step - trainer.run_start_step - bar.n)
                if scores is not None:
                    scores.maybe_score(record.step)

            return trainer.run(
                callback=report, checkpoint_path=out, checkpoint_every=args.checkpoint_every
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Validation:
    """AP@0.5 on held-out images every N steps: ``MODEL_validation.json`` and ``MODEL_best.pt``."""

    def __init__(self, out: Path, trainer: Any, data: Any, every: int) -> None:
        import json

        self.trainer, self.data, self.every = trainer, data, every
        self.path = out.with_name(f"{out.stem}_validation.json")
        self.best_path = out.with_name(f"{out.stem}_best{out.suffix}")
        # A resumed run keeps the scores of the steps it kept and drops any later ones.
        earlier = json.loads(self.path.read_text()) if self.path.is_file() else []
        self.records = [r for r in earlier if r["step"] <= trainer.step]

    def maybe_score(self, step: int) -> None:
        from .core.checkpoint import save_checkpoint
        from .core.io import write_json
        from .core.validation import validation_scores

        # Records come every --log-every steps from wherever the run resumed: score at the
        # first record of every new block of ``every`` steps.
        last = self.records[-1]["step"] if self.records else 0
        if step // self.every <= last // self.every:
            return
        trainer = self.trainer
        per_image = validation_scores(trainer.model, self.data, loss=trainer.config.loss)
        mean = float(np.mean(list(per_image.values())))
        best = max((r["ap50"] for r in self.records), default=-1.0)
        self.records.append({"step": step, "ap50": mean, "per_image": per_image})
        write_json(self.path, self.records)
        logger.info(
            "step %d: validation AP@0.5 %.3f (best before: %.3f)", step, mean, max(best, 0.0)
        )
        if mean > best:
            save_checkpoint(self.best_path, trainer.checkpoint())


def _write_history(model_path: Path, history: list[dict]) -> None:
    """``MODEL_history.json`` and ``MODEL_history.csv`` beside the model file."""
    from .core.io import write_csv, write_json

    stem = model_path.with_name(f"{model_path.stem}_history")
    write_json(stem.with_suffix(".json"), history)
    write_csv(stem.with_suffix(".csv"), history)


# --------------------------------------------------------------------------- inputs


def _read_images(
    paths: Sequence[str], channel_axis: int | None, *, grey: bool = False
) -> tuple[list[tuple[Path, np.ndarray]], int | None]:
    """Read images; colour (Y, X, 3 or 4) ones become grey with ``grey``, else RGB channels.

    Without ``--channel-axis``, images whose last axis holds 3 or 4 values are
    taken as RGB(A), as napari does, and the first line of output says so.
    """
    from .core.image import looks_rgb, rgb_to_grey
    from .core.io import expand_paths, read_image

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


def _read_labels(
    paths: Sequence[str], images: list, channel_axis: int | None
) -> tuple[list[Path], list[np.ndarray]]:
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
    return label_paths, labels


def _check_fits(
    image: Any, path: Path, model: Any, channel_axis: int | None, *, object_scale: float = 1.0
) -> None:
    from .core.image import check_image_size

    channels = 1 if channel_axis is None else image.shape[channel_axis]
    dims = image.ndim - (channel_axis is not None)
    try:
        model.check_reads(dims, channels, what=f"an image of shape {image.shape}")
        check_image_size(_spatial_shape(image, channel_axis), object_scale)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


# --------------------------------------------------------------------------- prediction


def predict(args: argparse.Namespace) -> None:
    """``predict``: model + images → ``NAME_instances`` (and ``NAME_embeddings.zarr``)."""
    from .core.annotation import object_scale_from_annotations
    from .core.io import expand_paths, image_name, open_image
    from .core.pretrained import load_model_source

    checkpoint = load_model_source(args.model)
    config = checkpoint.config
    segment_config = _segment_config(args)
    if _needs_teacher(segment_config) and checkpoint.teacher_state is None:
        raise ValueError(
            f"--method {args.method} needs the model's EMA teacher, and {args.model} holds none"
        )
    paths = expand_paths(args.images, skip_outputs=True)  # not the results of a former run
    _check_unique_names(paths, image_name)
    given = object_scale_from_annotations([], diameter=args.object_size)
    out = Path(args.out)
    jobs = []
    for path in paths:
        image, channel_axis = _fit_colour(open_image(path), path, config.model, args.channel_axis)
        known_scale = given or (1.0 if config.scale_per_image else config.object_scale)
        _check_fits(image, path, config.model, channel_axis, object_scale=known_scale)
        blockwise = _blockwise(args, path, math.prod(_spatial_shape(image, channel_axis)))
        if blockwise and config.scale_per_image and given is None:
            raise ValueError(
                f"{path}: block-wise prediction with a model that measures each image's object "
                "size (a built-in generalist) needs --object-size"
            )
        if blockwise and _needs_teacher(segment_config):
            raise ValueError(
                f"{path}: --method {args.method} is not available block-wise; choose another "
                "method for images this large"
            )
        _check_targets(out, image_name(path), blockwise=blockwise, embeddings=args.embeddings)
        jobs.append((image_name(path), image, channel_axis, blockwise))
    networks = None
    for name, image, channel_axis, blockwise in jobs:
        if blockwise:
            _predict_blockwise(args, checkpoint, image, out, name, segment_config, channel_axis)
            continue
        if networks is None:
            teacher = _needs_teacher(segment_config)
            networks = (
                _network(checkpoint, args.device),
                _network(checkpoint, args.device, teacher=True) if teacher else None,
            )
        _predict_whole(args, checkpoint, networks, np.asarray(image), out, name, segment_config,
                       channel_axis)  # fmt: skip


def _fit_colour(image: Any, path: Path, model: Any, channel_axis: int | None) -> tuple[Any, Any]:
    """Read a (Y, X, 3 or 4) image as RGB channels, or as grey for a single-channel model."""
    from .core.image import looks_rgb, rgb_to_grey

    if channel_axis is not None or model.spatial_dims != 2 or not looks_rgb(image.shape):
        return image, channel_axis
    if model.in_channels == 1:
        logger.info("%s: colour image read as grey (the mean of R, G and B)", path.name)
        return rgb_to_grey(np.asarray(image)), None
    logger.info("%s: read as RGB (last axis = channels), as napari does", path.name)
    return image, -1


def _check_unique_names(paths: Sequence[Path], name_of: Callable[[Path], str]) -> None:
    """Refuse inputs whose results would have one name: one result would overwrite the other."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(name_of(path), []).append(path)
    clashes = [
        f"{' and '.join(map(str, group))} would write the same {name}_instances"
        for name, group in groups.items()
        if len(group) > 1
    ]
    if clashes:
        raise ValueError(
            f"{'; '.join(clashes)}: rename the inputs or run them with different --out folders"
        )


def _check_targets(out: Path, name: str, *, blockwise: bool, embeddings: bool) -> None:
    """Before any work, refuse outputs that would replace something other than a result."""
    from .core.outputs import check_replaceable

    check_replaceable(out / f"{name}_instances.{'zarr' if blockwise else 'tif'}", folder=blockwise)
    if embeddings:
        check_replaceable(out / f"{name}_embeddings.zarr", folder=True)


def _network(checkpoint: Any, device: str, *, teacher: bool = False) -> Any:
    from .core.checkpoint import network_from_checkpoint
    from .core.device import resolve_device

    return network_from_checkpoint(checkpoint, resolve_device(device), teacher=teacher)


def _predict_whole(args, checkpoint, networks, image, out, name, config, channel_axis) -> None:
    """Predict one image in memory and cluster it; ``networks`` is (model, teacher or None)."""
    from .core.config import REFERENCE_DIAMETER
    from .core.inference import predict as predict_image
    from .core.inference import prediction_scale, segment_prediction
    from .core.io import write_prediction, write_tiff

    network, teacher = networks
    scale = prediction_scale(
        network, checkpoint.config, image, diameter=args.object_size, channel_axis=channel_axis,
        tile_shape=args.tile,
    )  # fmt: skip
    if scale != checkpoint.config.object_scale:
        logger.info(
            "%s: objects of %.1f px, resized by %.3g", name, REFERENCE_DIAMETER / scale, scale
        )
    options = {"loss": checkpoint.config.loss, "object_scale": scale,
               "channel_axis": channel_axis, "tile_shape": args.tile}  # fmt: skip
    prediction = predict_image(network, image, **options)
    teacher_view = None if teacher is None else predict_image(teacher, image, **options).embeddings
    instances = segment_prediction(prediction, config, teacher=teacher_view)
    if args.embeddings:
        write_prediction(out / f"{name}_embeddings.zarr", prediction)
    write_tiff(out / f"{name}_instances.tif", instances)
    count = int(instances.max())  # napari's pytest plugin makes numpy log arguments str
    logger.info("%s: %d instances → %s", name, count, out / f"{name}_instances.tif")


def _predict_blockwise(args, checkpoint, image, out, name, config, channel_axis) -> None:
    from .bigdata import predict_blockwise, segment_blockwise, segment_prediction_blockwise

    blocks = _block_options(args)
    target = out / f"{name}_instances.zarr"
    from .core.device import resolve_device

    # Cluster workers pick their own device; "auto" means CPU there.
    local = args.scheduler is None or args.device != "auto"
    device = str(resolve_device(args.device)) if local else None
    from .core.annotation import object_scale_from_annotations

    scale = object_scale_from_annotations([], diameter=args.object_size)
    run = {"device": device, "tile_shape": args.tile, "channel_axis": channel_axis,
           "object_scale": scale}  # fmt: skip
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
    """``segment``: saved predictions → instances, with any method that needs no teacher."""
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
    if _needs_teacher(config):
        raise ValueError(
            f"--method {args.method} needs the teacher's embeddings, which saved predictions "
            "do not hold; run predict with the model instead"
        )
    paths = expand_paths(args.embeddings)
    _check_unique_names(paths, lambda path: image_name(path).removesuffix("_embeddings"))
    arrays = [(path, open_prediction(path)) for path in paths]
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
    """Build the SegmentConfig of the flags; refuse a setting of another method than --method."""
    from .core.clustering_methods import CLUSTERING_METHODS
    from .core.config import SegmentConfig

    params = {}
    for name, method in CLUSTERING_METHODS.items():
        for setting in method.settings:
            value = getattr(args, setting.name)
            if value is not None and name != args.method:
                flag = "--" + setting.name.replace("_", "-")
                raise ValueError(f"{flag} is a setting of --method {name}, not {args.method}")
            if value is not None:
                params[setting.name] = value
    return SegmentConfig(
        method=args.method, foreground=args.foreground,
        foreground_threshold=args.foreground_threshold, delta_d=args.delta_d,
        seed_threshold=args.seed_threshold, min_size=args.min_size, params=params,
    )  # fmt: skip


def _needs_teacher(config: Any) -> bool:
    from .core.clustering_methods import CLUSTERING_METHODS

    return CLUSTERING_METHODS[config.method].needs_teacher


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
    from .core.outputs import check_replaceable

    check_replaceable(args.out, folder=False)  # before scoring, not after
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
    from .core.io import read_image
    from .core.outputs import check_replaceable
    from .core.pretrained import load_model_source

    check_replaceable(args.out, folder=False)  # before the model is run and validated
    checkpoint = load_model_source(args.model)
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
