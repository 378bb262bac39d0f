"""Qt-free core of napari-spoco: configuration, model, training and sample data."""
