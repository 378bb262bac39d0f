"""Every refusal is a notification that says what to do, and nothing is lost."""

import numpy as np
import pytest
import torch

from napari_spoco.core.checkpoint import save_checkpoint
from napari_spoco.core.config import ModelConfig, TrainConfig
from napari_spoco.core.training import Trainer


def _messages(notifications):
    return [str(n.message) for n in notifications]


def _press_train(panel, qtbot):
    panel.train.train_button.click()
    qtbot.wait(50)
    return panel.state.training


def test_no_image(make_napari_viewer, notifications, qtbot):
    from napari_spoco.widgets import SpocoWidget

    viewer = make_napari_viewer()
    panel = SpocoWidget(viewer)
    viewer.window.add_dock_widget(panel)
    panel.annotate.new_object_button.click()
    assert "Open an image first" in _messages(notifications)[-1]
    assert not _press_train(panel, qtbot)
    assert "No annotation to train on" in _messages(notifications)[-1]
    panel.segment.predict_button.click()
    assert "Open an image to segment first" in _messages(notifications)[-1]


def test_annotation_of_the_wrong_shape(panel, notifications, qtbot):
    viewer = panel.viewer
    wrong = viewer.add_labels(np.zeros((100, 100), dtype=np.uint32), name="other")
    panel.annotate.image_box.set_layer(viewer.layers["nuclei"])
    panel.annotate.annotation_box.set_layer(wrong)
    panel.annotate.new_object_button.click()
    message = _messages(notifications)[-1]
    assert "'other' does not fit 'nuclei'" in message and "(512, 512)" in message
    assert "spoco" not in wrong.metadata  # not linked, nothing changed


def test_no_annotated_object(panel, notifications, qtbot):
    panel.annotate.new_annotation_layer()
    assert not _press_train(panel, qtbot)
    assert "No annotated object yet" in _messages(notifications)[-1]


def test_a_single_object_trains_with_a_warning(panel, notifications, qtbot):
    layer = panel.annotate.new_annotation_layer()
    data = np.zeros((512, 512), dtype=np.uint32)
    data[100:120, 100:120] = 1
    layer.data = data
    panel.train.settings.segment_when_done.setChecked(False)
    panel.train.settings.iterations.value = 2
    with qtbot.waitSignal(panel.train.finished, timeout=60_000) as finished:
        panel.train.train_button.click()
    assert finished.args == [True]
    assert any("push term needs two" in m for m in _messages(notifications))


def test_image_too_small_for_the_network(make_napari_viewer, notifications, qtbot):
    from napari_spoco.widgets import SpocoWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((12, 12)), name="tiny")
    panel = SpocoWidget(viewer)
    layer = panel.annotate.new_annotation_layer()
    data = np.zeros((12, 12), dtype=np.uint32)
    data[2:5, 2:5], data[7:10, 7:10] = 1, 2
    layer.data = data
    panel.train.settings.object_diameter.setValue(24)  # no upscaling
    assert not _press_train(panel, qtbot)
    assert "too small for the network" in _messages(notifications)[-1]
    panel.stop_workers()


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        (np.float32(np.nan), "NaN or infinite"),
        (np.float32(np.inf), "NaN or infinite"),
    ],
)
def test_nan_and_inf_pixels(make_napari_viewer, notifications, qtbot, pixels, expected):
    from napari_spoco.widgets import SpocoWidget

    viewer = make_napari_viewer()
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    image[5, 5] = pixels
    viewer.add_image(image, name="broken")
    panel = SpocoWidget(viewer)
    layer = panel.annotate.new_annotation_layer()
    data = np.zeros((64, 64), dtype=np.uint32)
    data[10:20, 10:20], data[30:40, 30:40] = 1, 2
    layer.data = data
    assert not _press_train(panel, qtbot)
    assert expected in _messages(notifications)[-1]
    panel.stop_workers()


def test_unsupported_pixel_type(make_napari_viewer, notifications, qtbot):
    from napari_spoco.widgets import SpocoWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), dtype=np.float32), name="complex")
    # napari cannot draw complex pixels, so hand the layer such an array behind its back,
    # as a script or another plugin might.
    viewer.layers["complex"]._data = np.zeros((64, 64), dtype=np.complex64)
    panel = SpocoWidget(viewer)
    layer = panel.annotate.new_annotation_layer()
    data = np.zeros((64, 64), dtype=np.uint32)
    data[10:20, 10:20], data[30:40, 30:40] = 1, 2
    layer.data = data
    assert not _press_train(panel, qtbot)
    assert "pixel type complex64" in _messages(notifications)[-1]
    panel.stop_workers()


def test_model_file_that_is_not_ours(panel, notifications, tmp_path):
    foreign = tmp_path / "weights.pt"
    torch.save({"some": torch.zeros(3)}, foreign)
    assert not panel.files.load_model(foreign)
    assert "is not a napari-spoco model file" in _messages(notifications)[-1]
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    assert not panel.files.load_model(text)
    assert "not a napari-spoco model file" in _messages(notifications)[-1]
    assert panel.state.loaded_builtin == "nuclei"  # the model before the failed load stays


def test_model_with_a_different_number_of_channels(panel, notifications, tmp_path, qtbot):
    config = TrainConfig(model=ModelConfig(in_channels=3, depth=2, base_features=8))
    path = save_checkpoint(tmp_path / "rgb.pt", Trainer(config, device="cpu").checkpoint())
    assert panel.files.load_model(path)
    panel.segment.predict_button.click()
    assert "The model reads 3-channel 2D images" in _messages(notifications)[-1]
    layer = panel.annotate.new_annotation_layer()
    data = np.zeros((512, 512), dtype=np.uint32)
    data[10:30, 10:30], data[50:70, 50:70] = 1, 2
    layer.data = data
    assert not _press_train(panel, qtbot)
    assert "loaded model reads 3-channel" in _messages(notifications)[-1]


def test_a_bioimageio_package_opens_in_the_panel(panel, tmp_path):
    """The panel loads models through the core's one loader, packages included."""
    pytest.importorskip("bioimageio.core")
    from napari_spoco.core.bioimageio import export_bioimageio
    from napari_spoco.core.checkpoint import Checkpoint

    config = TrainConfig(model=ModelConfig(depth=2, base_features=8), patch_shape=(64, 64))
    start = Trainer(config, device="cpu").checkpoint()
    package = export_bioimageio(
        Checkpoint(config=config, model_state=start.model_state, step=3),
        tmp_path / "model.zip",
        test_image=np.random.default_rng(0).random((64, 64), np.float32),
    )
    assert panel.files.load_model(package)
    assert panel.state.loaded_checkpoint.config == config
    assert panel.state.loaded_checkpoint.step == 3
    assert panel.train.settings.size_box.currentText() == "model file: model.zip"
