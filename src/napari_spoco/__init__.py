"""napari-spoco: segment every instance in an image from a few painted examples.

A napari plugin that trains a SPOCO pixel-embedding U-Net from sparse annotations.
This module stays light on purpose (no torch, no Qt) because npe2 and the
command line import it; the heavy parts live in submodules.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
