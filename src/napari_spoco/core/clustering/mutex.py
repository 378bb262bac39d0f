"""The mutex watershed: every pixel clustered on a graph of embedding affinities.

Direct neighbours become attractive edges of priority
``a``; long-range offsets become mutex (repulsive) edges of priority ``1 - a``.

Backend. The mutex watershed itself (sort all edges by priority, union-find
under mutex constraints) is not written here: it comes from the C++ wheel
``bioimage-cpp`` (``bioimage_cpp.segmentation.mutex_watershed``). The Rust
wheel ``mwatershed`` was measured against it on the same priorities with
``benchmarks/clustering_speed.py --backends`` (512 x 512, 16-d synthetic
embeddings, one core, CPU s median of 3; extra peak RSS; 2-core machine
shared with a CI run; "nuclei": 125 real StarDist nuclei, "dense": 414
touching discs):

=======  =======  ==============  ==============  =================
scene    strides  bioimage-cpp s  mwatershed s    peak MiB bcpp/mw
=======  =======  ==============  ==============  =================
nuclei   1        2.34            1.51            47 / 156
nuclei   2        0.61            0.59            30 / 114
nuclei   4        0.28            0.47            25 / 54
dense    1        4.72            2.16            52 / 159
dense    2        1.17            0.99            30 / 114
dense    4        0.41            0.41            35 / 54
=======  =======  ==============  ==============  =================

64 x 512 x 512 dense volume, strides 2: bioimage-cpp 126 s and +4.0 GB,
mwatershed 112 s and +7.6 GB. We use bioimage-cpp: at our default stride 2
it is as fast (nuclei) or 1.2x slower (dense), but needs 2-4x less memory
(float32 priorities; mwatershed takes float64 only), which is what limits
volumes; it takes a foreground mask natively, and masking the background is
the big speed lever (1024^2 nuclei: 3.7 s -> 0.45 s), because the huge
background segment is what makes the mutex bookkeeping (a hash set per
cluster, in both wheels) expensive; and it implements the textbook
algorithm, where a zero-affinity neighbour edge stays attractive (mwatershed
turns every edge of weight <= 0 into a mutex edge: more robust to coarse
strides, but a different objective from the paper's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from .affinity import affinity_from_distance

__all__ = ["DEFAULT_OFFSETS", "embedding_affinities", "grid_offsets", "mutex_watershed"]

#: Long-range (mutex) edge lengths in pixels, applied along each axis (paper: 3, 9, 27).
DEFAULT_OFFSETS = (3, 9, 27)

Slices = tuple[slice, ...]


def grid_offsets(ndim: int, offsets: Sequence[int] = DEFAULT_OFFSETS) -> list[tuple[int, ...]]:
    """Edge offsets: the ``ndim`` direct neighbours first, then each long range along each axis."""
    steps = [1, *offsets]
    return [
        tuple(step if axis == a else 0 for a in range(ndim))
        for step in steps
        for axis in range(ndim)
    ]


def _edge_slices(
    shape: tuple[int, ...], offset: tuple[int, ...], stride: Sequence[int]
) -> tuple[Slices, Slices] | None:
    """Slices of edge sources ``p`` (on the stride grid) and their partners ``p + offset``."""
    if any(k >= size for k, size in zip(offset, shape, strict=True)):
        return None
    source = tuple(slice(0, n - k, s) for n, k, s in zip(shape, offset, stride, strict=True))
    target = tuple(slice(k, n, s) for n, k, s in zip(shape, offset, stride, strict=True))
    return source, target


def _pair_distance(embeddings: NDArray[np.float32], source: Slices, target: Slices) -> NDArray:
    """Embedding distance of every source pixel to its partner.

    Channels are accumulated one at a time, so the temporaries are two spatial
    images rather than a (D, *spatial) difference (1 GB for a 64 x 512 x 512 volume).
    """
    total = np.zeros(embeddings[0][source].shape, dtype=np.float32)
    diff = np.empty_like(total)
    for channel in embeddings:
        np.subtract(channel[source], channel[target], out=diff)
        np.multiply(diff, diff, out=diff)
        total += diff
    return np.sqrt(total, out=total)


def embedding_affinities(
    embeddings: NDArray[np.float32],
    offsets: Sequence[tuple[int, ...]],
    *,
    n_attractive: int,
    delta_d: float,
    strides: Sequence[int],
) -> NDArray[np.float32]:
    """Edge priorities for the mutex watershed, shape (len(offsets), *spatial), float32.

    Channel ``c`` holds, at pixel ``p``, the edge to ``p + offsets[c]``: the
    affinity for the first ``n_attractive`` channels, ``1 - affinity`` (the
    repulsion) for the others. Mutex channels are computed only on the
    ``strides`` grid, which is the only place the backend reads them; elsewhere
    and where ``p + offset`` leaves the image the value is 0 (unused).
    """
    spatial = embeddings.shape[1:]
    out = np.zeros((len(offsets), *spatial), dtype=np.float32)
    dense = (1,) * len(spatial)
    for channel, offset in enumerate(offsets):
        attractive = channel < n_attractive
        slices = _edge_slices(spatial, offset, dense if attractive else strides)
        if slices is None:
            continue
        affinity = affinity_from_distance(_pair_distance(embeddings, *slices), delta_d)
        if not attractive:
            np.subtract(1.0, affinity, out=affinity)
        out[(channel, *slices[0])] = affinity
    return out


def mutex_watershed(
    embeddings: NDArray[np.float32],
    mask: NDArray[np.bool_] | None,
    *,
    delta_d: float,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    strides: Sequence[int],
) -> NDArray[np.uint64]:
    """Mutex-watershed labels (1-based, 0 outside ``mask``) of embeddings (D, *spatial).

    ``strides`` thins the mutex edges to a regular grid (all 1: every edge).
    Attractive edges are always dense, so every pixel stays connected.
    """
    from bioimage_cpp.segmentation import mutex_watershed as _backend

    ndim = embeddings.ndim - 1
    edges = grid_offsets(ndim, offsets)
    affinities = embedding_affinities(
        embeddings, edges, n_attractive=ndim, delta_d=delta_d, strides=strides
    )
    grid = None if all(s == 1 for s in strides) else tuple(int(s) for s in strides)
    return _backend(affinities, edges, ndim, strides=grid, mask=mask)
