"""SPOCO objective for pixel embeddings under sparse, object-level supervision.

:func:`spoco_loss` computes every term of :mod:`.loss_terms` on each image of a
batch and averages each over the images where it is defined; a term returns
``None`` when it is undefined on an image (e.g. push needs two objects), so
that no fake zero is counted. Formulas and defaults: ``docs/method.md``.
"""

from __future__ import annotations

import torch

from .config import SPOCO_TERMS, LossConfig
from .loss_terms import (
    _object_masks,
    compute_consistency_term,
    compute_instance_term,
    compute_object_means,
    compute_pull_term,
    compute_push_term,
    compute_regularizer_term,
    compute_unlabeled_push_term,
)

__all__ = ["SPOCO_TERMS", "spoco_loss"]


def _image_terms(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    config: LossConfig,
    teacher: torch.Tensor | None,
    generator: torch.Generator | None,
) -> dict[str, torch.Tensor | None]:
    """All terms of one flattened image (D, N) with labels (N,); None where undefined."""
    ids, masks = _object_masks(labels, (0,) if config.sparse else ())
    means = compute_object_means(embeddings, masks)
    unlabeled = labels == 0 if config.sparse else torch.zeros_like(labels, dtype=torch.bool)
    # Background scribbles are pulled and pushed like objects, but unlabeled
    # pixels may be background: they are not pushed away from its mean.
    is_object = ids != config.background_id if config.background_id is not None else ids >= 0
    kernel = {"delta_v": config.delta_v, "kernel_threshold": config.kernel_threshold}
    consistency = None
    if teacher is not None:
        consistency = compute_consistency_term(
            embeddings, teacher, unlabeled, **kernel, max_anchors=config.consistency_anchors,
            min_fraction=config.consistency_min_fraction, generator=generator,
        )  # fmt: skip
    return {
        "pull": compute_pull_term(embeddings, masks, means, config.delta_v),
        "push": compute_push_term(means, config.delta_d),
        "regularizer": compute_regularizer_term(means),
        "instance": compute_instance_term(embeddings, masks, means, **kernel, generator=generator),
        "unlabeled_push": compute_unlabeled_push_term(
            embeddings, unlabeled, means[is_object], config.delta_d
        ),
        "consistency": consistency,
    }


def _check_batch(
    student: torch.Tensor, labels: torch.Tensor, config: LossConfig, teacher: torch.Tensor | None
) -> None:
    """Validate the inputs of :func:`spoco_loss`: types, then shapes, then the label range."""
    if not isinstance(config, LossConfig):
        raise TypeError(f"config must be a LossConfig, got {type(config).__name__}")
    if not isinstance(student, torch.Tensor) or not student.is_floating_point():
        raise TypeError(f"student must be a float tensor, got {getattr(student, 'dtype', student)}")
    integer = isinstance(labels, torch.Tensor) and not labels.is_floating_point()
    if not integer or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {getattr(labels, 'dtype', labels)}")
    if student.ndim not in (4, 5):
        raise ValueError(f"student must be (B, D, [Z,] Y, X), got shape {tuple(student.shape)}")
    if labels.shape != (student.shape[0], *student.shape[2:]):
        raise ValueError(f"labels must be (B, [Z,] Y, X) like student, got {tuple(labels.shape)}")
    if teacher is not None and teacher.shape != student.shape:
        raise ValueError(f"teacher must be {tuple(student.shape)}, got {tuple(teacher.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, got minimum {int(labels.min())}")


def spoco_loss(
    student: torch.Tensor,
    labels: torch.Tensor,
    config: LossConfig,
    *,
    teacher: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """SPOCO loss of a batch: each term per image, averaged over the images where it is defined.

    Sparse mode: label 0 is *not annotated* (the unlabeled set U), k >= 1 an
    object and ``config.background_id`` a labeled background object. Dense mode
    (``config.sparse=False``): every id including 0 is an object and U is empty.
    Averaging, never summing, keeps each term's scale independent of the batch
    size; a term undefined on every image is a zero still attached to
    ``student``, so ``backward`` always works.

    Parameters
    ----------
    student : torch.Tensor
        Float (B, D, Y, X) or (B, D, Z, Y, X) embeddings of the trained network.
    labels : torch.Tensor
        Integer (B, Y, X) or (B, Z, Y, X) annotations, values >= 0.
    config : LossConfig
        Margins, weights and consistency settings.
    teacher : torch.Tensor, optional
        EMA teacher's embeddings of a second view, shaped like ``student``;
        detached here. Without it the consistency term is 0.
    generator : torch.Generator, optional
        Source of the random anchors, for reproducibility.

    Returns
    -------
    dict of str to torch.Tensor
        Scalars keyed by :data:`SPOCO_TERMS`, and ``"total"``, their weighted sum.

    Raises
    ------
    TypeError
        If ``config`` is not a LossConfig or a tensor has the wrong dtype.
    ValueError
        If the shapes disagree or a label is negative.

    Examples
    --------
    >>> student = torch.randn(2, 4, 8, 8, requires_grad=True)
    >>> labels = torch.zeros(2, 8, 8, dtype=torch.int64)
    >>> labels[:, :3, :3] = 1
    >>> losses = spoco_loss(student, labels, LossConfig(), teacher=student.detach())
    >>> losses["total"].backward()
    >>> sorted(losses)[:3]
    ['consistency', 'instance', 'pull']
    """
    _check_batch(student, labels, config, teacher)
    batch, dim = student.shape[:2]
    flat_student = student.reshape(batch, dim, -1)
    flat_labels = labels.reshape(batch, -1).long()
    flat_teacher = None if teacher is None else teacher.detach().reshape(batch, dim, -1)
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in SPOCO_TERMS}
    for b in range(batch):
        view = None if flat_teacher is None else flat_teacher[b]
        terms = _image_terms(flat_student[b], flat_labels[b], config, view, generator)
        for name, value in terms.items():
            if value is not None:
                collected[name].append(value)
    zero = student.sum() * 0  # attached to the graph, so backward never fails
    losses = {name: torch.stack(v).mean() if v else zero for name, v in collected.items()}
    total = zero
    for name in SPOCO_TERMS:
        total = total + getattr(config, f"{name}_weight") * losses[name]
    losses["total"] = total
    return losses
