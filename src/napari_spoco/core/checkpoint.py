"""One model file: weights, EMA teacher, optimiser, configuration and history.

Files are plain ``torch.save`` dictionaries holding only tensors and JSON-like
values, so they load with ``torch.load(weights_only=True)``: opening a model
file never executes code from it. Writes go to a temporary file that is
renamed when complete, so an interrupted save never leaves a file that looks
finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig, config_from_dict
from .model import EmbeddingUNet, build_model
from .outputs import atomic_output

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Checkpoint",
    "load_checkpoint",
    "load_model",
    "network_from_checkpoint",
    "save_checkpoint",
]

FORMAT_NAME = "napari-spoco-model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """Everything needed to predict with a model or to continue training it.

    ``history`` holds one dict per training record (step, losses, lr, seconds);
    ``normalization`` says how images must be prepared for this model;
    ``run_start_step`` is where the run that wrote it began, so that an
    interrupted run can resume its learning-rate schedule.
    """

    config: TrainConfig
    model_state: dict[str, torch.Tensor]
    teacher_state: dict[str, torch.Tensor] | None = None
    optimizer_state: dict[str, Any] | None = None
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    normalization: dict[str, Any] = field(
        default_factory=lambda: {"method": "percentile", "low": 1.0, "high": 99.8}
    )
    run_start_step: int = 0


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically and return the path."""
    path = Path(path)
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": checkpoint.config.to_dict(),
        "model_state": checkpoint.model_state,
        "teacher_state": checkpoint.teacher_state,
        "optimizer_state": checkpoint.optimizer_state,
        "step": checkpoint.step,
        "history": checkpoint.history,
        "normalization": checkpoint.normalization,
        "run_start_step": checkpoint.run_start_step,
    }
    with atomic_output(path) as temporary:  # also clears stale temporaries; mode 0644
        torch.save(payload, temporary)
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a model file written by :func:`save_checkpoint`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a napari-spoco model file (or is damaged).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    # A foreign or damaged file makes torch.load raise almost anything (KeyError for
    # text, UnpicklingError, RuntimeError for zip damage...): all mean "not ours".
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"{path} is not a napari-spoco model file ({type(error).__name__})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a napari-spoco model file")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer napari-spoco "
            f"(format {payload['version']}); please upgrade"
        )
    try:
        checkpoint = Checkpoint(
            config=config_from_dict(payload["config"]),
            model_state=payload["model_state"],
            teacher_state=payload.get("teacher_state"),
            optimizer_state=payload.get("optimizer_state"),
            step=int(payload.get("step", 0)),
            history=list(payload.get("history", [])),
            normalization=dict(payload.get("normalization", {})),
            run_start_step=int(payload.get("run_start_step", 0)),
        )
        _check_weights_fit(checkpoint)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is a damaged napari-spoco model file: {error}") from error
    return checkpoint


def _check_weights_fit(checkpoint: Checkpoint) -> None:
    """Refuse weights that do not fit the network their settings describe, when opening.

    Found later, the mismatch would be torch's multi-line RuntimeError at the first use.
    """
    network = build_model(checkpoint.config.model)
    for name, state in (("weights", checkpoint.model_state), ("teacher", checkpoint.teacher_state)):
        if state is None:
            continue
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            reason = " ".join(str(error).split())[:200]
            raise ValueError(f"its {name} do not fit its network settings ({reason})") from None


def network_from_checkpoint(
    checkpoint: Checkpoint, device: str | torch.device = "cpu", *, teacher: bool = False
) -> EmbeddingUNet:
    """Build the checkpoint's network (or its EMA ``teacher``) with its weights, for prediction.

    Raises
    ------
    ValueError
        If ``teacher`` is asked for and the checkpoint has none.
    """
    state = checkpoint.teacher_state if teacher else checkpoint.model_state
    if state is None:
        raise ValueError("this model file holds no teacher network")
    model = build_model(checkpoint.config.model)
    model.load_state_dict(state)
    return model.to(device).eval()


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> EmbeddingUNet:
    """Build the network stored in ``path`` and load its weights, ready for prediction."""
    return network_from_checkpoint(load_checkpoint(path), device)
