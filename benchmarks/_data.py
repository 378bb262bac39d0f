"""Data, annotation and reporting helpers shared by the benchmark scripts.

The accuracy, interactive and pretraining benchmarks all read the NIH3T3 nuclei
of Coelho et al. (ISBI 2009; their IC100 collection): a folder with
``images/*.tif`` and ``labels/*.tif`` (same file names), which the project must
not redistribute, so every script takes its path as an argument. One fixed
split, written here, keeps their numbers comparable. ``--sample`` swaps in tiles
of the bundled 2D nuclei image so that the smoke tests run on a fresh clone
without that folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Test images of the NIH3T3 folder, by file name: the last ten in sorted order (the
#: folder has no ``nih3t3_dna-25``). Every other image is a training image.
TEST_NAMES = tuple(f"nih3t3_dna-{n}.tif" for n in range(40, 50))

#: Label value of simulated background scribbles: above every object id of the data.
BACKGROUND_ID = 1000

Pair = tuple[np.ndarray, np.ndarray]  # (image, dense instance labels), both (Y, X)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The NIH3T3 folder or ``--sample``, and ``--quick``: the same in every data benchmark."""
    parser.add_argument("data", type=Path, nargs="?", help="the coelho2009_nih3t3 folder")
    parser.add_argument("--sample", action="store_true", help="bundled image tiles instead")
    parser.add_argument("--quick", action="store_true", help="tiny run that checks the script")


def check_data_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage message unless exactly one of the folder and ``--sample`` is given."""
    if (args.data is None) == (not args.sample):
        parser.error("give the data folder or --sample (not both)")


def data_name(args: argparse.Namespace) -> str:
    """What the report says the data were: "sample" or the folder."""
    return "sample" if args.sample else str(args.data)


def load_pairs(folder: Path, names: Sequence[str]) -> list[Pair]:
    """Read ``images/NAME`` and ``labels/NAME`` for each name."""
    import tifffile

    return [
        (tifffile.imread(folder / "images" / n), tifffile.imread(folder / "labels" / n))
        for n in names
    ]


def split_names(folder: Path) -> tuple[list[str], list[str]]:
    """Training and test file names of the fixed split (test = :data:`TEST_NAMES`).

    Raises
    ------
    FileNotFoundError
        If the folder lacks a test image: then it is not the NIH3T3 folder.
    """
    names = sorted(p.name for p in (Path(folder) / "images").glob("*.tif"))
    missing = [n for n in TEST_NAMES if n not in names]
    if missing:
        raise FileNotFoundError(
            f"{folder}/images lacks the test images {missing[:3]}...: "
            "expected the coelho2009_nih3t3 folder (images/*.tif, labels/*.tif)"
        )
    return [n for n in names if n not in TEST_NAMES], list(TEST_NAMES)


def sample_split(tile: int = 256) -> tuple[list[Pair], list[Pair], list[str], list[str]]:
    """The bundled 512² nuclei image cut into ``tile``² tiles: all but the last train.

    A stand-in dataset for smoke tests (about 30 nuclei of ~20 px per 256² tile);
    its numbers say nothing about the method.
    """
    from napari_spoco.core.sample_data import load_nuclei_2d

    image, labels = load_nuclei_2d()
    pairs, names = [], []
    for y in range(0, image.shape[0] - tile + 1, tile):
        for x in range(0, image.shape[1] - tile + 1, tile):
            window = (slice(y, y + tile), slice(x, x + tile))
            pairs.append((image[window], labels[window]))
            names.append(f"sample_y{y}_x{x}")
    return pairs[:-1], pairs[-1:], names[:-1], names[-1:]


def load_split(
    folder: Path | None, *, sample: bool = False
) -> tuple[list[Pair], list[Pair], list[str], list[str]]:
    """Training pairs, test pairs and their names: the NIH3T3 folder, or the bundled sample."""
    if sample:
        return sample_split()
    train_names, test_names = split_names(folder)
    return (
        load_pairs(folder, train_names),
        load_pairs(folder, test_names),
        train_names,
        test_names,
    )


def keep_objects_across_images(
    labels: Sequence[np.ndarray], *, seed: int, fraction: float | None = None, count: int = 0
) -> list[np.ndarray]:
    """Keep ``count`` (or ``fraction`` of all) objects, drawn at random over all images at once.

    Unlike the paper's per-image SPOCO@p (``keep_fraction_of_objects``), some
    images may end up with no annotation at all; 0 elsewhere.
    """
    pairs = [(i, k) for i, lab in enumerate(labels) for k in np.unique(lab) if k]
    if fraction is not None:
        count = max(1, round(fraction * len(pairs)))
    chosen = np.random.default_rng(seed).choice(len(pairs), size=count, replace=False)
    keep: dict[int, list[int]] = {}
    for index in chosen:
        image, object_id = pairs[index]
        keep.setdefault(image, []).append(object_id)
    return [np.where(np.isin(lab, keep.get(i, [])), lab, 0) for i, lab in enumerate(labels)]


def machine() -> dict:
    """Python, platform, CPU count and load: what the absolute seconds depend on."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Right-aligned plain-text table on stdout."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table as Markdown, for docs/benchmarks.md (a "|" in a cell escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(columns), "|" + "---|" * len(columns), *map(line, rows)])


def write_json(path: Path, report: dict) -> None:
    """Write ``report`` with the command that produced it and the machine it ran on."""
    report = {"command": " ".join(["python", *sys.argv]), "machine": machine(), **report}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=_plain) + "\n")
    print(f"wrote {path}")


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
