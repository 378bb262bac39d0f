import json
import subprocess
import sys

import numpy as np
import tifffile
from skimage.io import imread

from napari_spoco.cli import main
from napari_spoco.core.checkpoint import load_checkpoint


def test_demo_writes_model_annotation_and_picture(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--iterations", "2", "--device", "cpu"]) == 0
    assert load_checkpoint(tmp_path / "model.pt").step == 2
    annotation = tifffile.imread(tmp_path / "annotation.tif")
    assert 5 < len(np.unique(annotation)) - 1 < 30
    assert imread(tmp_path / "embeddings_rgb.png").shape == (512, 512, 3)
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2
    instances = tifffile.imread(tmp_path / "instances.tif")
    assert instances.shape == (512, 512) and instances.dtype == np.uint32
    assert set(json.loads((tmp_path / "scores.json").read_text())) >= {"ap50", "sbd", "abs_dic"}


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
