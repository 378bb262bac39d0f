import numpy as np
import pytest

from napari_spoco.core.stitching import (
    block_lookup_tables,
    global_offsets,
    match_labels,
    merge_labels,
)


def test_match_labels_pairs_only_labels_that_cover_the_same_object():
    first = np.array([[1, 1, 1, 0, 2, 2, 3, 3]])
    second = np.array([[4, 4, 4, 0, 5, 6, 6, 6]])
    # 1<->4 identical; 2 is split between 5 and 6 (IoU 0.5 each: not matched); 3<->6 IoU 2/3.
    assert match_labels(first, second).tolist() == [[1, 4], [3, 6]]
    assert match_labels(first, second, iou_threshold=0.9).tolist() == [[1, 4]]
    with pytest.raises(ValueError, match="shape"):
        match_labels(first, second[:, :4])


def test_merge_labels_joins_transitively_and_numbers_consecutively():
    # Global ids 1..6; 1~3~5 is one object spanning three blocks; 6 only in a halo.
    lookup = merge_labels(6, np.array([[1, 3], [3, 5]]), np.array([1, 2, 3, 4, 5]))
    assert lookup.tolist() == [0, 1, 2, 1, 3, 1, 0]
    assert lookup.dtype == np.uint32


def test_block_lookup_tables_map_local_ids_through_offsets():
    counts = [2, 3]
    assert global_offsets(counts).tolist() == [0, 2]
    lookup = merge_labels(5, np.array([[2, 3]]), np.arange(1, 6))
    first, second = block_lookup_tables(counts, lookup)
    assert first.tolist() == [0, 1, 2] and second.tolist() == [0, 2, 3, 4]
