import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _two_threads():
    """Keep torch's thread count like CI's two cores, whatever the host has."""
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)


def make_blobs(shape=(96, 96), n_objects=12, radius=6, seed=0):
    """Synthetic fluorescence-like image with bright discs (or balls) and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint16)
    grids = np.indices(shape)
    placed = 0
    for _ in range(500):
        centre = [rng.integers(radius, s - radius) for s in shape]
        ball = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius**2
        if labels[ball].any():
            continue
        placed += 1
        labels[ball] = placed
        if placed == n_objects:
            break
    image = (labels > 0) * 100.0 + rng.normal(10, 5, shape)
    return image.astype(np.float32), labels


@pytest.fixture
def blobs():
    return make_blobs()


@pytest.fixture
def record_keyword(monkeypatch):
    """Wrap ``owner.name`` so that each call records one keyword argument and still runs.

    Front-end tests use it to check that an option reaches the core (the value
    the core was called with), not just that the widget or flag exists.
    """

    def wrap(owner, name: str, keyword: str) -> list:
        seen = []
        original = getattr(owner, name)

        def recording(*args, **kwargs):
            seen.append(kwargs[keyword])
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, recording)
        return seen

    return wrap
