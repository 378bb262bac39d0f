import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
import zarr
from skimage.io import imread

from napari_spoco.cli import main
from napari_spoco.core.checkpoint import load_checkpoint
from napari_spoco.core.recipe import MODEL_PRESETS, TOUCHING_ITERATIONS


def test_headless_demo_runs_the_panel_and_writes_screenshot_and_instances(tmp_path):
    """The whole loop through the real widgets in a viewer that is not shown (needs a display)."""
    result = subprocess.run(
        [sys.executable, "-m", "napari_spoco", "demo", "--headless", "--out", str(tmp_path),
         "--iterations", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    screenshot = imread(tmp_path / "screenshot.png")
    assert screenshot.shape[0] > 600 and screenshot.shape[1] > 1000  # the window, not the canvas
    from napari_spoco.core.pretrained import load_model_source

    # The demo fine-tunes the nuclei generalist, after segmenting with it zero-shot.
    assert load_checkpoint(tmp_path / "model.pt").step == load_model_source("nuclei").step + 2
    annotation = tifffile.imread(tmp_path / "annotation.tif")
    assert 5 < len(np.unique(annotation)) - 1 < 30
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2
    instances = tifffile.imread(tmp_path / "instances.tif")
    assert instances.shape == (512, 512) and instances.dtype == np.uint32
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores) >= {"ap50", "sbd", "abs_dic", "zero_shot"}
    assert set(scores["zero_shot"]) >= {"ap50", "sbd", "abs_dic"}


def test_bad_arguments_give_a_one_line_error_and_nonzero_exit(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "napari_spoco", "demo", "--out", str(tmp_path), "--fraction", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "napari-spoco demo: error: fraction must lie in (0, 1], got 2.0"
    ]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_spoco",
            "demo",
            "--device",
            "cuda:9",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "not available" in result.stderr


# --------------------------------------------------------------------------- commands

FAST = [
    "--iterations",
    "3",
    "--size",
    "small",
    "--patch",
    "64",
    "64",
    "--batch-size",
    "2",
    "--device",
    "cpu",
    "-q",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two annotated images, one to segment with its ground truth, and a trained model."""
    from napari_spoco.core.annotation import keep_fraction_of_objects
    from napari_spoco.core.sample_data import load_nuclei_2d

    folder = tmp_path_factory.mktemp("cli")
    image, truth = load_nuclei_2d()
    crops = {
        "A": (slice(0, 128), slice(0, 128)),
        "B": (slice(128, 256), slice(0, 128)),
        "C": (slice(0, 128), slice(256, 416)),
    }
    for name, crop in crops.items():
        tifffile.imwrite(folder / f"{name}.tif", image[crop])
        tifffile.imwrite(folder / f"{name}_ann.tif", keep_fraction_of_objects(truth[crop], 0.3))
        tifffile.imwrite(folder / f"{name}_gt.tif", truth[crop])
    args = [
        "train",
        "--images",
        *(str(folder / f"{n}.tif") for n in "AB"),
        "--labels",
        *(str(folder / f"{n}_ann.tif") for n in "AB"),
        "--out",
        str(folder / "model.pt"),
        "--seed",
        "0",
        *FAST,
    ]
    assert main(args) == 0
    return folder


def _error(capsys, argv, command):
    """Run ``argv``; expect exit status 1 and a single error line on stderr."""
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"napari-spoco {command}: error: "), lines
    return lines[0]


def test_train_writes_model_and_history_beside_it(data):
    checkpoint = load_checkpoint(data / "model.pt")
    small = MODEL_PRESETS["small"]
    assert checkpoint.step == 3 and checkpoint.config.model.depth == small["depth"]
    history = json.loads((data / "model_history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3]
    rows = (data / "model_history.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and "loss_total" in rows[0] and len(rows) == 4


def test_optional_loss_terms_reach_the_model_file_and_its_history(data, tmp_path, capsys):
    base = ["train", "--images", str(data / "C.tif"), "--labels", str(data / "C_ann.tif"), *FAST]
    argv = [*base, "--out", str(tmp_path / "ext.pt"), "--triplet-weight", "0.5",
            "--triplet-on", "bottleneck", "--dispersive-weight", "0.1"]  # fmt: skip
    assert main(argv) == 0
    model = load_checkpoint(tmp_path / "ext.pt")
    loss = model.config.loss
    assert (loss.triplet_weight, loss.triplet_on, loss.dispersive_weight) == (
        0.5,
        "bottleneck",
        0.1,
    )
    assert model.config.model.bottleneck_projection  # the triplet needs the projection
    assert {"loss_triplet", "loss_dispersive"} <= set(model.history[-1])
    _error(capsys, [*base, "--out", str(tmp_path / "bad.pt"), "--triplet-margin", "-1"], "train")
    assert not (tmp_path / "bad.pt").exists()


def test_fine_tuning_starts_from_the_model_with_a_tenth_of_the_learning_rate(data, tmp_path):
    argv = [
        "train",
        "--images",
        str(data / "C.tif"),
        "--labels",
        str(data / "C_ann.tif"),
        "--out",
        str(tmp_path / "tuned.pt"),
        "--from",
        str(data / "model.pt"),
        "--object-size",
        "48",
        *FAST,
    ]
    assert main(argv) == 0
    tuned = load_checkpoint(tmp_path / "tuned.pt")
    assert tuned.step == 6 and len(tuned.history) == 6  # continues the start model's history
    assert tuned.config.learning_rate == pytest.approx(1e-4)
    assert tuned.config.object_scale == pytest.approx(0.5)  # 24 px reference / 48 px


def test_pretrain_learns_from_unlabeled_images_and_feeds_fine_tuning(data, tmp_path):
    argv = [
        "pretrain",
        "--images",
        str(data / "A.tif"),
        str(data / "B.tif"),
        "--out",
        str(tmp_path / "pre.pt"),
        *FAST,
    ]
    assert main(argv) == 0
    pre = load_checkpoint(tmp_path / "pre.pt")
    assert pre.config.loss.pull_weight == 0 and pre.config.loss.consistency_weight == 1
    assert all(h["loss_consistency"] > 0 for h in pre.history)
    argv = [
        "train",
        "--images",
        str(data / "A.tif"),
        "--labels",
        str(data / "A_ann.tif"),
        "--out",
        str(tmp_path / "tuned.pt"),
        "--from",
        str(tmp_path / "pre.pt"),
        *FAST,
    ]
    assert main(argv) == 0
    assert load_checkpoint(tmp_path / "tuned.pt").config.loss.pull_weight == 1


def test_predict_segment_and_evaluate(data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "predict",
        "--model",
        str(data / "model.pt"),
        "--images",
        str(data / "C.tif"),
        "--out",
        str(out),
        "--embeddings",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    instances = tifffile.imread(out / "C_instances.tif")
    assert instances.shape == (128, 160) and instances.dtype == np.uint32
    assert sorted(p.name for p in out.iterdir()) == ["C_embeddings.zarr", "C_instances.tif"]
    argv = [
        "segment",
        "--embeddings",
        str(out / "C_embeddings.zarr"),
        "--out",
        str(tmp_path / "seg"),
        "--method",
        "hdbscan",
        "--foreground",
        "none",
    ]
    assert main(argv) == 0
    assert tifffile.imread(tmp_path / "seg" / "C_instances.tif").shape == (128, 160)
    capsys.readouterr()
    argv = [
        "evaluate",
        "--pred",
        str(data / "C_gt.tif"),
        str(out / "C_instances.tif"),
        "--gt",
        str(data / "C_gt.tif"),
        str(data / "C_gt.tif"),
        "--out",
        str(tmp_path / "scores.csv"),
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["image", "SBD", "|DiC|", "AP@0.5", "mAP", "ARand"]
    assert table[1].split()[1:4] == ["1.000", "0.000", "1.000"]  # ground truth vs itself
    assert table[-1].split()[0] == "mean" and len(table) == 4
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("image,sbd,abs_dic,ap50,map,arand") and len(rows) == 4


def test_an_unknown_device_gives_one_line(data, tmp_path, capsys):
    argv = ["predict", "--model", str(data / "model.pt"), "--images", str(data / "C.tif"),
            "--out", str(tmp_path / "o"), "--device", "foo"]  # fmt: skip
    assert "unknown device 'foo'" in _error(capsys, argv, "predict")
    assert not (tmp_path / "o").exists()


def test_model_files_are_known_by_content_and_checked_when_opened(data, tmp_path, capsys):
    import shutil

    for name in ("renamed.pth", "renamed.PT"):  # a valid model under another name
        shutil.copy(data / "model.pt", tmp_path / name)
        argv = ["predict", "--model", str(tmp_path / name), "--images", str(data / "C.tif"),
                "--out", str(tmp_path / name.replace(".", "_"))]  # fmt: skip
        assert main(argv) == 0
    payload = torch.load(data / "model.pt", weights_only=True)
    payload["config"]["model"]["base_features"] *= 2  # settings no longer fit the weights
    torch.save(payload, tmp_path / "mismatch.pt")
    argv = ["predict", "--model", str(tmp_path / "mismatch.pt"), "--images", str(data / "C.tif"),
            "--out", str(tmp_path / "o")]  # fmt: skip
    line = _error(capsys, argv, "predict")
    assert "mismatch.pt" in line and "weights do not fit its network settings" in line


def test_an_unwritable_output_is_refused_before_training(data, tmp_path, capsys, monkeypatch):
    import os

    from napari_spoco.core import training

    folder = tmp_path / "locked"
    folder.mkdir()
    # Tests run as root, who may write anywhere: the folder is locked by os.access.
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(folder))
    monkeypatch.setattr(training.Trainer, "run", lambda *a, **k: pytest.fail("training started"))
    argv = ["train", "--images", str(data / "A.tif"), "--labels", str(data / "A_ann.tif"),
            "--out", str(folder / "m.pt")]  # fmt: skip
    assert f"{folder} is not writable" in _error(capsys, argv, "train")


def test_predict_writes_the_uncertainty_map_and_the_ranked_instances(data, tmp_path):
    import csv

    out = tmp_path / "out"
    argv = ["predict", "--model", str(data / "model.pt"), "--images", str(data / "C.tif"),
            "--out", str(out), "--uncertainty"]  # fmt: skip
    assert main(argv) == 0
    doubt = tifffile.imread(out / "C_uncertainty.tif")
    instances = tifffile.imread(out / "C_instances.tif")
    assert doubt.shape == instances.shape and doubt.dtype == np.float32
    assert 0 <= doubt.min() and doubt.max() <= 1
    with open(out / "C_doubts.csv") as stream:
        rows = list(csv.DictReader(stream))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and rows[0]["rank"] == "1"
    labels = {int(r["label"]) for r in rows} - {0}  # 0: a possibly missed region
    assert labels and labels <= set(np.unique(instances).tolist())
    assert {"reason", "why", "score_merge", "score_unsure", "centre_y", "centre_x"} <= set(rows[0])
    from napari_spoco.core.io import expand_paths

    with pytest.raises(ValueError, match="skipped 2 earlier result"):  # never read as images
        expand_paths([out], skip_outputs=True)


def test_results_carry_the_input_pixel_size(data, tmp_path):
    image = tifffile.imread(data / "C.tif")
    tifffile.imwrite(tmp_path / "D.tif", image, resolution=(1 / 0.65, 1 / 0.65),
                     resolutionunit="MICROMETER")  # fmt: skip
    argv = ["predict", "--model", str(data / "model.pt"), "--images", str(tmp_path / "D.tif"),
            "--out", str(tmp_path / "out"), "--uncertainty"]  # fmt: skip
    assert main(argv) == 0
    for result in ("D_instances.tif", "D_uncertainty.tif"):
        with tifffile.TiffFile(tmp_path / "out" / result) as tif:
            assert tif.pages[0].resolution == pytest.approx((1 / 0.65, 1 / 0.65), rel=1e-4)
            assert tif.pages[0].resolutionunit == tifffile.RESUNIT.MICROMETER


def test_every_clustering_method_and_its_settings_are_offered(capsys):
    from napari_spoco.core.clustering_methods import CLUSTERING_METHODS

    for command in ("predict", "segment"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for name, method in CLUSTERING_METHODS.items():
            assert name in text
            for setting in method.settings:
                assert f"--{setting.name.replace('_', '-')}" in text


def test_segmentation_flags_default_to_the_config_and_zero_means_auto_or_off(tmp_path, monkeypatch):
    """The flags come from the core's list of settings, as the panel's boxes do."""
    from napari_spoco.core import segmentation
    from napari_spoco.core.config import SegmentConfig
    from napari_spoco.core.io import write_prediction
    from napari_spoco.core.prediction import Prediction

    configs = []
    segment_prediction = segmentation.segment_prediction

    def spy(prediction, config=None, *, teacher=None, seed=0):
        configs.append(config)
        return segment_prediction(prediction, config, teacher=teacher, seed=seed)

    monkeypatch.setattr(segmentation, "segment_prediction", spy)
    embeddings = np.zeros((4, 32, 32), np.float32)
    embeddings[0, 8:20, 8:20] = 5.0
    saved = write_prediction(tmp_path / "E_embeddings.zarr", Prediction(embeddings=embeddings))
    base = ["segment", "--embeddings", str(saved), "-q"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    chosen = ["--seed-threshold", "0", "--delta-d", "0", "--min-size", "5"]
    assert main([*base, "--out", str(tmp_path / "b"), *chosen]) == 0
    assert configs[0] == SegmentConfig()
    assert configs[1].seed_threshold is None and configs[1].delta_d is None
    assert configs[1].min_size == 5


def test_consistency_clustering_uses_the_teacher_and_settings_follow_the_method(
    data, tmp_path, capsys
):
    """predict clusters with the teacher; segment, lacking it, and a foreign setting refuse."""
    from napari_spoco.core import segmentation

    teachers = []
    segment_prediction = segmentation.segment_prediction

    def spy(prediction, config=None, *, teacher=None, seed=0):
        teachers.append(teacher)
        return segment_prediction(prediction, config, teacher=teacher, seed=seed)

    predict = ["predict", "--model", str(data / "model.pt"), "--images", str(data / "C.tif"),
               "--device", "cpu", "--method", "consistency", "--iou-threshold", "0.5"]  # fmt: skip
    import unittest.mock

    with unittest.mock.patch.object(segmentation, "segment_prediction", spy):
        assert main([*predict, "--out", str(tmp_path / "out"), "--embeddings"]) == 0
    assert len(teachers) == 1 and teachers[0].shape[1:] == (128, 160)
    assert tifffile.imread(tmp_path / "out" / "C_instances.tif").shape == (128, 160)
    segment = ["segment", "--embeddings", str(tmp_path / "out" / "C_embeddings.zarr"),
               "--out", str(tmp_path / "seg"), "--method", "consistency"]  # fmt: skip
    assert "saved predictions do not hold" in _error(capsys, segment, "segment")
    wrong = [*predict[:-4], "--method", "hdbscan", "--strides", "3", "--out", str(tmp_path / "w")]
    assert "--strides is a setting of --method mutex_watershed" in _error(capsys, wrong, "predict")


def test_predict_block_wise_on_zarr_writes_zarr(data, tmp_path):
    image = tifffile.imread(data / "C.tif")
    source = zarr.create_array(
        tmp_path / "D.zarr", shape=image.shape, chunks=(32, 32), dtype=image.dtype
    )
    source[...] = image
    argv = [
        "predict",
        "--model",
        str(data / "model.pt"),
        "--images",
        str(tmp_path / "D.zarr"),
        "--out",
        str(tmp_path / "out"),
        "--block-shape",
        "64",
        "64",
        "--embeddings",
        "-q",
    ]
    assert main(argv) == 0
    labels = zarr.open_array(tmp_path / "out" / "D_instances.zarr")
    assert labels.shape == image.shape and labels.dtype == np.uint32 and labels.chunks == (64, 64)
    # 16 embedding channels, then the foreground and distance heads
    assert zarr.open_array(tmp_path / "out" / "D_embeddings.zarr").shape == (18, *image.shape)


def test_bioimageio_export_and_import_commands(data, tmp_path):
    pytest.importorskip("bioimageio.core")
    package = tmp_path / "model.zip"
    argv = [
        "export-bioimageio",
        "--model",
        str(data / "model.pt"),
        "--test-image",
        str(data / "C.tif"),
        "--out",
        str(package),
    ]
    assert main(argv) == 0 and package.is_file()
    assert (
        main(["import-bioimageio", "--package", str(package), "--out", str(tmp_path / "back.pt")])
        == 0
    )
    assert load_checkpoint(tmp_path / "back.pt").config == load_checkpoint(data / "model.pt").config
    out = tmp_path / "out"
    argv = ["predict", "--model", str(package), "--images", str(data / "C.tif"), "--out", str(out)]
    assert main(argv) == 0 and (out / "C_instances.tif").is_file()


# --------------------------------------------------------------------------- bad input


def test_unreadable_files_fail_with_one_line(data, tmp_path, capsys):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"this is not an image")
    line = _error(
        capsys,
        [
            "train",
            "--images",
            str(broken),
            "--labels",
            str(broken),
            "--out",
            str(tmp_path / "m.pt"),
        ],
        "train",
    )
    assert "broken.tif" in line
    _error(
        capsys,
        [
            "predict",
            "--model",
            str(broken),
            "--images",
            str(data / "C.tif"),
            "--out",
            str(tmp_path),
        ],
        "predict",
    )
    _error(
        capsys,
        [
            "predict",
            "--model",
            str(data / "model.pt"),
            "--images",
            str(tmp_path / "missing.tif"),
            "--out",
            str(tmp_path),
        ],
        "predict",
    )
    _error(
        capsys,
        [
            "evaluate",
            "--pred",
            str(broken),
            "--gt",
            str(data / "C_gt.tif"),
            "--out",
            str(tmp_path / "s.csv"),
        ],
        "evaluate",
    )
    _error(
        capsys, ["segment", "--embeddings", str(data / "C.tif"), "--out", str(tmp_path)], "segment"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tif"]


def test_mismatched_shapes_fail_with_one_line(data, tmp_path, capsys):
    line = _error(
        capsys,
        [
            "train",
            "--images",
            str(data / "C.tif"),
            "--labels",
            str(data / "A_ann.tif"),
            "--out",
            str(tmp_path / "m.pt"),
        ],
        "train",
    )
    assert "A_ann.tif has shape (128, 128)" in line and "(128, 160)" in line
    _error(
        capsys,
        [
            "train",
            "--images",
            str(data / "A.tif"),
            str(data / "B.tif"),
            "--labels",
            str(data / "A_ann.tif"),
            "--out",
            str(tmp_path / "m.pt"),
        ],
        "train",
    )
    _error(
        capsys,
        [
            "evaluate",
            "--pred",
            str(data / "C_gt.tif"),
            "--gt",
            str(data / "A_gt.tif"),
            "--out",
            str(tmp_path / "s.csv"),
        ],
        "evaluate",
    )
    assert not list(tmp_path.iterdir())


def test_wrong_channel_count_fails_with_one_line(data, tmp_path, capsys):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8))
    line = _error(
        capsys,
        [
            "predict",
            "--model",
            str(data / "model.pt"),
            "--images",
            str(rgb),
            "--channel-axis",
            "-1",
            "--out",
            str(tmp_path / "o"),
        ],
        "predict",
    )
    assert "reads 1-channel 2D images" in line and "is 3-channel 2D" in line
    labels = tmp_path / "rgb_ann.tif"
    tifffile.imwrite(labels, np.ones((64, 64), np.uint8))
    line = _error(
        capsys,
        [
            "train",
            "--images",
            str(rgb),
            "--labels",
            str(labels),
            "--channel-axis",
            "-1",
            "--from",
            str(data / "model.pt"),
            "--out",
            str(tmp_path / "m.pt"),
        ],
        "train",
    )
    assert "1-channel" in line and "3-channel" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb.tif", "rgb_ann.tif"]


def test_empty_annotations_fail_with_one_line(data, tmp_path, capsys):
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.zeros((128, 128), np.uint16))
    line = _error(
        capsys,
        [
            "train",
            "--images",
            str(data / "A.tif"),
            "--labels",
            str(empty),
            "--out",
            str(tmp_path / "m.pt"),
        ],
        "train",
    )
    assert "nothing is annotated" in line
    assert not (tmp_path / "m.pt").exists()


def test_interrupted_training_leaves_no_finished_looking_file(data, tmp_path, monkeypatch, capsys):
    from napari_spoco.core.training import Trainer

    original = Trainer._train_step

    def interrupted(self, lr):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self, lr)

    monkeypatch.setattr(Trainer, "_train_step", interrupted)
    argv = [
        "train",
        "--images",
        str(data / "A.tif"),
        "--labels",
        str(data / "A_ann.tif"),
        "--out",
        str(tmp_path / "model.pt"),
        *FAST,
    ]
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no model, no history, no temporary file


def test_interrupted_block_wise_prediction_leaves_no_zarr(data, tmp_path, monkeypatch):
    from napari_spoco import bigdata

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return segment_prediction(*args, **kwargs)

    segment_prediction = bigdata.segment_prediction
    monkeypatch.setattr(bigdata, "segment_prediction", interrupted)
    argv = [
        "predict",
        "--model",
        str(data / "model.pt"),
        "--images",
        str(data / "C.tif"),
        "--out",
        str(tmp_path),
        "--block-shape",
        "32",
        "32",
        "--n-threads",
        "1",
        "-q",
    ]
    assert main(argv) == 130
    assert len(calls) == 3 and not list(tmp_path.iterdir())


def test_python_m_runs_the_cli_and_reports_errors_on_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_spoco",
            "evaluate",
            "--pred",
            str(tmp_path / "no.tif"),
            "--gt",
            str(tmp_path / "no.tif"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"napari-spoco evaluate: error: no such file or folder: {tmp_path / 'no.tif'}"
    ]


# --------------------------------------------------------------------------- long runs


def test_dense_training_scales_each_image_by_its_objects_and_scores_validation(
    data, tmp_path, capsys
):
    """--dense: 0 is background, each image resized by its own objects, AP@0.5 on held-out data."""
    import skimage.transform

    from napari_spoco.core.training import Trainer

    small = skimage.transform.rescale(tifffile.imread(data / "A.tif"), 0.5, preserve_range=True)
    small_gt = tifffile.imread(data / "A_gt.tif")[::2, ::2]
    tifffile.imwrite(tmp_path / "half.tif", small.astype(np.float32))
    tifffile.imwrite(tmp_path / "half_gt.tif", small_gt)
    seen = {}
    original = Trainer.set_data

    def spy(self, images, annotations, **kwargs):
        seen["scales"] = kwargs["scales"]
        return original(self, images, annotations, **kwargs)

    argv = [
        "train", "--dense", "--images", str(data / "A.tif"), str(tmp_path / "half.tif"),
        "--labels", str(data / "A_gt.tif"), str(tmp_path / "half_gt.tif"),
        "--val-images", str(data / "C.tif"), "--val-labels", str(data / "C_gt.tif"),
        "--val-every", "3", "--vary-object-contrast", "0.5", "--out", str(tmp_path / "dense.pt"),
        *FAST,
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "set_data", spy)
        assert main(argv) == 0
    full, half = seen["scales"]
    assert half == pytest.approx(2 * full, rel=0.15)  # half-size objects are blown up twice as much
    model = load_checkpoint(tmp_path / "dense.pt")
    assert model.config.loss.sparse is False and model.config.object_scale == 1.0
    assert model.config.object_contrast_probability == 0.5
    scores = json.loads((tmp_path / "dense_validation.json").read_text())
    assert [s["step"] for s in scores] == [3] and set(scores[0]["per_image"]) == {"C"}
    assert 0 <= scores[0]["ap50"] <= 1
    assert load_checkpoint(tmp_path / "dense_best.pt").step == 3
    # Uneven staining needs to know the background: sparse painting does not say.
    sparse = [
        "train", "--images", str(data / "A.tif"), "--labels", str(data / "A_ann.tif"),
        "--vary-object-contrast", "0.5", "--out", str(tmp_path / "bad.pt"), *FAST,
    ]  # fmt: skip
    assert "--vary-object-contrast needs --dense" in _error(capsys, sparse, "train")
    assert not (tmp_path / "bad.pt").exists()
    unlabelled = ["pretrain", *sparse[1:3], *sparse[5:]]  # pretraining has no labels at all
    with pytest.raises(SystemExit):
        main(unlabelled)
    assert "unrecognized arguments: --vary-object-contrast" in capsys.readouterr().err


def _train_on_a(data, out):
    """``train`` on image A and its sparse annotation, writing ``out``."""
    return ["train", "--images", str(data / "A.tif"), "--labels", str(data / "A_ann.tif"),
            "--out", str(out)]  # fmt: skip


def test_sigterm_saves_and_resume_finishes_the_same_run(data, tmp_path):
    """A stopped run keeps its last state; --resume ends at the planned step with that state."""
    import signal
    import time

    from napari_spoco.core.training import Trainer

    out = tmp_path / "run.pt"
    argv = [*_train_on_a(data, out), "--checkpoint-every", "2", *FAST, "--iterations", "400"]
    process = subprocess.Popen(
        [sys.executable, "-m", "napari_spoco", *argv], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr.strip().splitlines()[-1]
    stopped = load_checkpoint(out)
    assert 2 <= stopped.step < 400 and not list(tmp_path.glob(".*.tmp"))

    resumed = Trainer(stopped.config, device="cpu", checkpoint=stopped, resume=True)
    saved_moments = stopped.optimizer_state["state"][0]["exp_avg"]
    assert torch.equal(resumed.optimizer.state_dict()["state"][0]["exp_avg"], saved_moments)
    resume = [*_train_on_a(data, out), "--resume", "-q", "--iterations", str(stopped.step + 3)]
    assert main(resume) == 0
    finished = load_checkpoint(out)
    assert finished.step == stopped.step + 3 and finished.run_start_step == 0
    assert [h["step"] for h in finished.history] == list(range(1, finished.step + 1))


def test_train_refuses_an_output_that_is_an_input(data, capsys):
    line = _error(capsys, [*_train_on_a(data, data / "A_ann.tif"), *FAST], "train")
    assert "also an input" in line
    assert tifffile.imread(data / "A_ann.tif").max() > 0  # the annotation is still there


# --------------------------------------------------------------------------- built-in models


def test_train_starts_from_the_nuclei_generalist_unless_told_otherwise(data, tmp_path, caplog):
    """2D single-channel images fine-tune the built-in model; --from scratch builds a new one."""
    from napari_spoco.core.pretrained import builtin_model_path

    generalist = load_checkpoint(builtin_model_path("nuclei"))
    options = ["--iterations", "2", "--patch", "64", "64", "--batch-size", "2", "-q"]
    with caplog.at_level("INFO", logger="napari_spoco"):
        assert main([*_train_on_a(data, tmp_path / "tuned.pt"), *options]) == 0
    first_line = caplog.records[0].getMessage()
    assert (
        "starting from the built-in nuclei model" in first_line and "--from scratch" in first_line
    )
    tuned = load_checkpoint(tmp_path / "tuned.pt")
    assert tuned.step == generalist.step + 2 and tuned.config.model == generalist.config.model
    assert not tuned.config.scale_per_image  # the painted nuclei set the fine-tuned scale
    assert main([*_train_on_a(data, tmp_path / "named.pt"), *options, "--from", "nuclei"]) == 0
    assert load_checkpoint(tmp_path / "named.pt").step == generalist.step + 2
    assert main([*_train_on_a(data, tmp_path / "new.pt"), *options, "--from", "scratch"]) == 0
    assert load_checkpoint(tmp_path / "new.pt").step == 2


def test_train_defaults_follow_the_recipe_and_measure_the_painted_objects(
    tmp_path, monkeypatch, caplog
):
    """150 steps to fine-tune, 1000 for a new network and where objects touch; a 100 px
    object trains below scale 1."""
    from napari_spoco.cli import training
    from napari_spoco.core.training import TrainResult

    configs = []

    def record_instead_of_training(trainer, out, args, validation):
        configs.append(trainer.config)
        return TrainResult(step=trainer.step, steps_done=0, stopped=False, checkpoint_path=None)

    monkeypatch.setattr(training, "_run_with_bar", record_instead_of_training)
    yy, xx = np.mgrid[:256, :256]
    labels = np.zeros((256, 256), np.uint16)
    labels[(yy - 80) ** 2 + (xx - 80) ** 2 < 50**2] = 1  # two 100 px discs
    labels[(yy - 180) ** 2 + (xx - 180) ** 2 < 50**2] = 2
    tifffile.imwrite(tmp_path / "big.tif", (labels > 0).astype(np.float32) + 0.1)
    tifffile.imwrite(tmp_path / "big_ann.tif", labels)
    train = ["train", "--images", str(tmp_path / "big.tif"), "--labels",
             str(tmp_path / "big_ann.tif"), "--out", str(tmp_path / "m.pt"), "-q"]  # fmt: skip
    assert main(train) == 0
    assert main([*train, "--from", "scratch"]) == 0
    assert [config.iterations for config in configs] == [150, 1000]
    assert all(0.2 < config.object_scale < 0.3 for config in configs)  # 24 px / 100 px
    # The two discs do not touch: the ring of negatives stays and fine-tuning is short,
    # unless the user says they touch.
    assert main([*train, "--objects-touch", "yes"]) == 0
    assert [config.loss.ring_width for config in configs] == [2, 2, 0]
    assert configs[-1].iterations == TOUCHING_ITERATIONS
    labels[70:90, 130:140] = 3  # painted against disc 1: now painted objects share a border
    tifffile.imwrite(tmp_path / "big_ann.tif", labels)
    caplog.clear()
    with caplog.at_level("INFO", logger="napari_spoco"):
        assert main(train) == 0
    touching = configs[-1]
    assert touching.loss.ring_width == 0 and touching.iterations == TOUCHING_ITERATIONS
    first_line = caplog.records[0].getMessage()
    assert f"{TOUCHING_ITERATIONS} steps" in first_line and "learning rate 0.0001" in first_line
    assert "objects touch (from the painting" in first_line


# --------------------------------------------------------------------------- nothing lost


def test_evaluate_and_export_refuse_to_replace_a_folder(data, tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "keep.tif").write_bytes(b"mine")
    line = _error(
        capsys,
        ["evaluate", "--pred", str(data / "C_gt.tif"), "--gt", str(data / "C_gt.tif"),
         "--out", str(folder)],
        "evaluate",
    )  # fmt: skip
    assert f"{folder} is a folder that napari-spoco did not write" in line
    line = _error(
        capsys,
        ["export-bioimageio", "--model", str(data / "model.pt"), "--test-image",
         str(data / "C.tif"), "--out", str(folder)],
        "export-bioimageio",
    )  # fmt: skip
    assert str(folder) in line and "did not write" in line
    assert [p.name for p in folder.iterdir()] == ["keep.tif"]


def test_predict_refuses_inputs_that_would_write_the_same_result(data, tmp_path, capsys):
    for sub in "ab":
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "C.tif").write_bytes((data / "C.tif").read_bytes())
    line = _error(
        capsys,
        ["predict", "--model", str(data / "model.pt"), "--images", str(tmp_path / "a" / "C.tif"),
         str(tmp_path / "b"), "--out", str(tmp_path / "out")],
        "predict",
    )  # fmt: skip
    assert f"{tmp_path / 'a' / 'C.tif'} and {tmp_path / 'b' / 'C.tif'}" in line
    assert "C_instances" in line and not (tmp_path / "out").exists()


def test_predict_into_its_input_folder_skips_its_own_results(data, tmp_path, caplog):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "C.tif").write_bytes((data / "C.tif").read_bytes())
    argv = ["predict", "--model", str(data / "model.pt"), "--images", str(folder),
            "--out", str(folder), "--embeddings", "--device", "cpu", "-q"]  # fmt: skip
    assert main(argv) == 0
    with caplog.at_level("INFO", logger="napari_spoco"):
        assert main(argv) == 0  # replaces its own results, does not segment them
    assert "skipping 2 earlier result(s)" in caplog.text
    blockwise = [*argv, "--block-shape", "64", "64"]
    assert main(blockwise) == 0 and main(blockwise) == 0  # a block-wise zarr result is replaced
    assert sorted(p.name for p in folder.iterdir()) == [
        "C.tif", "C_embeddings.zarr", "C_instances.tif", "C_instances.zarr",
    ]  # fmt: skip


@pytest.mark.parametrize("side", [5, 1])
def test_predict_refuses_an_image_too_small_for_the_model(data, tmp_path, capsys, side):
    tifffile.imwrite(tmp_path / "tiny.tif", np.ones((side, side), np.uint8))
    line = _error(
        capsys,
        ["predict", "--model", str(data / "model.pt"), "--images", str(tmp_path / "tiny.tif"),
         "--out", str(tmp_path / "out")],
        "predict",
    )  # fmt: skip
    assert "tiny.tif: the image is too small for the network" in line
    assert not (tmp_path / "out").exists()


def test_predict_with_the_generalist_measures_the_objects_and_reads_colour_as_grey(
    data, tmp_path, caplog
):
    """--model nuclei: no size needed; an RGB copy of an image gives the same instances."""
    grey = tifffile.imread(data / "C.tif")
    scaled = ((grey - grey.min()) / np.ptp(grey) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "grey.tif", scaled)
    tifffile.imwrite(tmp_path / "colour.tif", np.stack([scaled] * 3, axis=-1))
    with caplog.at_level("INFO", logger="napari_spoco"):
        argv = ["predict", "--model", "nuclei", "--images", str(tmp_path / "grey.tif"),
                str(tmp_path / "colour.tif"), "--out", str(tmp_path / "out"), "-q"]  # fmt: skip
        assert main(argv) == 0
    assert "colour.tif: colour image read as grey" in caplog.text
    assert "objects of" in caplog.text  # the size it measured
    from_grey = tifffile.imread(tmp_path / "out" / "grey_instances.tif")
    from_colour = tifffile.imread(tmp_path / "out" / "colour_instances.tif")
    assert from_grey.max() > 3 and np.array_equal(from_grey, from_colour)


def test_export_bioimageio_takes_a_builtin_model_by_name(data, tmp_path):
    out = tmp_path / "nuclei.zip"
    argv = ["export-bioimageio", "--model", "nuclei", "--test-image", str(data / "C.tif"),
            "--out", str(out), "--no-validate"]  # fmt: skip
    assert main(argv) == 0 and out.stat().st_size > 1e6


def test_train_warns_about_settings_that_teach_nothing_and_refuses_zero_steps(
    data, tmp_path, caplog, capsys
):
    one = tifffile.imread(data / "A_ann.tif")
    one[one != one.max()] = 0
    tifffile.imwrite(tmp_path / "one.tif", one)
    argv = ["train", "--images", str(data / "A.tif"), "--labels", str(tmp_path / "one.tif"),
            "--out", str(tmp_path / "m.pt"), "--background-id", "900", *FAST,
            "--patch", "256", "256", "--iterations", "1"]  # fmt: skip
    with caplog.at_level("INFO", logger="napari_spoco"):
        assert main(argv) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("Only one object" in w for w in warnings)
    assert any("background label 900 occurs in no annotation" in w for w in warnings)
    assert any("larger than every image" in w for w in warnings)
    line = _error(capsys, [*argv[:-2], "--iterations", "0"], "train")
    assert "at least 1" in line


def test_colour_images_are_read_as_rgb_as_napari_does_or_as_grey(data, tmp_path, caplog):
    grey = tifffile.imread(data / "A.tif")
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([grey, grey // 2, grey // 3], axis=-1))
    argv = ["train", "--images", str(tmp_path / "rgb.tif"), "--labels", str(data / "A_ann.tif"),
            *FAST]  # fmt: skip
    with caplog.at_level("INFO", logger="napari_spoco"):
        assert main([*argv, "--out", str(tmp_path / "rgb.pt")]) == 0
    assert "as RGB" in caplog.records[0].getMessage()
    assert load_checkpoint(tmp_path / "rgb.pt").config.model.in_channels == 3
    assert main([*argv, "--grey", "--out", str(tmp_path / "grey.pt")]) == 0
    assert load_checkpoint(tmp_path / "grey.pt").config.model.in_channels == 1


def test_predict_averages_eight_orientations_in_2d_unless_told_not_to(
    data, tmp_path, record_keyword
):
    """``--augment`` reaches the prediction; "auto" (the default) is on for a 2D image."""
    from napari_spoco.core import prediction

    seen = record_keyword(prediction, "predict", "augment")
    argv = ["predict", "--model", str(data / "model.pt"), "--images", str(data / "C.tif"),
            "--device", "cpu", "-q"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "auto")]) == 0
    assert main([*argv, "--out", str(tmp_path / "off"), "--augment", "off"]) == 0
    assert seen == [True, False]
