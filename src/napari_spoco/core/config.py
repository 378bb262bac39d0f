"""Frozen, validated settings shared by the trainer, the widgets and the CLI.

Every consumer (GUI, CLI, checkpoint files) builds these objects, so invalid
values are rejected once, here, with a message naming the field. The network's
:class:`ModelConfig` lives in :mod:`.architecture` and is imported from here with
the others.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from .architecture import ModelConfig, require
from .clustering_methods import METHODS

__all__ = [
    "ALL_LOSS_TERMS",
    "EXTENSION_TERMS",
    "HEAD_TERMS",
    "SPOCO_TERMS",
    "REFERENCE_DIAMETER",
    "LossConfig",
    "ModelConfig",
    "SegmentConfig",
    "TrainConfig",
    "config_from_dict",
    "object_scale_for_diameter",
]

# The loss terms, listed once: LossConfig has a ``<name>_weight`` for each, the
# trainer reports each, and the panel's loss plot draws each.
#: The paper's terms, computed by ``losses.spoco_loss``.
SPOCO_TERMS = ("pull", "push", "regularizer", "instance", "unlabeled_push", "consistency")
#: The heads' terms, computed by ``heads.head_losses``.
HEAD_TERMS = ("foreground", "distance")
#: The optional terms, computed by ``extensions.extension_losses``.
EXTENSION_TERMS = ("triplet", "dispersive")
ALL_LOSS_TERMS = (*SPOCO_TERMS, *HEAD_TERMS, *EXTENSION_TERMS)


@dataclass(frozen=True)
class LossConfig:
    """Weights and margins of the SPOCO objective (see docs/method.md).

    ``background_id`` is the label value of optional background scribbles:
    those pixels form one labeled object and leave the unlabeled set.
    ``sparse=False`` means dense ground truth, where 0 is background (an object).

    The heads (see :class:`ModelConfig`) are trained on known pixels only:
    annotated objects are positive, background scribbles and the unannotated
    pixels within ``ring_width`` of an annotated object are negative. That ring
    assumes objects are separated by background (nuclei, sparse cells); set it
    to 0 for tissue where objects touch everywhere.

    Two optional terms (``core/extensions.py``), off while their weight is 0:
    the identity-aware triplet term (``triplet_*``; ``triplet_margin=None``
    means ``2 * delta_d``; ``triplet_anchors`` per image; on the embedding or
    on ``ModelConfig.bottleneck_projection``) and the dispersive regulariser
    (``dispersive_*``; on the annotated objects' mean embeddings, the pooled
    bottleneck features or both; ``dispersive_tau`` in the units given there).
    """

    delta_v: float = 0.5
    delta_d: float = 2.0
    kernel_threshold: float = 0.9
    pull_weight: float = 1.0
    push_weight: float = 1.0
    regularizer_weight: float = 0.001
    instance_weight: float = 1.0
    unlabeled_push_weight: float = 1.0
    consistency_weight: float = 1.0
    foreground_weight: float = 1.0
    distance_weight: float = 1.0
    ring_width: int = 2
    consistency_anchors: int = 10
    consistency_min_fraction: float = 0.05
    sparse: bool = True
    background_id: int | None = None
    triplet_weight: float = 0.0
    triplet_margin: float | None = None
    triplet_anchors: int = 64
    triplet_on: Literal["embedding", "bottleneck"] = "embedding"
    dispersive_weight: float = 0.0
    dispersive_tau: float = 0.5
    dispersive_on: Literal["objects", "bottleneck", "both"] = "objects"

    def __post_init__(self) -> None:
        require(self.delta_v > 0, f"delta_v must be > 0, got {self.delta_v}")
        require(
            self.delta_d > self.delta_v,
            f"delta_d must exceed delta_v, got delta_d={self.delta_d}, delta_v={self.delta_v}",
        )
        require(
            0 < self.kernel_threshold < 1,
            f"kernel_threshold must lie in (0, 1), got {self.kernel_threshold}",
        )
        for name in (
            "pull_weight",
            "push_weight",
            "regularizer_weight",
            "instance_weight",
            "unlabeled_push_weight",
            "consistency_weight",
            "foreground_weight",
            "distance_weight",
            "ring_width",
            "triplet_weight",
            "dispersive_weight",
        ):
            value = getattr(self, name)
            require(value >= 0, f"{name} must be >= 0, got {value}")
        require(
            self.consistency_anchors >= 1,
            f"consistency_anchors must be >= 1, got {self.consistency_anchors}",
        )
        require(
            0 <= self.consistency_min_fraction < 1,
            f"consistency_min_fraction must lie in [0, 1), got {self.consistency_min_fraction}",
        )
        if self.background_id is not None:
            require(
                self.background_id >= 1, f"background_id must be >= 1, got {self.background_id}"
            )
        require(
            self.triplet_margin is None or self.triplet_margin > 0,
            f"triplet_margin must be > 0, got {self.triplet_margin}",
        )
        require(
            self.triplet_anchors >= 1, f"triplet_anchors must be >= 1, got {self.triplet_anchors}"
        )
        require(
            self.triplet_on in ("embedding", "bottleneck"),
            f"triplet_on must be 'embedding' or 'bottleneck', got {self.triplet_on!r}",
        )
        require(self.dispersive_tau > 0, f"dispersive_tau must be > 0, got {self.dispersive_tau}")
        require(
            self.dispersive_on in ("objects", "bottleneck", "both"),
            f"dispersive_on must be 'objects', 'bottleneck' or 'both', got {self.dispersive_on!r}",
        )

    @property
    def projects_bottleneck(self) -> bool:
        """Whether the triplet acts on the bottleneck, which then needs its projection."""
        return self.triplet_weight > 0 and self.triplet_on == "bottleneck"

    @property
    def consistency_only(self) -> bool:
        """Whether only the consistency term is on: then training needs no annotation."""
        others = [name for name in ALL_LOSS_TERMS if name != "consistency"]
        return self.consistency_weight > 0 and not any(
            getattr(self, f"{name}_weight") for name in others
        )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data.

    ``patch_shape`` is per spatial axis; ``object_scale`` is the factor the
    images are resized by before training (prediction applies the same).
    ``learning_rate=None`` picks 1e-3 for a new network and a tenth of that when
    fine-tuning a saved one (the ratio the paper recommends).
    ``invert_probability`` is the chance that a patch's intensities are flipped
    (1 - x) for both views: a generalist trained with 0.5 reads bright objects on
    a dark background (fluorescence) and dark ones on a bright background
    (brightfield, stained tissue) alike. ``object_contrast_probability`` is the
    chance that a patch's objects each get their own contrast (uneven staining;
    dense labels only, :func:`~napari_spoco.core.augment.vary_object_contrast`).
    ``scale_per_image`` marks a model
    trained on images that were each resized by their own objects' size (dense
    training of a generalist): it has no single scale, so prediction measures
    the objects of each new image first (``core.segmentation.estimate_object_diameter``).
    ``keep_norm_statistics`` leaves the batch-norm running statistics as they
    were; None keeps them when fine-tuning a trained model and updates them for
    a new one.
    Patches are drawn around painted objects, so their statistics are not those
    of whole images: updating them during sparse fine-tuning of the nuclei
    generalist grew its foreground by a quarter (docs/benchmarks.md).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    iterations: int = 1000
    batch_size: int = 4
    patch_shape: tuple[int, ...] = (256, 256)
    learning_rate: float | None = None
    weight_decay: float = 1e-5
    ema_momentum: float = 0.99
    object_fraction: float = 0.75
    object_scale: float = 1.0
    invert_probability: float = 0.0
    object_contrast_probability: float = 0.0
    scale_per_image: bool = False
    keep_norm_statistics: bool | None = None
    seed: int = 0
    report_every: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_shape", tuple(int(s) for s in self.patch_shape))
        require(self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(
            len(self.patch_shape) == self.model.spatial_dims,
            f"patch_shape {self.patch_shape} must have {self.model.spatial_dims} axes",
        )
        require(
            all(s >= 8 for s in self.patch_shape),
            f"patch_shape must be >= 8 per axis, got {self.patch_shape}",
        )
        require(
            self.learning_rate is None or self.learning_rate > 0,
            f"learning_rate must be > 0, got {self.learning_rate}",
        )
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(
            0 <= self.ema_momentum < 1, f"ema_momentum must lie in [0, 1), got {self.ema_momentum}"
        )
        require(
            0 <= self.object_fraction <= 1,
            f"object_fraction must lie in [0, 1], got {self.object_fraction}",
        )
        require(self.object_scale > 0, f"object_scale must be > 0, got {self.object_scale}")
        require(
            0 <= self.invert_probability <= 1,
            f"invert_probability must lie in [0, 1], got {self.invert_probability}",
        )
        require(
            0 <= self.object_contrast_probability <= 1,
            "object_contrast_probability must lie in [0, 1], "
            f"got {self.object_contrast_probability}",
        )
        require(
            self.object_contrast_probability == 0 or not self.loss.sparse,
            "object_contrast_probability needs dense labels, where 0 is background",
        )
        require(self.report_every >= 1, f"report_every must be >= 1, got {self.report_every}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form, stored in checkpoints."""
        return dataclasses.asdict(self)


