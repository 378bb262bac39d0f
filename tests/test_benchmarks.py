"""Smoke tests: the benchmark scripts still run end to end on a tiny configuration.

They check that each script runs and writes its JSON, not what it measures:
the accuracy, interactive and pretraining scripts read the bundled sample
(``--sample``) instead of the NIH3T3 folder, which a fresh clone does not have.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _run(script, arguments, out):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,  # generous: a busy CI machine is slow, and this is no speed test
        env={**__import__("os").environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    ("script", "arguments"),
    [
        ("clustering_speed.py", ["--sizes", "256", "--methods", "mutex_watershed", "hdbscan"]),
        ("pretraining.py", ["--sample", "--quick"]),
        ("touching.py", ["--quick", "--seeds", "0"]),
    ],
)
def test_benchmark_script_runs_and_writes_json(script, arguments, tmp_path):
    assert _run(script, arguments, tmp_path / "result.json")["results"]


def test_accuracy_runs_every_variant_and_writes_plot_and_docs_block(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# B\n\n<!-- accuracy:start -->\nold\n<!-- accuracy:end -->\n\nrest\n")
    plot = tmp_path / "accuracy.png"
    report = _run(
        "accuracy.py",
        ["--sample", "--quick", "--plot", str(plot), "--docs", str(docs), "--variants",
         "spoco", "disc_only", "rf", "otsu", "generalist_zero_shot", "generalist_2min",
         "generalist_150_measured"],
        tmp_path / "accuracy.json",
    )  # fmt: skip
    variants = {row["variant"] for row in report["results"]}
    assert {"spoco", "disc_only", "rf", "otsu", "generalist_zero_shot",
            "generalist_150_measured"} <= variants  # fmt: skip
    steps = {row["variant"]: row["steps"] for row in report["results"]}
    assert steps["generalist_zero_shot"] == 0 and steps["generalist_2min"] >= 1
    assert {row["setting"] for row in report["results"]} >= {"dense", "spread"}
    assert plot.stat().st_size > 0
    text = docs.read_text()
    assert "old" not in text and "| annotation |" in text and text.endswith("rest\n")


@pytest.mark.parametrize("start", ["scratch", "nuclei"])
def test_interactive_promotes_objects_every_round(tmp_path, start):
    arguments = ["--sample", "--quick", "--start", start]
    if start == "nuclei":  # the generalist finds instances at once: every arm can choose
        arguments += ["--arms", "oracle", "guided", "random"]
    report = _run("interactive.py", arguments, tmp_path / "interactive.json")
    for arm in {row["arm"] for row in report["results"]}:
        rows = [row for row in report["results"] if row["arm"] == arm]
        assert [row["round"] for row in rows] == [0, 1]
        assert rows[1]["objects"] > rows[0]["objects"], arm
        assert [row["steps"] for row in rows] == [2, 4]  # steps of this session, not the model's
        assert (rows[0]["precision"] is None) == (arm == "oracle")
    assert {entry["arm"] for entry in report["summary"]} == set(arguments[5:] or ["oracle"])


def test_speed_runs_every_part(tmp_path):
    report = _run("speed.py", ["--quick"], tmp_path / "speed.json")
    assert {"train", "predict", "cluster", "uncertainty", "gui", "worker"} <= set(report)
    assert all(r["ratio"] >= 1 and r["instances"] > 0 for r in report["uncertainty"])
    assert report["worker"]["worker_steps_per_second"] > 0


def test_generalist_lists_and_scores_a_dsb_like_folder(tmp_path):
    """``lists`` keeps ``excluded`` out of every list; ``package`` scores per kind, and
    NIH3T3 training images (never its test images) with ``--nih3t3``."""
    import tifffile
    import torch

    from napari_spoco.core.checkpoint import load_checkpoint
    from napari_spoco.core.pretrained import builtin_model_path
    from napari_spoco.core.sample_data import load_nuclei_2d

    image, truth = load_nuclei_2d()
    folder = tmp_path / "dsb"
    index = []
    for number, (split, kind) in enumerate(
        [
            ("train", "fluorescence"),
            ("val", "fluorescence"),
            ("val", "colour"),
            ("excluded", "fluorescence"),
        ]
    ):
        name = f"image{number}"
        crop = (slice(0, 256), slice(128 * number, 128 * number + 256))
        pixels = np.stack([image[crop]] * 3, axis=-1) if kind == "colour" else image[crop]
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "labels").mkdir(exist_ok=True)
        tifffile.imwrite(folder / "images" / f"{name}.tif", pixels)
        tifffile.imwrite(folder / "labels" / f"{name}.tif", truth[crop])
        index.append({"id": name, "kind": kind, "split": split})
    (folder / "index.json").write_text(json.dumps(index))
    script = [sys.executable, str(BENCHMARKS / "generalist.py")]
    subprocess.run([*script, "lists", str(folder), str(tmp_path / "lists")], check=True)
    listed = " ".join(p.read_text() for p in (tmp_path / "lists").glob("*.txt"))
    assert "image0" in listed and "image1" in listed and "image3" not in listed
    nih3t3 = tmp_path / "nih3t3"
    training = [f"nih3t3_dna-0{n}.tif" for n in range(5)]
    testing = [f"nih3t3_dna-{n}.tif" for n in range(40, 50)]
    for part, pixels in (("images", image), ("labels", truth)):
        (nih3t3 / part).mkdir(parents=True)
        for number, name in enumerate(training + testing):
            tifffile.imwrite(nih3t3 / part / name, pixels[:192, 16 * number : 16 * number + 192])
    results = tmp_path / "generalist.json"
    model = str(builtin_model_path("nuclei"))
    shipped = tmp_path / "shipped.pt"
    package = [*script, "package", model, str(folder), "--results", str(results)]
    subprocess.run(
        [*package, "--nih3t3", str(nih3t3), "--out", str(shipped)], check=True, timeout=600
    )
    report = json.loads(results.read_text())
    # The foreground threshold is chosen on val, zero-shot, and moved into the shipped head.
    choice = report["foreground_threshold_choice"]
    assert [c["threshold"] for c in choice] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
    chosen = report["foreground_threshold"]
    assert chosen == max(choice, key=lambda c: c["zero_shot"])["threshold"]
    run, written = load_checkpoint(model), load_checkpoint(shipped)
    for state in ("model_state", "teacher_state"):
        before, after = getattr(run, state), getattr(written, state)
        moved = before["extra_heads.2.bias"] - after["extra_heads.2.bias"]
        assert moved.tolist() == pytest.approx([math.log(chosen / (1 - chosen)), 0.0], abs=1e-6)
        assert all(torch.equal(before[k], after[k]) for k in before if k != "extra_heads.2.bias")
    assert written.optimizer_state is None and written.config.scale_per_image
    assert set(report["val_ap50"]) == {"fluorescence", "colour", "all"}
    assert report["val_ap50"]["all"]["images"] == 2
    assert 0 < report["val_ap50"]["all"]["size_ratio_median"] < 10
    scored = [row["id"] for row in report["nih3t3_training_per_image"]]
    assert scored == [name.removesuffix(".tif") for name in training]  # never a test image
    assert 0.5 < report["nih3t3_training_ap50"]["all"]["foreground_over_true_median"] < 2


def test_cells_scores_every_stage_at_every_mark_on_a_usiigaci_like_folder(tmp_path):
    """Nuclei crops stand in for the phase-contrast cells: the path, not the numbers."""
    import tifffile

    from napari_spoco.core.pretrained import builtin_model_path
    from napari_spoco.core.sample_data import load_nuclei_2d

    image, truth = load_nuclei_2d()
    folder = tmp_path / "cells"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    index = []
    corners = [(y, x) for y in (0, 160, 320) for x in (0, 160, 320)]
    for number, split in enumerate(["train"] * 7 + ["val"]):
        y, x = corners[number]
        crop = (slice(y, y + 192), slice(x, x + 192))
        tifffile.imwrite(folder / "images" / f"set{number}.tif", image[crop])
        tifffile.imwrite(folder / "labels" / f"set{number}.tif", truth[crop])
        index.append({"name": f"set{number}", "source_split": split})
    (folder / "index.json").write_text(json.dumps(index))

    # A model trained densely on such a folder: the last five training images choose it,
    # the source's val images are kept for testing.
    lists = tmp_path / "lists"
    generalist = [sys.executable, str(BENCHMARKS / "generalist.py")]
    subprocess.run([*generalist, "lists", str(folder), str(lists)], check=True)
    listed = {p.stem.removesuffix("_images"): p.read_text() for p in lists.glob("*_images.txt")}
    assert "set1.tif" in listed["train"] and "set2.tif" not in listed["train"]
    assert "set6.tif" in listed["val"] and "set7.tif" in listed["test"]

    methods = ["--methods", "mutex_watershed", "hdbscan"]  # mean shift is slow untrained
    arms = ["--arms", "scratch", "nuclei", "trained"]
    arms += ["--trained", str(builtin_model_path("nuclei")), "--minutes", "0", "2"]
    report = _run("cells.py", [str(folder), "--quick", *methods, *arms], tmp_path / "c.json")
    spoco = [r for r in report["results"] if r["variant"] not in ("rf", "otsu")]
    assert len(spoco) == 3 * 3 * 2  # three arms, three marks (0 and two quick ones), two paintings
    assert all(0 <= r["fg_iou"] <= 1 and 0 <= r["separation"] <= 1 for r in spoco)
    assert {r["variant"] for r in report["results"]} >= {"rf", "otsu", "nuclei 0.04 min"}
    assert all(r["steps"] == 0 for r in spoco if r["variant"].endswith(" 0 min"))
    assert all("ap50_hdbscan" in r for r in spoco)


def _die_without_a_result(queue):  # noqa: ARG001 (the child's queue, never filled)
    import os

    os._exit(3)


def test_a_benchmark_child_that_dies_is_reported_not_awaited():
    """A child process that dies must fail the benchmark, not hang it for the CI's timeout."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from clustering_speed import in_fresh_process
    finally:
        sys.path.remove(str(BENCHMARKS))
    with pytest.raises(RuntimeError, match="exited with code 3 and no result"):
        in_fresh_process(_die_without_a_result, timeout=120)
