"""Smoke tests: the benchmark scripts still run end to end on a tiny configuration.

They check that each script runs and writes its JSON, not what it measures:
the accuracy, interactive and pretraining scripts read the bundled sample
(``--sample``) instead of the NIH3T3 folder, which a fresh clone does not have.
"""

import json
import subprocess
import sys
from pathlib import Path

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
         "spoco", "disc_only", "rf", "otsu", "generalist_zero_shot", "generalist_2min"],
        tmp_path / "accuracy.json",
    )  # fmt: skip
    variants = {row["variant"] for row in report["results"]}
    assert {"spoco", "disc_only", "rf", "otsu", "generalist_zero_shot"} <= variants
    steps = {row["variant"]: row["steps"] for row in report["results"]}
    assert steps["generalist_zero_shot"] == 0 and steps["generalist_2min"] >= 1
    assert {row["setting"] for row in report["results"]} >= {"dense", "spread"}
    assert plot.stat().st_size > 0
    text = docs.read_text()
    assert "old" not in text and "| annotation |" in text and text.endswith("rest\n")


def test_interactive_promotes_objects_every_round(tmp_path):
    rows = _run("interactive.py", ["--sample", "--quick"], tmp_path / "interactive.json")["results"]
    assert [row["round"] for row in rows] == [0, 1]
    assert rows[1]["objects"] > rows[0]["objects"]


def test_speed_runs_every_part(tmp_path):
    report = _run("speed.py", ["--quick"], tmp_path / "speed.json")
    assert {"train", "predict", "cluster", "gui", "worker"} <= set(report)
    assert report["worker"]["worker_steps_per_second"] > 0
