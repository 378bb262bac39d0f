"""Models that ship with the package, and the one loader for every kind of model source.

A built-in model is a napari-spoco model file inside the package with a model
card beside it. Front ends name it (``--from nuclei``, the panel's network
choice) through :data:`BUILTIN_MODELS`, and open any source, a built-in name,
a model file or a bioimage.io package, through :func:`load_model_source`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .bioimageio import load_checkpoint_or_package
from .checkpoint import Checkpoint, load_checkpoint

__all__ = [
    "BUILTIN_MODELS",
    "SCRATCH",
    "BuiltinModel",
    "builtin_model_path",
    "default_start_model",
    "load_model_source",
]

#: ``--from`` value that builds a new network instead of starting from a built-in one.
SCRATCH = "scratch"


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped in ``napari_spoco/models``: its file, model card and display name."""

    name: str
    label: str
    filename: str
    card: str
    spatial_dims: int
    in_channels: int


#: Built-in models by the name front ends use.
BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "nuclei": BuiltinModel(
        name="nuclei",
        label="Nuclei generalist (pretrained)",
        filename="nuclei.pt",
        card="nuclei.md",
        spatial_dims=2,
        in_channels=1,
    ),
}


def builtin_model_path(name: str) -> Path:
    """Path of the built-in model ``name``'s file inside the installed package."""
    model = BUILTIN_MODELS[name]
    return Path(str(resources.files("napari_spoco") / "models" / model.filename))


def default_start_model(spatial_dims: int, channels: int) -> str | None:
    """Name the built-in model that new training on such images starts from (None: none)."""
    for model in BUILTIN_MODELS.values():
        if (model.spatial_dims, model.in_channels) == (spatial_dims, channels):
            return model.name
    return None


def load_model_source(source: str | os.PathLike) -> Checkpoint:
    """Open a built-in model by name, a model file (``.pt``) or a bioimage.io package.

    A file or folder of that name wins over a built-in name, so that a user's
    own ``nuclei`` folder is never shadowed.

    Raises
    ------
    FileNotFoundError, ValueError
        If nothing of that name exists or it is not a model.
    """
    if str(source) in BUILTIN_MODELS and not Path(source).exists():
        return load_checkpoint(builtin_model_path(str(source)))
    return load_checkpoint_or_package(source)
