"""``evaluate`` (scores against ground truth) and the bioimage.io ``export`` / ``import``."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np

logger = logging.getLogger("napari_spoco")

#: Score columns of ``evaluate``, in the order of its table and CSV.
_SCORES = ("sbd", "abs_dic", "ap50", "map", "arand", "dic", "precision", "recall", "f1")


def evaluate(args: argparse.Namespace) -> None:
    """``evaluate``: predicted vs ground-truth labels → printed table and CSV."""
    from ..core.io import expand_paths, read_image, write_csv
    from ..core.metrics import evaluate as score
    from ..core.outputs import check_replaceable

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


def export_bioimageio(args: argparse.Namespace) -> None:
    """``export-bioimageio``: model file + test image → validated bioimage.io zip."""
    from ..core.bioimageio import export_bioimageio as export
    from ..core.io import read_image
    from ..core.outputs import check_replaceable
    from ..core.pretrained import load_model_source

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
    from ..core.bioimageio import import_bioimageio as read_package
    from ..core.checkpoint import save_checkpoint

    out = save_checkpoint(args.out, read_package(args.package))
    logger.info("wrote %s", out)
