"""The SPOCO loss terms, one function each, on one image.

Every term works on ONE image, flattened so that 2D and 3D share one code path:
``embeddings`` is a float (D, N) tensor (D channels, N pixels or voxels),
``object_masks`` a bool (C, N) stack of disjoint object masks and ``means`` the
(C, D) object means from :func:`compute_object_means`. A term returns ``None``
when it is undefined on the image (e.g. push needs two objects), so that
:func:`spoco_loss` leaves the image out of that term's batch average instead of
counting a fake zero. Formulas and defaults: ``docs/method.md``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "compute_consistency_term",
    "compute_instance_term",
    "compute_object_means",
    "compute_pull_term",
    "compute_push_term",
    "compute_regularizer_term",
    "compute_unlabeled_push_term",
]

# sqrt has an infinite derivative at 0: clamping the squared distance first
# gives such entries a zero gradient instead of NaN.
_SQ_EPS = 1e-12
_DICE_EPS = 1e-6


def _norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norm along ``dim`` with a finite gradient at zero."""
    return (x * x).sum(dim).clamp_min(_SQ_EPS).sqrt()


def _sq_distances(embeddings: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Squared distances (K, N) of embeddings (D, N) to points (K, D); no (K, D, N) temporary."""
    sq = (embeddings * embeddings).sum(0)[None, :] + (points * points).sum(1)[:, None]
    return (sq - 2 * (points @ embeddings)).clamp_min(0)


def _soft_masks(
    embeddings: torch.Tensor, anchors: torch.Tensor, delta_v: float, kernel_threshold: float
) -> torch.Tensor:
    """Gaussian kernel (K, N) around anchors (K, D), equal to ``kernel_threshold`` at delta_v."""
    # 2 sigma^2 = delta_v^2 / (-ln t)  =>  exp(-d^2 / (2 sigma^2)) == t at d = delta_v.
    rate = -math.log(kernel_threshold) / delta_v**2
    return torch.exp(-rate * _sq_distances(embeddings, anchors))


def _dice_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """V-Net Dice loss per row of (K, N) masks: sums run over the N pixels only."""
    overlap = (prediction * target).sum(-1)
    denominator = (prediction * prediction).sum(-1) + (target * target).sum(-1)
    return 1 - 2 * overlap / denominator.clamp_min(_DICE_EPS)


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Uniform noise drawn on the generator's own device, then moved to ``device``."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def _object_masks(
    labels_flat: torch.Tensor, ignore_ids: tuple[int, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted object ids (C,) of a flat label image (N,) and their bool masks (C, N)."""
    ids = torch.unique(labels_flat)
    if ignore_ids:
        ids = ids[~torch.isin(ids, torch.tensor(ignore_ids, device=ids.device))]
    return ids, labels_flat[None, :] == ids[:, None]


def _check_flat(
    embeddings: torch.Tensor,
    masks: torch.Tensor | None = None,
    means: torch.Tensor | None = None,
    unlabeled: torch.Tensor | None = None,
) -> None:
    """Raise ValueError unless the shapes are (D, N) float, (C, N), (C, D) and (N,)."""
    if embeddings.ndim != 2 or not embeddings.is_floating_point():
        got = f"{embeddings.dtype} {tuple(embeddings.shape)}"
        raise ValueError(f"expected float (D, N) embeddings, got {got}")
    dim, n = embeddings.shape
    count = len(masks) if masks is not None else len(means) if means is not None else 0
    expected = {"object_masks": (masks, (count, n)), "means": (means, (count, dim))}
    for name, (tensor, shape) in {**expected, "unlabeled_mask": (unlabeled, (n,))}.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"expected {name} of shape {shape}, got {tuple(tensor.shape)}")


def _check_means(means: torch.Tensor) -> None:
    """Raise ValueError unless ``means`` is a float (C, D) tensor."""
    if means.ndim != 2 or not means.is_floating_point():
        raise ValueError(f"expected float (C, D) means, got {means.dtype} {tuple(means.shape)}")


def compute_object_means(embeddings: torch.Tensor, object_masks: torch.Tensor) -> torch.Tensor:
    """Mean embedding of every object: the centres the other terms pull to or push from.

    Parameters
    ----------
    embeddings, object_masks : torch.Tensor
        Float (D, N) embeddings and bool (C, N) non-empty object masks.

    Returns
    -------
    torch.Tensor
        (C, D) means, differentiable with respect to ``embeddings``.
    """
    _check_flat(embeddings, object_masks)
    weights = object_masks.to(embeddings.dtype)
    return (weights @ embeddings.T) / weights.sum(1, keepdim=True).clamp_min(1)


