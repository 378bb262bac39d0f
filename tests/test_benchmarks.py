"""Smoke tests: the benchmark scripts still run end to end on a tiny configuration."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.parametrize(
    ("script", "arguments"),
    [
        ("train_speed.py", ["--cases", "2d", "--steps", "1"]),
        ("clustering_speed.py", ["--sizes", "256", "--methods", "mutex_watershed", "hdbscan"]),
    ],
)
def test_benchmark_script_runs_and_writes_json(script, arguments, tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["results"]
