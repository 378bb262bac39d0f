"""An annotation session on disk: images, sparse annotations, model and history.

A session is a folder::

    session.json          what is in it (format, version, pairs, model file)
    images/<name>.tif     images that have no file of their own
    annotations/<name>.tif
    model.pt              the current model (napari-spoco model file), if any

Images opened from a file are stored as a reference to that file, not copied.
Saving writes a complete new folder next to the target and swaps it in, so an
interrupted save (or a crash during an autosave) leaves the previous session
intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint

__all__ = [
    "SESSION_FORMAT",
    "SESSION_VERSION",
    "Session",
    "SessionPair",
    "load_session",
    "save_session",
    "update_session",
]

SESSION_FORMAT = "napari-spoco-session"
SESSION_VERSION = 1
_MANIFEST = "session.json"


@dataclass(frozen=True)
class SessionPair:
    """One image and its sparse annotation.

    ``image_source`` is the image's own file, or None when the image is stored
    in the session folder; ``layer`` holds display settings (scale, translate).
    """

    image_name: str
    annotation_name: str
    axes: str
    background_id: int | None = None
    image_source: str | None = None
    layer: dict[str, Any] = field(default_factory=dict)


@dataclass
class Session:
    """A session read back from disk; arrays are loaded eagerly (annotations are small)."""

    pairs: list[SessionPair]
    images: dict[str, NDArray]
    annotations: dict[str, NDArray]
    checkpoint: Checkpoint | None = None


def _file_stem(name: str) -> str:
    """Turn a layer name (which may hold any character) into a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"