def _distance_to_own_mean(
    embeddings: torch.Tensor, object_masks: torch.Tensor, means: torch.Tensor
) -> torch.Tensor:
    """Distance (N,) of each pixel to its object's mean (to object 0's for unlabeled pixels)."""
    # Masks are disjoint: scatter each object's index to its pixels (exact for any dtype).
    rows, columns = object_masks.nonzero(as_tuple=True)
    owner = columns.new_zeros(object_masks.shape[1]).scatter(0, columns, rows)
    return _norm(embeddings - means[owner].T, dim=0)


def compute_pull_term(
    embeddings: torch.Tensor, object_masks: torch.Tensor, means: torch.Tensor, delta_v: float
) -> torch.Tensor | None:
    """Pull every annotated pixel to within ``delta_v`` of its object's mean.

    ``1/C sum_c 1/|S_c| sum_{i in S_c} [||e_i - mu_c|| - delta_v]_+^2``. Only
    pixels inside ``object_masks`` count: unannotated pixels must stay free, or
    every unpainted object would be pulled into one cluster.

    Parameters
    ----------
    embeddings, object_masks, means : torch.Tensor
        (D, N), (C, N) and (C, D), see the module docstring.
    delta_v : float
        Pull margin: pixels closer than this to their mean cost nothing.

    Returns
    -------
    torch.Tensor or None
        Scalar loss, or None when the image has no object.
    """
    _check_flat(embeddings, object_masks, means)
    if len(means) == 0:
        return None
    hinge = (_distance_to_own_mean(embeddings, object_masks, means) - delta_v).clamp_min(0) ** 2
    weights = object_masks.to(embeddings.dtype)  # zero for pixels outside every object
    return ((weights @ hinge) / weights.sum(1).clamp_min(1)).mean()


def compute_push_term(means: torch.Tensor, delta_d: float) -> torch.Tensor | None:
    """Push object means at least ``2 delta_d`` apart, so that clustering can split them.

    ``1/(C(C-1)) sum_{c != c'} [2 delta_d - ||mu_c - mu_c'||]_+^2``.

    Parameters
    ----------
    means : torch.Tensor
        (C, D) object means.
    delta_d : float
        Push margin.

    Returns
    -------
    torch.Tensor or None
        Scalar loss, or None when C < 2 (nothing to push apart).
    """
    _check_means(means)
    if len(means) < 2:
        return None
    off_diagonal = ~torch.eye(len(means), dtype=torch.bool, device=means.device)
    distances = _norm(means[:, None, :] - means[None, :, :], dim=-1)[off_diagonal]
    return ((2 * delta_d - distances).clamp_min(0) ** 2).mean()


def compute_regularizer_term(means: torch.Tensor) -> torch.Tensor | None:
    """Keep the means near the origin so the embeddings stay bounded: ``1/C sum_c ||mu_c||``.

    Parameters
    ----------
    means : torch.Tensor
        (C, D) object means.

    Returns
    -------
    torch.Tensor or None
        Scalar loss, or None when the image has no object.
    """
    _check_means(means)
    return _norm(means, dim=1).mean() if len(means) else None


