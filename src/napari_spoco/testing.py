"""Drive the panel as a user would, on real or synthetic scenes.

Shared by the tests, the benchmarks and the demo; public, so that code outside
the package (our test suite and benchmarks, a user's own scripts) does not
reach into private helpers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .widgets import SpocoWidget

__all__ = ["annotate_like_a_user", "touching_cells"]


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


def touching_cells(
    shape: tuple[int, int] = (256, 256),
    clusters: int = 4,
    cells_per_cluster: int = 9,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return an image of clusters of touching irregular cells and its instance labels.

    Only separation is hard here: the foreground is bright on dark, and the
    clusters are cut from irregular envelopes by a stretched Voronoi partition
    (elongated, polygonal cells), each cell with its own brightness and a faint
    dark border where cells meet. ``benchmarks/touching.py`` measures on it.
    """
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    margin = min(40, shape[0] // 4)
    for _ in range(clusters):
        for _attempt in range(100):  # an envelope that keeps clear of the others
            cy, cx = rng.uniform(margin, shape[0] - margin), rng.uniform(margin, shape[1] - margin)
            envelope = np.zeros(shape, bool)
            for _ellipse in range(4):
                oy, ox = rng.normal(0, 12, 2)
                ry, rx = rng.uniform(14, 30, 2)
                envelope |= ((yy - cy - oy) / ry) ** 2 + ((xx - cx - ox) / rx) ** 2 <= 1
            if not labels[ndimage.binary_dilation(envelope, iterations=6)].any():
                break
        angle = rng.uniform(0, np.pi)
        points = np.argwhere(envelope)
        centres = points[
            rng.choice(len(points), min(cells_per_cluster, len(points)), replace=False)
        ]
        dy, dx = yy[..., None] - centres[:, 0], xx[..., None] - centres[:, 1]
        along = np.cos(angle) * dy + np.sin(angle) * dx
        across = -np.sin(angle) * dy + np.cos(angle) * dx
        owner = np.argmin((along / 2.0) ** 2 + across**2, axis=-1)  # stretched 2x: elongated
        for k in range(len(centres)):
            pieces, n = ndimage.label(ndimage.binary_opening(envelope & (owner == k)))
            if n == 0:
                continue
            sizes = ndimage.sum(np.ones(shape), pieces, range(1, n + 1))
            cell = pieces == 1 + int(np.argmax(sizes))
            if cell.sum() >= 60:
                labels[cell & (labels == 0)] = labels.max() + 1
    image = rng.normal(0.2, 0.05, shape)
    for label in range(1, int(labels.max()) + 1):
        cell = labels == label
        image[cell] = rng.uniform(0.5, 0.9) + rng.normal(0, 0.08, int(cell.sum()))
    image[find_boundaries(labels, mode="inner") & (labels > 0)] -= 0.25
    return ndimage.gaussian_filter(image, 1.0).astype(np.float32), labels
