"""Training defaults that follow the data and the start: one place for every front end.

The panel, the CLI and the demo read these defaults from here, so that the
same data trains the same way whichever one a user picks. Each value was
chosen by measurement (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from numpy.typing import ArrayLike

from .annotation import touching_fraction
from .config import LossConfig

__all__ = [
    "FINE_TUNE_ITERATIONS",
    "FINE_TUNE_LR",
    "NEW_MODEL_LR",
    "NEW_NETWORK_ITERATIONS",
    "default_iterations",
    "default_learning_rate",
    "TOUCHING_FRACTION",
    "ring_width",
]

#: Peak learning rate of a new network. At 200 steps, 1e-3 separated objects clearly
#: better than the paper's 2e-4, which is tuned for ~100k steps.
NEW_MODEL_LR = 1e-3
#: Peak learning rate when a trained model is fine-tuned: small enough to keep what it knows.
#: On held-out NIH3T3 training images, 1e-4, 3e-4 and 1e-3 scored the same.
FINE_TUNE_LR = NEW_MODEL_LR / 10
#: Steps of a run that fine-tunes a trained model. From the nuclei generalist, 150 steps
#: (about a minute on 2 CPU cores) scored as well as 2 minutes (250-270 steps) on NIH3T3
#: nuclei at every annotation density.
FINE_TUNE_ITERATIONS = 150
#: Steps of a run that trains a new network: from random weights, a few hundred steps
#: do not yet make objects compact enough to cluster.
NEW_NETWORK_ITERATIONS = 1000
#: Share of the painted objects that must border another painted object before the
#: painting says "objects touch": a few neighbours among sparsely painted nuclei (4 of 12
#: in the bundled sample's 10 %) do not, a user painting cells side by side does.
TOUCHING_FRACTION = 0.5


def default_iterations(fine_tune: bool) -> int:
    """Return the steps of a run: fewer when it starts from a trained model.

    Examples
    --------
    >>> default_iterations(fine_tune=True), default_iterations(fine_tune=False)
    (150, 1000)
    """
    return FINE_TUNE_ITERATIONS if fine_tune else NEW_NETWORK_ITERATIONS


def default_learning_rate(fine_tune: bool) -> float:
    """Return the peak learning rate of a run: a tenth when it starts from a trained model."""
    return FINE_TUNE_LR if fine_tune else NEW_MODEL_LR


def ring_width(
    annotations: Sequence[ArrayLike],
    *,
    background_id: int | None = None,
    objects_touch: bool | None = None,
) -> int:
    """Return the width of the ring of negatives around painted objects: none where they touch.

    The heads take the unpainted pixels next to a painted object as
    background. Where objects touch, those pixels are often another object, so
    those labels are wrong. On touching phase-contrast cells, dropping the ring
    changed the foreground IoU within the seed spread (0.41 ± 0.08 against
    0.38 ± 0.04; docs/benchmarks.md, "Objects that are not nuclei").
    ``objects_touch`` None decides from the painting: they touch when at least
    :data:`TOUCHING_FRACTION` of the painted objects border another one.
    """
    if objects_touch is None:
        fraction = touching_fraction(annotations, background_id=background_id)
        objects_touch = fraction >= TOUCHING_FRACTION
    return 0 if objects_touch else LossConfig.ring_width
