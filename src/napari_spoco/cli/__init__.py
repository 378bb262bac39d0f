"""Command line: ``napari-spoco COMMAND`` (also ``python -m napari_spoco COMMAND``).

Commands: ``train``, ``pretrain``, ``predict``, ``segment``, ``evaluate``,
``export-bioimageio``, ``import-bioimageio`` and ``demo`` (docs/cli.md).
A thin adapter: it parses arguments, builds the core's config objects, runs
the core and reports failures as one line with a non-zero exit status. The
handlers (``training``, ``prediction``, ``evaluation``) first read and check
all their inputs (``_inputs``), then work, so bad input fails before any output
is written; heavy modules load inside them, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("napari_spoco")

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def _demo(args: argparse.Namespace) -> None:
    """Run the demo on the bundled sample (see :mod:`napari_spoco.demo`)."""
    from ..demo import run_demo

    if not 0 < args.fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {args.fraction}")
    from ..core.device import resolve_device

    resolve_device(args.device)  # an unavailable device fails here, before a window opens
    run_demo(
        Path(args.out),
        iterations=args.iterations,
        fraction=args.fraction,
        seed=args.seed,
        device=args.device,
        headless=args.headless,
    )


def _build_parser() -> argparse.ArgumentParser:
    from ..core.settings import AUGMENT, AUGMENT_CHOICES
    from . import evaluation, prediction, training

    parser = argparse.ArgumentParser(
        prog="napari-spoco",
        description=__doc__.splitlines()[0],
        epilog="@FILE reads arguments from FILE, one per line (e.g. --images @train.txt)",
        fromfile_prefix_chars="@",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on images and sparse annotations")
    _add_images(train)
    train.add_argument(
        "--labels", nargs="+", required=True, metavar="PATH",
        help="sparse annotations, one per image (0 = not annotated, k >= 1 = object k)",
    )  # fmt: skip
    _add_training(train)
    train.add_argument(
        "--from", dest="from_model", metavar="MODEL",
        help="start from this model: a built-in name (nuclei), a .pt file or a bioimage.io "
        "package, learning rate ÷10; 'scratch' builds a new network "
        "(default: the built-in model that reads such images, else a new network)",
    )  # fmt: skip
    train.add_argument(
        "--dense", action="store_true",
        help="the labels are dense ground truth: 0 is background and every object is "
        "labelled; each image is resized so that its median object measures 24 px",
    )  # fmt: skip
    train.add_argument(
        "--vary-object-contrast", type=float, default=0.0, metavar="P",
        help="with --dense: in a share P of the patches, give each object its own contrast "
        "(uneven staining), so that dim objects beside bright ones are found (default: 0)",
    )  # fmt: skip
    train.add_argument(
        "--val-images", nargs="+", metavar="PATH",
        help="held-out images scored (AP@0.5) every --val-every steps: MODEL_validation.json, "
        "and the best model as MODEL_best.pt",
    )  # fmt: skip
    train.add_argument(
        "--val-labels", nargs="+", metavar="PATH", help="dense ground truth of --val-images"
    )
    train.add_argument(
        "--val-every", type=int, default=1000, metavar="N", help="steps between validations"
    )
    train.add_argument(
        "--background-id", type=int, metavar="ID",
        help="label value of background scribbles (default: none)",
    )  # fmt: skip
    train.add_argument(
        "--objects-touch", choices=tuple(training.OBJECTS_TOUCH_CHOICES), default="auto",
        help="whether objects touch: then pixels next to a painted object may be another "
        "object, not background, and training runs longer (default: auto, from painted "
        "objects that share a border)",
    )  # fmt: skip
    _add_extensions(train)
    train.set_defaults(handler=training.train)

    pretrain = commands.add_parser(
        "pretrain", help="self-supervised training (consistency term only) on unlabeled images"
    )
    _add_images(pretrain)
    _add_training(pretrain)
    pretrain.set_defaults(handler=training.pretrain)

    predict = commands.add_parser("predict", help="segment images with a trained model")
    predict.add_argument(
        "--model", required=True,
        help="built-in model name (nuclei), model file (.pt) or bioimage.io package",
    )  # fmt: skip
    _add_images(predict)
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument(
        "--embeddings", action="store_true", help="also write NAME_embeddings.zarr"
    )
    predict.add_argument(
        "--uncertainty", action="store_true",
        help="also write NAME_uncertainty.tif (how unsure the network is of each pixel, 0-1) "
        "and NAME_doubts.csv (the instances ranked by how likely they are wrong, and why)",
    )  # fmt: skip
    predict.add_argument("--device", default="auto", help="cuda:N, mps, cpu or auto")
    predict.add_argument("--tile", type=int, nargs="+", metavar="N", help="tile shape per axis")
    predict.add_argument("--augment", choices=tuple(AUGMENT_CHOICES), default="auto", help=AUGMENT)
    predict.add_argument(
        "--object-size", type=float, metavar="PX",
        help="typical object diameter in pixels (default: the model's training scale; a "
        "built-in generalist measures each image's objects)",
    )  # fmt: skip
    _add_segmentation(predict)
    _add_blocks(predict)
    predict.set_defaults(handler=prediction.predict)

    segment = commands.add_parser("segment", help="cluster saved embeddings into instances")
    segment.add_argument(
        "--embeddings", nargs="+", required=True, metavar="PATH",
        help="NAME_embeddings.zarr written by predict --embeddings",
    )  # fmt: skip
    segment.add_argument("--out", required=True, help="output folder")
    _add_segmentation(segment)
    _add_blocks(segment)
    segment.set_defaults(handler=prediction.segment)

    evaluate = commands.add_parser("evaluate", help="score instances against ground truth")
    evaluate.add_argument("--pred", nargs="+", required=True, metavar="PATH", help="predictions")
    evaluate.add_argument("--gt", nargs="+", required=True, metavar="PATH", help="ground truth")
    evaluate.add_argument("--out", default="scores.csv", help="CSV file (default: scores.csv)")
    evaluate.set_defaults(handler=evaluation.evaluate)

    export = commands.add_parser("export-bioimageio", help="write a model as a bioimage.io zip")
    export.add_argument(
        "--model", required=True, help="model file (.pt) or built-in model name (nuclei)"
    )
    export.add_argument(
        "--test-image", required=True, help="image to cut the test input/output pair from"
    )
    export.add_argument("--out", required=True, help="package to write, e.g. model.zip")
    export.add_argument("--channel-axis", type=int, help="channel axis of the test image")
    export.add_argument("--name", default="napari-spoco embedding model", help="model name")
    export.add_argument("--author", nargs="+", default=["napari-spoco user"], help="author names")
    export.add_argument("--license", default="CC-BY-4.0", help="SPDX licence id")
    export.add_argument(
        "--no-validate", action="store_true", help="skip bioimageio.core's test_model"
    )
    export.set_defaults(handler=evaluation.export_bioimageio)

    imported = commands.add_parser(
        "import-bioimageio", help="turn a napari-spoco bioimage.io package into a model file"
    )
    imported.add_argument("--package", required=True, help="bioimage.io zip, folder or rdf.yaml")
    imported.add_argument("--out", required=True, help="model file to write (.pt)")
    imported.set_defaults(handler=evaluation.import_bioimageio)

    demo = commands.add_parser(
        "demo",
        help="open napari with the sample, segment it with the nuclei generalist, paint 10 %% "
        "of the nuclei, fine-tune and segment again "
        "(--headless: in a hidden viewer, write the results and exit)",
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument(
        "--iterations", type=int, help="training steps (default: the panel's, 150 to fine-tune)"
    )
    demo.add_argument("--fraction", type=float, default=0.1, help="share of nuclei annotated")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--device", default="auto", help="cuda:N, mps, cpu or auto")
    demo.add_argument(
        "--headless",
        action="store_true",
        help="do not show the viewer; write screenshot.png, instances.tif and more to --out "
        "and exit (without a display run it under xvfb-run -a)",
    )
    demo.set_defaults(handler=_demo)
    return parser


def _add_images(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", nargs="+", required=True, metavar="PATH",
        help="TIFF files, zarr / OME-Zarr arrays, or folders of them",
    )  # fmt: skip
    parser.add_argument(
        "--channel-axis", type=int, metavar="AXIS", help="axis holding channels (default: none)"
    )


def _add_training(parser: argparse.ArgumentParser) -> None:
    from ..core.recipe import MODEL_PRESETS

    parser.add_argument("--out", required=True, help="model file to write (.pt)")
    parser.add_argument(
        "--iterations", type=int,
        help="steps of the run (default: 150 when fine-tuning a model, 1000 for a new "
        "network; with --resume, the interrupted run's)",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the run that saved --out (after a stop, a crash or Ctrl-C)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint-every", type=int, default=200, metavar="N",
        help="save --out every N steps, so that --resume loses at most N (default: 200)",
    )  # fmt: skip
    parser.add_argument(
        "--log-every", type=int, default=1, metavar="N",
        help="one training-history row per N steps (averaged; default: 1)",
    )  # fmt: skip
    parser.add_argument(
        "--grey", action="store_true",
        help="read colour (Y, X, 3) images as grey, the mean of R, G and B",
    )  # fmt: skip
    parser.add_argument(
        "--random-invert", type=float, default=0.0, metavar="P",
        help="invert each patch's intensities with probability P, so that the model reads "
        "bright and dark objects alike (default: 0)",
    )  # fmt: skip
    parser.add_argument(
        "--lr",
        type=float,
        help="learning rate (default: 1e-3, fine-tuning 1e-4, a fine-tuned model 3.3e-5)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="patches per step (default: 4)")
    parser.add_argument(
        "--patch", type=int, nargs="+", metavar="N",
        help="patch shape per axis (default: 128 128, or 16 128 128 in 3D)",
    )  # fmt: skip
    parser.add_argument(
        "--object-size", type=float, metavar="PX",
        help="typical object diameter in pixels; images are resized so that objects "
        "measure 24 px (default: the median diameter of the annotated objects)",
    )  # fmt: skip
    parser.add_argument(
        "--size", choices=tuple(MODEL_PRESETS),
        help="train a new network of this size preset (default: medium, when no built-in "
        "model fits the images)",
    )  # fmt: skip
    parser.add_argument(
        "--no-heads", action="store_true",
        help="train the embedding only, without the foreground and inner-distance outputs",
    )  # fmt: skip
    parser.add_argument(
        "--isotropic", action="store_true",
        help="3D: pool Z at the first level like Y and X (for stacks sampled as finely in Z); "
        "by default a new 3D network keeps Z's resolution there, as the panel does",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="cuda:N, mps, cpu or auto")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_extensions(parser: argparse.ArgumentParser) -> None:
    """Add the optional loss terms; unset flags keep the defaults of ``LossConfig``."""
    from ..core.config import LossConfig
    from ..core.settings import LOSS_SETTINGS, choices_of

    group = parser.add_argument_group("optional loss terms (off by default, see docs/method.md)")
    for name in ("triplet_weight", "dispersive_weight", "dispersive_tau"):
        group.add_argument(
            f"--{name.replace('_', '-')}", type=float, metavar="X",
            help=f"{LOSS_SETTINGS[name].tooltip} (default: {getattr(LossConfig, name)})",
        )  # fmt: skip
    group.add_argument(
        "--triplet-margin", type=float, metavar="M", help="triplet margin (default: 2 x delta_d)"
    )
    group.add_argument(
        "--triplet-anchors", type=int, metavar="N",
        help=f"anchor pixels per patch (default: {LossConfig.triplet_anchors})",
    )  # fmt: skip
    group.add_argument(
        "--triplet-on", choices=choices_of(LossConfig, "triplet_on"),
        help="apply the triplet term to the embedding (default) or to a projection of the "
        "deepest encoder features (adds that projection to a new network)",
    )  # fmt: skip
    group.add_argument(
        "--dispersive-on", choices=choices_of(LossConfig, "dispersive_on"),
        help="spread the annotated objects' mean embeddings (default), the pooled deepest "
        "encoder features, or both",
    )  # fmt: skip


def _add_segmentation(parser: argparse.ArgumentParser) -> None:
    from ..core.clustering_methods import CLUSTERING_METHODS, METHODS
    from ..core.config import FOREGROUND_SOURCES, SegmentConfig
    from ..core.settings import SEGMENT_SETTINGS

    defaults = SegmentConfig()
    parser.add_argument(
        "--method", default=METHODS[0], choices=METHODS,
        help="clustering method (default: %(default)s; docs/segmentation.md)",
    )  # fmt: skip
    for method in CLUSTERING_METHODS.values():
        for setting in method.settings:
            parser.add_argument(
                f"--{setting.name.replace('_', '-')}", type=type(setting.default),
                metavar="N" if isinstance(setting.default, int) else "X",
                help=f"{method.name}: {setting.tooltip} (default: {setting.default})",
            )  # fmt: skip
    parser.add_argument(
        "--foreground", default=defaults.foreground, choices=FOREGROUND_SOURCES,
        help="foreground mask from the model's head, the embedding, or none "
        "(default: %(default)s)",
    )  # fmt: skip
    for setting in SEGMENT_SETTINGS.values():
        default = getattr(defaults, setting.name)
        special = f"; {setting.low} = {setting.special}" if setting.special else ""
        parser.add_argument(
            f"--{setting.name.replace('_', '-')}", type=type(setting.step),
            default=setting.low if default is None else default,
            metavar="N" if isinstance(setting.step, int) else "X",
            help=f"{setting.tooltip} (default: {default or setting.special}{special})",
        )  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_blocks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--block-shape", type=int, nargs="+", metavar="N",
        help="work block-wise with these blocks (automatic for zarr and very large images)",
    )  # fmt: skip
    parser.add_argument("--halo", type=int, nargs="+", metavar="N", help="block overlap per axis")
    parser.add_argument("--n-threads", type=int, help="threads of the local dask scheduler")
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="dask.distributed scheduler, e.g. tcp://host:8786"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    from . import training

    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        args.handler(args)
    except training.Stopped as stopped:
        print(f"napari-spoco {args.command}: {stopped}", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, TypeError, FileNotFoundError, OSError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"napari-spoco {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"napari-spoco {args.command}: interrupted; unfinished outputs were removed",
            file=sys.stderr,
        )
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