def compute_instance_term(
    embeddings: torch.Tensor,
    object_masks: torch.Tensor,
    means: torch.Tensor,
    *,
    delta_v: float,
    kernel_threshold: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """Dice between each object's mask and the soft mask selected around its anchor.

    Trains whole objects through the differentiable selection
    ``exp(-||e_i - anchor||^2 / (2 sigma^2))``, sigma such that the kernel is
    ``kernel_threshold`` at ``delta_v``. The anchor is a random pixel of the
    object within ``delta_v`` of its mean, else the mean. Each Dice sums over the
    whole patch and is averaged over objects (not pooled): the value depends on
    neither patch nor object size.

    Parameters
    ----------
    embeddings, object_masks, means : torch.Tensor
        (D, N), (C, N) and (C, D), see the module docstring.
    delta_v, kernel_threshold : float
        Pull margin, and the kernel value at that distance, in (0, 1).
    generator : torch.Generator, optional
        Source of the random anchor choice.

    Returns
    -------
    torch.Tensor or None
        Scalar loss in [0, 1], or None when the image has no object.
    """
    _check_flat(embeddings, object_masks, means)
    if len(means) == 0:
        return None
    with torch.no_grad():
        near = _distance_to_own_mean(embeddings, object_masks, means) < delta_v
        candidates = object_masks & near[None, :]
        # Objects are disjoint, so one uniform score per pixel suffices for all of them.
        scores = _uniform((embeddings.shape[1],), generator, embeddings.device)
        index = torch.where(candidates, scores, -1.0).argmax(1)
    anchors = torch.where(candidates.any(1, keepdim=True), embeddings[:, index].T, means)
    soft = _soft_masks(embeddings, anchors, delta_v, kernel_threshold)
    return _dice_loss(soft, object_masks.to(soft.dtype)).mean()


def compute_unlabeled_push_term(
    embeddings: torch.Tensor, unlabeled_mask: torch.Tensor, means: torch.Tensor, delta_d: float
) -> torch.Tensor | None:
    """Push unannotated pixels at least ``delta_d`` away from every annotated object.

    ``1/C sum_c 1/|U| sum_{i in U} [delta_d - ||e_i - mu_c||]_+^2``: annotated
    objects are painted completely, so no unlabeled pixel belongs to them. Do
    not pass the mean of background scribbles: unlabeled pixels may be background.

    Parameters
    ----------
    embeddings, means : torch.Tensor
        (D, N) embeddings and (C, D) means of the objects to push away from.
    unlabeled_mask : torch.Tensor
        Bool (N,) marking the unlabeled set U.
    delta_d : float
        Push margin.

    Returns
    -------
    torch.Tensor or None
        Scalar loss, or None when U or the set of objects is empty.
    """
    _check_flat(embeddings, means=means, unlabeled=unlabeled_mask)
    if len(means) == 0 or not bool(unlabeled_mask.any()):
        return None
    distances = _sq_distances(embeddings[:, unlabeled_mask], means).clamp_min(_SQ_EPS).sqrt()
    return ((delta_d - distances).clamp_min(0) ** 2).mean()


@torch.no_grad()
def _consistency_anchors(
    views: tuple[torch.Tensor, torch.Tensor],
    candidates: torch.Tensor,
    delta_v: float,
    stop: tuple[int, float],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Draw anchor indices (K,); each removes its delta_v-ball in both views from the candidates.

    ``stop`` is (max_anchors, minimal number of remaining candidates). Drawing
    a uniform remaining candidate K times equals visiting the candidates in
    the order of one uniform score each and keeping those no earlier anchor
    removed; the balls of a block of candidates then cost one matrix product
    per view instead of a pass over the patch per anchor (a third of a step's
    loss time before).
    """
    max_anchors, min_remaining = stop
    remaining = candidates.clone()
    scores = torch.where(
        candidates, _uniform(tuple(candidates.shape), generator, candidates.device), -1.0
    )
    chosen: list[int] = []
    while len(chosen) < max_anchors and int(remaining.sum()) >= min_remaining:
        # The next block in score order (top-k, not a sort of the whole patch).
        block = torch.topk(scores, min(2 * max_anchors, int(remaining.sum()))).indices
        scores[block] = -1.0
        balls = torch.zeros((len(block), remaining.numel()), dtype=torch.bool, device=block.device)
        for view in views:
            balls |= _sq_distances(view, view[:, block].T) < delta_v**2
        for index, ball in zip(block.tolist(), balls, strict=True):
            if not remaining[index]:
                continue
            chosen.append(index)
            remaining &= ~ball
            remaining[index] = False  # rounding in the distances must not keep the anchor
            if len(chosen) == max_anchors or int(remaining.sum()) < min_remaining:
                break
    return torch.tensor(chosen, dtype=torch.long, device=candidates.device)


def compute_consistency_term(
    student: torch.Tensor,
    teacher: torch.Tensor,
    unlabeled_mask: torch.Tensor,
    *,
    delta_v: float,
    kernel_threshold: float,
    max_anchors: int,
    min_fraction: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """Make student and teacher select the same soft object around anchors from U.

    The only signal unannotated objects get. Anchors are drawn without
    gradients until ``max_anchors`` are found or fewer than ``min_fraction`` of
    the patch remain; the Dice of all K anchors is then one vectorised (K, N)
    pass over the whole patch (as in the reference code). The teacher is
    detached: it follows the student by EMA, not by gradients.

    Parameters
    ----------
    student, teacher : torch.Tensor
        Float (D, N) embeddings of two views of the same image.
    unlabeled_mask : torch.Tensor
        Bool (N,) marking the unlabeled set U.
    delta_v, kernel_threshold : float
        Radius removed around each anchor, and the kernel value at that distance.
    max_anchors : int
        Maximal number K of anchors.
    min_fraction : float
        Fraction of the N pixels below which anchor selection stops.
    generator : torch.Generator, optional
        Source of the random anchor choice.

    Returns
    -------
    torch.Tensor or None
        Mean Dice loss over the anchors, or None when ``|U| < min_fraction * N``.
    """
    _check_flat(student, unlabeled=unlabeled_mask)
    if teacher.shape != student.shape:
        raise ValueError(f"expected teacher of shape {student.shape}, got {teacher.shape}")
    limit = max(min_fraction * unlabeled_mask.numel(), 1.0)
    if int(unlabeled_mask.sum()) < limit:
        return None
    teacher = teacher.detach()
    views = (student.detach(), teacher)
    index = _consistency_anchors(views, unlabeled_mask, delta_v, (max_anchors, limit), generator)
    soft_f = _soft_masks(student, student[:, index].T, delta_v, kernel_threshold)
    soft_g = _soft_masks(teacher, teacher[:, index].T, delta_v, kernel_threshold)
    return _dice_loss(soft_f, soft_g).mean()
