"""``train`` and ``pretrain``: read, check, train with a progress bar, save as it goes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._inputs import channels_of, read_images, read_labels, spatial_dims_of, spatial_shape_of

logger = logging.getLogger("napari_spoco")


def train(args: argparse.Namespace) -> None:
    """``train``: images + sparse annotations (+ optional starting model) → model file."""
    _train(args, pretraining=False)


def pretrain(args: argparse.Namespace) -> None:
    """``pretrain``: unlabeled images → a starting model (consistency term only)."""
    _train(args, pretraining=True)


class Stopped(Exception):
    """Training stopped early on SIGINT or SIGTERM, after saving where it was."""


def _train(args: argparse.Namespace, *, pretraining: bool) -> None:
    from ..core.checkpoint import load_checkpoint
    from ..core.pretrained import BUILTIN_MODELS, load_model_source
    from ..core.recipe import training_warnings
    from ..core.training import Trainer

    dense = getattr(args, "dense", False)
    if getattr(args, "vary_object_contrast", 0.0) and not dense:  # before reading any image
        raise ValueError(
            "--vary-object-contrast needs --dense: it dims whole objects against the "
            "background, so every object must be labelled and 0 must be background"
        )
    out = Path(args.out)
    images, channel_axis = read_images(args.images, args.channel_axis, grey=args.grey)
    dims = spatial_dims_of(images, channel_axis)
    if pretraining:
        labels = [np.zeros(spatial_shape_of(a, channel_axis), np.uint8) for _, a in images]
        label_paths = []
    else:
        label_paths, labels = read_labels(args.labels, images, channel_axis)
    _check_output(out, [p for p, _ in images] + label_paths)
    resume = getattr(args, "resume", False)
    channels = channels_of(images, channel_axis)
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
    touching = "" if pretraining or dense or resume else _touching_note(args, labels)
    logger.info(
        "%s on %d image(s) for %d steps on %s, learning rate %g, object scale %s%s%s",
        what, len(images), config.iterations, trainer.device, trainer.learning_rate,
        "per image" if dense else f"{config.object_scale:.3g}", origin, touching,
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


#: ``--objects-touch`` choices as the recipe's ``objects_touch``: None lets the painting say.
OBJECTS_TOUCH_CHOICES = {"auto": None, "yes": True, "no": False}


def _touching_note(args: argparse.Namespace, labels: Sequence[np.ndarray]) -> str:
    """Say in the first line when the recipe treats the objects as touching, and why."""
    from ..core.recipe import touching_objects

    told = OBJECTS_TOUCH_CHOICES[args.objects_touch]
    background = args.background_id
    if not touching_objects(labels, background_id=background, told=told):
        return ""
    why = "--objects-touch yes" if told else "from the painting; --objects-touch no if not"
    return f", objects touch ({why})"


def _start_model(args: argparse.Namespace, dims: int, channels: int) -> str | None:
    """Choose what training starts from: --from, else the built-in model for such images.

    A new network is built for ``--from scratch``, for pretraining and dense
    training, and when its architecture is asked for (``--size``, ``--no-heads``,
    ``--isotropic``).
    """
    from ..core.pretrained import SCRATCH, default_start_model

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
    from ..core.annotation import object_scale_from_annotations

    return [object_scale_from_annotations([label]) or 1.0 for label in labels]


def _validation_set(args: argparse.Namespace, channel_axis: int | None) -> Any:
    from ..core.io import image_name
    from ..core.validation import ValidationSet

    if not args.val_labels:
        raise ValueError("--val-images needs --val-labels (dense ground truth, one per image)")
    images, _ = read_images(args.val_images, channel_axis, grey=args.grey)
    _, labels = read_labels(args.val_labels, images, channel_axis)
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
    from ..core.recipe import train_config

    extensions = {
        n: getattr(args, n) for n in _EXTENSION_FLAGS if getattr(args, n, None) is not None
    }
    touch = OBJECTS_TOUCH_CHOICES[getattr(args, "objects_touch", "auto")]
    return train_config(
        labels, spatial_dims=dims, channels=channels, start=checkpoint,
        size=args.size or "medium", heads=not args.no_heads, anisotropic_pooling=not args.isotropic,
        object_diameter=args.object_size, background_id=getattr(args, "background_id", None),
        objects_touch=touch, loss=extensions,
        dense=getattr(args, "dense", False), pretraining=pretraining, iterations=args.iterations,
        patch_shape=args.patch, batch_size=args.batch_size, learning_rate=args.lr,
        seed=args.seed, invert_probability=args.random_invert,
        object_contrast_probability=getattr(args, "vary_object_contrast", 0.0),
        report_every=args.log_every,
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
        from ..core.checkpoint import save_checkpoint
        from ..core.io import write_json
        from ..core.validation import validation_scores

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
    from ..core.io import write_csv, write_json

    stem = model_path.with_name(f"{model_path.stem}_history")
    write_json(stem.with_suffix(".json"), history)
    write_csv(stem.with_suffix(".csv"), history)
