"""Train-data lists for a generalist, and the step that turns a run into the shipped model.

The generalist itself is trained with the product's CLI (``napari-spoco train
--dense``, see ``src/napari_spoco/models/nuclei.md``). This script does the two
things around it that need the dataset's ``index.json``:

``lists DATA OUT``
    writes ``train_images.txt`` / ``train_labels.txt`` (split ``train`` only),
    ``val_*.txt`` (all of ``val``), ``val20_*.txt`` (a fixed subset of at most
    20 ``val`` images with every kind, scored during training) and, where the
    data have one, ``test_*.txt``, for ``@FILE`` arguments. Images with
    ``split: excluded`` are in no list.
``package RUN DATA [--out MODEL] [--nih3t3 FOLDER] [--foreground-threshold T]``
    first chooses the foreground threshold that scores best zero-shot on ``val``
    (:data:`FOREGROUND_THRESHOLDS`; the nuclei generalist scored best at 0.65 on
    DSB ``val``) and moves the model's foreground head there, so that every front
    end's 0.5 is that threshold with no setting of its own (fine-tuning moves the
    head again). Then it scores the moved model on every ``val`` (and ``test``)
    image, per kind, as Segment predicts (eight orientations), twice: at each
    image's true object size (the network alone) and at the size the model
    measures itself (zero-shot, as a user without a size hint gets it), and
    how far that measured size is from the truth; writes the scores with the
    run's validation curve as JSON and, with ``--out``, the model without
    optimiser state or history, marked as having no scale of its own. Without
    ``--out`` it only scores (for example the shipped model). ``--nih3t3`` scores
    all 39 NIH3T3 *training* images the same way: a check before shipping,
    because DSB ``val`` once ranked a model 0.03 better that lost 0.3 on NIH3T3
    nuclei (``docs/benchmarks.md``, "Training the generalist longer"). Every
    fourth image (10) was once enough for that, but it ranked two close models
    the wrong way round (+0.055 on those 10, +0.018 on all 39, −0.027 on the test
    images). It never chooses checkpoints, and the NIH3T3 test images stay unseen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import load_pairs, machine, split_names  # noqa: E402

#: Training images held out to choose checkpoints, where the data's own split has
#: only train and test images (the Usiigaci cells): the last ones of ``train``.
HELD_OUT_FOR_CHOICE = 5


def _index(folder: Path) -> list[dict]:
    """The data's images as ``id``, ``kind`` and ``split`` (train, val, test or excluded).

    ``dsb2018`` gives these itself. A folder with only the source's ``train`` /
    ``val`` split (``usiigaci_phase``) keeps that ``val`` for testing, so its
    last training images choose the checkpoint instead.
    """
    index = json.loads((folder / "index.json").read_text())
    if all("split" in entry for entry in index):
        return index
    train = sorted(e["name"] for e in index if e["source_split"] == "train")
    choose = set(train[-HELD_OUT_FOR_CHOICE:])

    def split(entry: dict) -> str:
        if entry["source_split"] == "val":
            return "test"
        return "val" if entry["name"] in choose else "train"

    return [
        {"id": entry["name"], "kind": entry.get("kind"), "split": split(entry)}
        for entry in sorted(index, key=lambda e: e["name"])
    ]


def write_lists(folder: Path, out: Path, subset: int = 20) -> None:
    """Write the ``@FILE`` lists of the train and val splits (never ``excluded``)."""
    out.mkdir(parents=True, exist_ok=True)
    index = _index(folder)
    val = [e for e in index if e["split"] == "val"]
    picked = val
    if len(val) > subset:
        # Every kind of DSB in the subset, the rare ones first, in the index's fixed order.
        share = {"brightfield": 1, "colour": 6}
        picked = [e for kind, n in share.items() for e in [v for v in val if v["kind"] == kind][:n]]
        picked += [e for e in val if e["kind"] == "fluorescence"][: subset - len(picked)]
    splits = {
        "train": [e for e in index if e["split"] == "train"],
        "val": val,
        f"val{subset}": picked,
        "test": [e for e in index if e["split"] == "test"],
    }
    for name, entries in splits.items():
        if not entries:
            continue
        for what in ("images", "labels"):
            lines = "".join(f"{folder.resolve() / what / (e['id'] + '.tif')}\n" for e in entries)
            (out / f"{name}_{what}.txt").write_text(lines)
        print(f"{name}: {len(entries)} images")


#: Foreground thresholds the packaging step tries on ``val``. The model ships with its
#: foreground head moved so that 0.5 is the best of them (``move_foreground_threshold``).
FOREGROUND_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
#: The two sizes every image is scored at: its true object size, and the one the model measures.
ARMS = ("true_size", "zero_shot")


def package(
    run: Path,
    folder: Path,
    out: Path | None,
    results: Path,
    nih3t3: Path | None = None,
    foreground_threshold: float | None = None,
) -> None:
    """Choose the foreground threshold on ``val``, score per kind, then write the shipped model."""
    from napari_spoco.core.annotation import object_scale_from_annotations
    from napari_spoco.core.checkpoint import (
        Checkpoint,
        load_checkpoint,
        network_from_checkpoint,
        save_checkpoint,
    )
    from napari_spoco.core.image import looks_rgb, rgb_to_grey
    from napari_spoco.core.metrics import average_precision
    from napari_spoco.core.model import EmbeddingUNet
    from napari_spoco.core.prediction import augment_or_default, predict
    from napari_spoco.core.segmentation import prediction_scale, segment_prediction

    trained = load_checkpoint(run)
    # Runs of dense training mark themselves from this version on; older ones did not.
    config = replace(trained.config, scale_per_image=True)
    augment = augment_or_default(None, spatial_dims=2)  # as Segment predicts
    start = time.perf_counter()
    index = _index(folder)

    def moved(threshold: float, teacher: bool = False) -> EmbeddingUNet:
        """The run's network (or teacher) with the foreground head moved to ``threshold``."""
        network = network_from_checkpoint(trained, teacher=teacher)
        network.move_foreground_threshold(threshold)
        return network

    def score(
        network: EmbeddingUNet, image: np.ndarray, truth: np.ndarray, arms: tuple[str, ...]
    ) -> dict:
        image = rgb_to_grey(image) if looks_rgb(image.shape) else image
        scores = {}
        true_scale = object_scale_from_annotations([truth]) or 1.0
        for arm in arms:
            scale = true_scale if arm == "true_size" else prediction_scale(network, config, image)
            prediction = predict(
                network, image, loss=config.loss, object_scale=scale, augment=augment
            )
            instances = segment_prediction(prediction)
            scores[arm] = average_precision(truth, instances, threshold=0.5)
            scores[f"{arm}_scale"] = scale
            # Dim nuclei a model misses show as too little foreground, not as a wrong size.
            scores[f"{arm}_foreground_over_true"] = float(
                np.count_nonzero(instances) / max(1, np.count_nonzero(truth))
            )
        return scores

    def score_all(
        network: EmbeddingUNet, data: Path, entries: list[dict], arms: tuple[str, ...] = ARMS
    ) -> list[dict]:
        rows = []
        for entry in entries:  # one image in memory at a time
            [(image, truth)] = load_pairs(data, [f"{entry['id']}.tif"])
            rows.append({**entry, **score(network, image, truth, arms)})
        return rows

    val = [{"id": e["id"], "kind": e["kind"]} for e in index if e["split"] == "val"]
    # The threshold that serves a user who paints nothing: zero-shot, chosen on val only.
    zero_shot_on_val = {}
    candidates = FOREGROUND_THRESHOLDS if foreground_threshold is None else ()
    for threshold in candidates:
        zero_shot_on_val[threshold] = score_all(moved(threshold), folder, val, ("zero_shot",))
        ap50 = _mean(zero_shot_on_val[threshold], "zero_shot")
        print(f"foreground threshold {threshold}: val zero-shot AP@0.5 {ap50:.3f}")
    choice = [
        {"threshold": t, "zero_shot": _mean(r, "zero_shot")} for t, r in zero_shot_on_val.items()
    ]
    if foreground_threshold is None:
        foreground_threshold = max(choice, key=lambda c: c["zero_shot"])["threshold"]
    network = moved(foreground_threshold)
    rows = {}
    for split in ("val", "test"):
        entries = [{"id": e["id"], "kind": e["kind"]} for e in index if e["split"] == split]
        if split == "val" and foreground_threshold in zero_shot_on_val:  # half scored already
            true_size = score_all(network, folder, entries, ("true_size",))
            zero_shot = zero_shot_on_val[foreground_threshold]
            rows[split] = [{**a, **b} for a, b in zip(true_size, zero_shot, strict=True)]
        elif entries:
            rows[split] = score_all(network, folder, entries)
    if nih3t3 is not None:
        names = split_names(nih3t3)[0]
        entries = [{"id": n.removesuffix(".tif"), "kind": "fluorescence"} for n in names]
        rows["nih3t3_training"] = score_all(network, nih3t3, entries)
    summary = {split: _summary(split_rows) for split, split_rows in rows.items()}
    curve_path = run.with_name(f"{run.stem.removesuffix('_best')}_validation.json")
    curve = json.loads(curve_path.read_text()) if curve_path.is_file() else []
    if out is not None:
        shipped = Checkpoint(
            config=config,
            model_state=network.state_dict(),
            teacher_state=(
                moved(foreground_threshold, teacher=True).state_dict()
                if trained.teacher_state is not None
                else None
            ),
            step=trained.step,
            normalization=trained.normalization,
        )
        save_checkpoint(out, shipped)
    report = {
        "model": str(out or run),
        "from_run": str(run),
        "step": trained.step,
        "seconds_per_step": _median_speed(trained.history),
        "eight_orientations": augment,
        "foreground_threshold": foreground_threshold,
        "foreground_threshold_choice": choice,
        **{f"{split}_ap50": values for split, values in summary.items()},
        **{f"{split}_per_image": values for split, values in rows.items()},
        "val_curve_subset": [{"step": r["step"], "ap50": r["ap50"]} for r in curve],
        "scoring_seconds": time.perf_counter() - start,
        "machine": machine(),
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=1) + "\n")
    print(f"foreground head moved to threshold {foreground_threshold} (0.5 now means it)")
    for split, kinds in summary.items():
        for kind, values in kinds.items():
            print(
                f"{split:4s} {kind:13s} n={values['images']:3d}  AP@0.5 at true size "
                f"{values['true_size']:.3f}  zero-shot {values['zero_shot']:.3f}  measured/true "
                f"size {values['size_ratio_median']:.2f} "
                f"(within 35 %: {values['size_within_35_percent']:.0%})  foreground/true "
                f"{values['foreground_over_true_median']:.2f}"
            )


