"""The panel as napari shows it: plugin menu, tooltips, image kinds, closing."""

import tempfile

import numpy as np
import pytest
from qtpy.QtCore import QThreadPool
from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QListWidget

from napari_spoco.core.sample_data import load_nuclei_2d, load_nuclei_3d
from napari_spoco.widgets import SpocoWidget


def test_panel_opens_from_the_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-spoco", "SPOCO")
    assert isinstance(widget, SpocoWidget)
    titles = [action.text() for action in viewer.window.plugins_menu.actions()]
    assert any("SPOCO" in title for title in titles), titles


def test_panel_from_the_plugins_menu_trains_with_a_preview(make_napari_viewer, paint, qtbot):
    """Through the menu the panel sees layers via napari's proxies: pairs must still match."""
    viewer = make_napari_viewer()
    viewer.add_image(load_nuclei_2d()[0], name="nuclei")
    _, panel = viewer.window.add_plugin_dock_widget("napari-spoco", "SPOCO")
    annotation, _ = paint(panel)
    assert panel.state.pair_for(viewer.layers[annotation.name]) is not None
    panel.train.settings.segment_when_done.setChecked(False)
    panel.train.settings.iterations.value = 3
    panel.train.settings.preview_every.setValue(0.1)
    with qtbot.waitSignal(panel.train.finished, timeout=180_000):
        panel.train.train_button.click()
    qtbot.waitUntil(lambda: "nuclei preview instances" in viewer.layers, timeout=10_000)
    assert viewer.layers["nuclei preview"].rgb


def test_every_control_explains_itself(panel):
    controls = [
        w
        for kind in (QAbstractButton, QComboBox, QAbstractSpinBox, QListWidget)
        for w in panel.findChildren(kind)
        if w.parent() is not None and "Collapsible" not in type(w.parent()).__name__
    ]
    assert len(controls) > 30
    missing = [w for w in controls if not w.toolTip() and w.text() != "Advanced"]
    assert not missing, [type(w).__name__ for w in missing]


