"""How many objects must a user paint, and is SPOCO then better than what they use today?

Trains on sparse annotations of the NIH3T3 nuclei of Coelho et al. (ISBI 2009;
a folder with ``images/*.tif`` and ``labels/*.tif``, not redistributed, so
its path is an argument) and scores instance segmentations of held-out images
against their full ground truth, side by side with the methods a user would
pick instead, all on the same annotations and the same test images:

* split: fixed by file name (``_data.TEST_NAMES``: 10 test images, 39 training);
* annotation: the paper's SPOCO@p, ``keep_fraction_of_objects(p)`` of the objects
  of every training image (at least one per image), for p in ``--fractions``,
  plus a user's background strokes (``simulate_background_scribbles``) in
  each annotated image, for the methods that use them; one draw per seed;
* budget: the paper's comparison of the same number of objects spread over
  many images (one object per image) against one densely annotated image;
* methods: the named entries of :data:`VARIANTS` (``--variants``): SPOCO as
  the product trains it, in the paper's setting, with the discriminative loss
  only, a random forest and Otsu thresholding (see ``_baselines.py``);
* scale: everything runs where the product trains, the image resized so the
  annotated objects' median diameter becomes 24 px (the "auto" object size);
  instances are resized back and scored at full resolution;
* budget of a SPOCO run: ``--iterations`` steps of ``--batch-size`` patches of
  ``--patch``² on the CPU, the same for every run (wall time printed);
* scores: mean over test images of AP@0.5, mAP (IoU 0.50:0.95), SBD, |DiC| and
  the adapted Rand error (scikit-image's convention: gt background ignored,
  0 = perfect), then mean ± sd over seeds.

Usage::

    python benchmarks/accuracy.py PATH/TO/coelho2009_nih3t3 [--docs docs/benchmarks.md]
    python benchmarks/accuracy.py --sample --quick   # smoke test on the bundled image

Writes JSON (``--out``), a plot of AP@0.5 against annotated objects
(``--plot``) and, with ``--docs``, replaces the results block of that
Markdown file. ``--quick`` checks that the script works; its numbers say
nothing about the methods.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import _baselines  # noqa: E402
from _data import (  # noqa: E402
    BACKGROUND_ID,
    add_data_arguments,
    check_data_arguments,
    data_name,
    load_split,
    markdown_table,
    print_table,
    write_json,
)

FRACTIONS = (0.01, 0.05, 0.1, 0.4, 1.0)
SCORES = ("ap50", "map", "sbd", "abs_dic", "arand")
SCORE_NAMES = {"ap50": "AP@0.5", "map": "mAP", "sbd": "SBD", "abs_dic": "|DiC|", "arand": "ARand"}
RESULTS = Path(__file__).parent / "results"
DOCS_IMAGES = Path(__file__).parents[1] / "docs" / "images"

#: Loss weights of the paper's ablation: pull, push and regulariser only.
DISC_ONLY = {"instance_weight": 0.0, "unlabeled_push_weight": 0.0, "consistency_weight": 0.0}


@dataclass(frozen=True)
class Variant:
    """One method of the comparison; a new ablation is one more entry in :data:`VARIANTS`.

    ``loss``, ``model`` and ``segment`` override fields of ``LossConfig``, the
    product's ``model_config_for(2, 1, heads=heads)`` and ``SegmentConfig``.
    ``scribbles``: the method sees the background strokes (as background id).
    ``start``: a built-in model to fine-tune instead of a new network, for
    ``iterations`` steps (None: ``--iterations``; 0: not trained at all, and
    the model measures each test image's object size itself, as a user who
    paints nothing gets it) or for ``seconds`` of wall time; ``learning_rate``
    None is the product's (a tenth of a new network's when fine-tuning).
    ``measured_size``: the fine-tuned model predicts each test image at the size
    the untrained start model measures in it, not at the painted objects' scale.
    """

    method: str = "spoco"  # "spoco", "rf" or "otsu"
    scribbles: bool = True
    heads: bool = True
    loss: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    segment: dict = field(default_factory=dict)
    start: str | None = None
    iterations: int | None = None
    seconds: float | None = None
    learning_rate: float | None = None
    measured_size: bool = False
    about: str = ""

    @property
    def zero_shot(self) -> bool:
        return self.start is not None and self.iterations == 0

    @property
    def own_size(self) -> bool:
        """Each test image is predicted at a measured size, at full resolution."""
        return self.zero_shot or self.measured_size


VARIANTS: dict[str, Variant] = {
    "spoco": Variant(
        about="as the product trains: foreground and distance heads, background scribbles"
    ),
    "spoco_no_scribbles": Variant(
        scribbles=False, about="the paper's setting: objects only (heads learn from ring negatives)"
    ),
    "disc_only": Variant(
        heads=False, loss=DISC_ONLY, about="pull + push + regulariser only, no heads; scribbles"
    ),
    "disc_only_no_scribbles": Variant(
        scribbles=False, heads=False, loss=DISC_ONLY, about="the paper's ablation, objects only"
    ),
    # The ablation of the optional extensions (docs/benchmarks.md, "Extensions").
    "spoco_base": Variant(
        model={"distance_head": False}, about="foreground head only: SPOCO without extensions"
    ),
    "spoco_triplet": Variant(
        model={"distance_head": False},
        loss={"triplet_weight": 1.0},
        about="base + identity-aware triplet term",
    ),
    "spoco_dispersive": Variant(
        model={"distance_head": False},
        loss={"dispersive_weight": 0.1},
        about="base + dispersive regulariser",
    ),
    "spoco_all": Variant(
        loss={"triplet_weight": 1.0, "dispersive_weight": 0.1},
        about="base + triplet + dispersive + distance head",
    ),
    "generalist_zero_shot": Variant(
        start="nuclei", iterations=0, about="the nuclei generalist, nothing painted, own size"
    ),
    "generalist_150": Variant(
        start="nuclei", iterations=150, about="the nuclei generalist fine-tuned for 150 steps"
    ),
    "generalist_150_measured": Variant(
        start="nuclei",
        iterations=150,
        measured_size=True,
        about="150 steps; each test image at the size the generalist measures in it",
    ),
    "generalist_2min": Variant(
        start="nuclei",
        seconds=120.0,
        about="the nuclei generalist fine-tuned for 2 minutes of wall time (constant lr)",
    ),  # fmt: skip
    # The fine-tuning recipe's learning rate, chosen with --holdout (docs/benchmarks.md).
    "generalist_150_lr3e-4": Variant(
        start="nuclei", iterations=150, learning_rate=3e-4, about="150 steps at lr 3e-4"
    ),
    "generalist_150_lr1e-3": Variant(
        start="nuclei", iterations=150, learning_rate=1e-3, about="150 steps at lr 1e-3"
    ),
    "generalist_150_no_consistency": Variant(
        start="nuclei",
        iterations=150,
        loss={"consistency_weight": 0.0},
        about="150 steps without the consistency term (no teacher forward)",
    ),
    "rf": Variant(method="rf", about="random forest on multiscale features, watershed"),
    "otsu": Variant(method="otsu", scribbles=False, about="top-hat, Otsu, watershed; no training"),
}
DEFAULT_VARIANTS = ("spoco", "disc_only", "rf", "otsu")


@dataclass
class Annotation:
    """One simulated user's annotation of the training images."""

    setting: str  # "p=0.1", "dense" or "spread"
    seed: int
    objects: list[np.ndarray]  # per training image: object ids, 0 elsewhere
    scribbles: list[np.ndarray]  # per training image: background strokes (bool)
    fraction: float | None = None

    def labels(self, *, scribbles: bool) -> tuple[list[int], list[np.ndarray]]:
        """Indices of the annotated images and their labels (strokes as BACKGROUND_ID)."""
        used = [i for i, o in enumerate(self.objects) if o.any()]
        labels = [
            np.where(self.scribbles[i] & (self.objects[i] == 0), BACKGROUND_ID, self.objects[i])
            if scribbles
            else self.objects[i]
            for i in used
        ]
        return used, [label.astype(np.int32) for label in labels]

    @property
    def n_objects(self) -> int:
        return sum(len(np.unique(o)) - 1 for o in self.objects)

    def diameter(self) -> float:
        """The product's automatic object size: median of per-image median diameters."""
        from napari_spoco.core.annotation import median_object_diameter

        values = [median_object_diameter(o) for o in self.objects if o.any()]
        return float(np.median(values))

    def scale(self) -> float:
        """Resize factor the product derives from the painted objects (as panel and CLI do)."""
        from napari_spoco.core.annotation import object_scale_from_annotations

        return object_scale_from_annotations(self.objects)


