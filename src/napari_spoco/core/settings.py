"""What a user may set, listed once: the label, range, step and meaning of each setting.

The panel builds its boxes from these lists (with magicgui) and the command line
takes its help from them, so that a setting reads the same everywhere. Each entry
is named after its field in a config class; the default is that class's own
(:mod:`.config`), so it is written once too. The clustering methods list their
settings, with defaults, next to the methods (:mod:`.clustering_methods`).

This module imports nothing else of the package, so that every other module may
import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args, get_type_hints

__all__ = [
    "AUGMENT",
    "AUGMENT_CHOICES",
    "LOSS_SETTINGS",
    "SEGMENT_SETTINGS",
    "TRAIN_SETTINGS",
    "Setting",
    "choices_of",
    "config_value",
]


@dataclass(frozen=True)
class Setting:
    """One setting: a config field (or a keyword of ``segment``) with its range and meaning.

    ``special`` is the text a box shows at ``low``, which then means "not set"
    (None: the recipe or the method decides). ``default`` is given only where no
    config class holds one (the clustering methods' keywords). ``decimals`` is how
    many a box shows where its range and step do not say (learning rates).
    """

    name: str
    label: str
    low: int | float
    high: int | float
    step: int | float
    tooltip: str
    special: str | None = None
    default: Any = None
    decimals: int | None = None


def config_value(setting: Setting, value: Any) -> Any:
    """Turn what a user entered into the config's value: None at the special value.

    The panel's boxes and the command line's flags both read their values through
    this, so that "auto" and "off" mean the same in both.
    """
    if setting.special is not None and value == setting.low:
        return None
    return int(round(value)) if isinstance(setting.step, int) else value


def choices_of(config_class: type, name: str) -> tuple[str, ...]:
    """List the values a config field's ``Literal`` type allows, in the order written there."""
    return get_args(get_type_hints(config_class)[name])


def _listed(*settings: Setting) -> dict[str, Setting]:
    return {setting.name: setting for setting in settings}


#: What each loss term's weight scales (``LossConfig.<term>_weight``).
_TERM_MEANINGS = {
    "pull": "pixels to their object's mean",
    "push": "object means apart",
    "regularizer": "pulling object means towards the origin, which keeps them bounded",
    "instance": "the differentiable single-instance Dice term",
    "unlabeled_push": "pushing unannotated pixels away from annotated objects",
    "consistency": "the student/teacher consistency on unannotated pixels",
    "foreground": "the foreground head (objects against background)",
    "distance": "the inner-distance head (object centres against borders)",
    "triplet": (
        "the identity-aware triplet term, which pushes each object away from the most "
        "similar other annotated object (0: off; see docs/method.md)"
    ),
    "dispersive": "the dispersive term, which spreads object means apart (0: off)",
}

#: ``LossConfig`` fields a user may change.
LOSS_SETTINGS: dict[str, Setting] = _listed(
    Setting(
        "delta_v", "delta_v", 0.01, 100.0, 0.1,
        "Pull margin: pixels within this distance of their object's mean cost nothing. "
        "A trained model brings its own.",
    ),
    Setting(
        "delta_d", "delta_d", 0.01, 100.0, 0.1,
        "Push margin: object means are pushed 2 x delta_d apart. A trained model brings its own.",
    ),
    Setting(
        "kernel_threshold", "Kernel threshold", 0.01, 0.99, 0.05,
        "Value of the instance-selection kernel at distance delta_v (0-1).",
    ),
    Setting(
        "ring_width", "Ring width", -1, 50, 1,
        "Pixels around each annotated object treated as background by the heads. 'auto': "
        "2, or 0 when objects touch (see 'Objects touch').",
        special="auto",
    ),
    Setting(
        "dispersive_tau", "Dispersive tau", 0.01, 100.0, 0.1,
        "Temperature of the dispersive term: larger spreads over longer distances.",
    ),
    *(
        Setting(
            f"{term}_weight", term.replace("_", " "), 0.0, 100.0, 0.1,
            f"Weight of {meaning}.",
        )
        for term, meaning in _TERM_MEANINGS.items()
    ),
)  # fmt: skip

#: ``TrainConfig`` fields a user may change.
TRAIN_SETTINGS: dict[str, Setting] = _listed(
    Setting(
        "iterations", "Iterations", 1, 1_000_000, 50,
        "Training steps for this run; it follows the recipe for the chosen start and your "
        "painting (fewer to fine-tune a model than for a new network, more where objects "
        "touch) until you change it. Press Train again to continue from where it stopped.",
    ),
    Setting(
        "learning_rate", "Learning rate", 0.0, 1.0, 1e-4,
        "Adam learning rate; 'auto' is 1e-3 for a new network, 1e-4 for fine-tuning, and a "
        "third of that to train a fine-tuned model again (after corrections).",
        special="auto", decimals=6,
    ),
    Setting("batch_size", "Batch size", 1, 64, 1, "Patches per training step."),
    Setting(
        "ema_momentum", "EMA momentum", 0.0, 0.9999, 0.001,
        "Momentum of the teacher, an exponential moving average of the network.",
    ),
    Setting(
        "seed", "Seed", 0, 2**31 - 1, 1,
        "Random seed: the same seed and settings give the same training.",
    ),
)  # fmt: skip

#: ``SegmentConfig`` fields a user may change (besides the method and the foreground).
SEGMENT_SETTINGS: dict[str, Setting] = _listed(
    Setting(
        "foreground_threshold", "Foreground threshold", 0.01, 0.99, 0.05,
        "Foreground probability above which a pixel belongs to an object.",
    ),
    Setting(
        "delta_d", "Merge margin", 0.0, 50.0, 0.5,
        "Clustering margin (delta_d used for clustering): larger merges more, smaller splits "
        "more. 'auto' is twice the training margin.",
        special="auto",
    ),
    Setting(
        "seed_threshold", "Split at cores above", 0.0, 0.99, 0.05,
        "Inner-distance level of object cores; a cluster with several cores is split "
        "(off: no splitting).",
        special="off",
    ),
    Setting(
        "min_size", "Minimum size (px)", 0, 10_000_000, 1,
        "Instances smaller than this many pixels are removed.",
    ),
)  # fmt: skip


#: Whether Segment averages the network's output over eight orientations: the choices as
#: the panel and the command line name them (None: ``core.prediction.augment_or_default``).
AUGMENT_CHOICES: dict[str, bool | None] = {"auto": None, "on": True, "off": False}
AUGMENT = (
    "Average the network's output over the image flipped and turned by quarter turns (eight "
    "passes: 3-7x the prediction time; more accurate instances). auto: on for 2D images, "
    "off for 3D."
)
