"""The panel driven like a user: annotate → train → segment → correct, save and reload."""

import numpy as np
import pytest
from qtpy.QtCore import QElapsedTimer, QTimer

from napari_spoco.core.metrics import average_precision
from napari_spoco.core.recipe import FINE_TUNE_ITERATIONS
from napari_spoco.core.sample_data import load_nuclei_2d, load_nuclei_3d
from napari_spoco.testing import annotate_like_a_user
from napari_spoco.widgets import SpocoWidget


def _recall_of_annotated(annotation, instances, threshold=0.5):
    """Share of annotated objects matched by one predicted instance with IoU > threshold."""
    found = 0
    ids = [i for i in np.unique(annotation) if i]
    for i in ids:
        mask = annotation == i
        labels, counts = np.unique(instances[mask], return_counts=True)
        best = max(
            (
                c / (mask.sum() + (instances == lab).sum() - c)
                for lab, c in zip(labels, counts, strict=True)
                if lab
            ),
            default=0,
        )
        found += best > threshold
    return found / len(ids)


def _generalist_step():
    """Steps behind the built-in generalist, where the panel's training starts by default."""
    from napari_spoco.core.pretrained import load_model_source

    return load_model_source("nuclei").step


def _train(panel, qtbot, iterations, timeout=900_000):  # generous: no speed test
    panel.train.settings.iterations.value = iterations
    with qtbot.waitSignal(panel.segment.segmented, timeout=timeout):
        panel.train.train_button.click()


@pytest.mark.slow
def test_paint_train_segment_recovers_annotated_and_unseen_nuclei(panel, paint, qtbot):
    annotation_layer, truth = paint(panel, fraction=0.1, background=True)
    annotation = np.array(annotation_layer.data)
    objects = annotation != annotation_layer.metadata["spoco"]["background_id"]
    annotation = np.where(objects, annotation, 0)
    steps = FINE_TUNE_ITERATIONS  # the recipe's run: AP@0.5 0.79 measured here
    _train(panel, qtbot, steps)

    viewer = panel.viewer
    for name, shape in (
        ("nuclei instances", (512, 512)),
        ("nuclei foreground", (512, 512)),
        ("nuclei embeddings", (512, 512, 3)),
    ):
        assert viewer.layers[name].data.shape == shape, name
    instances = np.asarray(viewer.layers["nuclei instances"].data)
    # Most painted nuclei come back as instances ...
    assert _recall_of_annotated(annotation, instances) >= 0.5
    # ... and so do the ones nobody painted: the panel fine-tuned the nuclei generalist,
    # which was never trained on this image (docs/benchmarks.md has the numbers).
    assert average_precision(truth, instances) >= 0.6
    start = _generalist_step()
    assert f"Finished at step {start + steps}" in panel.train.status.text()
    assert len(panel.train.plot.history) == steps
    assert panel.state.trainer.step == start + steps


def test_stop_takes_effect_within_a_step_and_train_continues(panel, paint, qtbot):
    paint(panel)
    panel.train.settings.segment_when_done.setChecked(False)
    panel.train.settings.iterations.value = 10_000
    panel.train.settings.preview_every.setValue(0)
    with qtbot.waitSignal(panel.train.finished, timeout=120_000) as finished:
        panel.train.train_button.click()
        start = _generalist_step()
        qtbot.waitUntil(lambda: panel.state.trainer.step >= start + 2, timeout=60_000)
        panel.train.stop_button.click()
        stopped_at = panel.state.trainer.step
    assert finished.args == [False]
    assert panel.state.trainer.step <= stopped_at + 1
    assert "Stopped" in panel.train.status.text()
    qtbot.waitUntil(lambda: not panel.state.training and not panel.state.workers, timeout=10_000)
    # Train again continues the same network from where it stopped.
    step = panel.state.trainer.step
    trainer = panel.state.trainer
    panel.train.settings.iterations.value = 3
    with qtbot.waitSignal(panel.train.finished, timeout=120_000):
        panel.train.train_button.click()
    assert panel.state.trainer is trainer and trainer.step == step + 3
    assert panel.train.train_button.text() == "Continue training"