def background_strokes(
    truth: list[np.ndarray], objects: list[np.ndarray], seed: int
) -> list[np.ndarray]:
    """A user's background strokes in every image that has painted objects."""
    from napari_spoco.core.annotation import simulate_background_scribbles

    return [
        simulate_background_scribbles(t, seed=seed * 1000 + i)
        if o.any()
        else np.zeros(t.shape, bool)
        for i, (t, o) in enumerate(zip(truth, objects, strict=True))
    ]


def sweep_annotation(truth: list[np.ndarray], fraction: float, seed: int) -> Annotation:
    """SPOCO@p: ``fraction`` of the objects of every image (at least one)."""
    from napari_spoco.core.annotation import keep_fraction_of_objects

    objects = [
        keep_fraction_of_objects(t, fraction, seed=seed * 1000 + i) for i, t in enumerate(truth)
    ]
    return Annotation(
        f"p={fraction:g}", seed, objects, background_strokes(truth, objects, seed), fraction
    )


def budget_annotations(truth: list[np.ndarray], seed: int) -> list[Annotation]:
    """One random image fully annotated, and as many objects spread one per image.

    The spread arm visits the images in random order and takes one random
    object from each, round after round, until it has as many as the dense
    image holds (the paper: 16 objects over 16 images vs one dense image).
    """
    rng = np.random.default_rng(10_000 + seed)
    dense_index = int(rng.integers(len(truth)))
    dense = [t if i == dense_index else np.zeros_like(t) for i, t in enumerate(truth)]
    count = len(np.unique(truth[dense_index])) - 1
    remaining = [list(rng.permutation(np.unique(t)[1:])) for t in truth]
    chosen: list[list[int]] = [[] for _ in truth]
    order = rng.permutation(len(truth))
    while sum(map(len, chosen)) < count and any(remaining):
        for i in order:
            if remaining[i] and sum(map(len, chosen)) < count:
                chosen[i].append(remaining[i].pop())
    spread = [np.where(np.isin(t, c), t, 0) for t, c in zip(truth, chosen, strict=True)]
    return [
        Annotation("dense", seed, dense, background_strokes(truth, dense, seed)),
        Annotation("spread", seed, spread, background_strokes(truth, spread, seed)),
    ]


