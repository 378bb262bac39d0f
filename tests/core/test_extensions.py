"""Triplet and dispersive terms on hand-made embeddings, wiring, and model-file round trips."""

import numpy as np
import pytest
import torch

from napari_spoco.core.checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from napari_spoco.core.config import LossConfig, ModelConfig, TrainConfig, config_from_dict
from napari_spoco.core.extensions import (
    bottleneck_labels,
    compute_dispersive_term,
    compute_triplet_term,
    extension_losses,
    object_neighbours,
)
from napari_spoco.core.model import build_model
from napari_spoco.core.recipe import pretraining_loss
from napari_spoco.core.training import Trainer

TINY = ModelConfig(depth=2, base_features=8)
ALL_ON = LossConfig(triplet_weight=1.0, dispersive_weight=1.0, dispersive_on="both")


def _masks(*sizes, unlabeled=0):
    """Bool (C, N) masks of consecutive runs of pixels, then ``unlabeled`` pixels of none."""
    n = sum(sizes) + unlabeled
    masks = torch.zeros(len(sizes), n, dtype=torch.bool)
    start = 0
    for row, size in enumerate(sizes):
        masks[row, start : start + size] = True
        start += size
    return masks


def _line(*positions):
    """(1, N) embeddings: one scalar position per pixel."""
    return torch.tensor([positions], dtype=torch.float32)


def _labels(batch=2, shape=(16, 16)):
    """Two objects and a stripe of unlabeled pixels per image."""
    labels = torch.zeros(batch, *shape, dtype=torch.int64)
    labels[:, 2:7, 2:7] = 1
    labels[:, 2:7, 8:13] = 2
    return labels


# --------------------------------------------------------------------------- triplet


def test_triplet_is_zero_when_the_margin_is_met_and_positive_when_a_negative_is_closer():
    masks = _masks(3, 3)
    apart = _line(0, 0.1, 0.2, 5, 5.1, 5.2)  # d(a, p) <= 0.2, d(a, n) >= 4.8
    assert compute_triplet_term(apart, masks, margin=4.0, anchors=32).item() == 0
    mixed = _line(0, 3, 0.1, 0.2, 5, 5.1)  # object 0's second pixel lies far from its first
    loss = compute_triplet_term(mixed, masks, margin=1.0, anchors=64)
    assert loss.item() > 0
    assert compute_triplet_term(apart, _masks(6), margin=4.0, anchors=8) is None


def test_triplet_negatives_come_only_from_other_annotated_objects():
    # The unlabeled pixels sit exactly on object 0: as negatives they would cost the margin.
    masks = _masks(3, 3, unlabeled=4)
    embeddings = _line(0, 0, 0, 9, 9, 9, 0, 0, 0, 0).requires_grad_(True)
    loss = compute_triplet_term(embeddings, masks, margin=4.0, anchors=32)
    assert loss.item() == 0
    pulled = _line(0, 0, 0, 1, 1, 1, 0, 0, 0, 0).requires_grad_(True)
    compute_triplet_term(pulled, masks, margin=4.0, anchors=32).backward()
    assert pulled.grad[0, :6].abs().sum() > 0
    assert pulled.grad[0, 6:].abs().max() == 0  # unlabeled pixels get no gradient


def test_triplet_prefers_neighbouring_objects_as_negatives():
    # Objects 0 and 2 look alike (embeddings 1 apart) but lie far apart in the image;
    # their neighbours (object 1) are far in embedding space: no violated neighbour pair.
    masks = _masks(2, 2, 2)
    embeddings = _line(0, 0, 10, 10, 1, 1)
    chain = torch.tensor([[False, True, False], [True, False, True], [False, True, False]])
    with_neighbours = compute_triplet_term(
        embeddings, masks, margin=4.0, anchors=64, neighbours=chain
    )
    without = compute_triplet_term(embeddings, masks, margin=4.0, anchors=64)
    assert with_neighbours.item() == 0 and without.item() > 0