def test_the_viewer_keeps_responding_while_training(panel, paint, qtbot, record_property):
    """A 10 ms QTimer probe: the longest gap between its ticks is the worst GUI stall."""
    annotation_layer, _ = paint(panel)
    panel.train.settings.segment_when_done.setChecked(False)
    panel.train.settings.iterations.value = 25
    panel.train.settings.preview_every.setValue(1)
    clock, gaps = QElapsedTimer(), []

    def tick():
        gaps.append(clock.restart())

    probe = QTimer()
    probe.setInterval(10)
    probe.timeout.connect(tick)
    with qtbot.waitSignal(panel.train.finished, timeout=300_000):
        panel.train.train_button.click()
        clock.start()
        probe.start()
    probe.stop()
    elapsed = sum(gaps)
    record_property("gui_max_stall_ms", max(gaps))
    print(f"GUI probe: {len(gaps)} ticks over {elapsed} ms, max stall {max(gaps)} ms")
    # Training on the GUI thread would freeze it for the whole run (seconds): the
    # bound is loose on purpose (shared CI machines), the printed value is the measurement.
    assert elapsed > 3000 and max(gaps) < min(1000, elapsed / 4)
    layers = panel.viewer.layers
    qtbot.waitUntil(lambda: "nuclei preview instances" in layers, timeout=5000)
    assert "nuclei preview" in layers
    # napari selects every new layer: the panel gives the brush back to the annotation.
    qtbot.waitUntil(lambda: layers.selection.active == annotation_layer, timeout=5000)


def test_promote_delete_and_merge_instances(panel, paint, qtbot):
    annotation_layer, truth = paint(panel, fraction=0.05)
    viewer = panel.viewer
    instances = viewer.add_labels(truth.astype(np.uint32), name="nuclei instances")
    panel.correct.attach("nuclei")
    target = int(np.setdiff1d(np.unique(truth), np.unique(annotation_layer.data))[1])
    position = np.argwhere(truth == target)[0]
    before = int(annotation_layer.data.max())
    new_id = panel.correct.accept_at(tuple(position))
    assert new_id == before + 1
    np.testing.assert_array_equal(annotation_layer.data == new_id, truth == target)
    # Accepting an annotated object again changes nothing.
    assert panel.correct.accept_at(tuple(position)) == 0
    # Delete and merge act on the prediction under the cursor.
    other = int(truth[tuple(np.argwhere((truth > 0) & (truth != target))[0])])
    viewer.cursor.position = tuple(np.argwhere(truth == other)[0])
    panel.correct.delete_at_cursor()
    assert not (instances.data == other).any()
    instances.selected_label = target
    third = int(np.setdiff1d(np.unique(instances.data), [0, target])[0])
    viewer.cursor.position = tuple(np.argwhere(instances.data == third)[0])
    panel.correct.merge_at_cursor()
    assert not (instances.data == third).any()
    # Accept all adds every instance that touches nothing painted.
    count = int(len(np.unique(annotation_layer.data)) - 1)
    added = panel.correct.accept_all_button.click()
    assert added is None and len(np.unique(annotation_layer.data)) - 1 > count


def test_click_mode_accepts_the_clicked_instance(panel, paint, qtbot):
    annotation_layer, truth = paint(panel, fraction=0.05)
    panel.viewer.add_labels(truth.astype(np.uint32), name="nuclei instances")
    panel.correct.click_button.setChecked(True)
    layer = panel.viewer.layers["nuclei instances"]
    assert panel.viewer.layers.selection.active is layer and layer.mode == "pan_zoom"
    target = int(np.setdiff1d(np.unique(truth), np.unique(annotation_layer.data))[1])
    position = tuple(float(v) for v in np.argwhere(truth == target)[0])

    class Click:
        type = "mouse_press"
        position = None

    event = Click()
    event.position = position
    callback = panel.correct._clicked(layer, event)
    next(callback)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(callback)
    assert (annotation_layer.data[truth == target] > 0).all()


def test_save_and_reload_the_session(panel, paint, qtbot, tmp_path):
    annotation_layer, _ = paint(panel, background=True)
    panel.train.settings.segment_when_done.setChecked(False)
    panel.train.settings.iterations.value = 2
    with qtbot.waitSignal(panel.train.finished, timeout=120_000):
        panel.train.train_button.click()
    qtbot.waitUntil(lambda: not panel.state.training, timeout=10_000)
    folder = panel.files.save_session(tmp_path / "session")
    model = panel.files.save_model(tmp_path / "model.pt")
    assert (folder / "session.json").is_file() and model.is_file()
    painted = np.array(annotation_layer.data)
    background_id = annotation_layer.metadata["spoco"]["background_id"]

    viewer = panel.viewer
    for name in list(viewer.layers.copy()):
        viewer.layers.remove(name)
    assert panel.files.open_session(folder)
    restored = viewer.layers[annotation_layer.name]
    np.testing.assert_array_equal(restored.data, painted)
    assert restored.metadata["spoco"]["background_id"] == background_id
    assert panel.state.pair_for(restored).image.name == "nuclei"
    assert panel.state.loaded_checkpoint.step == _generalist_step() + 2
    assert len(panel.state.loaded_checkpoint.history) == 2
    # The restored model segments, and training continues from it (fine-tuning).
    with qtbot.waitSignal(panel.segment.segmented, timeout=120_000):
        panel.segment.predict()
    assert viewer.layers["nuclei instances"].data.shape == (512, 512)


