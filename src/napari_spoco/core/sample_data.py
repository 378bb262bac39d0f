"""Bundled sample images with ground-truth instance labels.

The four TIFF files in ``napari_spoco/data`` are copied unchanged from the
StarDist 0.9.2 wheel on PyPI (``stardist/data/images/``), distributed under the
BSD-3-Clause licence, Copyright (c) 2018-2025 Uwe Schmidt, Martin Weigert; the
licence text ships as ``napari_spoco/data/LICENSE-stardist.txt``.

* ``img2d.tif`` / ``mask2d.tif``: a fluorescence image of nuclei from the 2018
  Kaggle Data Science Bowl (Caicedo et al., "Nucleus segmentation across
  imaging experiments: the 2018 Data Science Bowl", Nature Methods 16,
  1247-1253, 2019) and its annotated instance mask.
* ``img3d.tif`` / ``mask3d.tif``: a small synthetic 3D stack of nuclei with its
  instance mask.

Only numpy and tifffile are used, so this module is safe to import anywhere
(no torch, no Qt).
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import tifffile

__all__ = ["load_nuclei_2d", "load_nuclei_3d"]


def _read(name: str) -> np.ndarray:
    """Read one bundled TIFF file by file name."""
    resource = files("napari_spoco") / "data" / name
    with resource.open("rb") as fh:
        return tifffile.imread(fh)


def _load_pair(image_name: str, mask_name: str) -> tuple[np.ndarray, np.ndarray]:
    image = _read(image_name)
    labels = _read(mask_name).astype(np.uint32, copy=False)
    if image.shape != labels.shape:  # pragma: no cover - guards the bundled files
        raise ValueError(
            f"{image_name} has shape {image.shape} but {mask_name} has shape {labels.shape}"
        )
    return image, labels


def load_nuclei_2d() -> tuple[np.ndarray, np.ndarray]:
    """Load the 2D nuclei image from the 2018 Data Science Bowl with its labels.

    Source: StarDist 0.9.2 (``stardist/data/images/img2d.tif`` and
    ``mask2d.tif``), BSD-3-Clause, Copyright (c) 2018-2025 Uwe Schmidt, Martin
    Weigert. The image is from the 2018 Kaggle Data Science Bowl (Caicedo et
    al., Nature Methods 16, 2019).

    Returns
    -------
    image : numpy.ndarray
        Fluorescence image, shape (512, 512) (Y, X), as stored in the file (uint16).
    labels : numpy.ndarray
        Ground-truth instance labels, same shape, uint32; 0 is background and
        each nucleus has its own positive id (about 125 objects).
    """
    return _load_pair("img2d.tif", "mask2d.tif")


def load_nuclei_3d() -> tuple[np.ndarray, np.ndarray]:
    """Load the synthetic 3D nuclei stack with its labels.

    Source: StarDist 0.9.2 (``stardist/data/images/img3d.tif`` and
    ``mask3d.tif``), BSD-3-Clause, Copyright (c) 2018-2025 Uwe Schmidt, Martin
    Weigert. The stack is synthetic.

    Returns
    -------
    image : numpy.ndarray
        Volume, shape (31, 61, 57) (Z, Y, X), as stored in the file (uint16).
    labels : numpy.ndarray
        Ground-truth instance labels, same shape, uint32; 0 is background and
        each nucleus has its own positive id (about 50 objects).
    """
    return _load_pair("img3d.tif", "mask3d.tif")