def test_object_neighbours_is_a_dilation_test():
    labels = torch.zeros(20, 40, dtype=torch.int64)
    labels[2:8, 2:8] = 1
    labels[2:8, 8:14] = 2  # touches 1
    labels[2:8, 16:20] = 3  # 2 pixels from 2
    labels[12:18, 30:36] = 4  # far from all
    masks = labels[None] == torch.arange(1, 5)[:, None, None]
    near = object_neighbours(masks)
    assert near.tolist() == [
        [False, True, False, False],
        [True, False, True, False],
        [False, True, False, False],
        [False, False, False, False],
    ]
    assert not object_neighbours(masks, gap=0)[1, 2]


def test_background_scribbles_are_negatives_but_unlabeled_pixels_are_not():
    labels = torch.zeros(1, 8, 8, dtype=torch.int64)
    labels[0, :4, :4] = 1
    labels[0, 6:, :] = 9  # background scribble
    student = torch.zeros(1, 2, 8, 8)
    student[0, 0, 6:, :] = 1.0  # the background lies within the margin of object 1
    config = LossConfig(triplet_weight=1.0, background_id=9, triplet_margin=2.0)
    assert extension_losses(student, labels, config)["triplet"].item() > 0
    plain = labels.clone()
    plain[plain == 9] = 0  # now one object only: nothing to contrast with
    assert extension_losses(student, plain, config)["triplet"].item() == 0


# --------------------------------------------------------------------------- dispersive


def test_dispersive_term_decreases_as_points_spread():
    points = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    values = [compute_dispersive_term(scale * points, tau=0.5).item() for scale in (0.1, 1, 3)]
    assert values[0] > values[1] > values[2]
    assert values[0] <= 0  # log of a mean of values <= 1
    assert compute_dispersive_term(points[:1], tau=0.5) is None


def test_dispersive_objects_span_the_batch_and_ignore_background_and_unlabeled_pixels():
    labels = torch.zeros(2, 8, 8, dtype=torch.int64)
    labels[0, :3, :3] = 1  # one object per image: only the batch gives pairs
    labels[1, :3, :3] = 1
    labels[:, 6:, :] = 5  # background scribbles, far from everything
    student = torch.zeros(2, 2, 8, 8, requires_grad=True)
    config = LossConfig(dispersive_weight=1.0, background_id=5)
    with torch.no_grad():
        student[:, 0, 6:, :] = 50.0
        student[:, 1, 3:6, :] = 50.0  # unlabeled pixels
    loss = extension_losses(student, labels, config)["dispersive"]
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # the two objects coincide: exp(0) = 1
    loss.backward()
    assert student.grad[:, :, 3:, :].abs().max() == 0


# --------------------------------------------------------------------------- wiring


def test_extensions_are_reported_only_when_enabled():
    labels = _labels()
    student = torch.randn(2, 4, 16, 16)
    assert extension_losses(student, labels, LossConfig()) == {}
    on = extension_losses(student, labels, LossConfig(triplet_weight=1, dispersive_weight=1))
    assert set(on) == {"triplet", "dispersive"}
    with pytest.raises(ValueError, match="bottleneck"):
        extension_losses(student, labels, LossConfig(dispersive_weight=1, dispersive_on="both"))
    with pytest.raises(ValueError, match="projection"):
        extension_losses(student, labels, LossConfig(triplet_weight=1, triplet_on="bottleneck"))
    with pytest.raises(ValueError, match="bottleneck"):
        config = LossConfig(dispersive_weight=1, dispersive_on="bottleneck")
        extension_losses(student, labels, config, bottleneck=torch.zeros(3, 8, 4, 4))


def test_volumes_work_like_images():
    labels = torch.zeros(2, 6, 16, 16, dtype=torch.int64)
    labels[:, 2:6, :8], labels[:, 2:6, 8:] = 1, 2
    labels[1, 3:] = 0  # a partly annotated volume
    student = torch.randn(2, 4, 6, 16, 16, requires_grad=True)
    projection = torch.randn(2, 4, 3, 4, 4, requires_grad=True)
    config = LossConfig(
        triplet_weight=1, triplet_on="bottleneck", dispersive_weight=1, dispersive_on="both"
    )
    losses = extension_losses(
        student, labels, config, bottleneck=projection, projection=projection,
        size_divisor=(2, 4, 4),
    )  # fmt: skip
    assert losses["triplet"].item() > 0
    sum(losses.values()).backward()
    assert projection.grad.abs().sum() > 0 and student.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["triplet", "dispersive"])
