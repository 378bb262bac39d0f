"""Read images and write results: TIFF, zarr, OME-Zarr, folders of images.

Every writer here goes through :func:`~napari_spoco.core.outputs.atomic_output`:
an interrupted run never leaves a file that looks finished, and an output
replaces only an earlier output of the same kind, never a user's folder. Readers
report an unreadable file as one ``ValueError`` naming it, whatever library
failed underneath, so front ends can show one line.

Images are opened lazily (:func:`open_image`): a :class:`LazyImage` reads only
the region it is indexed with, from a zarr array, an OME-Zarr image (its
full-resolution level) or a TIFF file (memory-mapped when uncompressed, else
through tifffile's zarr store), so images larger than memory can be
processed block by block. Lazy images pickle by path, so dask.distributed
workers can open them themselves.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import ArrayLike, NDArray

from .outputs import MARKER_KEY, atomic_output, is_zarr_folder
from .prediction import Prediction

__all__ = [
    "IMAGE_SUFFIXES",
    "OUTPUT_SUFFIXES",
    "LazyImage",
    "atomic_output",
    "expand_paths",
    "image_name",
    "instances_attributes",
    "open_image",
    "open_prediction",
    "prediction_attributes",
    "prediction_from_array",
    "prediction_to_array",
    "read_image",
    "write_csv",
    "write_json",
    "write_prediction",
    "read_resolution",
    "write_tiff",
]

#: File name endings read as images; ``.zarr`` folders count as files.
IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr")

#: Attribute of a prediction zarr array that says how its channels are laid out;
#: it also marks the array as napari-spoco's, so that a later run may replace it.
PREDICTION_KEY = MARKER_KEY

#: Name endings of the results ``predict`` writes (``NAME_instances.tif`` ...).
OUTPUT_SUFFIXES = (
    "_instances.tif", "_instances.zarr", "_embeddings.zarr", "_uncertainty.tif", "_doubts.csv"
)  # fmt: skip

logger = logging.getLogger(__name__)


def expand_paths(paths: Sequence[str | os.PathLike], *, skip_outputs: bool = False) -> list[Path]:
    """Replace every folder in ``paths`` by the images in it, sorted by name.

    A ``*.zarr`` folder is one image, not a folder of images. With
    ``skip_outputs``, results of an earlier ``predict`` into the same folder
    (names ending in :data:`OUTPUT_SUFFIXES`) are left out of folders, so a
    rerun does not segment its own outputs; files named explicitly are kept.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If a folder holds no image.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        if path.is_dir() and not is_zarr_folder(path):
            images = sorted(p for p in path.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))
            skipped = [p for p in images if skip_outputs and _is_output_name(p.name)]
            if skipped:
                logger.info(
                    "%s: skipping %d earlier result(s): %s",
                    path, len(skipped), ", ".join(p.name for p in skipped),
                )  # fmt: skip
                images = [p for p in images if p not in skipped]
            if not images:
                also = f"; skipped {len(skipped)} earlier result(s)" if skipped else ""
                raise ValueError(f"{path} holds no image ({', '.join(IMAGE_SUFFIXES)}){also}")
            found.extend(images)
        else:
            found.append(path)
    return found


def _is_output_name(name: str) -> bool:
    return name.lower().endswith(OUTPUT_SUFFIXES)