def _mean(rows: list[dict], arm: str) -> float:
    return float(np.mean([r[arm] for r in rows]))


def _summary(rows: list[dict]) -> dict:
    """Mean AP@0.5 per kind and of all images, and how well the model measured the size."""
    kinds = dict.fromkeys(r["kind"] for r in rows if r["kind"] is not None)
    groups = {kind: [r for r in rows if r["kind"] == kind] for kind in kinds}
    groups["all"] = rows
    return {
        name: {
            "images": len(group),
            **{arm: _mean(group, arm) for arm in ARMS},
            # Measured over true size: 1 is perfect; the fraction within 35 % of the truth.
            "size_ratio_median": float(np.median([_size_ratio(r) for r in group])),
            "size_within_35_percent": float(
                np.mean([abs(np.log(_size_ratio(r))) < np.log(1.35) for r in group])
            ),
            "foreground_over_true_median": float(
                np.median([r["true_size_foreground_over_true"] for r in group])
            ),
        }
        for name, group in groups.items()
        if group
    }


def _size_ratio(row: dict) -> float:
    """Object size the model measured over the true one (scales are inverse to sizes)."""
    return row["true_size_scale"] / row["zero_shot_scale"]


def _median_speed(history: list[dict]) -> float | None:
    speeds = [h["seconds_per_step"] for h in history if "seconds_per_step" in h]
    return float(np.median(speeds)) if speeds else None


