import numpy as np
import pytest

from napari_spoco.core.axes import AXES_CHOICES, Axes, guess_axes, nonempty_frames


def test_every_offered_choice_is_valid_and_fits_its_dimension():
    for ndim, choices in AXES_CHOICES.items():
        for spec in choices:
            assert len(Axes(spec).spec) == ndim


@pytest.mark.parametrize(
    ("spec", "shape", "labels", "dims", "channel_axis", "channels"),
    [
        ("YX", (64, 80), (64, 80), 2, None, 1),
        ("ZYX", (9, 64, 80), (9, 64, 80), 3, None, 1),
        ("CYX", (2, 64, 80), (64, 80), 2, 0, 2),
        ("YXC", (64, 80, 3), (64, 80), 2, 2, 3),
        ("TZYX", (4, 9, 64, 80), (4, 9, 64, 80), 3, None, 1),
        ("TCYX", (4, 2, 64, 80), (4, 64, 80), 2, 0, 2),
        ("ZCYX", (9, 2, 64, 80), (9, 64, 80), 3, 1, 2),
    ],
)
def test_axes_describe_frames(spec, shape, labels, dims, channel_axis, channels):
    axes = Axes(spec)
    assert axes.labels_shape(shape) == labels
    assert axes.spatial_dims == dims and axes.channel_axis == channel_axis
    assert axes.channels(shape) == channels
    _, frame, _ = next(axes.frames(np.zeros(shape)))
    assert frame.ndim == dims + (channel_axis is not None)


def test_invalid_axes_and_mismatches_are_refused():
    for bad in ("XY", "YYX", "ZTYX", "YXQ"):
        with pytest.raises(ValueError):
            Axes(bad)
    with pytest.raises(ValueError, match="need a 3-axis image"):
        Axes("ZYX").labels_shape((64, 64))
    with pytest.raises(ValueError, match="must have shape"):
        Axes("CYX").check_labels((2, 64, 64), (2, 64, 64))


def test_guess_and_annotated_frames():
    assert guess_axes((5, 100, 100)) == "ZYX" and guess_axes((2, 100, 100)) == "CYX"
    labels = np.zeros((3, 8, 8), dtype=np.uint8)
    labels[2, 1, 1] = 4
    assert nonempty_frames(labels, Axes("TYX")) == [2]
    assert nonempty_frames(labels, Axes("ZYX")) == [None]
    assert nonempty_frames(np.zeros((8, 8)), Axes("YX")) == []