def image_name(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``C.tif``, ``C.ome.tif``, ``C.ome.zarr`` → ``C``."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


class LazyImage:
    """An image on disk that reads only what it is indexed with.

    Behaves like a read-only array for ``shape``, ``dtype``, ``ndim``,
    ``__getitem__`` (basic slicing) and ``numpy.asarray``; dask wraps it with
    ``dask.array.from_array``. Singleton time/channel axes of OME-Zarr images
    are dropped.

    Attributes
    ----------
    path : Path
        The file or zarr folder.
    axes : str or None
        Axis names from OME-Zarr metadata after dropping singletons (e.g.
        ``"cyx"``), ``None`` when the format does not say.
    """

    def __init__(self, path: Path, dataset: str | None = None, axes: str | None = None) -> None:
        self.path = path
        self._dataset = dataset
        self._array: Any = None
        array = self._open()
        names = axes or ""
        keep = [i for i, n in enumerate(names) if not (n in "tc" and array.shape[i] == 1)]
        self._squeeze = tuple(slice(None) if i in keep else 0 for i in range(array.ndim) if names)
        self.axes = "".join(names[i] for i in keep) if names else None
        self.shape: tuple[int, ...] = tuple(
            s for i, s in enumerate(array.shape) if not names or i in keep
        )
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def _open(self) -> Any:
        if self._array is None:
            if is_zarr_folder(self.path):
                import zarr

                group_or_array = zarr.open(self.path, mode="r")
                self._array = group_or_array[self._dataset] if self._dataset else group_or_array
            else:
                self._array = _open_tiff(self.path)
        return self._array

    def __getitem__(self, key: Any) -> NDArray:
        if not self._squeeze:
            return np.asarray(self._open()[key])
        key = key if isinstance(key, tuple) else (key,)
        full, given = [], iter(key)
        for fixed in self._squeeze:
            full.append(next(given, slice(None)) if isinstance(fixed, slice) else fixed)
        return np.asarray(self._open()[tuple(full)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray:
        array = self[(slice(None),) * self.ndim]
        return array if dtype is None else array.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        # Open file handles do not pickle: a worker reopens the file by path.
        return {**self.__dict__, "_array": None}

    def __dask_tokenize__(self) -> tuple[str, str | None, float]:
        return str(self.path.resolve()), self._dataset, self.path.stat().st_mtime

    def __repr__(self) -> str:
        return f"LazyImage({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


def open_image(path: str | os.PathLike) -> LazyImage:
    """Open an image without reading its pixels.

    Parameters
    ----------
    path : str or path-like
        A TIFF file; a zarr array; a zarr group holding one array; or an
        OME-Zarr image (its first, full-resolution, multiscale level).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it cannot be read as an image, naming the file and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    try:
        if is_zarr_folder(path):
            dataset, axes = _zarr_dataset(path)
            return LazyImage(path, dataset, axes)
        return LazyImage(path)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise ValueError(f"cannot read {path} as an image: {_reason(error)}") from error
    except Exception as error:  # zarr and tifffile raise many library-specific types
        raise ValueError(f"cannot read {path} as an image: {_reason(error)}") from error


def read_image(path: str | os.PathLike) -> NDArray:
    """Read a whole image into memory (see :func:`open_image` for the formats)."""
    image = open_image(path)
    try:
        return np.asarray(image)
    except Exception as error:  # damaged chunks or strips surface only when read
        raise ValueError(f"cannot read {path} as an image: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) < 200 else text[:197] + "..."


def _zarr_dataset(path: Path) -> tuple[str | None, str | None]:
    """Which array of a zarr folder is the image, and its OME axis names if any."""
    import zarr

    node = zarr.open(path, mode="r")
    if isinstance(node, zarr.Array):
        return None, None
    attributes = dict(node.attrs)
    multiscales = attributes.get("ome", attributes).get("multiscales")
    if multiscales:
        first = multiscales[0]
        axes = first.get("axes")
        names = "".join(a["name"] if isinstance(a, dict) else a for a in axes) if axes else None
        return first["datasets"][0]["path"], names.lower() if names else None
    arrays = sorted(name for name, _ in node.arrays())
    if len(arrays) != 1:
        raise ValueError(
            f"the zarr group holds {len(arrays)} arrays ({', '.join(arrays) or 'none'}); "
            "name one as PATH.zarr/ARRAY"
        )
    return arrays[0], None


def _open_tiff(path: Path) -> Any:
    """Memory-map an uncompressed TIFF; otherwise read through tifffile's zarr store."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        contiguous = series.dataoffset is not None
    if contiguous:
        return tifffile.memmap(path, mode="r")
    import zarr

    return zarr.open(tifffile.imread(path, aszarr=True), mode="r")


def read_resolution(path: str | os.PathLike) -> dict[str, Any] | None:
    """Return the pixel size a TIFF records (X and Y pixels per unit, and the unit), or None.

    Results written with :func:`write_tiff` carry it on, so a measurement in a
    result is in the same units as in the image. Other formats give None.
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if "XResolution" not in page.tags:
                return None
            return {"resolution": tuple(page.resolution), "resolutionunit": page.resolutionunit}
    except (OSError, ValueError, tifffile.TiffFileError):
        return None


def write_tiff(
    path: str | os.PathLike, array: ArrayLike, *, resolution: dict[str, Any] | None = None
) -> Path:
    """Write ``array`` as a zlib-compressed TIFF, atomically; return the path.

    ``resolution`` is the input's pixel size, from :func:`read_resolution`.
    """
    path = Path(path)
    with atomic_output(path) as temporary:
        tifffile.imwrite(temporary, np.asarray(array), compression="zlib", **(resolution or {}))
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically; return the path."""
    path = Path(path)
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def write_csv(
    path: str | os.PathLike, rows: Sequence[dict[str, Any]], *, columns: Sequence[str] = ()
) -> Path:
    """Write dicts as CSV rows, atomically.

    Columns: ``columns``, then any other key in first-seen order (so a table with
    no rows still has its header).
    """
    path = Path(path)
    columns = list(dict.fromkeys([*columns, *(key for row in rows for key in row)]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(path) as temporary:
        temporary.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def prediction_attributes(
    embedding_dim: int, heads: Sequence[str], delta_v: float, delta_d: float
) -> dict[str, Any]:
    """Zarr attributes of a saved prediction: channel layout and the model's margins.

    A prediction array holds ``embedding_dim`` embedding channels, then one
    probability map per head, in ``heads`` order.
    """
    layout = {
        "content": "prediction",
        "embedding_dim": int(embedding_dim),
        "heads": list(heads),
        "delta_v": float(delta_v),
        "delta_d": float(delta_d),
    }
    return {PREDICTION_KEY: layout}


def instances_attributes() -> dict[str, Any]:
    """Zarr attributes of saved instances: mark them as napari-spoco's (see ``MARKER_KEY``)."""
    return {PREDICTION_KEY: {"content": "instances"}}


def prediction_to_array(prediction: Prediction) -> NDArray[np.float32]:
    """Stack a prediction's embeddings and head maps into one (C, *spatial) array."""
    maps = [m[np.newaxis] for m in (prediction.foreground, prediction.distance) if m is not None]
    return np.concatenate([prediction.embeddings, *maps]).astype(np.float32, copy=False)


def prediction_from_array(values: NDArray, attributes: dict[str, Any]) -> Prediction:
    """Rebuild a :class:`Prediction` from a (C, *spatial) array saved with ``attributes``."""
    layout = attributes[PREDICTION_KEY]
    dim = layout["embedding_dim"]
    maps = {name: values[dim + i] for i, name in enumerate(layout["heads"])}
    return Prediction(
        embeddings=np.ascontiguousarray(values[:dim], dtype=np.float32),
        foreground=maps.get("foreground"),
        distance=maps.get("distance"),
        delta_v=layout["delta_v"],
        delta_d=layout["delta_d"],
    )


def write_prediction(
    path: str | os.PathLike, prediction: Prediction, *, chunks: Sequence[int] | None = None
) -> Path:
    """Save a prediction as one chunked zarr array (C, *spatial), atomically.

    ``chunks`` is the spatial chunk shape (default: 512 per axis); all
    channels of a chunk are stored together.
    """
    import zarr

    path = Path(path)
    values = prediction_to_array(prediction)
    maps = (("foreground", prediction.foreground), ("distance", prediction.distance))
    heads = [name for name, values in maps if values is not None]
    spatial = tuple(chunks) if chunks is not None else tuple(min(512, s) for s in values.shape[1:])
    with atomic_output(path) as temporary:
        array = zarr.create_array(
            temporary, shape=values.shape, chunks=(values.shape[0], *spatial), dtype="float32",
            attributes=prediction_attributes(
                prediction.embeddings.shape[0], heads, prediction.delta_v, prediction.delta_d
            ),
        )  # fmt: skip
        array[...] = values
    return path


def open_prediction(path: str | os.PathLike) -> Any:
    """Open a prediction saved by :func:`write_prediction` or block-wise prediction.

    Returns
    -------
    zarr.Array
        Shape (C, *spatial); ``array.attrs`` holds the channel layout.

    Raises
    ------
    ValueError
        If ``path`` is not a napari-spoco prediction.
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    try:
        array = zarr.open_array(path, mode="r")
    except Exception as error:  # zarr raises library-specific types for non-arrays
        raise ValueError(f"{path} is not a zarr array: {_reason(error)}") from error
    layout = array.attrs.get(PREDICTION_KEY)
    if not isinstance(layout, dict) or layout.get("content", "prediction") != "prediction":
        raise ValueError(
            f"{path} is not a napari-spoco prediction (written by predict --embeddings)"
        )
    return array
