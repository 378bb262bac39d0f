"""An annotation session on disk: images, sparse annotations, model and history.

A session is a folder::

    session.json          what is in it (format, version, pairs, model file)
    images/<name>.tif     images that have no file of their own
    annotations/<name>.tif
    model.pt              the current model (napari-spoco model file), if any

Images opened from a file are stored as a reference to that file, not copied.
A session owns only the files its manifest lists: saving into a session folder
replaces those, one file at a time and atomically, writes the manifest last
and then removes the files the new manifest no longer lists; anything else in
the folder (a raw image the session refers to, notes) is left alone. So an
interrupted save (or a crash during an autosave) leaves a readable session
whose files are each either old or new. A first save writes the whole folder
under a temporary name and renames it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .outputs import atomic_output, remove_stale_temporaries

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

logger = logging.getLogger(__name__)


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
    """Write a session folder and return its path.

    Parameters
    ----------
    folder : path
        Target folder: new, empty, or a session, whose own files are replaced
        (other files in it are kept).
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
        If a pair's annotation, or the data of an image without a source, is
        missing, or ``folder`` holds files but is not a session.
    """
    folder = Path(folder)
    for pair in pairs:
        if pair.annotation_name not in annotations:
            raise ValueError(f"no data for annotation {pair.annotation_name!r}")
        if pair.image_source is None and pair.image_name not in images:
            raise ValueError(f"image {pair.image_name!r} has neither a file nor data to save")
    _recover(folder)
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        folder.rmdir()  # an empty folder is written like a new one
    if not os.path.lexists(folder):
        with atomic_output(folder) as staging:
            staging.mkdir()
            _write_contents(staging, pairs, images, annotations, checkpoint, None)
        return folder
    previous = _read_manifest(folder)
    remove_stale_temporaries(folder)  # staging folders of interrupted first saves
    _write_contents(folder, pairs, images, annotations, checkpoint, previous)
    return folder


def _read_manifest(folder: Path) -> dict[str, Any]:
    """Read the manifest of an existing session folder; refuse folders that are not sessions."""
    manifest_path = folder / _MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{folder} exists and is not a napari-spoco session; choose another")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{manifest_path} is damaged: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != SESSION_FORMAT:
        raise ValueError(f"{folder} is not a napari-spoco session")
    return manifest


def _owned_files(manifest: dict[str, Any] | None) -> set[str]:
    """Files (relative paths) a manifest lists: the only ones a save may replace or remove."""
    if manifest is None:
        return set()
    files = {p[key] for p in manifest.get("pairs", []) for key in ("annotation_file", "image_file")
             if p.get(key)}  # fmt: skip
    return files | ({manifest["model"]} if manifest.get("model") else set())


def _free_name(folder: Path, relative: str, taken: set[str], owned: set[str]) -> str:
    """``relative``, or ``stem-2.ext``, ``stem-3.ext``... : the first name not in use.

    A name is in use if another file of this save took it, or a file the
    session does not own already has it.
    """
    stem, dot, suffix = relative.rpartition(".")
    candidate, index = relative, 1
    while candidate in taken or (os.path.lexists(folder / candidate) and candidate not in owned):
        index += 1
        candidate = f"{stem}-{index}{dot}{suffix}"
    taken.add(candidate)
    return candidate


def _write_tiff(folder: Path, relative: str, data: NDArray) -> str:
    """Write ``data`` to ``folder / relative`` atomically; return ``relative``."""
    with atomic_output(folder / relative) as temporary:
        tifffile.imwrite(temporary, np.asarray(data), compression="zlib")
    return relative


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
    previous = _read_manifest(folder) if (folder / _MANIFEST).is_file() else None
    _write_contents(folder, pairs, images, annotations, None, previous, keep=True)
    return folder


def _write_contents(
    folder: Path,
    pairs: list[SessionPair],
    images: dict[str, NDArray],
    annotations: dict[str, NDArray],
    checkpoint: Checkpoint | None,
    previous: dict[str, Any] | None,
    *,
    keep: bool = False,
) -> None:
    """Write annotation and image files, the model, the manifest; then drop unlisted own files.

    With ``keep``, images already stored and the model of ``previous`` are
    kept as they are (autosave).
    """
    owned = _owned_files(previous)
    stored: dict[str, str] = {}
    model = None
    if keep and previous is not None:
        stored = {p["image_name"]: p["image_file"] for p in previous["pairs"] if "image_file" in p}
        model = previous.get("model")
    taken = set(stored.values()) | ({model} if model else set())
    manifest_pairs = []
    for pair in pairs:
        entry = asdict(pair)
        relative = _free_name(folder, f"annotations/{_file_stem(pair.annotation_name)}.tif",
                              taken, owned)  # fmt: skip
        entry["annotation_file"] = _write_tiff(folder, relative, annotations[pair.annotation_name])
        if pair.image_source is None:
            entry["image_file"] = stored.get(pair.image_name) or _write_tiff(
                folder,
                _free_name(folder, f"images/{_file_stem(pair.image_name)}.tif", taken, owned),
                images[pair.image_name],
            )
        manifest_pairs.append(entry)
    if checkpoint is not None:
        model = _free_name(folder, "model.pt", taken, owned)
        save_checkpoint(folder / model, checkpoint)
    manifest = {
        "format": SESSION_FORMAT,
        "version": SESSION_VERSION,
        "pairs": manifest_pairs,
        "model": model,
    }
    with atomic_output(folder / _MANIFEST) as temporary:  # last: it commits the save
        temporary.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    _remove_unlisted(folder, owned - _owned_files(manifest))


def _remove_unlisted(folder: Path, relatives: set[str]) -> None:
    """Remove files the session wrote earlier and no longer lists (only inside ``folder``)."""
    root = folder.resolve()
    for relative in relatives:
        path = (folder / relative).resolve()
        if path.parent == root or root in path.parents:
            path.unlink(missing_ok=True)


def _recover(folder: Path) -> None:
    """Put back a session that an interrupted swap left only as ``.NAME.old``.

    Older versions saved by renaming the session to ``.NAME.old`` and the new
    one into place; a crash between the two renames left no session at all.
    """
    retired = folder.with_name(f".{folder.name}.old")
    if os.path.lexists(folder) or not (retired / _MANIFEST).is_file():
        return
    os.replace(retired, folder)
    logger.warning("recovered the session %s from %s (a save was interrupted)", folder, retired)


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
    _recover(folder)
    if not (folder / _MANIFEST).is_file():
        raise FileNotFoundError(f"{folder} is not a napari-spoco session (no {_MANIFEST})")
    manifest = _read_manifest(folder)
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