def test_every_sample_gets_gradient_and_changes_the_loss(name):
    labels = _labels(batch=3)
    student = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    student.requires_grad_(True)
    config = LossConfig(**{f"{name}_weight": 1.0}, triplet_margin=100.0)
    loss = extension_losses(student, labels, config, generator=torch.Generator().manual_seed(0))
    loss[name].backward()
    assert all(student.grad[b].abs().sum() > 0 for b in range(3))
    assert student.grad[:, :, 10:].abs().max() == 0  # unlabeled rows
    changed = student.detach().clone()
    changed[2, :, 2:7, 2:7] += 3.0
    again = extension_losses(changed, labels, config, generator=torch.Generator().manual_seed(0))
    assert again[name].item() != pytest.approx(loss[name].item())


def test_a_training_step_trains_the_student_only():
    config = TrainConfig(model=TINY, loss=ALL_ON, iterations=1, batch_size=2, patch_shape=(32, 32))
    trainer = Trainer(config, device="cpu")
    labels = np.zeros((64, 64), dtype=np.int64)
    labels[10:20, 10:20], labels[10:20, 22:32], labels[40:50, 40:50] = 1, 2, 3
    trainer.set_data([np.random.default_rng(0).normal(size=(64, 64))], [labels])
    before = [p.detach().clone() for p in trainer.model.parameters()]
    record = next(trainer.steps(1))
    assert {"triplet", "dispersive", "total"} <= set(record.losses)
    assert "loss_triplet" in trainer.history[-1] and "loss_dispersive" in trainer.history[-1]
    assert all(p.grad is None for p in trainer.teacher.parameters())
    changed = [
        not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True)
    ]
    assert all(changed)
    plain = TrainConfig(model=TINY, iterations=1, batch_size=2, patch_shape=(32, 32))
    plain = Trainer(plain, device="cpu")
    plain.set_data([np.zeros((64, 64))], [labels])
    assert not {"triplet", "dispersive"} & set(next(plain.steps(1)).losses)


def test_pretraining_switches_the_extensions_off():
    assert not ALL_ON.consistency_only
    off = pretraining_loss(ALL_ON)
    assert off.triplet_weight == 0 and off.dispersive_weight == 0 and off.consistency_only


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"triplet_weight": -1}, "triplet_weight"),
        ({"triplet_margin": 0}, "triplet_margin"),
        ({"triplet_anchors": 0}, "triplet_anchors"),
        ({"triplet_on": "decoder"}, "triplet_on"),
        ({"dispersive_weight": -0.1}, "dispersive_weight"),
        ({"dispersive_tau": 0}, "dispersive_tau"),
        ({"dispersive_on": "pixels"}, "dispersive_on"),
    ],
)
def test_invalid_extension_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LossConfig(**kwargs)


# --------------------------------------------------------------------------- bottleneck


def test_bottleneck_labels_keep_only_pure_cells():
    labels = torch.zeros(1, 10, 10, dtype=torch.int64)
    labels[0, :4, :4] = 3
    labels[0, 4:, 4:] = 7  # reaches the padded border: those cells are mixed
    coarse = bottleneck_labels(labels, (4, 4))
    assert coarse.tolist() == [[[3, 0, 0], [0, 7, 0], [0, 0, 0]]]


def test_the_triplet_term_on_the_bottleneck_trains_the_projection():
    model_config = ModelConfig(depth=3, base_features=8, bottleneck_projection=True)
    model = build_model(model_config)
    output, bottleneck = model.forward_features(torch.randn(2, 1, 30, 30))
    assert output.shape == (2, 16, 30, 30) and bottleneck.shape == (2, 32, 8, 8)
    labels = torch.zeros(2, 30, 30, dtype=torch.int64)
    labels[:, :12, :12], labels[:, 12:24, 12:24] = 1, 2
    losses = extension_losses(
        output, labels, LossConfig(triplet_weight=1, triplet_on="bottleneck"),
        projection=model.projection(bottleneck), size_divisor=model_config.size_divisor,
    )  # fmt: skip
    losses["triplet"].backward()
    assert model.projection[0].weight.grad.abs().sum() > 0
    assert model.head.weight.grad is None  # the embedding output is not involved


