import numpy as np
import pytest

from napari_spoco.core.annotation import (
    keep_fraction_of_objects,
    median_object_diameter,
    next_free_id,
    object_ids,
    promote_instance,
)


def test_object_ids_and_next_free_id_skip_the_background_label():
    labels = np.array([[0, 2, 2], [9, 0, 4]])
    assert object_ids(labels, background_id=9).tolist() == [2, 4]
    assert next_free_id(labels, background_id=9) == 10
    assert next_free_id(np.zeros((3, 3), int)) == 1
    assert next_free_id(np.zeros((3, 3), int), background_id=3) == 4


def test_median_object_diameter_2d_and_3d():
    yy, xx = np.indices((60, 60))
    labels = np.zeros((60, 60), dtype=np.int64)
    labels[(yy - 15) ** 2 + (xx - 15) ** 2 <= 100] = 1
    labels[(yy - 40) ** 2 + (xx - 40) ** 2 <= 100] = 2
    assert median_object_diameter(labels) == pytest.approx(20, abs=1)
    volume = np.stack([labels * 0, labels, labels])
    assert median_object_diameter(volume) == pytest.approx(20, abs=1)
    assert median_object_diameter(np.zeros((5, 5), int)) is None
    assert median_object_diameter(np.full((5, 5), 3), background_id=3) is None


def test_promote_instance_never_overwrites_painted_pixels():
    annotation = np.zeros((4, 4), dtype=np.uint16)
    annotation[0, 0] = 1
    instances = np.zeros((4, 4), dtype=np.uint32)
    instances[:2, :2] = 7
    assert promote_instance(annotation, instances, 7, 2) == 3
    assert annotation[0, 0] == 1 and (annotation[:2, :2] > 0).all()
    with pytest.raises(ValueError, match="background"):
        promote_instance(annotation, instances, 0, 3)
    with pytest.raises(ValueError, match="shape"):
        promote_instance(annotation, instances[:3], 7, 3)


def test_keep_fraction_of_objects_keeps_whole_objects():
    labels = np.repeat(np.arange(10), 5).reshape(5, 10)
    kept = keep_fraction_of_objects(labels, 0.3, seed=1)
    ids = object_ids(kept)
    assert len(ids) == 3
    for i in ids:
        assert (kept == i).sum() == (labels == i).sum()


def test_touching_painted_objects_are_detected_unless_the_user_says_otherwise():
    from napari_spoco.core.annotation import touching_fraction
    from napari_spoco.core.recipe import touching_objects

    apart = np.zeros((12, 12), int)
    apart[2:5, 2:5], apart[7:10, 7:10] = 1, 2
    touching = apart.copy()
    touching[2:5, 5:8] = 3  # shares a border with object 1: 2 of 3 objects touch
    strokes = apart.copy()
    strokes[2:5, 5:8] = 9  # a background stroke next to an object is not an object
    assert touching_fraction([apart]) == 0 and touching_fraction([touching]) == 2 / 3
    assert touching_fraction([apart, touching]) == 2 / 5
    assert touching_fraction([strokes], background_id=9) == 0
    assert touching_fraction([touching[None]]) == 2 / 3  # 3D: any axis counts
    assert not touching_objects([apart]) and touching_objects([touching])
    assert not touching_objects([apart, touching])  # 2 of 5: below half
    assert touching_objects([apart], told=True)
    assert not touching_objects([touching], told=False)