def spoco_trainer(  # noqa: ANN201
    variant: Variant, labels: list[np.ndarray], args: argparse.Namespace, seed: int, iterations: int
):
    """The product's Trainer (by the core's recipe) for ``variant`` on ``labels``, and its start.

    Strokes in ``labels`` are :data:`BACKGROUND_ID` when the variant uses them.
    """
    from napari_spoco.core.pretrained import load_model_source
    from napari_spoco.core.recipe import train_config
    from napari_spoco.core.training import Trainer

    start = load_model_source(variant.start) if variant.start else None
    config = train_config(
        labels, spatial_dims=2, channels=1, start=start, heads=variant.heads,
        background_id=BACKGROUND_ID if variant.scribbles else None, loss=variant.loss,
        iterations=max(iterations, 1), patch_shape=(args.patch, args.patch),
        batch_size=args.batch_size, seed=seed, learning_rate=variant.learning_rate,
    )  # fmt: skip
    if variant.model:  # an ablation of the new network's outputs
        config = replace(config, model=replace(config.model, **variant.model))
    return Trainer(config, device="cpu", checkpoint=start), start


def _augment(args: argparse.Namespace) -> bool:
    """Whether SPOCO's predictions average the eight orientations (``--augment``)."""
    from napari_spoco.core.prediction import augment_or_default
    from napari_spoco.core.settings import AUGMENT_CHOICES

    return augment_or_default(AUGMENT_CHOICES[args.augment], spatial_dims=2)


