"""The clustering methods, listed once: names, what they do, and the settings a user may change.

:func:`napari_spoco.core.clustering.segment` takes its defaults from here, and
the front ends build their choices from it: the panel's Segment settings (a
box per setting) and the command line's ``--method`` and setting flags. A new
method is one entry here plus its code in ``core.clustering``. This module
imports nothing else of the package but :mod:`.settings`, so that ``core.config``
can validate a method name without importing the clustering code.
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import Setting

__all__ = ["CLUSTERING_METHODS", "METHODS", "ClusteringMethod"]


@dataclass(frozen=True)
class ClusteringMethod:
    """A clustering method: its name in ``segment``, its settings and how it behaves."""

    name: str
    tooltip: str
    settings: tuple[Setting, ...] = ()
    #: Re-clusters a typical image within a second: the panel follows every edit.
    fast: bool = False
    #: Needs the EMA teacher's embeddings of the same image.
    needs_teacher: bool = False


CLUSTERING_METHODS: dict[str, ClusteringMethod] = {
    method.name: method
    for method in (
        ClusteringMethod(
            "mutex_watershed",
            "Mutex watershed on neighbour affinities: fast, every pixel, the default.",
            (
                Setting(
                    name="strides",
                    label="Mutex strides",
                    default=2,
                    low=1,
                    high=16,
                    step=1,
                    tooltip="Long-range repulsive edges are kept on every n-th pixel: larger is "
                    "faster, 1 is exact.",
                ),
            ),
            fast=True,
        ),
        ClusteringMethod(
            "hdbscan",
            "HDBSCAN on a sample of the pixels in embedding space, then every pixel to "
            "the nearest cluster.",
            (
                Setting(
                    name="min_cluster_size",
                    label="Min cluster size",
                    default=50,
                    low=2,
                    high=1_000_000,
                    step=10,
                    tooltip="Fewest sampled pixels that make a cluster: larger ignores small "
                    "objects and noise.",
                ),
            ),
        ),
        ClusteringMethod(
            "mean_shift",
            "Mean shift on a sample of the pixels with the training's pull margin as "
            "bandwidth, then every pixel to the nearest mode.",
        ),
        ClusteringMethod(
            "consistency",
            "Mean shift that keeps only the clusters the EMA teacher agrees with "
            "(the SPOCO paper's consistency clustering).",
            (
                Setting(
                    name="iou_threshold",
                    label="IoU threshold",
                    default=0.6,
                    low=0.0,
                    high=1.0,
                    step=0.05,
                    tooltip="Overlap a cluster needs with the teacher's to be kept.",
                ),
            ),
            needs_teacher=True,
        ),
    )
}
#: Clustering methods accepted by ``segment``, the default first.
METHODS = tuple(CLUSTERING_METHODS)