def test_bottleneck_projection_needs_a_network_that_has_it(tmp_path):
    loss = LossConfig(triplet_weight=1.0, triplet_on="bottleneck")
    with pytest.raises(ValueError, match="bottleneck_projection"):
        Trainer(TrainConfig(model=TINY, loss=loss, patch_shape=(32, 32)), device="cpu")
    projected = TrainConfig(
        model=ModelConfig(depth=2, base_features=8, bottleneck_projection=True),
        loss=loss, iterations=1, batch_size=2, patch_shape=(32, 32),
    )  # fmt: skip
    trainer = Trainer(projected, device="cpu")
    trainer.set_data([np.zeros((48, 48))], [_labels(1, (48, 48))[0].numpy()])
    trainer.run(checkpoint_path=tmp_path / "projected.pt")
    back = load_model(tmp_path / "projected.pt")
    assert back.projection is not None
    assert "loss_triplet" in load_checkpoint(tmp_path / "projected.pt").history[-1]


# --------------------------------------------------------------------------- model files


def test_networks_without_extras_keep_their_state_dict_keys():
    plain = build_model(TINY).state_dict()
    assert not any(k.startswith(("projection", "extra_heads")) for k in plain)
    extended = ModelConfig(depth=2, base_features=8, distance_head=True, bottleneck_projection=True)
    keys = set(build_model(extended).state_dict())
    assert set(plain) < keys
    assert {k.split(".")[0] for k in keys - set(plain)} == {"projection", "extra_heads"}


def _old_file(path, checkpoint):
    """Rewrite a model file as versions before the heads and extensions wrote it."""
    save_checkpoint(path, checkpoint)
    payload = torch.load(path, weights_only=True)
    for key in ("foreground_head", "distance_head", "bottleneck_projection"):
        payload["config"]["model"].pop(key)
    for key in [k for k in payload["config"]["loss"] if k.startswith(("triplet", "dispersive"))]:
        payload["config"]["loss"].pop(key)
    torch.save(payload, path)


def test_distance_head_round_trips_and_old_files_still_load(tmp_path):
    torch.manual_seed(0)
    config = TrainConfig(
        model=ModelConfig(depth=2, base_features=8, distance_head=True),
        loss=LossConfig(triplet_weight=0.5, triplet_margin=3.0, dispersive_weight=0.1),
        patch_shape=(32, 32),
    )
    model = build_model(config.model).eval()
    path = save_checkpoint(tmp_path / "heads.pt", Checkpoint(config, model.state_dict()))
    assert load_checkpoint(path).config == config
    x = torch.randn(1, 1, 24, 24)
    torch.testing.assert_close(load_model(path)(x), model(x))
    assert load_model(path)(x).shape[1] == 17

    plain = build_model(TINY).eval()
    _old_file(tmp_path / "old.pt", Checkpoint(TrainConfig(model=TINY), plain.state_dict()))
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.config.model == TINY and old.config.loss == LossConfig()
    torch.testing.assert_close(load_model(tmp_path / "old.pt")(x), plain(x))
    assert config_from_dict(config.to_dict()) == config


def test_distance_head_and_projection_round_trip_through_bioimageio(blobs, tmp_path):
    pytest.importorskip("bioimageio.spec")
    from napari_spoco.core.bioimageio import export_bioimageio, import_bioimageio
    from napari_spoco.core.image import prepare_image
    from napari_spoco.core.tiling import predict_embeddings

    torch.manual_seed(0)
    model_config = ModelConfig(
        depth=2, base_features=8, foreground_head=True, distance_head=True,
        bottleneck_projection=True,
    )  # fmt: skip
    config = TrainConfig(model=model_config, loss=ALL_ON, patch_shape=(32, 32))
    model = build_model(model_config).eval()
    checkpoint = Checkpoint(config, model.state_dict(), step=3)
    # bioimageio.core's test_model is exercised in test_bioimageio.py; skipped here for speed.
    package = export_bioimageio(
        checkpoint, tmp_path / "heads.zip", test_image=blobs[0][:64, :64], validate=False
    )
    back = import_bioimageio(package)
    assert back.config == config and back.step == 3
    network = build_model(back.config.model)
    network.load_state_dict(back.model_state)
    image = prepare_image(blobs[0], spatial_dims=2)
    ours = predict_embeddings(model, image)
    assert ours.shape[0] == 18
    np.testing.assert_allclose(predict_embeddings(network.eval(), image), ours, atol=1e-5)
