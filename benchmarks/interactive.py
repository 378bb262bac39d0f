"""A simulated user session: paint a few nuclei, train, look, fix the worst mistakes, repeat.

The accuracy suite trains once on a fixed annotation; a user of the panel
instead paints a little, trains, looks at the result and corrects it. This
script replays that loop on the NIH3T3 nuclei (Coelho et al., ISBI 2009; the
folder's path is an argument, as for ``accuracy.py``) so that we can read
off how quality grows with the clicks and the seconds spent:

1. annotate ``--objects`` random nuclei of one training image (the same image
   every run) plus background strokes (``simulate_background_scribbles``),
   as the panel's user would;
2. train ``--steps`` steps (or ``--seconds``) with the product's settings;
3. segment that image with the product pipeline and score the network on the
   held-out test images;
4. correct: of the ground-truth nuclei not yet annotated, promote the
   ``--promote`` with the largest error into the annotation (whole, from the
   ground truth, as a user repainting them would). Error = 1 - best IoU with
   any predicted instance, so missed and merged nuclei come first; ties go to
   the larger nucleus;
5. continue training the same ``Trainer`` (weights, teacher and optimiser kept:
   ``set_data`` then ``run``, as pressing Train again does) and repeat.

Step 4 has three arms (``--arms``), with the same budget per round:

* ``oracle``: the worst nuclei by the ground truth (above), which no user has;
* ``guided``: the top instances of the panel's list of likely mistakes
  (``core.uncertainty.assess``, as the panel computes it), walked down until
  ``--promote`` nuclei are corrected; the ground truth only paints the nucleus an
  instance covers most, never chooses;
* ``random``: random predicted instances, corrected the same way.

For ``guided`` and ``random`` each row also gives the precision of the choices:
the share of chosen instances that really were wrong (best IoU with any true
nucleus below 0.5; a missed region counts when it covers a missed nucleus).

Every round also fits the random-forest baseline of ``accuracy.py`` on the
same annotation, so each row says whether the network beats it by then.
Resolution handling and scale are as in ``accuracy.py``.

Usage::

    python benchmarks/interactive.py PATH/TO/coelho2009_nih3t3 [--rounds 6] [--steps 100]
    python benchmarks/interactive.py --sample --quick   # smoke test on the bundled image
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import _baselines  # noqa: E402
from _data import (  # noqa: E402
    BACKGROUND_ID,
    add_data_arguments,
    check_data_arguments,
    data_name,
    load_pairs,
    print_table,
    sample_split,
    split_names,
    write_json,
)

SCORES = ("ap50", "map", "sbd", "abs_dic", "arand")
RESULTS = Path(__file__).parent / "results"


def worst_objects(truth: np.ndarray, instances: np.ndarray, annotated: np.ndarray, count: int):  # noqa: ANN201
    """Ids of the ``count`` unannotated ground-truth objects with the lowest best IoU.

    Best IoU of a ground-truth object = its largest IoU with any predicted
    instance (0 when it was missed). Lowest first; among equals, larger first.
    """
    ids, sizes = np.unique(truth[truth > 0], return_counts=True)
    pairs = truth.astype(np.int64) * (int(instances.max()) + 1) + instances
    pair_ids, overlap = np.unique(pairs[(truth > 0) & (instances > 0)], return_counts=True)
    gt_of, pred_of = np.divmod(pair_ids, int(instances.max()) + 1)
    pred_sizes = np.bincount(instances.ravel())
    size_of = dict(zip(ids, sizes, strict=True))
    best = dict.fromkeys(ids.tolist(), 0.0)
    for g, p, n in zip(gt_of, pred_of, overlap, strict=True):
        iou = n / (size_of[g] + pred_sizes[p] - n)
        best[int(g)] = max(best[int(g)], float(iou))
    done = set(np.unique(truth[annotated > 0]).tolist())
    candidates = [(best[int(i)], -int(s), int(i)) for i, s in zip(ids, sizes, strict=True)]
    candidates = sorted(c for c in candidates if c[2] not in done)
    return [(i, iou) for iou, _, i in candidates[:count]]


def chosen_objects(arm, prediction, instances, truth, annotated, count, rng, teacher=None):  # noqa: ANN001, ANN201, PLR0913
    """Ids of the true objects a user corrects after choosing ``count`` instances by ``arm``.

    Work-scale ``instances`` and ``truth``; returns the ids and, per chosen
    instance, whether it really was wrong.
    """
    from napari_spoco.core.uncertainty import assess, painted_object_area

    if arm == "oracle":
        return [i for i, _ in worst_objects(truth, instances, annotated, count)], []
    objects = (annotated > 0) & (annotated != BACKGROUND_ID)  # painted, not the strokes
    if arm == "guided":
        area = painted_object_area([annotated], background_id=BACKGROUND_ID)
        _, ranked = assess(
            prediction, instances, teacher=teacher, reference_area=area, painted=objects
        )
        regions = [(d.label, d.bbox) for d in ranked]
    else:  # random instances that are not painted already, as the panel's list leaves those out
        labels = [i for i in np.unique(instances)[1:] if objects[instances == i].mean() < 0.5]
        regions = [(int(i), None) for i in rng.permutation(labels)]
    best = _best_iou(truth, instances)
    done = set(np.unique(annotated[objects]).tolist())
    chosen, wrong = [], []
    for label, bbox in regions:
        if len(chosen) == count:
            break
        region = instances == label if label else _missed_mask(instances, bbox)
        ids, overlap = np.unique(truth[region & (truth > 0)], return_counts=True)
        target = next((int(i) for i in ids[np.argsort(-overlap)] if int(i) not in done), None)
        if label:
            wrong.append(_instance_iou(truth, instances, label) < 0.5)
        else:
            wrong.append(bool(len(ids)) and best.get(int(ids[np.argmax(overlap)]), 0.0) < 0.5)
        if target is not None and target not in chosen:
            chosen.append(target)
    return chosen, wrong


def _missed_mask(instances: np.ndarray, bbox: tuple) -> np.ndarray:
    """Pixels of a missed region's bounding box outside every instance."""
    mask = np.zeros(instances.shape, bool)
    mask[tuple(slice(a, b) for a, b in bbox)] = True
    return mask & (instances == 0)