def main(argv: list[str] | None = None) -> None:
    """Parse the subcommand and run it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    lists = commands.add_parser("lists", help="write the train / val (/ test) lists of a folder")
    lists.add_argument("data", type=Path, help="the dsb2018 or usiigaci_phase folder")
    lists.add_argument("out", type=Path, help="folder for the lists")
    shipped = commands.add_parser("package", help="score a run on val and write the model")
    shipped.add_argument("run", type=Path, help="model file of the run (e.g. nuclei_best.pt)")
    shipped.add_argument("data", type=Path, help="the dsb2018 or usiigaci_phase folder")
    shipped.add_argument("--out", type=Path, help="model file to ship (default: score only)")
    shipped.add_argument(
        "--nih3t3", type=Path, help="the coelho2009_nih3t3 folder: also score its training images"
    )
    shipped.add_argument(
        "--foreground-threshold",
        type=float,
        help="move the foreground head to this threshold instead of choosing one on val "
        "(0.5: leave it)",
    )
    shipped.add_argument(
        "--results", type=Path, default=Path(__file__).parent / "results" / "generalist.json"
    )
    args = parser.parse_args(argv)
    if args.command == "lists":
        write_lists(args.data, args.out)
    else:
        package(args.run, args.data, args.out, args.results, args.nih3t3, args.foreground_threshold)


if __name__ == "__main__":
    main()