def _train_spoco(variant: Variant, images, labels, scale, args, seed):  # noqa: ANN001, ANN202
    """Train as the product does; return a work-scale segmenter and the steps run."""
    from napari_spoco.core.checkpoint import network_from_checkpoint
    from napari_spoco.core.config import SegmentConfig
    from napari_spoco.core.prediction import predict
    from napari_spoco.core.segmentation import prediction_scale, segment_prediction

    augment = _augment(args)
    iterations = args.iterations if variant.iterations is None else variant.iterations
    seconds = variant.seconds
    if args.quick:  # the smoke test checks the path, not the budget
        iterations = min(iterations, args.iterations)
        seconds = seconds and min(seconds, 5.0)
    if seconds is not None:
        iterations = 100_000  # stopped by the clock; the schedule stays near its peak
    trainer, start = spoco_trainer(variant, labels, args, seed, iterations)
    # Test images are resized by ``scale``: the product must have trained at the same.
    assert np.isclose(trainer.config.object_scale, scale), (trainer.config.object_scale, scale)
    config = trainer.config
    segment_config = SegmentConfig(**variant.segment)
    if variant.zero_shot:
        network = trainer.model.eval()

        def measure_and_segment(image: np.ndarray) -> np.ndarray:
            own = prediction_scale(network, start.config, image)
            prediction = predict(
                network, image, loss=start.config.loss, object_scale=own, augment=augment
            )
            return segment_prediction(prediction, segment_config, seed=seed)

        return measure_and_segment, 0
    trainer.set_data(images, labels)
    began = time.perf_counter()

    def stop_on_time(record: object) -> None:
        if seconds is not None and time.perf_counter() - began > seconds:
            trainer.request_stop()

    trainer.run(callback=stop_on_time)
    steps = trainer.step - (start.step if start else 0)

    def segment(work_image: np.ndarray) -> np.ndarray:
        prediction = predict(trainer.model, work_image, loss=config.loss, augment=augment)
        return segment_prediction(prediction, segment_config, seed=seed)

    if variant.measured_size:
        untrained = network_from_checkpoint(start).eval()

        def segment_at_measured_size(image: np.ndarray) -> np.ndarray:
            own = prediction_scale(untrained, start.config, image)
            prediction = predict(
                trainer.model, image, loss=config.loss, object_scale=own, augment=augment
            )
            return segment_prediction(prediction, segment_config, seed=seed)

        return segment_at_measured_size, steps
    return segment, steps


def baseline_segmenter(
    method: str,
    images: list[np.ndarray],
    labels: list[np.ndarray],
    scale: float,
    work_diameter: float,
    args: argparse.Namespace,
    seed: int,
) -> Callable[[np.ndarray], np.ndarray]:
    """Fit the random forest (``"rf"``) or set up Otsu; return a work-scale segmenter."""
    if method == "otsu":
        return lambda image: _baselines.otsu_instances(image, work_diameter)
    settings = _baselines.ForestSettings(trees=args.trees, threads=args.threads)
    forest = _baselines.fit_random_forest(
        [_baselines.work_image(image, scale) for image in images],
        [_baselines.work_labels(label, scale) for label in labels],
        settings,
        seed,
    )
    return lambda image: _baselines.random_forest_instances(forest, image, work_diameter, settings)


def _over_truth(truth: np.ndarray, instances: np.ndarray) -> dict:
    """Predicted over true foreground area and instance count: which way a method errs."""
    objects = len(np.unique(truth)) - 1
    return {
        "foreground_ratio": float((instances > 0).sum() / max(1, (truth > 0).sum())),
        "count_ratio": float(len(np.unique(instances)) - 1) / max(1, objects),
    }


#: Zero-shot scores per (variant, seed): they do not depend on the annotation.
_ZERO_SHOT_SCORES: dict[tuple[str, int], list[dict]] = {}


