"""napari widgets of napari-spoco (Qt); thin layers over :mod:`napari_spoco.core`."""

from .main import SpocoWidget

__all__ = ["SpocoWidget"]