#: Object diameter (pixels) the default network is sized for: a 4-level U-Net
#: sees about 90 pixels, a few objects across with their context.
REFERENCE_DIAMETER = 24.0


def object_scale_for_diameter(diameter: float | None) -> float:
    """Resize factor that brings objects of ``diameter`` pixels to :data:`REFERENCE_DIAMETER`.

    Examples
    --------
    >>> object_scale_for_diameter(48)
    0.5
    >>> object_scale_for_diameter(None)
    1.0
    """
    if diameter is None:
        return 1.0
    require(diameter > 0, f"object diameter must be > 0 pixels, got {diameter}")
    return REFERENCE_DIAMETER / float(diameter)


FOREGROUND_SOURCES = ("head", "embedding", "none")


@dataclass(frozen=True)
class SegmentConfig:
    """How a prediction becomes instances (see ``core.segmentation.segment_prediction``).

    Parameters
    ----------
    method : str
        Clustering method of :func:`napari_spoco.core.clustering.segment`.
    foreground : {"head", "embedding", "none"}
        Where the foreground mask comes from: the model's foreground head
        (falls back to "embedding" for models without one), the embedding
        mode, or nowhere (cluster every pixel, drop the largest segment).
    foreground_threshold : float
        Foreground-head probability above which a pixel is foreground.
    delta_d : float, optional
        Push margin the clustering assumes. ``None``: twice the margin the
        model was trained with, which suits briefly trained networks whose
        objects are not yet compact (docs/segmentation.md).
    seed_threshold : float, optional
        Inner-distance value above which a pixel is an object core; a cluster
        holding several cores is split between them (models with a distance
        head only). ``None`` switches the split off.
    min_size : int
        Instances with fewer pixels are removed.
    params : dict
        Method-specific settings of ``segment`` (e.g. ``strides``).
    """

    method: str = "mutex_watershed"
    foreground: str = "head"
    foreground_threshold: float = 0.5
    delta_d: float | None = None
    seed_threshold: float | None = 0.4
    min_size: int = 16
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}")
        require(
            self.foreground in FOREGROUND_SOURCES,
            f"foreground must be one of {FOREGROUND_SOURCES}, got {self.foreground!r}",
        )
        require(
            0 < self.foreground_threshold < 1,
            f"foreground_threshold must lie in (0, 1), got {self.foreground_threshold}",
        )
        require(
            self.delta_d is None or self.delta_d > 0, f"delta_d must be > 0, got {self.delta_d}"
        )
        require(
            self.seed_threshold is None or 0 < self.seed_threshold < 1,
            f"seed_threshold must lie in (0, 1), got {self.seed_threshold}",
        )
        require(self.min_size >= 0, f"min_size must be >= 0, got {self.min_size}")


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from :meth:`TrainConfig.to_dict` output.

    Unknown keys are rejected so that a file written by a newer version fails
    loudly instead of silently dropping settings.
    """
    data = dict(data)
    model = ModelConfig(**_known(ModelConfig, data.pop("model", {})))
    loss = LossConfig(**_known(LossConfig, data.pop("loss", {})))
    return TrainConfig(model=model, loss=loss, **_known(TrainConfig, data))


def _known(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings: {sorted(unknown)}")
    return dict(values)
