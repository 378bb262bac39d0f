import pytest

from napari_spoco.core.sample_data import load_nuclei_2d
from napari_spoco.testing import annotate_like_a_user


@pytest.fixture(autouse=True)
def _autosave_in_tmp(tmp_path, monkeypatch):
    """Keep autosaves out of the user's data folder."""
    monkeypatch.setenv("NAPARI_SPOCO_AUTOSAVE_DIR", str(tmp_path / "autosave"))


@pytest.fixture
def notifications():
    """Messages the panel showed (napari notifications), newest last."""
    from napari.utils.notifications import notification_manager

    received = []
    notification_manager.notification_ready.connect(received.append)
    yield received
    notification_manager.notification_ready.disconnect(received.append)


@pytest.fixture
def panel(make_napari_viewer, qtbot):
    """A viewer with the SPOCO panel docked and the 2D nuclei sample open."""
    from napari_spoco.widgets import SpocoWidget

    viewer = make_napari_viewer()
    image, truth = load_nuclei_2d()
    viewer.add_image(image, name="nuclei")
    widget = SpocoWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SPOCO")
    yield widget
    widget.stop_workers()


@pytest.fixture
def paint():
    """``paint(panel, fraction, seed, background)``: annotate sample nuclei like a user."""
    return _paint_sample


def _paint_sample(panel, fraction=0.1, seed=0, background=False):
    """Annotate a fraction of the sample's nuclei (whole objects), maybe scribble background."""
    truth = load_nuclei_2d()[1]
    layer = annotate_like_a_user(panel, truth, fraction=fraction, seed=seed, background=background)
    return layer, truth
