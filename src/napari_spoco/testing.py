"""Drive the panel as a user would: shared by the tests, the benchmarks and the demo.

Public, so that code outside the package (our test suite and benchmarks, a
user's own scripts) does not reach into private helpers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .widgets import SpocoWidget

__all__ = ["annotate_like_a_user"]


def annotate_like_a_user(
    panel: SpocoWidget,
    truth: np.ndarray,
    *,
    fraction: float = 0.1,
    seed: int = 0,
    background: bool = True,
) -> Any:
    """Paint ``fraction`` of the true objects (whole) and, optionally, background strokes.

    Uses the panel's own buttons: a new annotation layer for the chosen image,
    then the objects, then "Paint background" (which picks a free label).
    Returns the annotation layer.
    """
    from .core.annotation import keep_fraction_of_objects, simulate_background_scribbles

    layer = panel.annotate.new_annotation_layer()
    if layer is None:
        raise ValueError("the panel has no image to annotate")
    annotation = keep_fraction_of_objects(truth, fraction, seed=seed).astype(layer.data.dtype)
    layer.data = annotation
    if background:
        panel.annotate.paint_background()
        background_id = layer.metadata["spoco"]["background_id"]
        strokes = simulate_background_scribbles(truth, seed=seed)
        annotation[strokes & (annotation == 0)] = background_id
        layer.data = annotation
    panel.annotate.new_object()
    panel.annotate.refresh_pairs()  # at once, not after the paint debounce
    return layer
