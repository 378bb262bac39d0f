"""Validation of :func:`napari_spoco.core.clustering.segment`'s arguments: one clear error each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..clustering_methods import CLUSTERING_METHODS, METHODS
from .mutex import DEFAULT_OFFSETS

#: Keywords of :func:`segment` that users do not set, per method; the settings they may
#: change, and their defaults, are listed with the methods (``clustering_methods``).
INTERNAL_PARAMS: dict[str, dict[str, Any]] = {
    "mutex_watershed": {"offsets": DEFAULT_OFFSETS},
    "hdbscan": {"max_samples": 16384},
    "mean_shift": {"max_samples": 16384},
    "consistency": {"teacher": None, "max_samples": 16384, "n_anchors": 100},
}
#: Method-specific keywords of :func:`segment` and their defaults.
METHOD_PARAMS: dict[str, dict[str, Any]] = {
    name: {**INTERNAL_PARAMS[name], **{s.name: s.default for s in method.settings}}
    for name, method in CLUSTERING_METHODS.items()
}


def check_embeddings(embeddings: Any, name: str) -> NDArray[np.float32]:
    """(D, *spatial) float32 C-contiguous copy/view of finite embeddings, or ValueError."""
    array = np.asarray(embeddings)
    if array.ndim not in (3, 4) or 0 in array.shape:
        raise ValueError(
            f"{name} must have shape (D, Y, X) or (D, Z, Y, X) with no empty axis, "
            f"got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be a float array, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got NaN or inf values")
    return array


def check_foreground(foreground: Any, spatial: tuple[int, ...]) -> NDArray[np.bool_] | str | None:
    """Bool mask of the spatial shape (0/1 integers accepted), None or "auto"; else ValueError."""
    if foreground is None or (isinstance(foreground, str) and foreground == "auto"):
        return foreground
    if isinstance(foreground, str):
        raise ValueError(f"foreground must be a bool mask, None or 'auto', got {foreground!r}")
    mask = np.asarray(foreground)
    if mask.shape != spatial:
        raise ValueError(
            f"foreground must have the spatial shape of the embeddings {spatial}, got {mask.shape}"
        )
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"foreground must be a bool mask, got dtype {mask.dtype}")
        mask = mask.astype(bool)
    return np.ascontiguousarray(mask)


def check_params(method: str, params: dict[str, Any], embeddings: NDArray) -> dict[str, Any]:
    """Method-specific keywords with defaults filled in, checked."""
    if method not in METHOD_PARAMS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    defaults = METHOD_PARAMS[method]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise TypeError(f"method {method!r} takes {sorted(defaults)}, got unknown {unknown}")
    options = {**defaults, **params}
    ndim = embeddings.ndim - 1
    if "strides" in options:
        strides = options["strides"]
        strides = (strides,) * ndim if np.isscalar(strides) else tuple(strides)
        options["strides"] = _positive_ints(strides, "strides", length=ndim)
        options["offsets"] = _positive_ints(options["offsets"], "offsets")
    for key in ("min_cluster_size", "max_samples", "n_anchors"):
        if key in options:
            options[key] = _positive_ints([options[key]], key, minimum=2)[0]
    if "iou_threshold" in options and not 0 <= options["iou_threshold"] <= 1:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {options['iou_threshold']}")
    if method == "consistency":
        if options["teacher"] is None:
            raise ValueError("method 'consistency' needs teacher= (teacher embeddings)")
        options["teacher"] = check_embeddings(options["teacher"], "teacher")
        if options["teacher"].shape != embeddings.shape:
            raise ValueError(
                f"teacher must have the shape of embeddings {embeddings.shape}, "
                f"got {options['teacher'].shape}"
            )
    return options


def _positive_ints(
    values: Sequence[Any], name: str, *, length: int | None = None, minimum: int = 1
) -> tuple[int, ...]:
    """Tuple of integers >= ``minimum`` (of ``length`` items if given), or ValueError."""
    values = tuple(values)
    ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if not ok or any(v < minimum for v in values) or (length is not None and len(values) != length):
        size = "" if length is None else f"{length} "
        raise ValueError(f"{name} must be {size}integers >= {minimum}, got {values}")
    return tuple(int(v) for v in values)
