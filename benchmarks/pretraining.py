"""Does self-supervised pretraining help when only 1 % of the objects are annotated?

The paper names consistency-only pretraining as future work; ``napari-spoco
pretrain`` offers it. This script measures it on the NIH3T3 nuclei of Coelho et
al. (ISBI 2009), a folder with ``images/*.tif`` and ``labels/*.tif``:

* split: the fixed split of ``_data.TEST_NAMES`` (the last 10 images by file
  name are the test set, the rest the training set), shared by all benchmarks;
* annotation: ``--fraction`` (default 1 %) of all training objects, drawn at
  random over all training images (the paper's "spread over many images");
* arm ``scratch``: a new network trained on those annotations;
* arm ``pretrained``: the same network first pretrained with the consistency
  term only on the (unlabeled) training images, then trained on the same
  annotations with the same settings and learning rate;
* both: images resized to the reference object size (``--object-size``,
  nuclei are about 94 px across), scored on the test images with the
  default segmentation (mutex watershed), per seed.

Usage::

    python benchmarks/pretraining.py PATH/TO/coelho2009_nih3t3 [--quick] [--seeds 0 1 2]
    python benchmarks/pretraining.py --sample --quick   # smoke test on the bundled image

``--quick`` runs a tiny configuration to check that the script works; it
says nothing about the method. ``--sample`` reads tiles of the bundled
nuclei image instead of the NIH3T3 folder. Results go to ``benchmarks/results/pretraining.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _data import (  # noqa: E402
    add_data_arguments,
    check_data_arguments,
    data_name,
    keep_objects_across_images,
    load_split,
)

ARMS = ("scratch", "pretrained")
SCORES = ("sbd", "ap50", "map", "abs_dic", "arand")


def _config(args: argparse.Namespace, seed: int, iterations: int, *, pretraining: bool):
    from napari_spoco.core.config import (
        LossConfig,
        ModelConfig,
        TrainConfig,
        object_scale_for_diameter,
    )
    from napari_spoco.core.recipe import MODEL_PRESETS, pretraining_loss

    loss = pretraining_loss() if pretraining else LossConfig()
    return TrainConfig(
        model=ModelConfig(**MODEL_PRESETS[args.size]),
        loss=loss,
        iterations=iterations,
        batch_size=args.batch_size,
        patch_shape=(args.patch, args.patch),
        learning_rate=args.lr,
        object_scale=object_scale_for_diameter(args.object_size),
        seed=seed,
    )


def _run_arm(arm, args, train, annotations, test, seed):  # noqa: ANN001, ANN202
    from napari_spoco.core.metrics import evaluate
    from napari_spoco.core.prediction import predict
    from napari_spoco.core.segmentation import segment_prediction
    from napari_spoco.core.training import Trainer

    images = [image for image, _ in train]
    start = time.perf_counter()
    checkpoint = None
    if arm == "pretrained":
        pretrainer = Trainer(
            _config(args, seed, args.pretrain_iterations, pretraining=True), device=args.device
        )
        pretrainer.set_data(images, [np.zeros_like(a) for a in annotations])
        pretrainer.run()
        checkpoint = pretrainer.checkpoint()
    config = _config(args, seed, args.iterations, pretraining=False)
    trainer = Trainer(config, device=args.device, checkpoint=checkpoint)
    trainer.set_data(images, annotations)
    trainer.run()
    scores = []
    for image, truth in test:
        prediction = predict(
            trainer.model,
            image,
            loss=config.loss,
            object_scale=config.object_scale,
            device=trainer.device,
        )
        scores.append(evaluate(truth, segment_prediction(prediction)))
    mean = {key: float(np.mean([s[key] for s in scores])) for key in SCORES}
    return {"arm": arm, "seed": seed, "seconds": time.perf_counter() - start, **mean}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--fraction", type=float, default=0.01, help="share of objects annotated")
    parser.add_argument("--iterations", type=int, default=1000, help="sparse training steps")
    parser.add_argument("--pretrain-iterations", type=int, default=1000, help="pretraining steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--object-size", type=float, default=94.0, help="nuclei diameter, px")
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="same for both arms")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "pretraining.json"
    )
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    check_data_arguments(parser, args)
    train, test, train_names, test_names = load_split(args.data, sample=args.sample)
    if args.quick:
        train, test, train_names, test_names = train[:2], test[:1], train_names[:2], test_names[:1]
        args.iterations, args.pretrain_iterations, args.seeds = 3, 3, args.seeds[:1]
        args.size, args.patch, args.batch_size = "small", 64, 2
    results = []
    for seed in args.seeds:
        truth = [labels for _, labels in train]
        annotations = keep_objects_across_images(truth, fraction=args.fraction, seed=seed)
        annotated = sum(len(np.unique(a)) - 1 for a in annotations)
        for arm in ARMS:
            row = _run_arm(arm, args, train, annotations, test, seed)
            row["annotated_objects"] = annotated
            results.append(row)
            print(f"seed {seed} {arm:10s} " + "  ".join(f"{k} {row[k]:.3f}" for k in SCORES))
    summary = {
        arm: {k: float(np.mean([r[k] for r in results if r["arm"] == arm])) for k in SCORES}
        for arm in ARMS
    }
    print("\nmean over seeds (test images)")
    print(f"{'arm':12s}" + "".join(f"{k:>9s}" for k in SCORES))
    for arm, means in summary.items():
        print(f"{arm:12s}" + "".join(f"{means[k]:9.3f}" for k in SCORES))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = {
        "benchmark": "pretraining",
        "data": data_name(args),
        "train_images": train_names,
        "test_images": test_names,
        "settings": settings,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
        "results": results,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