def save_session(
    folder: str | os.PathLike,
    pairs: list[SessionPair],
    images: dict[str, NDArray],
    annotations: dict[str, NDArray],
    *,
    checkpoint: Checkpoint | None = None,
) -> Path:
    """Write a session folder atomically and return its path.

    Parameters
    ----------
    folder : path
        Target folder; replaced if it exists.
    pairs : list of SessionPair
        The image/annotation pairs.
    images : dict of str to ndarray
        Pixel data of the images whose ``image_source`` is None, by image name.
    annotations : dict of str to ndarray
        Annotation arrays by annotation name (every pair's annotation).
    checkpoint : Checkpoint, optional
        The current model with its training history.

    Raises
    ------
    ValueError
        If a pair's annotation, or the data of an image without a source, is missing.
    """
    folder = Path(folder)
    for pair in pairs:
        if pair.annotation_name not in annotations:
            raise ValueError(f"no data for annotation {pair.annotation_name!r}")
        if pair.image_source is None and pair.image_name not in images:
            raise ValueError(f"image {pair.image_name!r} has neither a file nor data to save")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _write_contents(staging, pairs, images, annotations, checkpoint, {})
        _swap_in(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _write_tiff(directory: Path, name: str, data: NDArray, *, taken: set[str]) -> str:
    """Write ``data`` under a file name derived from ``name`` (not in ``taken``), atomically."""
    directory.mkdir(exist_ok=True)
    stem, index = _file_stem(name), 1
    relative = f"{directory.name}/{stem}.tif"
    while relative in taken:  # two layer names that map to one file name
        index += 1
        relative = f"{directory.name}/{stem}-{index}.tif"
    taken.add(relative)
    _atomic_tiff(directory.parent / relative, data)
    return relative


def _atomic_tiff(path: Path, data: NDArray) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        tifffile.imwrite(temporary, np.asarray(data), compression="zlib")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def update_session(
    folder: str | os.PathLike,
    pairs: list[SessionPair],
    images: dict[str, NDArray],
    annotations: dict[str, NDArray],
) -> Path:
    """Autosave: rewrite the annotations of a session folder in place, file by file.

    Cheaper than :func:`save_session` for frequent saves: images already in
    the folder are not written again and the model is left as it is. Every
    file is replaced atomically, so a crash leaves each file either old or new.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    known: dict[str, str] = {}
    manifest_path = folder / _MANIFEST
    model = None
    if manifest_path.is_file():
        previous = json.loads(manifest_path.read_text())
        known = {p["image_name"]: p["image_file"] for p in previous["pairs"] if "image_file" in p}
        model = previous.get("model")
    _write_contents(folder, pairs, images, annotations, None, known, model=model)
    return folder


def _write_contents(
    folder: Path,
    pairs: list[SessionPair],
    images: dict[str, NDArray],
    annotations: dict[str, NDArray],
    checkpoint: Checkpoint | None,
    stored_images: dict[str, str],
    *,
    model: str | None = None,
) -> None:
    """Write annotation and image files, the model, and last the manifest that lists them."""
    taken: set[str] = set(stored_images.values())
    manifest_pairs = []
    for pair in pairs:
        entry = asdict(pair)
        entry["annotation_file"] = _write_tiff(
            folder / "annotations", pair.annotation_name, annotations[pair.annotation_name],
            taken=taken,
        )  # fmt: skip
        if pair.image_source is None:
            entry["image_file"] = stored_images.get(pair.image_name) or _write_tiff(
                folder / "images", pair.image_name, images[pair.image_name], taken=taken
            )
        manifest_pairs.append(entry)
    if checkpoint is not None:
        save_checkpoint(folder / "model.pt", checkpoint)
        model = "model.pt"
    manifest = {
        "format": SESSION_FORMAT,
        "version": SESSION_VERSION,
        "pairs": manifest_pairs,
        "model": model,
    }
    handle, temporary = tempfile.mkstemp(prefix=".session.", suffix=".tmp", dir=folder)
    with os.fdopen(handle, "w") as stream:
        json.dump(manifest, stream, indent=1)
    os.replace(temporary, folder / _MANIFEST)


def _swap_in(staging: Path, folder: Path) -> None:
    """Replace ``folder`` by ``staging``; the old folder survives until the new one is in place."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    if not (folder / _MANIFEST).is_file():
        raise ValueError(f"{folder} exists and is not a napari-spoco session; choose another")
    retired = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    os.replace(folder, retired)
    os.replace(staging, folder)
    shutil.rmtree(retired, ignore_errors=True)


def load_session(folder: str | os.PathLike) -> Session:
    """Read a session folder written by :func:`save_session`.

    Images stored by reference are read from their files (TIFF via tifffile,
    anything else via scikit-image).

    Raises
    ------
    FileNotFoundError
        If the folder or a referenced image file does not exist.
    ValueError
        If the folder is not a napari-spoco session or is damaged.
    """
    folder = Path(folder)
    manifest_path = folder / _MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{folder} is not a napari-spoco session (no {_MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{manifest_path} is damaged: {error}") from error
    if manifest.get("format") != SESSION_FORMAT:
        raise ValueError(f"{folder} is not a napari-spoco session")
    if manifest.get("version", 0) > SESSION_VERSION:
        raise ValueError(f"{folder} was written by a newer napari-spoco; please upgrade")
    pairs, images, annotations = [], {}, {}
    for entry in manifest["pairs"]:
        annotation_file = entry.pop("annotation_file")
        image_file = entry.pop("image_file", None)
        pair = SessionPair(**entry)
        annotations[pair.annotation_name] = tifffile.imread(folder / annotation_file)
        if image_file is not None:
            images[pair.image_name] = tifffile.imread(folder / image_file)
        else:
            images[pair.image_name] = _read_image(Path(pair.image_source))
        pairs.append(pair)
    checkpoint = load_checkpoint(folder / manifest["model"]) if manifest.get("model") else None
    return Session(pairs, images, annotations, checkpoint)


def _read_image(path: Path) -> NDArray:
    if not path.exists():
        raise FileNotFoundError(f"the session's image file is missing: {path}")
    if path.suffix.lower() in (".tif", ".tiff"):
        return tifffile.imread(path)
    from skimage.io import imread

    return imread(path)