def test_opening_a_session_keeps_open_layers_that_differ_from_it(panel, paint, tmp_path):
    """Painting done since the save is not overwritten; the session's layers come beside."""
    annotation_layer, _ = paint(panel, fraction=0.05)
    folder = panel.files.save_session(tmp_path / "session")
    saved = np.array(annotation_layer.data)
    later = saved.copy()
    later[:5, :5] = 77  # painted after the save
    annotation_layer.data = later
    viewer = panel.viewer
    assert panel.files.open_session(folder)
    np.testing.assert_array_equal(viewer.layers[annotation_layer.name].data, later)
    restored = next(
        layer for layer in viewer.layers
        if layer is not annotation_layer and np.array_equal(layer.data, saved)
    )  # fmt: skip
    # The image is the same, so it is reused rather than added twice.
    assert panel.state.pair_for(restored).image is viewer.layers["nuclei"]
    assert [layer.name for layer in viewer.layers].count("nuclei") == 1
    assert len([layer for layer in viewer.layers if layer.name.startswith("nuclei [")]) == 0


def test_annotations_autosave_and_restore(panel, paint, qtbot):
    annotation_layer, _ = paint(panel)
    worker = panel.files.autosave()
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    painted = np.array(annotation_layer.data)
    panel.viewer.layers.remove(annotation_layer)
    assert panel.files.restore_autosave()
    np.testing.assert_array_equal(panel.viewer.layers[annotation_layer.name].data, painted)


def test_fine_tune_a_model_file_chosen_in_the_network_box(
    panel, paint, qtbot, tmp_path, monkeypatch
):
    from napari_spoco.core.pretrained import load_model_source
    from napari_spoco.core.recipe import FINE_TUNE_LR, REFINE_LR_SHARE
    from napari_spoco.widgets import files

    paint(panel)
    settings = panel.train.settings
    generalist = load_model_source("nuclei").config.loss
    assert (settings.delta_v.value, settings.delta_d.value) == (
        generalist.delta_v,
        generalist.delta_d,
    )
    settings.segment_when_done.setChecked(False)
    settings.iterations.value = 2
    settings.delta_v.value = 0.7  # margins of its own, which the saved model keeps
    with qtbot.waitSignal(panel.train.finished, timeout=120_000):
        panel.train.train_button.click()
    path = panel.files.save_model(tmp_path / "first.pt")
    panel.train.reset_button.click()
    assert panel.state.trainer is None
    settings.delta_v.value = 0.9  # changed, then a model is chosen: the model's margins win
    monkeypatch.setattr(
        files.QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), ""))
    )
    panel.train.settings.size_box.setCurrentText("fine-tune a model file…")
    assert panel.train.settings.size_box.currentText() == "model file: first.pt"
    with qtbot.waitSignal(panel.train.finished, timeout=120_000):
        panel.train.train_button.click()
    trainer = panel.state.trainer
    assert trainer.step == _generalist_step() + 4
    # first.pt was fine-tuned from the generalist: training it again takes smaller steps.
    assert trainer.learning_rate == pytest.approx(FINE_TUNE_LR * REFINE_LR_SHARE)
    assert trainer.config.loss.delta_v == settings.delta_v.value == 0.7
    assert panel.train.settings.size_box.currentText() == "model file: first.pt"


def test_the_generalist_is_the_default_and_segments_before_anything_is_painted(panel, qtbot):
    """Zero-shot: choose nothing, paint nothing, press Segment."""
    _, truth = load_nuclei_2d()
    settings = panel.train.settings
    assert settings.size_box.currentText() == "Nuclei generalist (pretrained)"
    assert panel.state.loaded_builtin == "nuclei"
    assert "Segment works before you paint" in panel.train.status.text()
    with qtbot.waitSignal(panel.segment.segmented, timeout=120_000):
        panel.segment.predict_button.click()
    instances = np.asarray(panel.viewer.layers["nuclei instances"].data)
    assert average_precision(truth, instances) >= 0.64  # 0.655 measured; the target 0.7 is missed
    # A finished job leaves the panel's list of jobs to stop on close.
    qtbot.waitUntil(lambda: not panel.state.workers, timeout=10_000)
    # A new network replaces it, and choosing it again brings it back. The iterations
    # follow the recipe (150 fine-tuning, 1000 new), until the user sets them.
    assert settings.iterations.value == 150
    settings.size_box.setCurrentText("new small network")
    assert panel.state.loaded_checkpoint is None and settings.iterations.value == 1000
    settings.size_box.setCurrentText("Nuclei generalist (pretrained)")
    assert panel.state.loaded_builtin == "nuclei" and settings.iterations.value == 150
    settings.iterations.value = 400
    settings.size_box.setCurrentText("new small network")
    assert settings.iterations.value == 400
    settings.size_box.setCurrentText("Nuclei generalist (pretrained)")