def _instance_iou(truth: np.ndarray, instances: np.ndarray, label: int) -> float:
    """Best IoU of predicted instance ``label`` with any true object."""
    region = instances == label
    ids, overlap = np.unique(truth[region & (truth > 0)], return_counts=True)
    if not len(ids):
        return 0.0
    sizes = np.bincount(truth.ravel())[ids]
    return float(np.max(overlap / (sizes + region.sum() - overlap)))


def _best_iou(truth: np.ndarray, instances: np.ndarray) -> dict[int, float]:
    """Best IoU of each true object with any predicted instance."""
    return {int(i): iou for i, iou in worst_objects(truth, instances, np.zeros_like(truth), 10**9)}


def _score(segment, test, scale: float) -> dict:  # noqa: ANN001
    from napari_spoco.core.metrics import evaluate

    scores = [
        evaluate(
            t, _baselines.to_full_resolution(segment(_baselines.work_image(i, scale)), t.shape)
        )
        for i, t in test
    ]
    return {k: float(np.mean([s[k] for s in scores])) for k in SCORES}


def session(image, truth, test, args, seed: int, arm: str = "oracle") -> list[dict]:  # noqa: ANN001
    """Run the rounds of one simulated user, correcting by ``arm``; one row per round."""
    from napari_spoco.core.annotation import (
        keep_fraction_of_objects,
        median_object_diameter,
        object_scale_from_annotations,
        simulate_background_scribbles,
    )
    from napari_spoco.core.prediction import predict
    from napari_spoco.core.pretrained import load_model_source
    from napari_spoco.core.recipe import train_config
    from napari_spoco.core.segmentation import segment_prediction
    from napari_spoco.core.training import Trainer

    total = len(np.unique(truth)) - 1
    objects = keep_fraction_of_objects(truth, min(1.0, args.objects / total), seed=seed)
    strokes = simulate_background_scribbles(truth, seed=seed)
    annotation = np.where(strokes & (objects == 0), BACKGROUND_ID, objects).astype(np.int32)
    diameter = median_object_diameter(annotation, background_id=BACKGROUND_ID)
    scale = object_scale_from_annotations([annotation], background_id=BACKGROUND_ID)
    start = load_model_source(args.start) if args.start != "scratch" else None
    config = train_config(
        [annotation], spatial_dims=2, channels=1, start=start, background_id=BACKGROUND_ID,
        iterations=args.steps, patch_shape=(args.patch, args.patch), batch_size=args.batch_size,
        seed=seed,
    )  # fmt: skip
    trainer = Trainer(config, device="cpu", checkpoint=start)
    rng = np.random.default_rng(30_000 + seed)
    forest_settings = _baselines.ForestSettings(trees=args.trees, threads=args.threads)
    rows, train_seconds = [], 0.0
    for round_index in range(args.rounds):
        trainer.set_data([image], [annotation])
        train_seconds += _train_round(trainer, args)

        def segment(work_image: np.ndarray) -> np.ndarray:
            prediction = predict(trainer.model, work_image, loss=config.loss)
            return segment_prediction(prediction)

        segment_forest = _forest_segmenter(
            image, annotation, scale, diameter * scale, forest_settings, seed
        )
        work = _baselines.work_image(image, scale)
        prediction = predict(trainer.model, work, loss=config.loss)
        work_instances = segment_prediction(prediction)
        row = {
            "arm": arm,
            "round": round_index,
            "seed": seed,
            "objects": int(
                len(np.unique(annotation[(annotation > 0) & (annotation != BACKGROUND_ID)]))
            ),
            "steps": trainer.step - (start.step if start else 0),
            "train_seconds": train_seconds,
            "spoco": _score(segment, test, scale),
            "rf": _score(segment_forest, test, scale),
        }
        if arm == "oracle":
            own = _baselines.to_full_resolution(work_instances, truth.shape)
            chosen, wrong = chosen_objects(arm, None, own, truth, annotation, args.promote, rng)
        else:
            chosen, wrong = chosen_objects(
                arm, prediction, work_instances, _baselines.work_labels(truth, scale),
                _baselines.work_labels(annotation, scale), args.promote, rng,
            )  # fmt: skip
        row["promoted"] = chosen
        row["precision"] = float(np.mean(wrong)) if wrong else None
        rows.append(row)
        print(
            f"{arm:6s} seed {seed} round {round_index}: {row['objects']:3d} objects, "
            f"{row['steps']:5d} steps, {train_seconds:6.0f} s; AP@0.5 "
            f"spoco {row['spoco']['ap50']:.3f} rf {row['rf']['ap50']:.3f}"
            + (f"; precision {row['precision']:.2f}" if wrong else ""),
            flush=True,
        )
        for object_id in chosen:
            annotation[truth == object_id] = object_id
    return rows


