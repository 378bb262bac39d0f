import numpy as np
import pytest
import torch

from napari_spoco.core.config import LossConfig, ModelConfig
from napari_spoco.core.heads import (
    compute_distance_term,
    compute_foreground_term,
    head_losses,
    inner_distance,
    known_background,
)
from napari_spoco.core.model import build_model, split_output


def _disc(shape=(21, 21), centre=(10, 10), radius=6):
    yy, xx = np.indices(shape)
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2).astype(np.int64)


def test_inner_distance_is_one_at_the_centre_and_falls_to_the_border():
    disc = _disc()
    distance = inner_distance(disc)
    assert distance[10, 10] == pytest.approx(1.0)
    assert distance[disc == 0].max() == 0
    border = disc.astype(bool) & ~np.pad(disc, 1)[2:, 1:-1].astype(bool)
    assert distance[border].max() < 0.25
    profile = distance[10, 4:11]
    assert np.all(np.diff(profile) > 0), profile


def test_inner_distance_separates_touching_objects_and_ignores_background_scribbles():
    labels = np.zeros((9, 20), dtype=np.int64)
    labels[:, 2:10] = 1
    labels[:, 10:18] = 2
    labels[0, :2] = 7  # background scribble
    distance = inner_distance(labels, background_id=7)
    # The shared face is a border of both objects.
    assert distance[4, 9] < 0.5 and distance[4, 10] < 0.5
    assert distance[0, 0] == 0
    assert distance[labels == 1].max() == pytest.approx(1.0)


def test_known_background_is_scribbles_and_a_ring_around_objects_only():
    labels = torch.zeros(1, 20, 20, dtype=torch.int64)
    labels[0, 8:12, 8:12] = 1
    labels[0, 0, :] = 9
    background = known_background(labels, LossConfig(background_id=9, ring_width=2))[0]
    assert background[0].all()  # scribble
    assert background[6, 10] and background[13, 10]  # ring
    assert not background[10, 10]  # the object itself
    assert not background[3, 10]  # unlabeled, far from the object
    no_ring = known_background(labels, LossConfig(background_id=9, ring_width=0))[0]
    assert not no_ring[6, 10]


def test_foreground_term_is_balanced_and_small_when_right():
    positive = torch.tensor([True, True, True, False, False])
    negative = torch.tensor([False, False, False, True, False])
    right = torch.tensor([8.0, 8.0, 8.0, -8.0, 100.0])  # last pixel unlabeled: ignored
    wrong = -right
    assert compute_foreground_term(right, positive, negative).item() < 1e-3
    assert compute_foreground_term(wrong, positive, negative).item() > 5
    assert compute_foreground_term(right, positive, torch.zeros(5, dtype=torch.bool)) is None


def test_distance_term_is_minimal_at_the_target():
    target = torch.tensor([0.2, 0.9, 0.0])
    positive = torch.tensor([True, True, False])
    negative = torch.tensor([False, False, True])
    exact = torch.logit(target.clamp(1e-4, 1 - 1e-4))
    best = compute_distance_term(exact, target, positive, negative).item()
    for shift in (-1.0, 1.0):
        assert compute_distance_term(exact + shift, target, positive, negative).item() > best
    assert compute_distance_term(exact, target, torch.zeros(3, dtype=bool), negative) is None


def test_head_losses_train_the_heads_of_a_real_model():
    config = ModelConfig(depth=2, base_features=8, foreground_head=True, distance_head=True)
    model = build_model(config)
    image = torch.randn(2, 1, 32, 32)
    labels = torch.zeros(2, 32, 32, dtype=torch.int64)
    labels[:, 10:20, 10:20] = 1
    _, heads = split_output(model(image), config, axis=1)
    losses = head_losses(heads, labels, LossConfig())
    assert set(losses) == {"foreground", "distance"}
    (losses["foreground"] + losses["distance"]).backward()
    assert model.extra_heads[0].weight.grad.abs().sum() > 0


def test_unlabeled_pixels_never_reach_the_heads():
    config = LossConfig(ring_width=1)
    labels = torch.zeros(1, 16, 16, dtype=torch.int64)
    labels[0, 4:8, 4:8] = 1
    logits = torch.zeros(1, 16, 16, requires_grad=True)
    head_losses({"foreground": logits}, labels, config)["foreground"].backward()
    far = logits.grad[0, 12:, 12:]
    assert far.abs().max() == 0
    assert logits.grad[0, 5, 5] != 0