def run_method(name: str, annotation: Annotation, train, test, args) -> dict:  # noqa: ANN001
    """Fit one variant on one annotation and score it on every test image."""
    from napari_spoco.core.metrics import evaluate

    variant = VARIANTS[name]
    cached = _ZERO_SHOT_SCORES.get((name, annotation.seed)) if variant.zero_shot else None
    used, labels = annotation.labels(scribbles=variant.scribbles)
    scale, diameter = annotation.scale(), annotation.diameter()
    work_diameter = diameter * scale
    start, steps = time.perf_counter(), 0
    if variant.method == "spoco":
        images = [train[i][0] for i in used]
        segment, steps = _train_spoco(variant, images, labels, scale, args, annotation.seed)
    else:
        images = [train[i][0] for i in used]
        segment = baseline_segmenter(
            variant.method, images, labels, scale, work_diameter, args, annotation.seed
        )

    fit_seconds = time.perf_counter() - start
    start, per_image = time.perf_counter(), list(cached or [])
    for image, truth in [] if cached else test:
        if variant.own_size:  # it picks its own scale, at full resolution
            instances = segment(image)
        else:
            instances = _baselines.to_full_resolution(
                segment(_baselines.work_image(image, scale)), truth.shape
            )
        per_image.append({**evaluate(truth, instances), **_over_truth(truth, instances)})
    if variant.zero_shot:
        _ZERO_SHOT_SCORES[(name, annotation.seed)] = per_image
    return {
        "variant": name,
        "setting": annotation.setting,
        "fraction": annotation.fraction,
        "seed": annotation.seed,
        "objects": annotation.n_objects,
        "annotated_images": len(used),
        "diameter": diameter,
        "scale": scale,
        "steps": steps,
        # Rows reused from runs before the option existed lack it: not augmented.
        "augment": _augment(args) if variant.method == "spoco" else None,
        "fit_seconds": fit_seconds,
        "segment_seconds": time.perf_counter() - start,
        **{k: float(np.mean([s[k] for s in per_image])) for k in SCORES},
        "per_image": per_image,
    }


def summarise(
    rows: list[dict], keys: tuple[str, ...] = (*SCORES, "objects", "fit_seconds")
) -> list[dict]:
    """Mean and sd of ``keys`` over seeds per (setting, variant), in the order first seen."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["setting"], row["variant"]), []).append(row)
    summary = []
    for (setting, variant), group in groups.items():
        entry = {"setting": setting, "variant": variant, "seeds": len(group)}
        for key in keys:
            values = [r[key] for r in group]
            entry[key] = float(np.mean(values))
            entry[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def table(summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the results table (mean ± sd over seeds)."""
    columns = ["annotation", "objects", "method", *(SCORE_NAMES[k] for k in SCORES), "fit s"]
    rows = [
        [
            s["setting"],
            f"{s['objects']:.0f}",
            s["variant"],
            *(
                f"{s[k]:.1f} ± {s[k + '_sd']:.1f}"
                if k == "abs_dic"
                else f"{s[k]:.3f} ± {s[k + '_sd']:.3f}"
                for k in SCORES
            ),
            f"{s['fit_seconds']:.0f}",
        ]
        for s in summary
    ]
    return columns, rows


#: The arms the targets are about (each against the forest), and the zero-shot reference.
ZERO_SHOT = "generalist_zero_shot"
TARGET_ARMS = ("spoco", ZERO_SHOT, "generalist_150", "generalist_2min")
MARGIN_OVER_BASELINE = 0.10