def summarise_arms(rows: list[dict]) -> list[dict]:
    """AP@0.5 and precision per (arm, round): mean and sd over seeds."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["arm"], row["round"]), []).append(row)
    summary = []
    for (arm, round_index), group in groups.items():
        ap = [r["spoco"]["ap50"] for r in group]
        precision = [r["precision"] for r in group if r["precision"] is not None]
        sd = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0  # noqa: E731
        summary.append({
            "arm": arm, "round": round_index, "seeds": len(group),
            "ap50": float(np.mean(ap)), "ap50_sd": sd(ap),
            "precision": float(np.mean(precision)) if precision else None,
            "precision_sd": sd(precision) if precision else None,
        })  # fmt: skip
    return summary


def _train_round(trainer, args: argparse.Namespace) -> float:  # noqa: ANN001
    """Train ``--steps`` steps, or until ``--seconds`` have passed; return the seconds."""
    start = time.perf_counter()

    def stop_when_due(_record: object) -> None:
        if time.perf_counter() - start >= args.seconds:
            trainer.request_stop()

    if args.seconds:
        trainer.run(10**9, callback=stop_when_due)
    else:
        trainer.run(args.steps)
    return time.perf_counter() - start


def _forest_segmenter(image, annotation, scale, work_diameter, settings, seed):  # noqa: ANN001, ANN202
    """The random-forest baseline fitted on the current annotation, as a segmenter."""
    forest = _baselines.fit_random_forest(
        [_baselines.work_image(image, scale)],
        [_baselines.work_labels(annotation, scale)],
        settings,
        seed,
    )

    def segment(work_image: np.ndarray) -> np.ndarray:
        return _baselines.random_forest_instances(forest, work_image, work_diameter, settings)

    return segment


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--image", type=int, default=0, help="index of the training image used")
    parser.add_argument("--objects", type=int, default=5, help="nuclei painted at the start")
    parser.add_argument("--promote", type=int, default=5, help="nuclei corrected per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100, help="training steps per round")
    parser.add_argument(
        "--seconds", type=float, default=0, help="train this long per round instead"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--arms", nargs="+", default=["oracle"], choices=("oracle", "guided", "random"),
        help="how the simulated user chooses what to correct",
    )  # fmt: skip
    parser.add_argument(
        "--start",
        default="scratch",
        help="network to start from: scratch, a built-in name (nuclei) or a model file",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--trees", type=int, default=100, help="random-forest trees")
    parser.add_argument("--threads", type=int, default=2, help="torch and forest threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "interactive.json")
    args = parser.parse_args(argv)
    check_data_arguments(parser, args)
    if args.quick:
        args.rounds, args.steps, args.batch_size, args.patch, args.trees = 2, 2, 2, 64, 10
        args.seeds = args.seeds[:1]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the sessions, print the table and write JSON."""
    args = _parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.sample:
        train, test, train_names, test_names = sample_split()
        train, train_names = train[args.image :], train_names[args.image :]
    else:
        train_names, test_names = split_names(args.data)
        train_names = train_names[args.image :]
        train, test = load_pairs(args.data, train_names[:1]), load_pairs(args.data, test_names)
    if args.quick:
        test, test_names = test[:1], test_names[:1]
    image, truth = train[0]
    budget = f"{args.seconds:g} s" if args.seconds else f"{args.steps} steps"
    print(
        f"one image ({train_names[0]}, {len(np.unique(truth)) - 1} nuclei), "
        f"{len(test)} test images; "
        f"{args.rounds} rounds of {budget} x {args.batch_size} x {args.patch}^2, "
        f"{args.objects} nuclei to start, {args.promote} corrected per round; "
        f"network: {args.start}"
    )
    started = time.perf_counter()
    rows = [
        row
        for arm in args.arms
        for seed in args.seeds
        for row in session(image, truth, test, args, seed, arm)
    ]
    wall = time.perf_counter() - started
    columns = [
        "arm",
        "seed",
        "round",
        "objects",
        "steps",
        "train s",
        "SPOCO AP@0.5",
        "mAP",
        "SBD",
        "RF AP@0.5",
        "precision",
    ]
    body = [
        [
            r["arm"],
            str(r["seed"]),
            str(r["round"]),
            str(r["objects"]),
            str(r["steps"]),
            f"{r['train_seconds']:.0f}",
            f"{r['spoco']['ap50']:.3f}",
            f"{r['spoco']['map']:.3f}",
            f"{r['spoco']['sbd']:.3f}",
            f"{r['rf']['ap50']:.3f}",
            "–" if r["precision"] is None else f"{r['precision']:.2f}",
        ]
        for r in rows
    ]
    print(f"\nheld-out test images; wall time {wall / 60:.1f} min")
    print_table(columns, body)
    summary = summarise_arms(rows)
    print("\nmean ± sd over seeds")
    print_table(
        ["arm", "round", "AP@0.5", "precision"],
        [[e["arm"], str(e["round"]), f"{e['ap50']:.3f} ± {e['ap50_sd']:.3f}",
          "–" if e["precision"] is None else f"{e['precision']:.2f} ± {e['precision_sd']:.2f}"]
         for e in summary],
    )  # fmt: skip
    write_json(
        args.out,
        {
            "benchmark": "interactive",
            "data": data_name(args),
            "train_image": train_names[0],
            "test_images": test_names,
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "wall_seconds": wall,
            "results": rows,
            "summary": summary,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
