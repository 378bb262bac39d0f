"""npe2 readers: File > Open restores a session folder, or shows a saved prediction.

* A session folder (``session.json``, written by the panel's Files section):
  its images, and its annotation layers linked to them, so that an open SPOCO
  panel trains on them at once. The session's model is not a layer: load it
  with Files > Open session or Load model.
* ``NAME_embeddings.zarr`` (``predict --embeddings`` or block-wise
  prediction): the embeddings as colours and the head maps, read lazily with
  dask, so a prediction larger than memory opens too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["get_reader"]

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | os.PathLike | list) -> Callable[[Any], list[LayerData]] | None:
    """Return the reader for ``path``, or None when it is not ours (napari then asks others)."""
    if isinstance(path, list):
        return None
    path = Path(path)
    if (path / "session.json").is_file():
        return read_session
    if path.is_dir() and path.name.lower().endswith("_embeddings.zarr"):
        return read_prediction
    return None


def read_session(path: str | os.PathLike) -> list[LayerData]:
    """Read a session: its images, and its annotations linked to them as the panel links them."""
    from .core.session import load_session
    from .widgets._state import METADATA_KEY, image_identity

    session = load_session(path)
    layers: list[LayerData] = []
    # An image of the same name may be open already: napari then renames the new one,
    # and the annotations must still find theirs, so they link to its id.
    image_ids: dict[str, str] = {}
    for pair in session.pairs:
        placement = pair.layer
        if pair.image_name not in image_ids:
            image_metadata: dict = {}
            image_ids[pair.image_name] = image_identity(image_metadata)
            image_options = {
                "name": pair.image_name,
                "rgb": placement.get("rgb", False),
                "scale": placement.get("image_scale"),
                "translate": placement.get("image_translate"),
                "metadata": image_metadata,
            }
            layers.append((session.images[pair.image_name], _given(image_options), "image"))
        link = {"image": pair.image_name, "image_id": image_ids[pair.image_name],
                "axes": pair.axes, "background_id": pair.background_id, "use": True}  # fmt: skip
        annotation_options = {
            "name": pair.annotation_name,
            "scale": placement.get("scale"),
            "translate": placement.get("translate"),
            "metadata": {METADATA_KEY: link},
        }
        layers.append(
            (session.annotations[pair.annotation_name], _given(annotation_options), "labels")
        )
    return layers


def read_prediction(path: str | os.PathLike) -> list[LayerData]:
    """Read a saved prediction: its embedding channels and head maps, lazily.

    The embedding is one hidden image whose first axis (a slider) walks
    through its channels; the foreground and inner-distance probabilities are
    images of their own.
    """
    import dask.array as da

    from .core.io import PREDICTION_KEY, open_prediction

    array = open_prediction(path)
    layout = array.attrs[PREDICTION_KEY]
    stem = Path(path).name[: -len("_embeddings.zarr")]
    values = da.from_zarr(array)
    dim = layout["embedding_dim"]
    layers: list[LayerData] = [
        (values[:dim], {"name": f"{stem} embeddings", "visible": False,
                        "metadata": {PREDICTION_KEY: layout}}, "image"),
    ]  # fmt: skip
    for i, head in enumerate(layout["heads"]):
        options = {"name": f"{stem} {head}", "colormap": "magma", "contrast_limits": (0.0, 1.0)}
        layers.append((values[dim + i], options, "image"))
    return layers


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """Leave out options a session did not record, so napari's defaults apply."""
    return {key: value for key, value in options.items() if value is not None}
