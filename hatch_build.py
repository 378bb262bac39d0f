"""Hatch build hook: make the top-level ``napari.yaml`` visible to editable installs.

Why this exists
---------------
The npe2 manifest lives at the top of the repository and the entry point
``napari_spoco:napari.yaml`` asks npe2 to find it *inside the package*: npe2
looks in ``importlib.util.find_spec("napari_spoco").submodule_search_locations``.

* Regular wheels: ``[tool.hatch.build.targets.wheel.force-include]`` in
  pyproject.toml copies the file to ``napari_spoco/napari.yaml``; enough.
* Editable installs (``pip install -e .``): hatchling writes the same
  force-included file to ``site-packages/napari_spoco/napari.yaml``, but the
  package itself is imported from ``src/napari_spoco`` (through a .pth file),
  so the package's search location is ``src/napari_spoco`` and npe2 never sees
  the copy in site-packages (checked: ``npe2 validate napari-spoco`` fails).

So for editable builds this hook copies ``napari.yaml`` to
``src/napari_spoco/napari.yaml`` (a real file, no symlink, so it works on
Windows). That copy is git-ignored and is refreshed by every editable install;
``make venv`` reinstalls when ``napari.yaml`` changes, and
tests/test_package.py fails if the copy is stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MANIFEST = "napari.yaml"
PACKAGE_DIR = ("src", "napari_spoco")


class CustomBuildHook(BuildHookInterface):
    """Copy the top-level manifest into the source package for editable builds."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Run before the build; acts only for the editable wheel."""
        if self.target_name != "wheel" or version != "editable":
            return
        source = Path(self.root, MANIFEST)
        target = Path(self.root, *PACKAGE_DIR, MANIFEST)
        content = source.read_bytes()
        if not target.is_file() or target.read_bytes() != content:
            target.write_bytes(content)
