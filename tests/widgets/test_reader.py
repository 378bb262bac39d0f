"""File > Open: a session folder and a saved prediction open through our npe2 reader."""

import numpy as np

from napari_spoco.core.io import write_prediction
from napari_spoco.core.prediction import Prediction
from napari_spoco.core.sample_data import load_nuclei_2d


def test_file_open_restores_a_session_that_the_panel_trains_on(panel, paint, tmp_path):
    annotation, _ = paint(panel, fraction=0.05)
    assert panel.files.save_session(tmp_path / "session")
    viewer = panel.viewer
    for name in ("nuclei", annotation.name):
        viewer.layers.remove(name)
    assert not panel.state.pairs()
    viewer.open(tmp_path / "session", plugin="napari-spoco")
    np.testing.assert_array_equal(viewer.layers["nuclei"].data, load_nuclei_2d()[0])
    pairs = panel.state.pairs()
    assert len(pairs) == 1 and pairs[0].annotation.name == annotation.name
    np.testing.assert_array_equal(pairs[0].annotation.data, annotation.data)
    assert pairs[0].background_id == annotation.metadata["spoco"]["background_id"]


def test_a_session_opened_beside_an_image_of_the_same_name_links_to_its_own(panel, paint, tmp_path):
    """napari renames the session's image ("nuclei [1]"); its annotation follows it."""
    annotation, _ = paint(panel, fraction=0.05)
    assert panel.files.save_session(tmp_path / "session")
    viewer = panel.viewer
    viewer.layers.remove(annotation.name)
    other = np.zeros_like(viewer.layers["nuclei"].data)
    viewer.layers["nuclei"].data = other  # an image of the same name, other pixels
    viewer.open(tmp_path / "session", plugin="napari-spoco")
    (pair,) = panel.state.pairs()
    assert pair.image.name != "nuclei"
    np.testing.assert_array_equal(pair.image.data, load_nuclei_2d()[0])
    # Renaming the image keeps the link.
    pair.image.name = "renamed"
    assert [p.image.name for p in panel.state.pairs()] == ["renamed"]


def test_file_open_shows_a_saved_prediction_lazily(make_napari_viewer, tmp_path):
    rng = np.random.default_rng(0)
    prediction = Prediction(
        embeddings=rng.normal(size=(16, 64, 80)).astype(np.float32),
        foreground=rng.random((64, 80)).astype(np.float32),
    )
    write_prediction(tmp_path / "C_embeddings.zarr", prediction)
    viewer = make_napari_viewer()
    viewer.open(tmp_path / "C_embeddings.zarr", plugin="napari-spoco")
    assert viewer.layers["C embeddings"].data.shape == (16, 64, 80)
    np.testing.assert_allclose(
        np.asarray(viewer.layers["C foreground"].data), prediction.foreground
    )
