"""Command line: ``napari-spoco demo`` (and ``python -m napari_spoco``).

A thin adapter: it parses arguments, builds the core's config objects, runs
the core and reports failures as one line with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("napari_spoco")


def _demo(args: argparse.Namespace) -> None:
    """Train on the bundled nuclei sample from a sparse annotation, segment it, score it."""
    import numpy as np
    import tifffile
    from skimage.io import imsave

    from .core.annotation import keep_fraction_of_objects
    from .core.clustering import segment
    from .core.config import TrainConfig
    from .core.metrics import evaluate
    from .core.prediction import predict_image
    from .core.sample_data import load_nuclei_2d
    from .core.training import Trainer
    from .core.visualize import embeddings_to_rgb

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, ground_truth = load_nuclei_2d()
    annotation = keep_fraction_of_objects(ground_truth, args.fraction, seed=args.seed)
    n_objects = len(np.unique(annotation)) - 1
    logger.info(
        "sample image %s: %d of %d nuclei annotated",
        image.shape,
        n_objects,
        len(np.unique(ground_truth)) - 1,
    )
    config = TrainConfig(iterations=args.iterations, patch_shape=(128, 128), seed=args.seed)
    trainer = Trainer(config, device=args.device)
    trainer.set_data([image], [annotation])

    def report(record) -> None:
        if record.step % 25 == 0 or record.step == args.iterations:
            logger.info(
                "step %4d  loss %.3f  %.2f s/step",
                record.step,
                record.losses["total"],
                record.seconds_per_step,
            )

    trainer.run(callback=report, checkpoint_path=out / "model.pt")
    embeddings = predict_image(
        trainer.model, image, object_scale=config.object_scale, device=trainer.device
    )
    instances = segment(embeddings, foreground="auto")
    scores = evaluate(ground_truth, instances)
    logger.info(
        "%d instances (ground truth: %d); AP@0.5 %.3f, SBD %.3f, |DiC| %d",
        instances.max(), len(np.unique(ground_truth)) - 1, scores["ap50"], scores["sbd"],
        scores["abs_dic"],
    )  # fmt: skip
    tifffile.imwrite(out / "instances.tif", instances)
    (out / "scores.json").write_text(json.dumps(scores, indent=1))
    tifffile.imwrite(out / "annotation.tif", annotation)
    imsave(out / "embeddings_rgb.png", (embeddings_to_rgb(embeddings) * 255).astype(np.uint8))
    (out / "history.json").write_text(json.dumps(trainer.history, indent=1))
    logger.info("wrote model, annotation, embeddings, instances, scores and history to %s", out)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-spoco", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train on the bundled sample with 10 %% of nuclei annotated"
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--iterations", type=int, default=300, help="training steps (default: 300)")
    demo.add_argument("--fraction", type=float, default=0.1, help="share of nuclei annotated")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--device", default="auto", help="cuda:N, mps, cpu or auto")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        args.handler(args)
    except (ValueError, TypeError, FileNotFoundError, OSError) as error:
        print(f"napari-spoco {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
