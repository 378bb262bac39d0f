"""Tests for the SPOCO loss terms and their batch combination (CPU, tiny hand-made tensors)."""

from __future__ import annotations

import math

import pytest
import torch

from napari_spoco.core import loss_terms
from napari_spoco.core.config import LossConfig
from napari_spoco.core.loss_terms import (
    compute_consistency_term,
    compute_instance_term,
    compute_object_means,
    compute_pull_term,
    compute_push_term,
    compute_regularizer_term,
    compute_unlabeled_push_term,
)
from napari_spoco.core.losses import SPOCO_TERMS, spoco_loss

DELTA_V, DELTA_D, T = 0.5, 2.0, 0.9
KERNEL = {"delta_v": DELTA_V, "kernel_threshold": T}
CONSISTENCY = {**KERNEL, "max_anchors": 10, "min_fraction": 0.05}


def flat(points: list[list[float]]) -> torch.Tensor:
    """(N, D) list of points -> float64 (D, N) embeddings."""
    return torch.tensor(points, dtype=torch.float64).T


def masks_of(labels: list[int], ids: list[int]) -> torch.Tensor:
    """(C, N) bool masks of the given ids."""
    labels_t = torch.tensor(labels)
    return torch.stack([labels_t == i for i in ids])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Toy image (4 x 6 pixels, D = 2) on which every term is deterministic:
#  - objects 1 and 2 have their pixels 0.6 (> delta_v) either side of their means
#    (0, 0) and (1.5, 0): the instance anchors are the means;
#  - unlabeled pixels form three clusters A (rows 0-1, cols 4-5), B (row 2) and
#    C (row 3). In the teacher, C sits on top of B, so the anchors are always A
#    plus one of B / C, each disagreeing with Dice 1 - 2*6/(6+12) = 1/3.
TOY_LABELS = [
    [1, 1, 2, 2, 0, 0],
    [1, 1, 2, 2, 0, 0],
    [0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
]
A, B, C = (0.0, 1.5), (6.0, 8.0), (-6.0, 8.0)
TOY_EXPECTED = {
    "pull": 0.1**2,
    "push": (2 * DELTA_D - 1.5) ** 2,
    "regularizer": (0 + 1.5) / 2,
    "unlabeled_push": 0.5 * (4 * (DELTA_D - 1.5) ** 2 / 16),
    "consistency": (0 + 1 / 3) / 2,
}


def toy_image(scale: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student (1, 2, 4s, 6s), teacher, labels (1, 4s, 6s); pixels replicated s x s."""
    columns = [(-0.6, 0.0), (0.6, 0.0), (0.9, 0.0), (2.1, 0.0), A, A]
    student = torch.zeros(2, 4, 6, dtype=torch.float64)
    for x, value in enumerate(columns):
        student[:, :2, x] = torch.tensor(value, dtype=torch.float64)[:, None]
    student[:, 2] = torch.tensor(B, dtype=torch.float64)[:, None]
    student[:, 3] = torch.tensor(C, dtype=torch.float64)[:, None]
    teacher = student.clone()
    teacher[:, 3] = torch.tensor(B, dtype=torch.float64)[:, None]
    labels = torch.tensor(TOY_LABELS)

    def grow(t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(scale, -1).repeat_interleave(scale, -2)[None]

    return grow(student), grow(teacher), grow(labels)


def random_batch(batch: int = 3, seed: int = 0):
    """Random student/teacher (B, 4, 8, 8) and labels with three objects per image."""
    g = gen(seed)
    student = torch.randn(batch, 4, 8, 8, generator=g, dtype=torch.float64)
    teacher = student + 0.5 * torch.randn(student.shape, generator=g, dtype=torch.float64)
    labels = torch.zeros(batch, 8, 8, dtype=torch.int64)
    labels[:, :3, :3] = 1
    labels[:, 4:, 5:] = 2
    labels[:, 6:, :2] = 3
    return student.requires_grad_(True), teacher, labels


# ----------------------------------------------------------------------------- pull


def test_pull_is_zero_when_objects_lie_within_delta_v():
    embeddings = flat([[0, 0], [0.4, 0], [5, 5], [5, 5.3]])
    masks = masks_of([1, 1, 2, 2], [1, 2])
    means = compute_object_means(embeddings, masks)
    assert compute_pull_term(embeddings, masks, means, DELTA_V).item() == 0


def test_pull_exact_value_and_ignores_pixels_outside_objects():
    # object 1: mean (1, 0), distances 1, 1 -> 0.25 each; object 2: mean (11, 0),
    # distances 1, 1, 2 -> (0.25 + 0.25 + 2.25) / 3; last pixel is unlabeled.
    embeddings = flat([[0, 0], [2, 0], [10, 0], [10, 0], [13, 0], [100, 0]])
    masks = masks_of([1, 1, 2, 2, 2, 0], [1, 2])
    means = compute_object_means(embeddings, masks)
    expected = (0.25 + 2.75 / 3) / 2
    assert compute_pull_term(embeddings, masks, means, DELTA_V).item() == pytest.approx(expected)


def test_pull_none_without_objects():
    embeddings = flat([[0, 0], [1, 1]])
    masks = torch.zeros(0, 2, dtype=torch.bool)
    assert (
        compute_pull_term(embeddings, masks, compute_object_means(embeddings, masks), 0.5) is None
    )


# ----------------------------------------------------------------------------- push, reg


def test_push_zero_when_means_are_two_delta_d_apart():
    means = torch.tensor([[0.0, 0.0], [2 * DELTA_D, 0.0], [0.0, 2 * DELTA_D + 1]])
    assert compute_push_term(means, DELTA_D).item() == 0


def test_push_exact_value_for_a_close_pair():
    # only the pair (0, 1) at distance 3 is within 2 delta_d = 4: (4 - 3)^2 counted twice.
    means = torch.tensor([[0.0, 0.0], [3.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    assert compute_push_term(means, DELTA_D).item() == pytest.approx(2 * 1.0 / (3 * 2))


def test_push_undefined_with_one_object_and_zero_in_spoco_loss():
    assert compute_push_term(torch.zeros(1, 2), DELTA_D) is None
    student = torch.randn(1, 2, 3, 3, requires_grad=True)
    labels = torch.zeros(1, 3, 3, dtype=torch.int64)
    labels[0, 0] = 1
    result = spoco_loss(student, labels, LossConfig())
    assert result["push"].item() == 0
    assert result["pull"].item() > 0


def test_regularizer_exact_value():
    means = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert compute_regularizer_term(means).item() == pytest.approx((5 + 1) / 2)
    assert compute_regularizer_term(torch.zeros(0, 2)) is None


# ----------------------------------------------------------------------------- instance


def _instance(embeddings, labels, ids, seed=0):
    masks = masks_of(labels, ids)
    means = compute_object_means(embeddings, masks)
    return compute_instance_term(embeddings, masks, means, **KERNEL, generator=gen(seed))


def test_instance_dice_near_zero_for_separated_embeddings():
    labels = [1, 1, 1, 2, 2, 2, 0, 0, 0, 0]
    points = [[0, 0]] * 3 + [[10, 0]] * 3 + [[0, 10], [10, 10], [-10, 0], [5, -10]]
    assert _instance(flat(points), labels, [1, 2]).item() < 1e-4


def test_instance_dice_large_for_collapsed_embeddings_and_averaged_over_objects():
    labels = [1, 1, 1, 2, 0, 0, 0, 0, 0, 0]
    value = _instance(flat([[1, 1]] * 10), labels, [1, 2]).item()
    # soft mask is 1 on all 10 pixels: 1 - 2|S| / (10 + |S|) per object, then the mean
    # over objects (pooling the sums over objects would give 1 - 8 / 24 instead).
    assert value == pytest.approx((7 / 13 + 9 / 11) / 2)


def test_instance_uses_mean_as_anchor_when_no_pixel_is_near_it():
    # both pixels are 0.6 > delta_v from the mean (0, 0), so the anchor is the mean.
    p = T ** (0.6**2 / DELTA_V**2)
    value = _instance(flat([[-0.6, 0], [0.6, 0]]), [1, 1], [1]).item()
    assert value == pytest.approx(1 - 2 * (2 * p) / (2 * p**2 + 2))


def test_instance_kernel_equals_threshold_at_delta_v():
    soft = loss_terms._soft_masks(
        flat([[0, 0], [DELTA_V, 0]]), torch.zeros(1, 2, dtype=torch.float64), DELTA_V, T
    )
    assert soft[0].tolist() == pytest.approx([1.0, T])


# ----------------------------------------------------------------------------- unlabeled push


def test_unlabeled_push_zero_when_far_and_exact_when_close():
    means = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    unlabeled = torch.tensor([False, True, True])
    far = flat([[0.1, 0], [5, 0], [0, -3]])
    close = flat([[0.1, 0], [1, 0], [10, 0]])
    assert compute_unlabeled_push_term(far, unlabeled, means, DELTA_D).item() == 0
    assert compute_unlabeled_push_term(close, unlabeled, means, DELTA_D).item() == pytest.approx(
        0.5
    )


def _image(points: list[list[float]], labels: list[int]):
    student = flat(points).reshape(2, 1, -1)[None].clone().requires_grad_(True)
    return student, torch.tensor(labels).reshape(1, 1, -1)


def test_unlabeled_push_excludes_background_scribble_mean():
    # unlabeled pixels sit next to the background scribbles (id 9), far from object 1.
    student, labels = _image(
        [[10, 0], [10, 0], [0, 0], [0, 0], [0.5, 0], [0, 0.5]], [1, 1, 9, 9, 0, 0]
    )
    with_bg = spoco_loss(student, labels, LossConfig(background_id=9))
    as_object = spoco_loss(student, labels, LossConfig())
    assert with_bg["unlabeled_push"].item() == 0
    assert as_object["unlabeled_push"].item() > 0
    assert with_bg["push"].item() == pytest.approx(as_object["push"].item())  # still an object


def test_background_scribbles_are_not_unlabeled():
    # background pixels lie 1 from object 1: pushed if they were (wrongly) in U.
    student, labels = _image([[0, 0], [0, 0], [1, 0], [1, 0], [0, 10], [0, 11]], [1, 1, 9, 9, 0, 0])
    result = spoco_loss(student, labels, LossConfig(background_id=9))
    assert result["unlabeled_push"].item() == 0


# ----------------------------------------------------------------------------- consistency


def _toy_flat():
    student, teacher, labels = toy_image()
    return student[0].reshape(2, -1), teacher[0].reshape(2, -1), labels[0].reshape(-1) == 0


def test_consistency_zero_when_teacher_equals_student():
    student, _, unlabeled = _toy_flat()
    value = compute_consistency_term(
        student, student.clone(), unlabeled, **CONSISTENCY, generator=gen()
    )
    assert value.item() == pytest.approx(0, abs=1e-9)


def test_consistency_positive_and_exact_when_views_disagree():
    student, teacher, unlabeled = _toy_flat()
    for seed in range(5):
        value = compute_consistency_term(
            student, teacher, unlabeled, **CONSISTENCY, generator=gen(seed)
        )
        assert value.item() == pytest.approx(TOY_EXPECTED["consistency"], abs=1e-6)


def test_consistency_trains_student_only():
    student, teacher, unlabeled = _toy_flat()
    student = student + 0.1 * torch.randn(student.shape, generator=gen(), dtype=student.dtype)
    student.requires_grad_(True)
    teacher = teacher.clone().requires_grad_(True)
    value = compute_consistency_term(student, teacher, unlabeled, **CONSISTENCY, generator=gen())
    value.backward()
    assert student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_consistency_skipped_when_unlabeled_set_is_tiny():
    student, teacher, _ = _toy_flat()
    tiny = torch.zeros(24, dtype=torch.bool)
    tiny[5] = True  # 1 / 24 < 5 %
    assert compute_consistency_term(student, teacher, tiny, **CONSISTENCY) is None
    labels = torch.ones(1, 4, 6, dtype=torch.int64)
    labels[0, 0, 5] = 0
    result = spoco_loss(
        student.reshape(1, 2, 4, 6), labels, LossConfig(), teacher=teacher.reshape(1, 2, 4, 6)
    )
    assert result["consistency"].item() == 0


def test_consistency_dice_is_vectorised_over_anchors(monkeypatch):
    calls = []
    original = loss_terms._dice_loss

    def spy(prediction, target):
        calls.append(tuple(prediction.shape))
        return original(prediction, target)

    monkeypatch.setattr(loss_terms, "_dice_loss", spy)
    student, _, unlabeled = _toy_flat()
    teacher = student.clone()  # three separate clusters in both views -> three anchors
    compute_consistency_term(student, teacher, unlabeled, **CONSISTENCY, generator=gen())
    assert calls == [(3, 24)]
    calls.clear()
    compute_consistency_term(student, teacher, unlabeled, **{**CONSISTENCY, "max_anchors": 2})
    assert calls == [(2, 24)]


# ----------------------------------------------------------------------------- sparse vs dense


def test_unannotated_pixels_never_enter_the_pull_term():
    student, labels = _image([[0, 0], [2, 0], [0.1, 0], [0.2, 0]], [1, 1, 0, 0])
    far, _ = _image([[0, 0], [2, 0], [1000, 0], [-1000, 500]], [1, 1, 0, 0])
    near_pull = spoco_loss(student, labels, LossConfig())["pull"]
    far_pull = spoco_loss(far, labels, LossConfig())["pull"]
    assert near_pull.item() == pytest.approx(0.25)
    assert far_pull.item() == pytest.approx(0.25)
    far_pull.backward()
    assert far.grad[..., 2:].abs().sum() == 0
    assert far.grad[..., :2].abs().sum() > 0


def test_dense_mode_treats_zero_as_an_object():
    # object 0: (0, 0), (4, 0) -> mean (2, 0), hinge (2 - 0.5)^2; object 1 is tight.
    student, labels = _image([[0, 0], [4, 0], [9, 9], [9, 9]], [0, 0, 1, 1])
    teacher = student.detach() + 1.0
    dense = spoco_loss(student, labels, LossConfig(sparse=False), teacher=teacher)
    sparse = spoco_loss(student, labels, LossConfig(), teacher=teacher)
    assert dense["pull"].item() == pytest.approx(1.5**2 / 2)
    assert sparse["pull"].item() == 0
    assert dense["push"].item() == 0  # means (2, 0) and (9, 9) are far apart
    assert dense["regularizer"].item() == pytest.approx((2 + math.hypot(9, 9)) / 2)
    assert sparse["regularizer"].item() == pytest.approx(math.hypot(9, 9))
    assert dense["unlabeled_push"].item() == 0 and dense["consistency"].item() == 0


# ----------------------------------------------------------------------------- spoco_loss


def test_toy_image_exact_values():
    student, teacher, labels = toy_image()
    result = spoco_loss(student, labels, LossConfig(), teacher=teacher, generator=gen())
    for name, expected in TOY_EXPECTED.items():
        assert result[name].item() == pytest.approx(expected, abs=1e-6), name
    assert set(result) == {*SPOCO_TERMS, "total"}


def test_total_is_the_weighted_sum_including_consistency_weight():
    student, teacher, labels = random_batch()
    weights = {f"{n}_weight": w for n, w in zip(SPOCO_TERMS, [0.5, 2, 0.1, 3, 0.7, 4], strict=True)}
    result = spoco_loss(student, labels, LossConfig(**weights), teacher=teacher, generator=gen())
    expected = sum(weights[f"{n}_weight"] * result[n] for n in SPOCO_TERMS)
    assert result["total"].item() == pytest.approx(expected.item())
    assert result["consistency"].item() > 0


@pytest.mark.parametrize("term", SPOCO_TERMS)
def test_every_term_trains_the_student_and_never_the_teacher(term):
    student, teacher, labels = random_batch()
    teacher.requires_grad_(True)
    result = spoco_loss(student, labels, LossConfig(), teacher=teacher, generator=gen())
    assert result[term].item() > 0
    result[term].backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert torch.isfinite(student.grad).all()
    assert teacher.grad is None


def test_every_sample_gets_gradient_and_changes_the_loss():
    student, teacher, labels = random_batch()
    result = spoco_loss(student, labels, LossConfig(), teacher=teacher, generator=gen())
    result["total"].backward()
    for b in range(len(student)):
        assert student.grad[b].abs().sum() > 0, b
    for b in range(len(student)):
        changed = labels.clone()
        changed[b, :3, :3] = 0
        other = spoco_loss(student, changed, LossConfig(), teacher=teacher, generator=gen())
        assert other["total"].item() != pytest.approx(result["total"].item()), b


def test_batch_of_identical_samples_equals_one_sample():
    student, teacher, labels = toy_image()
    one = spoco_loss(student, labels, LossConfig(), teacher=teacher, generator=gen(1))
    two = spoco_loss(
        student.repeat(2, 1, 1, 1),
        labels.repeat(2, 1, 1),
        LossConfig(),
        teacher=teacher.repeat(2, 1, 1, 1),
        generator=gen(2),
    )
    for name in one:
        assert two[name].item() == pytest.approx(one[name].item(), abs=1e-9), name


def test_terms_are_averaged_over_images_where_they_are_defined():
    student, _, labels = random_batch(batch=2)
    single = labels.clone()
    single[1][single[1] > 1] = 0  # image 1 keeps one object: push undefined there
    both = spoco_loss(student, single, LossConfig(), generator=gen())
    first = spoco_loss(student[:1], single[:1], LossConfig(), generator=gen())
    assert both["push"].item() == pytest.approx(first["push"].item())


def test_all_unlabeled_batch_gives_finite_zeros_and_backward_works():
    student = torch.randn(2, 3, 5, 5, requires_grad=True)
    labels = torch.zeros(2, 5, 5, dtype=torch.int64)
    result = spoco_loss(student, labels, LossConfig())
    assert all(result[name].item() == 0 for name in result)
    result["total"].backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    with_teacher = spoco_loss(
        student, labels, LossConfig(), teacher=student.detach() * 2, generator=gen()
    )
    assert torch.isfinite(with_teacher["total"]) and with_teacher["consistency"].item() > 0
    with_teacher["total"].backward()


def test_3d_input_matches_the_2d_image_stacked_along_z():
    student, teacher, labels = toy_image()
    result_2d = spoco_loss(student, labels, LossConfig(), teacher=teacher, generator=gen())
    stack = lambda t: torch.stack([t, t], dim=-3)  # noqa: E731
    student_3d = stack(student).requires_grad_(True)
    result_3d = spoco_loss(
        student_3d, stack(labels), LossConfig(), teacher=stack(teacher), generator=gen()
    )
    for name in result_2d:
        assert result_3d[name].item() == pytest.approx(result_2d[name].item(), abs=1e-9), name
    result_3d["total"].backward()
    assert student_3d.grad.shape == (1, 2, 2, 4, 6) and student_3d.grad.abs().sum() > 0


def test_value_does_not_scale_with_patch_size():
    # the same configuration on a 2x larger canvas (every pixel replicated 2 x 2).
    results = []
    for scale in (1, 2):
        student, teacher, labels = toy_image(scale)
        results.append(spoco_loss(student, labels, LossConfig(), teacher=teacher, generator=gen()))
    small, large = results
    for name in small:
        assert large[name].item() == pytest.approx(small[name].item(), abs=1e-9), name
    assert 0.05 < small["instance"].item() < 1 and small["consistency"].item() > 0.1


def test_same_seed_gives_same_loss():
    student, teacher, labels = random_batch()
    first = spoco_loss(student, labels, LossConfig(), teacher=teacher, generator=gen(3))
    second = spoco_loss(student, labels, LossConfig(), teacher=teacher, generator=gen(3))
    assert all(first[name].item() == second[name].item() for name in first)


@pytest.mark.parametrize(
    ("student_shape", "labels", "error"),
    [
        ((1, 2, 4), torch.zeros(1, 4, dtype=torch.int64), ValueError),
        ((1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.int64), ValueError),
        ((1, 2, 4, 4), torch.zeros(1, 4, 4), TypeError),
        ((1, 2, 4, 4), -torch.ones(1, 4, 4, dtype=torch.int64), ValueError),
    ],
)
def test_invalid_inputs_raise(student_shape, labels, error):
    with pytest.raises(error):
        spoco_loss(torch.zeros(student_shape), labels, LossConfig())


def test_invalid_config_and_teacher_raise():
    student, labels = torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64)
    with pytest.raises(TypeError):
        spoco_loss(student, labels, {"delta_v": 0.5})
    with pytest.raises(ValueError, match="teacher"):
        spoco_loss(student, labels, LossConfig(), teacher=torch.zeros(1, 2, 4, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_gpu_with_a_cpu_generator():
    student, teacher, labels = random_batch()
    result = spoco_loss(
        student.cuda(), labels.cuda(), LossConfig(), teacher=teacher.cuda(), generator=gen()
    )
    assert math.isfinite(result["total"].item())


def _anchors_one_at_a_time(views, candidates, delta_v, stop, seed):
    """The rule as stated: take the best-scoring remaining candidate, remove its ball, repeat."""
    scores = torch.rand(candidates.shape, generator=gen(seed))
    remaining, chosen = candidates.clone(), []
    while len(chosen) < stop[0] and int(remaining.sum()) >= stop[1]:
        index = int(torch.where(remaining, scores, -1.0).argmax())
        chosen.append(index)
        for view in views:
            remaining &= ((view - view[:, index, None]) ** 2).sum(0) >= delta_v**2
    return chosen


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("stop", [(10, 20.0), (3, 1.0), (40, 1.0), (10, 150.0)])
def test_consistency_anchors_drawn_in_blocks_equal_drawing_one_at_a_time(seed, stop):
    g = gen(100 + seed)
    centres = 3 * torch.randn(12, 3, generator=g, dtype=torch.float64)
    owner = torch.randint(0, 12, (400,), generator=g)
    student = (centres[owner] + 0.2 * torch.randn(400, 3, generator=g, dtype=torch.float64)).T
    teacher = student + 0.3 * torch.randn(student.shape, generator=g, dtype=torch.float64)
    candidates = torch.rand(400, generator=g) < 0.7
    views = (student, teacher)
    expected = _anchors_one_at_a_time(views, candidates, DELTA_V, stop, seed)
    got = loss_terms._consistency_anchors(views, candidates, DELTA_V, stop, gen(seed))
    assert got.tolist() == expected
    assert 1 <= len(expected) <= stop[0]
