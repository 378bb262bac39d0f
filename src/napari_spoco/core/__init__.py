"""Qt-free core of napari-spoco: configuration, model, training, clustering and sample data."""

from .clustering import segment

__all__ = ["segment"]