def verdict(summary: list[dict], baseline: str = "rf") -> str:
    """The targets, one line each, at every p <= 0.1.

    Each of :data:`TARGET_ARMS` should beat ``baseline`` by
    :data:`MARGIN_OVER_BASELINE` AP@0.5; at p = 0.1 a fine-tuned generalist
    should beat its own zero-shot score by more than the larger of the two
    seed spreads (sd).
    """
    by_key = {(s["setting"], s["variant"]): s for s in summary}

    def score(entry: dict) -> str:
        return f"{entry['ap50']:.3f} ± {entry['ap50_sd']:.3f}"

    lines = []
    for (setting, variant), ours in by_key.items():
        if variant not in TARGET_ARMS or not setting.startswith("p="):
            continue
        if float(setting[2:]) > 0.1:
            continue
        theirs = by_key.get((setting, baseline))
        if theirs is not None:
            margin = ours["ap50"] - theirs["ap50"]
            met = margin >= MARGIN_OVER_BASELINE
            lines.append(
                f"- {setting} ({ours['objects']:.0f} objects): {variant} {score(ours)} vs "
                f"{baseline} {score(theirs)}: {margin:+.3f}, target "
                f"+{MARGIN_OVER_BASELINE:.2f} **{'met' if met else 'missed'}**"
            )
        zero = by_key.get((setting, ZERO_SHOT))
        if zero is not None and variant not in ("spoco", ZERO_SHOT) and float(setting[2:]) == 0.1:
            gain, spread = ours["ap50"] - zero["ap50"], max(ours["ap50_sd"], zero["ap50_sd"])
            lines.append(
                f"- {setting}: {variant} vs zero-shot {score(zero)}: {gain:+.3f}, "
                f"seed spread {spread:.3f}: **{'met' if gain > spread else 'missed'}**"
            )
    return "\n".join(lines)


