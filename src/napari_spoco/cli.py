"""Command line: ``napari-spoco demo`` (and ``python -m napari_spoco``).

A thin adapter: it parses arguments, builds the core's config objects, runs
the core and reports failures as one line with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("napari_spoco")


def _demo(args: argparse.Namespace) -> None:
    """Run the demo on the bundled sample (see :mod:`napari_spoco.demo`)."""
    from .demo import run_demo

    run_demo(
        Path(args.out),
        iterations=args.iterations,
        fraction=args.fraction,
        seed=args.seed,
        device=args.device,
    )


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