def test_closing_the_viewer_right_after_opening_does_not_abort_python(tmp_path):
    """The optimiser warm-up still running at exit must not take the process down."""
    import os
    import subprocess
    import sys

    script = tmp_path / "close_fast.py"
    script.write_text(
        "import time\n"
        "import napari\n"
        "from napari_spoco.widgets import SpocoWidget, train\n"
        "train._warm_up_optimizer = lambda: time.sleep(2)  # still running at exit\n"
        "viewer = napari.Viewer(show=False)\n"
        "viewer.window.add_dock_widget(SpocoWidget(viewer))\n"
        "viewer.close()\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_closing_the_viewer_stops_training(make_napari_viewer, paint, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(load_nuclei_2d()[0], name="nuclei")
    _, panel = viewer.window.add_plugin_dock_widget("napari-spoco", "SPOCO")
    paint(panel)
    panel.train.settings.iterations.value = 100_000
    panel.train.train_button.click()
    qtbot.waitUntil(lambda: panel.state.trainer.step >= 1, timeout=60_000)
    trainer = panel.state.trainer
    viewer.close()
    assert QThreadPool.globalInstance().waitForDone(30_000)
    qtbot.waitUntil(lambda: panel.state.trainer is None, timeout=10_000)
    step = trainer.step
    qtbot.wait(500)
    assert trainer.step == step < 100_000  # stopped, not running on in the background


def test_closing_waits_for_our_workers_only(panel, paint, qtbot):
    """Another plugin's job in napari's thread pool must not hold up closing the panel."""
    import threading

    from napari.qt.threading import thread_worker

    release = threading.Event()
    foreign = thread_worker(lambda: release.wait(60))()
    foreign.start()
    qtbot.waitUntil(lambda: foreign.is_running, timeout=10_000)
    paint(panel)
    panel.train.settings.iterations.value = 100_000
    panel.train.train_button.click()
    qtbot.waitUntil(lambda: panel.state.trainer.step >= 1, timeout=60_000)
    ours = panel.train.worker
    try:
        assert panel.stop_workers(timeout_ms=30_000)
        assert not ours.is_running
        assert foreign.is_running  # not waited for: it would have run for up to 60 s
    finally:
        release.set()
    qtbot.waitUntil(lambda: not foreign.is_running, timeout=10_000)


def _annotate(panel, layer_name, labels):
    panel.annotate.image_box.set_layer(panel.viewer.layers[layer_name])
    layer = panel.annotate.new_annotation_layer()
    layer.data = labels.astype(np.uint32)
    return layer


def _train_and_segment(panel, qtbot, iterations=3):
    panel.train.settings.iterations.value = iterations
    panel.train.settings.preview_every.setValue(0)
    with qtbot.waitSignal(panel.train.finished, timeout=180_000) as trained:
        panel.train.train_button.click()
        assert panel.state.training, "training did not start"
    assert trained.args == [True], "training failed"
    qtbot.waitSignal(panel.segment.segmented, timeout=180_000).wait()


def test_3d_stack(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, truth = load_nuclei_3d()
    viewer.add_image(image, name="stack", scale=(2.0, 1.0, 1.0))
    panel = SpocoWidget(viewer)
    assert panel.annotate.axes().spec == "ZYX"
    layer = _annotate(panel, "stack", np.where(np.isin(truth, np.unique(truth)[1:6]), truth, 0))
    assert layer.data.shape == image.shape and tuple(layer.scale) == (2.0, 1.0, 1.0)
    panel.train.settings.patch_size.setValue(48)
    panel.train.settings.patch_depth.setValue(8)
    _train_and_segment(panel, qtbot)
    model = panel.state.trainer.config.model
    assert model.spatial_dims == 3 and model.norm == "group"
    instances = viewer.layers["stack instances"]
    assert instances.data.shape == image.shape and tuple(instances.scale) == (2.0, 1.0, 1.0)
    panel.stop_workers()


@pytest.mark.parametrize("axes", ["CYX", "YXC"])
def test_multichannel_and_rgb_images(make_napari_viewer, qtbot, axes):
    viewer = make_napari_viewer()
    image, truth = load_nuclei_2d()
    image, truth = image[:160, :160], truth[:160, :160]
    if axes == "CYX":
        data = np.stack([image, image.max() - image])
        viewer.add_image(data, name="cells")
    else:
        gray = (255 * image / image.max()).astype(np.uint8)
        viewer.add_image(np.stack([gray] * 3, axis=-1), name="cells", rgb=True)
    panel = SpocoWidget(viewer)
    assert panel.annotate.axes().spec == axes
    layer = _annotate(panel, "cells", np.where(np.isin(truth, np.unique(truth)[1:5]), truth, 0))
    assert layer.data.shape == (160, 160)
    _train_and_segment(panel, qtbot)
    assert panel.state.trainer.config.model.in_channels == (2 if axes == "CYX" else 3)
    assert viewer.layers["cells instances"].data.shape == (160, 160)
    panel.stop_workers()


def test_time_series_trains_on_annotated_frames_and_segments_all(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, truth = load_nuclei_2d()
    frames = np.stack([image[:128, :128], image[128:256, :128], image[256:384, :128]])
    viewer.add_image(frames, name="movie")
    panel = SpocoWidget(viewer)
    panel.annotate.axes_box.setCurrentText("TYX")
    labels = np.zeros(frames.shape, dtype=np.uint32)
    middle = truth[128:256, :128]
    labels[1] = np.where(np.isin(middle, np.unique(middle)[1:6]), middle, 0)
    _annotate(panel, "movie", labels)
    data = panel.state.training_data()
    assert len(data.images) == 1 and data.images[0].shape == (128, 128)  # frame 1 only
    panel.segment.scope.setCurrentText("all time points")
    _train_and_segment(panel, qtbot)
    instances = viewer.layers["movie instances"].data
    assert instances.shape == frames.shape
    panel.stop_workers()


def test_large_images_are_segmented_block_wise_and_shown_lazily(
    panel, qtbot, monkeypatch, tmp_path
):
    import dask.array as da

    from napari_spoco import bigdata
    from napari_spoco.core.checkpoint import save_checkpoint
    from napari_spoco.core.config import TrainConfig
    from napari_spoco.core.recipe import model_config_for
    from napari_spoco.core.training import Trainer

    model = model_config_for(2, 1, size="small")
    path = save_checkpoint(
        tmp_path / "m.pt", Trainer(TrainConfig(model=model), device="cpu").checkpoint()
    )
    assert panel.files.load_model(path)
    monkeypatch.setattr(bigdata, "LARGE_IMAGE_PIXELS", 256 * 256)  # the 512² sample counts as large
    scratch = tmp_path / "system-temp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with qtbot.waitSignal(panel.segment.segmented, timeout=120_000):
        panel.segment.predict()
    layer = panel.viewer.layers["nuclei instances"]
    assert isinstance(layer.data, da.Array) and layer.data.shape == (512, 512)
    assert "block-wise" in panel.segment.status.text()
    first = list(scratch.iterdir())
    assert len(first) == 1 and (first[0] / "instances.zarr").is_dir()
    with qtbot.waitSignal(panel.segment.segmented, timeout=120_000):
        panel.segment.predict()
    second = list(scratch.iterdir())
    assert len(second) == 1 and second != first  # the layer no longer reads the first result
    panel.viewer.layers.remove(layer)
    assert not any(scratch.iterdir())  # nothing left behind in the system's temp folder


def test_advanced_settings_reach_the_training_config(panel, paint):
    from napari_spoco.core.config import LossConfig

    paint(panel, background=True)
    settings = panel.train.settings
    # Untouched boxes give the config's own defaults, to the last decimal (0.001 included).
    untouched = settings.build_config(panel.state.training_data()).loss
    for name in settings.loss_boxes:
        if name not in ("ring_width", "delta_v", "delta_d"):  # the recipe's / the model's
            assert getattr(untouched, name) == getattr(LossConfig(), name), name
    settings.loss_boxes["triplet_weight"].value = 0.5
    settings.triplet_on.value = "bottleneck"
    settings.loss_boxes["dispersive_weight"].value = 0.1
    settings.delta_d.value = 2.5
    settings.patch_size.setValue(96)
    settings.object_diameter.setValue(48)
    data = panel.state.training_data()
    config = settings.build_config(data)
    assert config.loss.triplet_weight == 0.5 and config.loss.dispersive_weight == 0.1
    assert config.model.bottleneck_projection and config.model.foreground_head
    assert config.loss.delta_d == 2.5 and config.patch_shape == (96, 96)
    assert config.object_scale == 0.5 and config.loss.background_id == data.background_id
    # The painted nuclei lie apart: the ring stays; "Objects touch: yes" or a width set by
    # hand wins over the painting.
    assert config.loss.ring_width == 2
    settings.objects_touch.setCurrentText("yes")
    assert settings.build_config(data).loss.ring_width == 0
    settings.loss_boxes["ring_width"].value = 5
    assert settings.build_config(data).loss.ring_width == 5
    # Small values survive the boxes' decimals, and a model's margins fit its boxes.
    settings.train_boxes["learning_rate"].value = 5e-5
    settings.loss_boxes["push_weight"].value = 0.004
    settings.show_margins(LossConfig(delta_v=0.005, delta_d=250.125))
    config = settings.build_config(data)
    assert config.learning_rate == pytest.approx(5e-5) and config.loss.push_weight == 0.004
    assert (config.loss.delta_v, config.loss.delta_d) == (0.005, 250.125)


def test_iterations_follow_a_painting_of_touching_objects(panel, qtbot):
    from napari_spoco.core.recipe import FINE_TUNE_ITERATIONS, TOUCHING_ITERATIONS

    settings = panel.train.settings
    layer = panel.annotate.new_annotation_layer()
    layer.data = np.zeros_like(layer.data)  # napari's events, as after painting
    assert settings.iterations.value == FINE_TUNE_ITERATIONS
    assert settings.objects_touch.currentText() == "auto (painting: apart)"
    side_by_side = np.zeros_like(layer.data)
    side_by_side[100:130, 100:130], side_by_side[100:130, 130:160] = 1, 2
    layer.data = side_by_side
    qtbot.waitUntil(lambda: settings.iterations.value == TOUCHING_ITERATIONS, timeout=5_000)
    assert settings.objects_touch.currentText() == "auto (painting: they touch)"
    start = panel.state.loaded_checkpoint
    config = settings.build_config(panel.state.training_data(), start=start)
    assert config.iterations == TOUCHING_ITERATIONS and config.loss.ring_width == 0
    # The user's word wins over the painting, and steps the user set stay.
    settings.objects_touch.setCurrentText("no")
    assert settings.iterations.value == FINE_TUNE_ITERATIONS
    settings.iterations.value = 40
    settings.objects_touch.setCurrentText("yes")
    assert settings.iterations.value == 40


def test_every_loss_term_has_a_weight_box_and_a_curve(panel):
    """The settings and the loss plot follow the core's one list of terms."""
    from napari_spoco.core.config import ALL_LOSS_TERMS

    settings = panel.train.settings
    weights = {name for name in settings.loss_boxes if name.endswith("_weight")}
    assert weights == {f"{term}_weight" for term in ALL_LOSS_TERMS}
    plot = panel.train.plot
    plot.set_history([])
    assert plot.placeholder.get_visible()  # not an empty axis from -0.04 to 0.04
    plot.set_history([
        {"step": step, "loss_total": 1.0, **{f"loss_{t}": 1.0 / step for t in ALL_LOSS_TERMS}}
        for step in (1, 2, 3)
    ])  # fmt: skip
    shown = [term for term, line in plot.lines.items() if line.get_visible()]
    assert shown == ["total", *ALL_LOSS_TERMS] and not plot.placeholder.get_visible()
    assert all(term in plot.legend.text() for term in ("triplet", "dispersive", "regularizer"))


def test_every_clustering_method_and_setting_is_offered_and_reaches_the_config(panel):
    """The Segment settings follow the core's one list of methods."""
    from napari_spoco.core.clustering_methods import CLUSTERING_METHODS

    settings = panel.segment.settings
    offered = [settings.method.itemText(i) for i in range(settings.method.count())]
    assert offered == list(CLUSTERING_METHODS)
    for name, method in CLUSTERING_METHODS.items():
        settings.method.setCurrentText(name)
        shown = [
            key
            for key, box in settings.method_settings[name].items()
            if box.native.isVisibleTo(settings)
        ]
        assert shown == [setting.name for setting in method.settings]
        others = [
            b for n, boxes in settings.method_settings.items() if n != name for b in boxes.values()
        ]
        assert not any(box.native.isVisibleTo(settings) for box in others)
        for setting in method.settings:
            settings.method_settings[name][setting.name].value = setting.high
        config = settings.config()
        assert config.method == name
        assert config.params == {setting.name: setting.high for setting in method.settings}
        assert settings.is_fast() == method.fast


def test_segment_averages_eight_orientations_in_2d_unless_told_not_to(
    panel, qtbot, record_keyword, tmp_path
):
    from napari_spoco.core.checkpoint import save_checkpoint
    from napari_spoco.core.config import TrainConfig
    from napari_spoco.core.recipe import model_config_for
    from napari_spoco.core.training import Trainer
    from napari_spoco.widgets import _jobs

    seen = record_keyword(_jobs, "predict", "augment")
    model = model_config_for(2, 1, size="small")
    path = save_checkpoint(
        tmp_path / "m.pt", Trainer(TrainConfig(model=model), device="cpu").checkpoint()
    )
    assert panel.files.load_model(path)
    assert panel.segment.augment.currentText().startswith("auto")
    for choice in ("auto (on in 2D)", "off", "on"):
        panel.segment.augment.setCurrentText(choice)
        with qtbot.waitSignal(panel.segment.segmented, timeout=120_000):
            panel.segment.predict()
    assert seen == [True, False, True]
