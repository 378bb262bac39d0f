"""Touching, irregular cells in a synthetic scene: a check of where separation fails in minutes.

The phase-contrast benchmark (``cells.py``) takes 15 minutes per arm and seed,
and its foreground is hard to learn, which hides the other stage. This scene
has an easy foreground and hard separation, so it isolates the embedding:
clusters of touching cells, cut from irregular envelopes by a stretched Voronoi
partition (elongated, polygonal shapes), each cell with its own brightness and
texture and a faint dark border where cells meet. A user paints a quarter of
the cells and draws background strokes; the product's recipe
(``core.recipe.train_config``) chooses everything else, as in the panel: the
painting says the cells touch, so the run is the recipe's for touching objects.
Arms: the generalist start the product picks, a new network, the generalist on
the plain fine-tuning recipe (150 steps), and runs at a new network's learning
rate (1e-3) or above it.

Per arm and seed it reports AP@0.5 end to end (on the painted scene, and on
three scenes nobody painted), the foreground head's IoU with the true
foreground, and the separation inside the *true* foreground: the mutex
watershed of the embeddings alone, and with the product's split at
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

sys.path.insert(0, str(Path(__file__).parent))
from _data import BACKGROUND_ID, print_table, write_json  # noqa: E402
from cells import mask_iou, separate_inside  # noqa: E402

from napari_spoco.core.recipe import (  # noqa: E402
    FINE_TUNE_ITERATIONS,
    FINE_TUNE_LR,
    NEW_MODEL_LR,
)
from napari_spoco.testing import touching_cells  # noqa: E402

RESULTS = Path(__file__).parent / "results"
#: Where training starts and, where the recipe's are not used, its steps and peak learning
#: rate: the built-in generalist (the product's default for 2D single-channel images) and
#: a new network, both as the recipe trains touching objects; the generalist on the
#: fine-tuning recipe the touching one replaced; and runs at a new network's learning rate.
ARMS = {
    "nuclei": {"start": "nuclei"},
    "scratch": {"start": None},
    "nuclei, fine-tuning recipe": {
        "start": "nuclei",
        "iterations": FINE_TUNE_ITERATIONS,
        "learning_rate": FINE_TUNE_LR,
    },
    **{
        f"nuclei, {steps} steps at 1e-3": {
            "start": "nuclei",
            "iterations": steps,
            "learning_rate": NEW_MODEL_LR,
        }
        for steps in (150, 300, 500, 1000)
    },
    "nuclei, 300 steps at 3e-3": {"start": "nuclei", "iterations": 300, "learning_rate": 3e-3},
}
PAINTED_FRACTION = 0.25
#: Scenes nobody painted, per seed, on which the trained model is scored too: the product
#: promises the next images, not only the painted one.
UNSEEN_SCENES = 3


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
    unseen = []
    for other in range(UNSEEN_SCENES):
        image_other, truth_other = touching_cells(image.shape, seed=1000 * (seed + 1) + other)
        predicted = predict(
            trainer.model, image_other, loss=config.loss, object_scale=config.object_scale
        )
        unseen.append(average_precision(truth_other, segment_prediction(predicted)))
    return {
        "arm": arm,
        "seed": seed,
        "cells": int(truth.max()),
        "painted": len(np.unique(objects)) - 1,
        "ring_width": config.loss.ring_width,
        "steps": config.iterations,
        "fit_seconds": seconds,
        "ap50": average_precision(truth, instances),
        "ap50_unseen": float(np.mean(unseen)),
        "instances": int(len(np.unique(instances)) - 1),
        "fg_iou": mask_iou(prediction.foreground > 0.5, truth > 0),
        "separation": average_precision(truth, inside_truth),
        "separation_cores": average_precision(truth, with_cores),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every arm and seed, print mean ± sd per arm, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arms",
        nargs="+",
        default=["nuclei", "scratch", "nuclei, fine-tuning recipe"],
        choices=ARMS,
    )
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
    keys = ("ap50", "ap50_unseen", "fg_iou", "separation", "separation_cores")
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
