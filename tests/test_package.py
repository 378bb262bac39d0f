"""Packaging checks: the npe2 manifest, the entry point, import hygiene, sample data."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_spoco._sample_data import nuclei_2d, nuclei_3d
from napari_spoco.core.sample_data import load_nuclei_2d, load_nuclei_3d

DIST_NAME = "napari-spoco"
REPO_MANIFEST = Path(__file__).resolve().parents[1] / "napari.yaml"
SAMPLE_KEYS = {"nuclei_2d", "nuclei_3d"}


def _npe2_executable() -> str:
    """The npe2 command of the environment running the tests."""
    scripts = Path(sys.executable).parent
    found = shutil.which("npe2", path=str(scripts))
    if found is None:
        pytest.fail(f"npe2 executable not found next to {sys.executable}")
    return found


def _installed_manifest_path() -> Path:
    """Resolve the napari.manifest entry point the way npe2 does."""
    eps = [ep for ep in entry_points(group="napari.manifest") if ep.name == DIST_NAME]
    assert len(eps) == 1, f"expected one napari.manifest entry point named {DIST_NAME!r}: {eps}"
    module, _, filename = eps[0].value.partition(":")
    assert (module, filename) == ("napari_spoco", "napari.yaml")
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    pytest.fail(
        f"{filename} not found in {list(spec.submodule_search_locations)}; "
        "reinstall the package (make venv / pip install -e .)"
    )


# --------------------------------------------------------------------------- manifest


def test_npe2_validate_passes():
    result = subprocess.run(
        [_npe2_executable(), "validate", DIST_NAME, "--imports"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_found_through_entry_point():
    manifest = yaml.safe_load(_installed_manifest_path().read_text(encoding="utf-8"))
    assert manifest["name"] == DIST_NAME == distribution(DIST_NAME).metadata["Name"]
    assert manifest["display_name"] == "SPOCO"
    contributions = manifest["contributions"]
    assert {s["key"] for s in contributions["sample_data"]} == SAMPLE_KEYS
    command_ids = {c["id"] for c in contributions["commands"]}
    for sample in contributions["sample_data"]:
        assert sample["command"] in command_ids


def test_npe2_plugin_manager_finds_sample_data():
    import npe2

    pm = npe2.PluginManager()
    pm.discover(include_npe1=False)
    manifest = pm.get_manifest(DIST_NAME)
    assert {s.key for s in manifest.contributions.sample_data} == SAMPLE_KEYS


@pytest.mark.skipif(not REPO_MANIFEST.is_file(), reason="not running from a source checkout")
def test_installed_manifest_matches_repository_copy():
    installed = _installed_manifest_path()
    assert installed.read_bytes() == REPO_MANIFEST.read_bytes(), (
        f"{installed} differs from {REPO_MANIFEST}: reinstall (make venv or pip install -e .)"
    )


# --------------------------------------------------------------------------- imports

_GUI_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui")


def _modules_loaded_by(statement: str, candidates: tuple[str, ...]) -> list[str]:
    code = (
        f"import sys\n{statement}\nprint(','.join(m for m in {candidates!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.strip().split(",") if m]


def test_core_does_not_import_gui():
    assert _modules_loaded_by("import napari_spoco.core", _GUI_MODULES) == []


def test_package_init_is_light():
    assert _modules_loaded_by("import napari_spoco", _GUI_MODULES + ("torch",)) == []


def test_sample_data_module_is_light():
    statement = "import napari_spoco.core.sample_data"
    assert _modules_loaded_by(statement, _GUI_MODULES + ("torch",)) == []


# --------------------------------------------------------------------------- sample data


def _check_pair(image: np.ndarray, labels: np.ndarray, shape: tuple[int, ...], min_objects: int):
    assert image.shape == shape
    assert labels.shape == shape
    assert np.issubdtype(image.dtype, np.number)
    assert image.max() > image.min()
    assert labels.dtype == np.uint32
    ids = np.unique(labels)
    assert ids[0] == 0, "background must be 0"
    assert len(ids) - 1 >= min_objects


def test_load_nuclei_2d():
    _check_pair(*load_nuclei_2d(), shape=(512, 512), min_objects=100)


def test_load_nuclei_3d():
    _check_pair(*load_nuclei_3d(), shape=(31, 61, 57), min_objects=40)


@pytest.mark.parametrize(
    ("provider", "loader"), [(nuclei_2d, load_nuclei_2d), (nuclei_3d, load_nuclei_3d)]
)
def test_sample_providers_return_layer_tuples(provider, loader):
    layers = provider()
    assert isinstance(layers, list) and len(layers) == 2
    (image, image_kwargs, image_type), (labels, labels_kwargs, labels_type) = layers
    assert (image_type, labels_type) == ("image", "labels")
    assert image_kwargs == {"name": "nuclei"}
    assert labels_kwargs == {"name": "ground truth", "visible": False}
    expected_image, expected_labels = loader()
    np.testing.assert_array_equal(image, expected_image)
    np.testing.assert_array_equal(labels, expected_labels)
    assert labels.dtype == np.uint32


def test_the_package_with_its_built_in_models_stays_under_20_mb():
    """Everything under src/napari_spoco goes into the wheel (which compresses it further)."""
    import napari_spoco

    root = Path(napari_spoco.__file__).parent
    files = [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert any(p.suffix == ".pt" for p in files)
    assert sum(p.stat().st_size for p in files) < 20e6