def test_3d_images_train_a_new_network_instead_of_the_generalist(
    make_napari_viewer, paint, qtbot, notifications
):
    viewer = make_napari_viewer()
    image, truth = load_nuclei_3d()
    viewer.add_image(image[:16, :64, :64], name="stack")
    panel = SpocoWidget(viewer)
    viewer.window.add_dock_widget(panel)
    annotate_like_a_user(panel, truth[:16, :64, :64], fraction=0.3, background=False)
    panel.train.settings.segment_when_done.setChecked(False)
    panel.train.settings.iterations.value = 1
    panel.train.settings.patch_depth.setValue(8)
    panel.train.settings.patch_size.setValue(32)
    with qtbot.waitSignal(panel.train.finished, timeout=120_000):
        panel.train.train_button.click()
    assert panel.state.trainer.config.model.spatial_dims == 3 and panel.state.trainer.step == 1
    assert any("training a new medium network" in n.message for n in notifications)
    panel.stop_workers()


def test_segment_lists_the_likely_mistakes_and_go_to_moves_the_camera(panel, paint, qtbot):
    """After Segment: a hidden uncertainty layer, a ranked list with reasons, working actions."""
    annotation_layer, _ = paint(panel, fraction=0.05)
    with qtbot.waitSignal(panel.state.doubts_changed, timeout=120_000):
        panel.segment.predict_button.click()
    viewer, correct = panel.viewer, panel.correct
    doubt_layer = viewer.layers["nuclei uncertainty"]
    assert not doubt_layer.visible and 0 <= doubt_layer.data.min() <= doubt_layer.data.max() <= 1
    assert correct.doubt_list.count() == len(panel.state.doubts["nuclei"]) > 0
    scores = [d.score for _, d in panel.state.doubts["nuclei"]]
    assert scores == sorted(scores, reverse=True)
    first = correct.doubt_list.item(0).text()
    assert any(why in first for why in ("several", "piece", "shape", "border", "unsure", "missed"))

    instances = viewer.layers["nuclei instances"]
    row = next(i for i, (_, d) in enumerate(correct._doubts) if d.label > 0)
    correct.doubt_list.setCurrentRow(row)
    _, doubt = correct.chosen_doubt()
    camera = getattr(viewer, "scene", viewer).camera
    camera.center, camera.zoom = (0.0, 0.0), 0.5
    correct.doubt_buttons["goto"].click()
    assert np.allclose(camera.center[-2:], doubt.centre, atol=1.0)
    assert camera.zoom > 0.5
    before = correct.doubt_list.count()
    correct.doubt_buttons["delete_doubt"].click()
    assert not (np.asarray(instances.data) == doubt.label).any()
    assert correct.doubt_list.count() == before - 1
    row = next((i for i, (_, d) in enumerate(correct._doubts) if d.label > 0), None)
    if row is not None:  # accept copies the next listed instance into the annotation
        correct.doubt_list.setCurrentRow(row)
        objects = len(np.unique(annotation_layer.data))
        correct.doubt_buttons["accept_doubt"].click()
        assert len(np.unique(annotation_layer.data)) == objects + 1


def test_result_layers_are_found_by_role_after_the_user_renames_them(panel, paint, qtbot):
    paint(panel, fraction=0.05)
    with qtbot.waitSignal(panel.state.doubts_changed, timeout=120_000):
        panel.segment.predict_button.click()
    viewer = panel.viewer
    viewer.layers["nuclei instances"].name = "my nuclei"
    renamed = viewer.layers["my nuclei"]
    renamed.data = np.zeros_like(renamed.data)
    with qtbot.waitSignal(panel.state.doubts_changed, timeout=120_000):
        panel.segment.predict_button.click()
    assert "nuclei instances" not in viewer.layers  # the renamed layer was updated instead
    assert renamed.data.max() > 0
    assert panel.correct._instances_layer(panel.correct._pair()) is renamed
