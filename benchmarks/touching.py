"""Touching, irregular cells in a synthetic scene: a one-minute check of where separation fails.

The phase-contrast benchmark (``cells.py``) takes 15 minutes per arm and seed,
and its foreground is hard to learn, which hides the other stage. This scene
has an easy foreground and hard separation, so it isolates the embedding:
clusters of touching cells, cut from irregular envelopes by a stretched Voronoi
partition (elongated, polygonal shapes), each cell with its own brightness and
texture and a faint dark border where cells meet. A user paints a quarter of
the cells and draws background strokes; the product's recipe
(``core.recipe.train_config``) chooses everything else, as in the panel. Arms:
the generalist start the product picks (150 steps), a new network (1000
steps), and the generalist trained on a new network's budget.

Per arm and seed it reports AP@0.5 end to end, the foreground head's IoU with
the true foreground, and the separation inside the *true* foreground: the
mutex watershed of the embeddings alone, and with the product's split at
distance-head cores. Nothing is read from disk.

Usage::

    python benchmarks/touching.py [--arms nuclei scratch ...] [--seeds 0 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from _data import BACKGROUND_ID, print_table, write_json  # noqa: E402
from cells import mask_iou, separate_inside  # noqa: E402

from napari_spoco.core.recipe import NEW_MODEL_LR, NEW_NETWORK_ITERATIONS  # noqa: E402

RESULTS = Path(__file__).parent / "results"
#: Where training starts and, where the recipe's are not used, its steps and peak learning
#: rate: the built-in generalist (the product's default for 2D single-channel images), a
#: new network, and the generalist on a new network's budget (is it the start or the steps?).
ARMS = {
    "nuclei": {"start": "nuclei"},
    "scratch": {"start": None},
    "nuclei, new network's budget": {
        "start": "nuclei",
        "iterations": NEW_NETWORK_ITERATIONS,
        "learning_rate": NEW_MODEL_LR,
    },
}
PAINTED_FRACTION = 0.25


def touching_cells(
    shape: tuple[int, int] = (256, 256),
    clusters: int = 4,
    cells_per_cluster: int = 9,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return an image of clusters of touching irregular cells and its instance labels."""
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    margin = min(40, shape[0] // 4)
    for _ in range(clusters):
        for _attempt in range(100):  # an envelope that keeps clear of the others
            cy, cx = rng.uniform(margin, shape[0] - margin), rng.uniform(margin, shape[1] - margin)
            envelope = np.zeros(shape, bool)
            for _ellipse in range(4):
                oy, ox = rng.normal(0, 12, 2)
                ry, rx = rng.uniform(14, 30, 2)
                envelope |= ((yy - cy - oy) / ry) ** 2 + ((xx - cx - ox) / rx) ** 2 <= 1
            if not labels[ndimage.binary_dilation(envelope, iterations=6)].any():
                break
        angle = rng.uniform(0, np.pi)
        points = np.argwhere(envelope)
        centres = points[
            rng.choice(len(points), min(cells_per_cluster, len(points)), replace=False)
        ]
        dy, dx = yy[..., None] - centres[:, 0], xx[..., None] - centres[:, 1]
        along = np.cos(angle) * dy + np.sin(angle) * dx
        across = -np.sin(angle) * dy + np.cos(angle) * dx
        owner = np.argmin((along / 2.0) ** 2 + across**2, axis=-1)  # stretched 2x: elongated
        for k in range(len(centres)):
            pieces, n = ndimage.label(ndimage.binary_opening(envelope & (owner == k)))
            if n == 0:
                continue
            sizes = ndimage.sum(np.ones(shape), pieces, range(1, n + 1))
            cell = pieces == 1 + int(np.argmax(sizes))
            if cell.sum() >= 60:
                labels[cell & (labels == 0)] = labels.max() + 1
    image = rng.normal(0.2, 0.05, shape)
    for label in range(1, int(labels.max()) + 1):
        cell = labels == label
        image[cell] = rng.uniform(0.5, 0.9) + rng.normal(0, 0.08, int(cell.sum()))
    image[find_boundaries(labels, mode="inner") & (labels > 0)] -= 0.25
    return ndimage.gaussian_filter(image, 1.0).astype(np.float32), labels


def run(arm: str, seed: int, quick: bool) -> dict:
    """Paint, train as the product does, and score every stage on the same scene."""
    from napari_spoco.core.annotation import (
        keep_fraction_of_objects,
        simulate_background_scribbles,
    )
    from napari_spoco.core.config import SegmentConfig
    from napari_spoco.core.metrics import average_precision
    from napari_spoco.core.prediction import predict
    from napari_spoco.core.pretrained import load_model_source
    from napari_spoco.core.recipe import train_config
    from napari_spoco.core.segmentation import segment_prediction, split_at_cores
    from napari_spoco.core.training import Trainer

    image, truth = touching_cells((128, 128) if quick else (256, 256), seed=seed)
    objects = keep_fraction_of_objects(truth, PAINTED_FRACTION, seed=seed)
    strokes = simulate_background_scribbles(truth, seed=seed)
    annotation = np.where(strokes & (objects == 0), BACKGROUND_ID, objects).astype(np.int32)
    settings = ARMS[arm]
    start = load_model_source(settings["start"]) if settings["start"] else None
    config = train_config(
        [annotation], spatial_dims=2, channels=1, start=start, background_id=BACKGROUND_ID,
        seed=seed, iterations=2 if quick else settings.get("iterations"),
        learning_rate=settings.get("learning_rate"),
    )  # fmt: skip
    trainer = Trainer(config, device="cpu", checkpoint=start)
    trainer.set_data([image], [annotation])
    began = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - began
    prediction = predict(trainer.model, image, loss=config.loss, object_scale=config.object_scale)
    inside_truth = separate_inside(prediction, truth > 0)
    cores = SegmentConfig().seed_threshold
    with_cores = (
        split_at_cores(inside_truth, prediction.distance, cores)
        if prediction.distance is not None and cores is not None
        else inside_truth
    )
    instances = segment_prediction(prediction)
    return {
        "arm": arm,
        "seed": seed,
        "cells": int(truth.max()),
        "painted": len(np.unique(objects)) - 1,
        "ring_width": config.loss.ring_width,
        "steps": config.iterations,
        "fit_seconds": seconds,
        "ap50": average_precision(truth, instances),
        "instances": int(len(np.unique(instances)) - 1),
        "fg_iou": mask_iou(prediction.foreground > 0.5, truth > 0),
        "separation": average_precision(truth, inside_truth),
        "separation_cores": average_precision(truth, with_cores),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every arm and seed, print mean ± sd per arm, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny run that checks the script")
    parser.add_argument("--out", type=Path, default=RESULTS / "touching.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for arm in args.arms:
        for seed in args.seeds:
            rows.append(run(arm, seed, args.quick))
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()})
    keys = ("ap50", "fg_iou", "separation", "separation_cores")
    table = []
    for arm in args.arms:
        mine = [r for r in rows if r["arm"] == arm]
        cells = [
            f"{np.mean([r[k] for r in mine]):.3f} ± {np.std([r[k] for r in mine]):.3f}"
            for k in keys
        ]
        table.append([arm, f"{mine[0]['steps']}", *cells])
    print_table(["arm", "steps", *keys], table)
    write_json(
        args.out, {"benchmark": "touching", "painted_fraction": PAINTED_FRACTION, "results": rows}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
