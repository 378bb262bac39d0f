"""napari sample-data providers (contributed through ``napari.yaml``).

Each provider returns the image and its ground-truth labels (hidden), so a user
can try the plugin at once and compare its result with the truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_spoco.core.sample_data import load_nuclei_2d, load_nuclei_3d

__all__ = ["nuclei_2d", "nuclei_3d"]

LayerDataTuple = tuple[np.ndarray, dict[str, Any], str]


def _layers(image: np.ndarray, labels: np.ndarray) -> list[LayerDataTuple]:
    return [
        (image, {"name": "nuclei"}, "image"),
        (labels, {"name": "ground truth", "visible": False}, "labels"),
    ]


def nuclei_2d() -> list[LayerDataTuple]:
    """Return the 2D nuclei sample (DSB 2018) and its hidden ground truth as layer tuples."""
    return _layers(*load_nuclei_2d())


def nuclei_3d() -> list[LayerDataTuple]:
    """Return the synthetic 3D nuclei sample and its hidden ground truth as layer tuples."""
    return _layers(*load_nuclei_3d())
