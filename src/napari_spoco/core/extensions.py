"""Optional training terms for touching, look-alike objects: triplet and dispersive.

Both are off by default (weight 0 in :class:`~napari_spoco.core.config.LossConfig`)
until the ablation in ``docs/benchmarks.md`` says whether they help.

- The **identity-aware triplet term** (after IAU-Net) targets the hardest
  case of the push term: a pixel whose embedding lies closer to a pixel of
  another object than to a pixel of its own. For anchor pixels drawn from
  the annotated objects it takes a random pixel of the same object as
  positive and, as negative, the pixel of a *different annotated object*
  closest to the anchor in embedding space, preferring objects that come
  within :data:`NEIGHBOUR_GAP` pixels of the anchor's object (those are the
  ones clustering merges); loss ``[d(a, p) - d(a, n) + margin]_+``.
- The **dispersive regulariser** (after Med-DisSeg) spreads representations
  without positives: ``log mean_{i != j} exp(-||z_i - z_j||^2 / tau)`` over
  the mean embeddings of all annotated objects of the batch (objects of
  different images are different instances) and/or over the bottleneck
  features pooled per image.

Both are positive-unlabeled safe: only annotated pixels take part, so an
unpainted object is never used as a negative nor pushed. Background scribbles
(``LossConfig.background_id``) are an annotated object for the triplet term
(anchor and negative: pixels of an object must lie closer to each other than
to the background) but not for the dispersive one, where the background of
two images is the same thing, not two instances to spread apart.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import EXTENSION_TERMS, LossConfig
from .loss_terms import _norm, _object_masks, _sq_distances, _uniform, compute_object_means
from .losses import _check_batch

__all__ = [
    "EXTENSION_TERMS",
    "NEIGHBOUR_GAP",
    "bottleneck_labels",
    "compute_dispersive_term",
    "compute_triplet_term",
    "extension_losses",
    "object_neighbours",
]


#: Objects whose masks come this close (pixels, Chebyshev distance) are neighbours:
#: touching or nearly touching objects are the pairs clustering may merge.
NEIGHBOUR_GAP = 3


def object_neighbours(object_masks: torch.Tensor, *, gap: int = NEIGHBOUR_GAP) -> torch.Tensor:
    """Which objects touch or nearly touch: a dilation test on their masks.

    Parameters
    ----------
    object_masks : torch.Tensor
        Bool (C, Y, X) or (C, Z, Y, X) masks of the objects of one image.
    gap : int
        Objects whose pixels come within ``gap`` pixels along every axis are
        neighbours.

    Returns
    -------
    torch.Tensor
        Bool (C, C), symmetric, False on the diagonal.

    Examples
    --------
    >>> labels = torch.zeros(10, 30, dtype=torch.int64)
    >>> labels[:, :5], labels[:, 5:10], labels[:, 25:] = 1, 2, 3
    >>> object_neighbours(labels[None] == torch.arange(1, 4)[:, None, None]).int().tolist()
    [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    """
    if object_masks.ndim not in (3, 4) or object_masks.dtype != torch.bool:
        got = f"{object_masks.dtype} {tuple(object_masks.shape)}"
        raise ValueError(f"expected bool (C, [Z,] Y, X) object masks, got {got}")
    count = len(object_masks)
    masks = object_masks[:, None].float()
    pool = F.max_pool2d if object_masks.ndim == 3 else F.max_pool3d
    grown = masks
    for axis in range(object_masks.ndim - 1):  # separable: 2 * gap + 1 per axis, not its power
        kernel = [1] * (object_masks.ndim - 1)
        kernel[axis] = 2 * gap + 1
        padding = [k // 2 for k in kernel]
        grown = pool(grown, kernel, stride=1, padding=padding)
    overlap = grown.reshape(count, -1) @ masks.reshape(count, -1).T
    near = (overlap > 0) | (overlap.T > 0)
    return near & ~torch.eye(count, dtype=torch.bool, device=near.device)


def compute_triplet_term(
    embeddings: torch.Tensor,
    object_masks: torch.Tensor,
    *,
    margin: float,
    anchors: int,
    neighbours: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """Mean ``[d(a, p) - d(a, n) + margin]_+`` over anchors drawn from the annotated objects.

    Each anchor picks an object uniformly (so small objects count as much as
    large ones), then a pixel of it; the positive is another pixel of the
    same object (the anchor itself only for one-pixel objects). The negative
    is the pixel closest to the anchor in embedding space among the pixels
    of the other objects, restricted to the anchor object's ``neighbours``
    when it has any. Pixels outside every mask (not annotated) never take
    part. Sampling and mining run without gradients; the three distances
    are then recomputed with them, all anchors at once.

    Parameters
    ----------
    embeddings : torch.Tensor
        Float (D, N) embeddings of one image.
    object_masks : torch.Tensor
        Bool (C, N) disjoint, non-empty masks of the annotated objects.
    margin : float
        Required gap between the negative and the positive distance.
    anchors : int
        Number of anchors K.
    neighbours : torch.Tensor, optional
        Bool (C, C) from :func:`object_neighbours`; None: every other object
        is a candidate.
    generator : torch.Generator, optional
        Source of the random anchors and positives.

    Returns
    -------
    torch.Tensor or None
        Scalar loss, or None when fewer than two objects are annotated.

    Examples
    --------
    >>> masks = torch.tensor([[True, True, False, False], [False, False, True, True]])
    >>> apart = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    >>> float(compute_triplet_term(apart, masks, margin=4.0, anchors=8))
    0.0
    >>> float(compute_triplet_term(torch.zeros(1, 4), masks, margin=4.0, anchors=8))
    4.0
    """
    count = len(object_masks)
    if embeddings.ndim != 2 or object_masks.shape != (count, embeddings.shape[1]):
        raise ValueError(
            f"expected (D, N) embeddings and (C, N) masks, got {tuple(embeddings.shape)} "
            f"and {tuple(object_masks.shape)}"
        )
    if count < 2:
        return None
    triplets = _mine_triplets(embeddings, object_masks, anchors, neighbours, generator)
    return _triplet_hinge(embeddings[:, triplets].permute(1, 2, 0), margin).mean()


@torch.no_grad()
def _mine_triplets(
    embeddings: torch.Tensor,
    object_masks: torch.Tensor,
    anchors: int,
    neighbours: torch.Tensor | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Pixel indices (3, K) of anchors, positives and hardest allowed negatives; >= 2 objects."""
    anchor, positive, owner, pixels = _draw_anchors(object_masks, anchors, generator)
    candidates = owner[None, :] != owner[anchor][:, None]  # (K, M): other objects
    if neighbours is not None:
        near = neighbours[owner[anchor]][:, owner] & candidates
        candidates &= near | ~near.any(1, keepdim=True)
    distances = _sq_distances(embeddings[:, pixels], embeddings[:, pixels[anchor]].T)
    negative = torch.where(candidates, distances, math.inf).argmin(1)
    return pixels[torch.stack([anchor, positive, negative])]


def _triplet_hinge(points: torch.Tensor, margin: float) -> torch.Tensor:
    """``[d(a, p) - d(a, n) + margin]_+`` of (..., 3, K, D) anchor, positive, negative points."""
    anchor, positive, negative = points.unbind(-3)
    return (_norm(anchor - positive, -1) - _norm(anchor - negative, -1) + margin).clamp_min(0)


def _draw_anchors(
    object_masks: torch.Tensor, anchors: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, ...]:
    """Anchor and positive positions (K,) into the annotated pixels (M,), and their owners (M,).

    Annotated pixels are ordered by object, so an object's pixels form one
    run: an object and a rank within its run are drawn per anchor.
    """
    count = len(object_masks)
    owner, pixels = object_masks.nonzero(as_tuple=True)  # row-major: ordered by object
    sizes = object_masks.sum(1)
    starts = sizes.cumsum(0) - sizes
    noise = _uniform((3, anchors), generator, object_masks.device)
    chosen = (noise[0] * count).long().clamp_max(count - 1)
    size = sizes[chosen]
    rank = (noise[1] * size).long().minimum(size - 1)
    other = (rank + 1 + (noise[2] * (size - 1)).long().minimum((size - 2).clamp_min(0))) % size
    return starts[chosen] + rank, starts[chosen] + other, owner, pixels


def compute_dispersive_term(points: torch.Tensor, tau: float) -> torch.Tensor | None:
    """``log mean_{i != j} exp(-||z_i - z_j||^2 / tau)``: lower when the points spread out.

    There is no positive pair and no floor: the term keeps pushing the
    closest pairs apart (its gradient is a softmax over pairs), which the
    other terms bound.

    Parameters
    ----------
    points : torch.Tensor
        Float (K, F) representations.
    tau : float
        Temperature, in the units of the squared distances.

    Returns
    -------
    torch.Tensor or None
        Scalar (<= 0), or None when K < 2.

    Examples
    --------
    >>> near = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
    >>> bool(compute_dispersive_term(near, 0.5) > compute_dispersive_term(10 * near, 0.5))
    True
    """
    if points.ndim != 2 or not points.is_floating_point():
        raise ValueError(f"expected float (K, F) points, got {points.dtype} {tuple(points.shape)}")
    count = len(points)
    if count < 2:
        return None
    off_diagonal = ~torch.eye(count, dtype=torch.bool, device=points.device)
    squared = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)[off_diagonal]
    return torch.logsumexp(-squared / tau, dim=0) - math.log(count * (count - 1))


