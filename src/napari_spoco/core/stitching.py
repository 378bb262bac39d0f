"""Join label images segmented block by block into one consistent label volume.

Each block is segmented with a margin (halo) that overlaps its neighbours, so
along every face two blocks have segmented the same strip of pixels. An
object crossing the face appears in both: its two labels overlap with an
intersection over union (IoU) above one half in that strip, which pairs the
labels one-to-one (two labels cannot both exceed 0.5 IoU with a third).
:func:`match_labels` finds those pairs, :func:`merge_labels` joins the pairs
transitively (an object may span many blocks) and numbers the objects
1..n, so no object is split at a block face and no id is used twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse.csgraph import connected_components

__all__ = ["block_lookup_tables", "global_offsets", "match_labels", "merge_labels"]


def match_labels(
    first: NDArray[np.integer], second: NDArray[np.integer], *, iou_threshold: float = 0.5
) -> NDArray[np.int64]:
    """Pairs of labels that cover the same object in two segmentations of one region.

    Parameters
    ----------
    first, second : ndarray of int, same shape
        Two label images of the same pixels (0 = background).
    iou_threshold : float
        Pairs whose IoU within this region exceeds it are returned; at 0.5 or
        above every label is paired at most once.

    Returns
    -------
    ndarray of int64, shape (K, 2)
        ``(label in first, label in second)`` per matched pair.

    Examples
    --------
    >>> a = np.array([[1, 1, 0, 2, 2]])
    >>> b = np.array([[5, 5, 5, 0, 7]])
    >>> match_labels(a, b).tolist()
    [[1, 5]]
    """
    if first.shape != second.shape:
        raise ValueError(f"regions differ in shape: {first.shape} and {second.shape}")
    if not 0 < iou_threshold < 1:
        raise ValueError(f"iou_threshold must lie in (0, 1), got {iou_threshold}")
    a = np.asarray(first).ravel().astype(np.int64)
    b = np.asarray(second).ravel().astype(np.int64)
    ids_a, a = np.unique(a, return_inverse=True)
    ids_b, b = np.unique(b, return_inverse=True)
    table = sparse.coo_matrix(
        (np.ones(a.size, dtype=np.int64), (a, b)), shape=(ids_a.size, ids_b.size)
    ).tocsr()
    table.sum_duplicates()
    rows, columns = table.nonzero()
    overlap = np.asarray(table[rows, columns]).ravel()
    size_a = np.asarray(table.sum(axis=1)).ravel()[rows]
    size_b = np.asarray(table.sum(axis=0)).ravel()[columns]
    iou = overlap / (size_a + size_b - overlap)
    keep = (iou > iou_threshold) & (ids_a[rows] != 0) & (ids_b[columns] != 0)
    return np.stack([ids_a[rows[keep]], ids_b[columns[keep]]], axis=1).astype(np.int64)


def merge_labels(
    n_ids: int, pairs: NDArray[np.integer], present: NDArray[np.integer]
) -> NDArray[np.uint32]:
    """Lookup table from global block label ids to final object ids 1..n.

    Parameters
    ----------
    n_ids : int
        Global ids run from 1 to ``n_ids`` (0 is background).
    pairs : ndarray of int, shape (K, 2)
        Global ids that belong to the same object.
    present : ndarray of int
        Global ids that occur in the output; the others (seen only in a
        block's halo) get no final id.

    Returns
    -------
    ndarray of uint32, shape (n_ids + 1,)
        Entry ``i`` is the final id of global id ``i`` (0: background or absent).
        Final ids are consecutive, numbered in order of first appearance.

    Examples
    --------
    >>> merge_labels(4, np.array([[1, 3]]), np.array([1, 2, 3])).tolist()
    [0, 1, 2, 1, 0]
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = sparse.coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
        shape=(n_ids + 1, n_ids + 1),
    )
    _, component = connected_components(graph, directed=False)
    is_present = np.zeros(n_ids + 1, dtype=bool)
    is_present[np.asarray(present, dtype=np.int64)] = True
    is_present[0] = False
    final_of_component = np.zeros(component.max() + 1, dtype=np.int64)
    order = np.unique(component[is_present], return_index=True)
    first_seen = order[0][np.argsort(order[1])]
    final_of_component[first_seen] = np.arange(1, first_seen.size + 1)
    if first_seen.size > np.iinfo(np.uint32).max:
        raise ValueError(f"{first_seen.size} objects do not fit uint32 labels")
    lookup = np.where(is_present, final_of_component[component], 0)
    return lookup.astype(np.uint32)


def block_lookup_tables(
    counts: Sequence[int], lookup: NDArray[np.uint32]
) -> list[NDArray[np.uint32]]:
    """Split a global lookup table into one per block (local id → final id).

    Block ``b`` numbers its labels 1..``counts[b]``; its global ids follow
    those of blocks ``0..b-1``, as :func:`global_offsets` counts them.
    """
    offsets = global_offsets(counts)
    return [
        np.concatenate([[0], lookup[offset + 1 : offset + count + 1]]).astype(np.uint32)
        for offset, count in zip(offsets, counts, strict=True)
    ]


def global_offsets(counts: Sequence[int]) -> NDArray[np.int64]:
    """Offset added to block ``b``'s local ids to make them unique over all blocks."""
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)[:-1]])
