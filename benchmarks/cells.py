"""Objects that are not nuclei: touching whole cells, and where the accuracy goes.

Reads the Usiigaci phase-contrast cells (Tsai et al., SoftwareX 9, 2019; MIT; a
folder with ``images/``, ``labels/`` and ``index.json``, passed as an argument)
and scores on the five images of the source's ``val`` split:

* annotation, one draw per seed, with a user's background strokes in each
  painted image: "20 in 1 image" (20 cells of one random training image) and
  "2 in 10 images" (2 cells in each of 10 random training images);
* SPOCO as the product trains it, from a new network ("scratch"), the nuclei
  generalist ("nuclei") or ``--trained``, a model trained densely on this
  data's training images ("trained"; see docs/benchmarks.md), stopped by the
  clock: one run per arm, scored after each of ``--minutes`` of training
  (0: the start model untrained; scoring time not counted; the
  learning rate stays near its peak, so the 2-minute score is that of a
  2-minute run); the random forest and Otsu on the same annotation;
* everything at the work scale the product derives from the painted cells.

Where the accuracy goes (SPOCO rows):

* ``fg_iou``: IoU of the foreground head's mask with the true foreground;
* ``separation``: AP@0.5 of the mutex watershed of the predicted embeddings
  inside the *true* foreground, what the embeddings give with a perfect mask;
* ``ap50_<method>``: AP@0.5 end to end with each clustering method of
  ``core.clustering`` (the product's settings; ``ap50`` is its default).

Usage::

    python benchmarks/cells.py ../shared/data/usiigaci_phase [--seeds 0 1 2] [--docs FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import _baselines  # noqa: E402
from _data import markdown_table, print_table, write_json  # noqa: E402
from accuracy import (  # noqa: E402
    SCORES,
    VARIANTS,
    Annotation,
    Variant,
    background_strokes,
    baseline_segmenter,
    spoco_trainer,
    summarise,
    update_docs,
)

from napari_spoco.core.clustering_methods import CLUSTERING_METHODS, METHODS  # noqa: E402
from napari_spoco.core.recipe import NEW_MODEL_LR  # noqa: E402

RESULTS = Path(__file__).parent / "results"
#: SPOCO runs by arm name: where training starts, and the candidate changes for touching
#: objects (issue "Objects that are not nuclei"), each measured against the product.
SPOCO_ARMS = {
    "scratch": VARIANTS["spoco"],
    "nuclei": VARIANTS["generalist_2min"],
    "nuclei, no ring": Variant(
        start="nuclei",
        loss={"ring_width": 0},
        about="no negatives in a ring around painted cells: where cells touch, it is a cell",
    ),
    "nuclei, objects touch": Variant(
        start="nuclei",
        loss={"ring_width": 0},
        learning_rate=NEW_MODEL_LR,
        about="no ring and a new network's learning rate: the first touching recipe, kept out",
    ),
}
#: Arm that starts from ``--trained``, a model file trained densely on the training images.
TRAINED = "trained"
#: Painted images and cells per image, by annotation name.
PAINTING = {"20 in 1 image": (1, 20), "2 in 10 images": (10, 2)}
STAGES = ("fg_iou", "separation")


def load(folder: Path, quick: bool) -> tuple[list, list, list[str]]:
    """Training and test pairs (the source's train and val split) and the test names."""
    import tifffile

    index = json.loads((folder / "index.json").read_text())

    def pairs(split: str) -> list[tuple[str, tuple[np.ndarray, np.ndarray]]]:
        names = sorted(entry["name"] for entry in index if entry["source_split"] == split)
        return [
            (n, tuple(tifffile.imread(folder / kind / f"{n}.tif") for kind in ("images", "labels")))
            for n in names
        ]

    train, test = pairs("train"), pairs("val")
    if quick:
        train, test = train[:3], test[:1]
    return [p for _, p in train], [p for _, p in test], [n for n, _ in test]


def paint(truth: list[np.ndarray], name: str, seed: int) -> Annotation:
    """A user's painting: ``PAINTING[name]`` cells in random training images."""
    images, per_image = PAINTING[name]
    rng = np.random.default_rng(20_000 + seed)
    chosen = set(rng.choice(len(truth), min(images, len(truth)), replace=False).tolist())
    objects = []
    for index, labels in enumerate(truth):
        ids = np.unique(labels)[1:]
        keep = rng.choice(ids, min(per_image, len(ids)), replace=False) if index in chosen else []
        objects.append(np.where(np.isin(labels, keep), labels, 0))
    return Annotation(name, seed, objects, background_strokes(truth, objects, seed))


def mask_iou(mask: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two boolean masks (1 when both are empty)."""
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else 1.0


def separate_inside(prediction, true_mask: np.ndarray, seed: int = 0) -> np.ndarray:  # noqa: ANN001
    """Cluster the embeddings inside ``true_mask``: what separation gives with a perfect mask."""
    from napari_spoco.core.clustering import segment

    return segment(
        prediction.embeddings, "mutex_watershed", true_mask,
        delta_v=prediction.delta_v, delta_d=2 * prediction.delta_d, seed=seed,
    )  # fmt: skip


def score_spoco(trainer, test: list, scale: float, seed: int, methods: list[str]) -> dict:  # noqa: ANN001
    """Every stage's score on the test images, at the work scale, scored at full resolution."""
    from napari_spoco.core.config import SegmentConfig
    from napari_spoco.core.metrics import evaluate
    from napari_spoco.core.prediction import predict
    from napari_spoco.core.segmentation import segment_prediction

    loss = trainer.config.loss
    needs_teacher = any(CLUSTERING_METHODS[m].needs_teacher for m in methods)
    per_image = []
    for image, truth in test:
        work = _baselines.work_image(image, scale)
        prediction = predict(trainer.model, work, loss=loss)
        teacher = predict(trainer.teacher, work, loss=loss).embeddings if needs_teacher else None

        def full(instances: np.ndarray, truth: np.ndarray = truth) -> np.ndarray:
            return _baselines.to_full_resolution(instances, truth.shape)

        scores = {}
        for method in dict.fromkeys([SegmentConfig().method, *methods]):  # the default first
            instances = full(
                segment_prediction(
                    prediction, SegmentConfig(method=method), teacher=teacher, seed=seed
                )
            )
            result = evaluate(truth, instances)
            scores[f"ap50_{method}"] = result["ap50"]
            if method == SegmentConfig().method:  # the product's default: every score
                scores.update({k: result[k] for k in SCORES})
        separated = separate_inside(prediction, _baselines.work_labels(truth, scale) > 0, seed)
        scores["separation"] = evaluate(truth, full(separated))["ap50"]
        head = (prediction.foreground > 0.5).astype(np.uint32)
        scores["fg_iou"] = mask_iou(full(head) > 0, truth > 0)
        per_image.append(scores)
    return {key: float(np.mean([s[key] for s in per_image])) for key in per_image[0]}


def run_spoco(arm: str, annotation: Annotation, train: list, test: list, args) -> list[dict]:  # noqa: ANN001
    """Train one arm by the clock; a row per mark of ``args.minutes``."""
    used, labels = annotation.labels(scribbles=True)
    scale = annotation.scale()
    variant = Variant(start=str(args.trained), seconds=120.0) if arm == TRAINED else SPOCO_ARMS[arm]
    trainer, start = spoco_trainer(variant, labels, args, annotation.seed, 100_000)
    trainer.set_data([train[i][0] for i in used], labels)
    marks, rows, trained = sorted(args.minutes), [], 0.0

    def score(steps: int) -> None:
        scored = time.perf_counter()
        scores = score_spoco(trainer, test, scale, annotation.seed, args.methods)
        rows.append(
            {
                "variant": f"{arm} {marks.pop(0):g} min",
                "setting": annotation.setting,
                "seed": annotation.seed,
                "objects": annotation.n_objects,
                "scale": scale,
                "steps": steps,
                "fit_seconds": trained,
                "score_seconds": time.perf_counter() - scored,
                **scores,
            }
        )
        print(_line(rows[-1]), flush=True)

    if marks[0] == 0:  # the start model as it is, at the painted cells' scale
        score(0)
    began = time.perf_counter()
    for _record in trainer.steps() if marks else ():
        elapsed = trained + time.perf_counter() - began
        if elapsed < marks[0] * 60:
            continue
        trained = elapsed
        score(trainer.step - (start.step if start else 0))
        if not marks:
            trainer.request_stop()
        began = time.perf_counter()
    return rows


def run_baseline(method: str, annotation: Annotation, train: list, test: list, args) -> dict:  # noqa: ANN001
    """The random forest (with background strokes) or Otsu, sized by the painted cells."""
    from napari_spoco.core.metrics import evaluate

    used, labels = annotation.labels(scribbles=method == "rf")
    scale = annotation.scale()
    diameter = annotation.diameter() * scale
    began = time.perf_counter()
    images = [train[i][0] for i in used]
    segment = baseline_segmenter(method, images, labels, scale, diameter, args, annotation.seed)
    fit = time.perf_counter() - began
    results = [
        evaluate(
            truth,
            _baselines.to_full_resolution(
                segment(_baselines.work_image(image, scale)), truth.shape
            ),
        )
        for image, truth in test
    ]
    row = {
        "variant": method,
        "setting": annotation.setting,
        "seed": annotation.seed,
        "objects": annotation.n_objects,
        "scale": scale,
        "steps": 0,
        "fit_seconds": fit,
        **{k: float(np.mean([r[k] for r in results])) for k in SCORES},
    }
    print(_line(row), flush=True)
    return row


def _line(row: dict) -> str:
    stages = "  ".join(f"{k} {row[k]:.3f}" for k in STAGES if k in row)
    return (
        f"{row['setting']:15s} seed {row['seed']}  {row['variant']:14s} "
        f"steps {row['steps']:5d}  ap50 {row['ap50']:.3f}  sbd {row['sbd']:.3f}  {stages}"
    )


def table(summary: list[dict], methods: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    """Mean ± sd over seeds: end to end, then the stages (SPOCO rows only)."""
    stage_keys = (*STAGES, *(f"ap50_{m}" for m in methods))
    columns = ["annotation", "method", "steps", "AP@0.5", "SBD", "fg IoU", "separation",
               *(f"AP {m}" for m in methods)]  # fmt: skip

    def cell(entry: dict, key: str) -> str:
        return f"{entry[key]:.3f} ± {entry[key + '_sd']:.3f}" if key in entry else "–"

    rows = [
        [s["setting"], s["variant"], f"{s['steps']:.0f}", cell(s, "ap50"), cell(s, "sbd"),
         *(cell(s, k) for k in stage_keys)]
        for s in summary
    ]  # fmt: skip
    return columns, rows


def main(argv: list[str] | None = None) -> int:
    """Run every (annotation, seed, method), print the table, write JSON and docs."""
    args = _parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    train, test, test_names = load(args.data, args.quick)
    truth = [labels for _, labels in train]
    started, rows = time.perf_counter(), []
    for name in args.paintings:
        for seed in args.seeds:
            annotation = paint(truth, name, seed)
            for arm in args.arms:
                rows += run_spoco(arm, annotation, train, test, args)
            rows += [run_baseline(m, annotation, train, test, args) for m in ("rf", "otsu")]
    wall = time.perf_counter() - started
    keys = (
        *SCORES,
        "objects",
        "fit_seconds",
        "steps",
        *STAGES,
        *(f"ap50_{m}" for m in args.methods),
    )
    groups = [
        [r for r in rows if all(k in r for k in keys)],
        [r for r in rows if "fg_iou" not in r],
    ]
    summary = summarise(groups[0], keys) + summarise(groups[1], (*SCORES, "steps"))
    columns, body = table(summary, tuple(args.methods))
    print(f"\nmean ± sd over seeds {args.seeds}; wall time {wall / 60:.1f} min")
    print_table(columns, body)
    write_json(
        args.out,
        {
            "benchmark": "cells",
            "data": str(args.data),
            "test_images": test_names,
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "docs")},
            "wall_seconds": wall,
            "results": rows,
            "summary": summary,
        },
    )
    if args.docs:
        command = " ".join(["python", *[str(a) for a in sys.argv]])
        text = f"Command: `{command}` ({wall / 60:.0f} min).\n\n{markdown_table(columns, body)}"
        update_docs(args.docs, text, "cells")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the usiigaci_phase folder")
    parser.add_argument("--paintings", nargs="+", default=list(PAINTING), choices=PAINTING)
    parser.add_argument(
        "--arms", nargs="+", default=["scratch", "nuclei"], choices=[*SPOCO_ARMS, TRAINED]
    )
    parser.add_argument(
        "--trained", type=Path,
        help=f"model file for the '{TRAINED}' arm: trained densely on this data's training "
        "images (napari-spoco train --dense)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--minutes", type=float, nargs="+", default=[2.0, 5.0],
        help="training minutes at which to score (0: the start model, untrained)",
    )  # fmt: skip
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS,
        help="clustering methods scored end to end (mean shift can take minutes per image "
        "on a briefly trained network)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--trees", type=int, default=100, help="random-forest trees")
    parser.add_argument("--threads", type=int, default=2, help="torch and forest threads")
    parser.add_argument("--quick", action="store_true", help="tiny run that checks the script")
    parser.add_argument("--out", type=Path, default=RESULTS / "cells.json")
    parser.add_argument("--docs", type=Path, help="Markdown file whose cells block to replace")
    args = parser.parse_args(argv)
    if (TRAINED in args.arms) != (args.trained is not None):
        parser.error(f"--arms {TRAINED} and --trained go together")
    if args.quick:  # the untrained mark, if asked for, and two short ones
        args.minutes = [m for m in args.minutes if m == 0] + [0.02, 0.04]
        args.seeds = args.seeds[:1]
    return args


if __name__ == "__main__":
    sys.exit(main())