def bottleneck_labels(labels: torch.Tensor, size_divisor: tuple[int, ...]) -> torch.Tensor:
    """Labels at the resolution of the deepest encoder features.

    The labels are padded with 0 (not annotated) at the end of each axis to
    a multiple of ``size_divisor``, as the network pads its input; a cell
    keeps its label when its whole window carries that one label, and is
    not annotated otherwise (border and unannotated pixels must not count).

    Parameters
    ----------
    labels : torch.Tensor
        Integer (B, Y, X) or (B, Z, Y, X) annotations, values >= 0.
    size_divisor : tuple of int
        :attr:`ModelConfig.size_divisor`, one factor per spatial axis.

    Returns
    -------
    torch.Tensor
        int64 (B, *ceil(spatial / size_divisor)).

    Examples
    --------
    >>> labels = torch.zeros(1, 4, 6, dtype=torch.int64)
    >>> labels[0, :, :3] = 5
    >>> bottleneck_labels(labels, (2, 2)).tolist()
    [[[5, 0, 0], [5, 0, 0]]]
    """
    if len(size_divisor) != labels.ndim - 1:
        raise ValueError(
            f"expected one size divisor per spatial axis of {tuple(labels.shape)}, "
            f"got {size_divisor}"
        )
    padding: list[int] = []
    for size, divisor in zip(reversed(labels.shape[1:]), reversed(size_divisor), strict=True):
        padding += [0, (-size) % divisor]
    padded = F.pad(labels.long(), padding)
    # (B, Y', X') -> (B, Y'/dy, X'/dx, dy * dx): integer comparisons, exact for any id.
    shape = [len(labels)]
    for size, divisor in zip(padded.shape[1:], size_divisor, strict=True):
        shape += [size // divisor, divisor]
    axes = len(size_divisor)
    order = [0, *range(1, 2 * axes, 2), *range(2, 2 * axes + 1, 2)]
    windows = padded.reshape(shape).permute(order).flatten(1 + axes)
    first = windows[..., 0]
    return torch.where((windows == first[..., None]).all(-1), first, 0)


def extension_losses(
    student: torch.Tensor,
    labels: torch.Tensor,
    config: LossConfig,
    *,
    bottleneck: torch.Tensor | None = None,
    projection: torch.Tensor | None = None,
    size_divisor: tuple[int, ...] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Compute the enabled extension terms of a batch (weight > 0), unweighted.

    The triplet term is averaged over the images where it is defined (two
    annotated objects); the dispersive term is one value for the batch, the
    mean of its enabled parts. A term undefined on the whole batch is a zero
    still attached to ``student``, so ``backward`` always works.

    Parameters
    ----------
    student : torch.Tensor
        Float (B, D, *spatial) embeddings of the trained network.
    labels : torch.Tensor
        Integer (B, *spatial) annotations, 0 = not annotated (sparse mode).
    config : LossConfig
        Weights, margin, anchors, tau and where each term applies.
    bottleneck : torch.Tensor, optional
        (B, F, *coarse) deepest encoder features; needed by ``dispersive_on``
        "bottleneck" or "both".
    projection : torch.Tensor, optional
        (B, D', *coarse) their projection; needed by ``triplet_on="bottleneck"``.
    size_divisor : tuple of int, optional
        Down-sampling from ``labels`` to ``projection``; needed with it.
    generator : torch.Generator, optional
        Source of the random anchors.

    Returns
    -------
    dict of str to torch.Tensor
        Scalars keyed by the enabled names of :data:`EXTENSION_TERMS`.

    Raises
    ------
    ValueError
        If the inputs disagree, or a term needs features that were not given.
    """
    _check_batch(student, labels, config, None)
    for name, features in (("bottleneck", bottleneck), ("projection", projection)):
        if features is None:
            continue
        if features.ndim != student.ndim or len(features) != len(student):
            raise ValueError(f"expected {name} (B, F, *coarse) like student, got {features.shape}")
    zero = student.sum() * 0
    losses = {}
    if config.triplet_weight > 0:
        if config.triplet_on == "bottleneck":
            if projection is None or size_divisor is None:
                raise ValueError("triplet_on='bottleneck' needs the projection and size_divisor")
            coarse = bottleneck_labels(labels, size_divisor)
            if coarse.shape[1:] != projection.shape[2:]:
                raise ValueError(f"size_divisor {size_divisor} does not map labels to projection")
            losses["triplet"] = _batch_triplet(projection, labels, config, generator, zero, coarse)
        else:
            losses["triplet"] = _batch_triplet(student, labels, config, generator, zero)
    if config.dispersive_weight > 0:
        parts = []
        if config.dispersive_on in ("objects", "both"):
            parts.append(_object_dispersion(student, labels, config))
        if config.dispersive_on in ("bottleneck", "both"):
            if bottleneck is None:
                raise ValueError(f"dispersive_on={config.dispersive_on!r} needs the bottleneck")
            pooled = F.normalize(bottleneck.flatten(2).mean(2).float(), dim=1)
            parts.append(compute_dispersive_term(pooled, config.dispersive_tau))
        defined = [part for part in parts if part is not None]
        losses["dispersive"] = torch.stack(defined).mean() if defined else zero
    return losses


def _batch_triplet(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    config: LossConfig,
    generator: torch.Generator | None,
    zero: torch.Tensor,
    coarse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triplet term of a batch: triplets mined per image, then one gather for all of them.

    ``coarse`` labels ``embeddings`` when they are coarser than ``labels``
    (the bottleneck); neighbours always come from the full-resolution labels.
    """
    ignore = (0,) if config.sparse else ()
    margin = config.triplet_margin if config.triplet_margin is not None else 2 * config.delta_d
    flat = embeddings.float().flatten(2)
    images, triplets = [], []
    for b in range(len(embeddings)):
        ids, masks = _object_masks(labels[b].flatten().long(), ignore)
        if len(ids) < 2:
            continue
        neighbours = object_neighbours(masks.reshape(len(ids), *labels.shape[1:]))
        if coarse is not None:
            coarse_ids, masks = _object_masks(coarse[b].flatten().long(), ignore)
            if len(coarse_ids) < 2:
                continue
            rows = torch.searchsorted(ids, coarse_ids)
            neighbours = neighbours[rows][:, rows]
        images.append(b)
        triplets.append(
            _mine_triplets(flat[b], masks, config.triplet_anchors, neighbours, generator)
        )
    if not triplets:
        return zero
    batch_index = torch.tensor(images, device=flat.device)[:, None, None]
    points = flat[batch_index, :, torch.stack(triplets)]  # (images, 3, K, D)
    return _triplet_hinge(points, margin).mean()


def _object_dispersion(
    student: torch.Tensor, labels: torch.Tensor, config: LossConfig
) -> torch.Tensor | None:
    """Dispersive term over the object means of the whole batch, in units of ``2 delta_d``.

    Measured in units of the push margin, one ``tau`` means the same for
    object means and for the unit-length pooled bottleneck features.
    """
    # 0 is not annotated (sparse) or background (dense): neither is an instance.
    ignore = (0,) if config.background_id is None else (0, config.background_id)
    flat = student.flatten(2)
    means = [
        compute_object_means(flat[b], _object_masks(labels[b].flatten().long(), ignore)[1])
        for b in range(len(student))
    ]
    return compute_dispersive_term(torch.cat(means) / (2 * config.delta_d), config.dispersive_tau)