def plot(summary: list[dict], path: Path, title: str) -> None:
    """AP@0.5 against the number of annotated objects: a line per method, budget arms as marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    colours: dict[str, str] = {}
    for variant in dict.fromkeys(s["variant"] for s in summary):
        sweep = [s for s in summary if s["variant"] == variant and s["setting"].startswith("p=")]
        if sweep:
            line = axes.errorbar(
                [s["objects"] for s in sweep],
                [s["ap50"] for s in sweep],
                yerr=[s["ap50_sd"] for s in sweep],
                marker="o",
                capsize=3,
                label=variant,
            )
            colours[variant] = line[0].get_color()
        for setting, marker in (("dense", "s"), ("spread", "^")):
            arm = [s for s in summary if s["variant"] == variant and s["setting"] == setting]
            for s in arm:
                axes.errorbar(
                    s["objects"], s["ap50"], yerr=s["ap50_sd"], marker=marker, markersize=9,
                    color=colours.get(variant), fillstyle="none" if setting == "dense" else "full",
                    linestyle="none", capsize=3, label=f"{variant}, {setting}",
                )  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel("annotated objects (all training images)")
    axes.set_ylabel("AP@0.5 on the test images")
    axes.set_ylim(0, 1)
    axes.set_title(textwrap.fill(title, 110), fontsize=8)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over data
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path}")


def update_docs(path: Path, block: str, marker: str = "accuracy") -> None:
    """Replace the text between ``<!-- {marker}:start -->`` and ``<!-- {marker}:end -->``."""
    text = path.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{start}\n{block}\n{end}{tail}")
    print(f"updated {path}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget-variants", nargs="*", default=["spoco", "rf"], choices=VARIANTS)
    parser.add_argument("--iterations", type=int, default=150, help="SPOCO steps per run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument(
        "--augment", choices=("auto", "on", "off"), default="auto",
        help="SPOCO predictions averaged over eight orientations (auto: as the product, on in 2D)",
    )  # fmt: skip
    parser.add_argument("--trees", type=int, default=100, help="random-forest trees")
    parser.add_argument("--threads", type=int, default=2, help="torch and forest threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    parser.add_argument("--plot", type=Path, default=DOCS_IMAGES / "benchmark_accuracy.png")
    parser.add_argument("--reuse", type=Path, help="earlier JSON: reuse its matching runs")
    parser.add_argument(
        "--holdout",
        action="store_true",
        help="score on the last 10 training images, never the test images: for choosing settings",
    )
    parser.add_argument("--docs", type=Path, help="Markdown file whose results block to replace")
    parser.add_argument(
        "--block", default="accuracy", help="name of that block (<!-- NAME:start --> ... end)"
    )
    args = parser.parse_args(argv)
    check_data_arguments(parser, args)
    if args.quick:
        args.iterations, args.batch_size, args.patch, args.trees = 2, 2, 64, 10
        args.seeds, args.fractions = args.seeds[:1], [0.5]
    return args


def _reusable_rows(args: argparse.Namespace) -> dict[tuple[str, str, int], dict]:
    """Rows of ``--reuse`` (an earlier run on the same data and budget), by run.

    A run is deterministic given its variant, annotation and seed, so the
    ablation reuses the product variant's rows of the main run instead of
    training it again.
    """
    if args.reuse is None:
        return {}
    report = json.loads(args.reuse.read_text())
    budget = ("iterations", "batch_size", "patch", "sample", "quick", "holdout")
    if report["data"] != data_name(args) or any(
        report["settings"].get(key, False) != getattr(args, key) for key in budget
    ):
        raise SystemExit(f"{args.reuse} was measured on other data or with another budget")
    return {(r["variant"], r["setting"], r["seed"]): r for r in report["results"]}


def main(argv: list[str] | None = None) -> int:
    """Run every (annotation, method) pair, print the table, write JSON, plot and docs."""
    args = _parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    train, test, train_names, test_names = load_split(args.data, sample=args.sample)
    if args.holdout:
        train, test, train_names, test_names = (
            train[:-10],
            train[-10:],
            train_names[:-10],
            train_names[-10:],
        )
    if args.quick:
        train, test, train_names, test_names = train[:3], test[:1], train_names[:3], test_names[:1]
    truth = [labels for _, labels in train]
    jobs = [
        (sweep_annotation(truth, fraction, seed), args.variants)
        for fraction in args.fractions
        for seed in args.seeds
    ]
    if args.budget_variants:
        jobs += [
            (a, args.budget_variants)
            for seed in args.seeds
            for a in budget_annotations(truth, seed)
        ]
    n_spoco = sum(VARIANTS[v].method == "spoco" for _, names in jobs for v in names)
    print(
        f"{len(train)} training / {len(test)} test images; {n_spoco} SPOCO runs of "
        f"{args.iterations} steps x {args.batch_size} x {args.patch}^2 on the CPU "
        f"({args.threads} threads), {sum(len(n) for _, n in jobs) - n_spoco} baseline runs"
    )
    reused = _reusable_rows(args)
    started, rows = time.perf_counter(), []
    for annotation, names in jobs:
        for name in names:
            row = reused.get((name, annotation.setting, annotation.seed))
            if row is None:
                row = run_method(name, annotation, train, test, args)
            rows.append(row)
            print(
                f"{row['setting']:8s} seed {row['seed']}  {name:22s} objects {row['objects']:5d}  "
                + "  ".join(f"{k} {row[k]:.3f}" for k in SCORES)
                + f"  fit {row['fit_seconds']:.0f} s",
                flush=True,
            )
    wall = time.perf_counter() - started
    summary = summarise(rows)
    columns, body = table(summary)
    print(f"\nmean ± sd over seeds {args.seeds}, test images; wall time {wall / 60:.1f} min")
    print_table(columns, body)
    ruling = verdict(summary)
    print(ruling)
    budget = (
        f"{args.iterations} steps x {args.batch_size} patches of {args.patch}² per SPOCO run, "
        f"CPU, {args.threads} threads; {len(train)} training / {len(test)} test images; "
        f"seeds {args.seeds}; wall time of the whole run {wall / 60:.1f} min"
    )
    plot(summary, args.plot, budget)
    write_json(
        args.out,
        {
            "benchmark": "accuracy",
            "data": data_name(args),
            "train_images": train_names,
            "test_images": test_names,
            "settings": {
                k: v for k, v in vars(args).items() if k not in ("out", "plot", "docs", "reuse")
            },
            "variants": {
                n: VARIANTS[n].__dict__ for n in dict.fromkeys(args.variants + args.budget_variants)
            },
            "wall_seconds": wall,
            "results": rows,
            "summary": summary,
        },
    )
    if args.docs:
        command = " ".join(["python", *[str(a) for a in sys.argv]])
        block = (
            f"Command: `{command}` ({budget}).\n\n"
            + markdown_table(columns, body)
            + f"\n\n![AP@0.5 against annotated objects](images/{args.plot.name})"
            + (f"\n\nTargets at p ≤ 0.1 (AP@0.5, mean ± sd over seeds):\n\n{ruling}"
               if ruling else "")
        )  # fmt: skip
        update_docs(args.docs, block, args.block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
