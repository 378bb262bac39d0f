"""Training defaults that follow the data and the start: one place for every front end.

:func:`train_config` builds the settings; :func:`training_warnings` names the ones
that will train poorly on the data at hand.

The panel, the CLI and the demo read these defaults from here, so that the
same data trains the same way whichever one a user picks. Each value was
chosen by measurement (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from .annotation import object_ids, object_scale_from_annotations, touching_fraction
from .config import ALL_LOSS_TERMS, LossConfig, ModelConfig, TrainConfig

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

__all__ = [
    "DEFAULT_PATCH_SHAPE",
    "MODEL_PRESETS",
    "FINE_TUNE_ITERATIONS",
    "FINE_TUNE_LR",
    "NEW_MODEL_LR",
    "NEW_NETWORK_ITERATIONS",
    "REFINE_LR_SHARE",
    "default_iterations",
    "default_learning_rate",
    "model_config_for",
    "TOUCHING_FRACTION",
    "TOUCHING_ITERATIONS",
    "pretraining_loss",
    "train_config",
    "training_warnings",
    "touching_objects",
]

#: Network sizes offered by the GUI and the CLI (``--size``): depth and width of the U-Net.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "small": {"depth": 3, "base_features": 16},
    "medium": {"depth": 4, "base_features": 16},
    "large": {"depth": 5, "base_features": 32},
}

#: Patch shape per number of spatial axes when none is given. On a CPU a 128²
#: patch costs a quarter of a 256² one, so short interactive runs take 4x the steps.
DEFAULT_PATCH_SHAPE: dict[int, tuple[int, ...]] = {2: (128, 128), 3: (16, 128, 128)}


def model_config_for(
    spatial_dims: int,
    in_channels: int,
    *,
    size: str = "medium",
    heads: bool = True,
    anisotropic_pooling: bool = False,
) -> ModelConfig:
    """Build the network config the GUI and the CLI use for new models.

    A size preset from :data:`MODEL_PRESETS`, batch norm in 2D and group norm
    in 3D (where batches are small), with both heads unless ``heads=False``.

    Examples
    --------
    >>> model_config_for(3, 2, size="small").norm
    'group'
    """
    if size not in MODEL_PRESETS:
        raise ValueError(f"size must be one of {tuple(MODEL_PRESETS)}, got {size!r}")
    return ModelConfig(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        norm="group" if spatial_dims == 3 else "batch",
        anisotropic_pooling=anisotropic_pooling and spatial_dims == 3,
        foreground_head=heads,
        distance_head=heads,
        **MODEL_PRESETS[size],
    )


#: Peak learning rate of a new network. At 200 steps, 1e-3 separated objects clearly
#: better than the paper's 2e-4, which is tuned for ~100k steps.
NEW_MODEL_LR = 1e-3
#: Peak learning rate when a trained model is fine-tuned: small enough to keep what it knows.
#: On held-out NIH3T3 training images, 1e-4, 3e-4 and 1e-3 scored the same.
FINE_TUNE_LR = NEW_MODEL_LR / 10
#: Share of :data:`FINE_TUNE_LR` at which a model that was fine-tuned already is trained
#: again (after corrections). In a simulated session (one NIH3T3 image, 5 corrected
#: nuclei and 100 steps per round, 3 seeds), rounds at the full rate cost the held-out
#: images 0.06 AP@0.5 over three rounds; at a third, 0.03.
REFINE_LR_SHARE = 1 / 3
#: Steps of a run that fine-tunes a trained model. From the nuclei generalist, 150 steps
#: (about a minute on 2 CPU cores) scored as well as 2 minutes (250-270 steps) on NIH3T3
#: nuclei at every annotation density.
FINE_TUNE_ITERATIONS = 150
#: Steps of a run that trains a new network: from random weights, a few hundred steps
#: do not yet make objects compact enough to cluster.
NEW_NETWORK_ITERATIONS = 1000
#: Share of the painted objects that must border another painted object before the
#: painting says "objects touch": a few neighbours among sparsely painted nuclei (4 of 12
#: in the bundled sample's 10 %) do not, a user painting cells side by side does.
TOUCHING_FRACTION = 0.5
#: Steps of a run on touching objects, from any start, at the start's usual learning rate.
#: A trained model's embedding puts a cluster of touching cells together, and 150 steps
#: do not undo it (synthetic touching cells: AP@0.5 0.10 against 0.41 for 1000 steps).
#: A new network's learning rate (1e-3) scored within about one seed spread of it there
#: and broke the embedding on phase-contrast cells (docs/benchmarks.md, "A synthetic scene").
TOUCHING_ITERATIONS = 1000


def touching_objects(
    annotations: Sequence[ArrayLike],
    *,
    background_id: int | None = None,
    told: bool | None = None,
) -> bool:
    """Whether the objects touch: what the user ``told``, else what the painting says.

    Touching cells painted side by side meet edge to edge; nuclei painted apart
    rarely do. The painting says "touch" when at least :data:`TOUCHING_FRACTION`
    of the painted objects border another painted object.
    """
    if told is not None:
        return told
    return touching_fraction(annotations, background_id=background_id) >= TOUCHING_FRACTION


def default_iterations(fine_tune: bool, objects_touch: bool = False) -> int:
    """Return the steps of a run: fewer from a trained model, unless objects touch.

    Examples
    --------
    >>> default_iterations(fine_tune=True), default_iterations(fine_tune=False)
    (150, 1000)
    >>> default_iterations(fine_tune=True, objects_touch=True)
    1000
    """
    if objects_touch:
        return TOUCHING_ITERATIONS
    return FINE_TUNE_ITERATIONS if fine_tune else NEW_NETWORK_ITERATIONS


def default_learning_rate(fine_tune: bool, *, fine_tuned_before: bool = False) -> float:
    """Return the peak learning rate of a run: a tenth when it starts from a trained model.

    Training a fine-tuned model again, as after corrections, takes smaller steps
    still (:data:`REFINE_LR_SHARE`): on the same few painted images, each run at
    the full rate pulls the network further towards them and away from other images.

    Examples
    --------
    >>> default_learning_rate(False), default_learning_rate(True)
    (0.001, 0.0001)
    >>> round(default_learning_rate(True, fine_tuned_before=True), 7)
    3.33e-05
    """
    if not fine_tune:
        return NEW_MODEL_LR
    return FINE_TUNE_LR * (REFINE_LR_SHARE if fine_tuned_before else 1.0)


def pretraining_loss(loss: LossConfig | None = None) -> LossConfig:
    """``loss`` with every term switched off but consistency: self-supervised pretraining.

    The consistency term needs no annotation (it compares the student's and
    the teacher's embeddings of two noisy views), so a network can start
    learning from unlabeled images; see docs/cli.md, ``pretrain``.
    """
    off = {f"{name}_weight": 0.0 for name in ALL_LOSS_TERMS if name != "consistency"}
    return replace(loss or LossConfig(), **off, consistency_weight=1.0)


def train_config(
    annotations: Sequence[ArrayLike],
    *,
    spatial_dims: int,
    channels: int,
    start: Checkpoint | None = None,
    size: str = "medium",
    heads: bool = True,
    anisotropic_pooling: bool = True,
    object_diameter: float | None = None,
    background_id: int | None = None,
    objects_touch: bool | None = None,
    ring: int | None = None,
    loss: Mapping[str, Any] | None = None,
    dense: bool = False,
    pretraining: bool = False,
    iterations: int | None = None,
    patch_shape: Sequence[int] | None = None,
    **settings: Any,
) -> TrainConfig:
    """Build the training settings that the data, the start and the user's choices call for.

    The panel, the command line, the demo and the benchmarks all call this, so
    that the same data trains the same way whichever a user picks:

    * network: the ``start`` model's (checked to read these images), else a new
      one of preset ``size``; a triplet term on the bottleneck adds its projection;
    * margins: the start model's ``delta_v`` / ``delta_d``, unless ``loss`` sets them;
    * scale: ``object_diameter``, else the painted objects' median diameter, is
      brought to the network's reference size; else the start model's scale.
      ``dense`` labels give each image its own scale (``scale_per_image``);
    * whether objects touch: ``objects_touch``, else the painting says
      (:func:`touching_objects`). Where they touch, the pixels next to a painted
      object are often another object, so there is no ring of negatives
      around painted objects (unless ``ring`` says otherwise; on phase-contrast
      cells dropping it changed the foreground IoU within the seed spread), and
      the run is longer (:func:`default_iterations`);
    * dense labels leave no unannotated pixel, so the consistency term is off;
      and their patches show whole images, not the surroundings of a few painted
      objects, so batch norm learns their statistics even from a trained start
      (kept, on new data they left the foreground at 4-8x the truth);
      ``pretraining`` keeps only the consistency term (:func:`pretraining_loss`);
    * steps and peak learning rate: the recipe's for a fine-tuning or a new run,
      unless ``iterations`` / ``settings["learning_rate"]`` say otherwise (a
      learning rate left to the recipe stays None: the trainer picks it by its
      start, :func:`default_learning_rate`).

    ``loss`` holds other :class:`LossConfig` fields (weights, margins);
    ``settings`` other :class:`TrainConfig` fields (batch size, seed...).

    Raises
    ------
    ValueError
        If the start model cannot read such images, or a setting is invalid.
    """
    if start is not None:
        model = start.config.model
        model.check_reads(
            spatial_dims, channels, what="the training images", model="the starting model"
        )
        trained = start.config.loss
        margins = {"delta_v": trained.delta_v, "delta_d": trained.delta_d}
        scale = start.config.object_scale
    else:
        model = model_config_for(
            spatial_dims, channels, size=size, heads=heads, anisotropic_pooling=anisotropic_pooling
        )
        margins, scale = {}, 1.0
    if dense:  # each image gets its own scale; 1 means "objects at the reference size"
        scale = 1.0
    else:
        measured = object_scale_from_annotations(
            annotations, diameter=object_diameter, background_id=background_id
        )
        scale = scale if measured is None else measured
    touching = touching_objects(annotations, background_id=background_id, told=objects_touch)
    if ring is None:
        ring = 0 if touching else LossConfig.ring_width
    choices = LossConfig(
        **{**margins, "background_id": background_id, "ring_width": ring, **(loss or {})}
    )
    if pretraining:
        choices = pretraining_loss(choices)
    if dense:
        choices = replace(choices, sparse=False, consistency_weight=0.0)
        settings.setdefault("keep_norm_statistics", False)
    if start is None and choices.projects_bottleneck:
        model = replace(model, bottleneck_projection=True)
    return TrainConfig(
        model=model,
        loss=choices,
        iterations=(
            default_iterations(start is not None, touching) if iterations is None else iterations
        ),
        patch_shape=tuple(patch_shape or DEFAULT_PATCH_SHAPE[spatial_dims]),
        object_scale=scale,
        scale_per_image=dense,
        **settings,
    )


def training_warnings(
    config: TrainConfig,
    annotations: Sequence[ArrayLike],
    scales: Sequence[float] | None = None,
) -> list[str]:
    """Name the settings that will train poorly on these annotations, one sentence each.

    The panel shows them as notifications and the command line logs them; none
    stops training, because each can be what the user meant.
    """
    warnings = []
    loss = config.loss
    if loss.sparse and not loss.consistency_only:
        count = sum(len(object_ids(a, background_id=loss.background_id)) for a in annotations)
        if count == 1:
            warnings.append(
                "Only one object is annotated: the push term needs two, so this run learns "
                "from pull, instance and unlabeled push only. Annotate a second object for a "
                "better model."
            )
    if loss.background_id is not None and not any(
        np.any(np.asarray(a) == loss.background_id) for a in annotations
    ):
        warnings.append(
            f"The background label {loss.background_id} occurs in no annotation: no pixel is "
            "known to be background."
        )
    scales = scales or [config.object_scale] * len(annotations)
    patch = config.patch_shape[-2:]
    sizes = [
        tuple(round(n * scale) for n in np.shape(a)[-2:])
        for a, scale in zip(annotations, scales, strict=True)
    ]
    if sizes and all(any(n < p for n, p in zip(size, patch, strict=True)) for size in sizes):
        warnings.append(
            f"The training patch ({' x '.join(map(str, config.patch_shape))}) is larger than "
            f"every image after resizing (e.g. {' x '.join(map(str, sizes[0]))}): patches are "
            "padded with mirrored copies, which costs time and teaches nothing. Use a smaller "
            "patch."
        )
    return warnings
