"""A steppable SPOCO training loop that a GUI worker thread or the CLI drives.

:meth:`Trainer.steps` is a generator: it yields a :class:`TrainRecord` every
``report_every`` steps and returns a :class:`TrainResult`. A GUI runs it in a
napari worker thread, can ``send`` new annotations into it (they take effect
at the next step) and calls :meth:`Trainer.request_stop`; calling ``steps``
again continues from the same state: weights, EMA teacher and optimiser.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike

from .augment import photometric_augment, vary_object_contrast
from .checkpoint import Checkpoint, save_checkpoint
from .config import TrainConfig
from .device import bfloat16_is_faster_on_cpu, resolve_device
from .extensions import extension_losses
from .heads import head_losses
from .image import check_image_size, check_image_values, prepare_image, rescale_spatial
from .losses import spoco_loss
from .model import EmbeddingUNet, build_model, split_output
from .recipe import default_learning_rate
from .sampling import PatchSampler

__all__ = [
    "TrainRecord",
    "TrainResult",
    "Trainer",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRecord:
    """What one report says: the step reached, each loss term, lr and speed."""

    step: int
    losses: dict[str, float]
    learning_rate: float
    seconds_per_step: float

    def to_dict(self) -> dict[str, object]:
        """JSON-compatible form, stored in checkpoints and history files."""
        return {
            "step": self.step,
            "learning_rate": self.learning_rate,
            "seconds_per_step": self.seconds_per_step,
            **{f"loss_{name}": value for name, value in self.losses.items()},
        }


@dataclass(frozen=True)
class TrainResult:
    """How a call of :meth:`Trainer.steps` ended."""

    step: int
    steps_done: int
    stopped: bool
    checkpoint_path: Path | None


class Trainer:
    """Train a SPOCO embedding network on sparse annotations.

    Parameters
    ----------
    config : TrainConfig
        Architecture, loss and optimisation settings.
    device : str or torch.device, optional
        ``None``/``"auto"`` picks CUDA, then MPS, then CPU.
    checkpoint : Checkpoint, optional
        Start from a saved model (fine-tuning or resuming): its architecture,
        weights, teacher, optimiser state and history are taken over.
    resume : bool
        Continue the run ``checkpoint`` was saved from (a periodic checkpoint of
        an interrupted run): the learning-rate schedule goes on where it was
        instead of starting again, and the run ends after ``config.iterations``
        steps in all.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        device: str | torch.device | None = None,
        checkpoint: Checkpoint | None = None,
        resume: bool = False,
    ) -> None:
        if resume and checkpoint is None:
            raise ValueError("resume needs the checkpoint of the run to continue")
        if checkpoint is not None:
            config = replace(config, model=checkpoint.config.model)
        if resume:  # the run's own peak learning rate, not the fine-tuning default
            config = replace(
                config, learning_rate=config.learning_rate or checkpoint.config.learning_rate
            )
        keep = config.keep_norm_statistics
        if keep is None:
            keep = checkpoint.config.keep_norm_statistics if resume else checkpoint is not None
        config = replace(config, keep_norm_statistics=bool(keep))
        _check_architecture(config)
        torch.manual_seed(config.seed)
        self.config = config
        self.device = resolve_device(device)
        self.model: EmbeddingUNet = build_model(config.model).to(self.device)
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint.model_state)
        if config.keep_norm_statistics:
            _freeze_norm_statistics(self.model)
        self.teacher = copy.deepcopy(self.model).requires_grad_(False)
        if checkpoint is not None and checkpoint.teacher_state is not None:
            self.teacher.load_state_dict(checkpoint.teacher_state)
        #: Whether the weights came out of sparse fine-tuning: a run that trains them
        #: again takes smaller steps, unless the learning rate was chosen.
        self._fine_tuned = checkpoint is not None and bool(checkpoint.config.keep_norm_statistics)
        self.learning_rate = config.learning_rate or default_learning_rate(
            checkpoint is not None, fine_tuned_before=self._fine_tuned
        )
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.learning_rate, weight_decay=config.weight_decay
        )
        if checkpoint is not None and checkpoint.optimizer_state is not None:
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
        self.step = checkpoint.step if checkpoint is not None else 0
        #: Step at which the current run (one learning-rate schedule) began.
        self.run_start_step = checkpoint.run_start_step if resume else self.step
        self._resuming = resume
        self.history: list[dict] = list(checkpoint.history) if checkpoint else []
        self._use_amp = self.device.type == "cuda"
        #: Precision of the teacher's forward pass (None: float32). It only makes
        #: targets, without gradients: on a CPU with bfloat16 units it runs in
        #: bfloat16, a third faster; on CUDA the whole step runs in float16.
        cpu_bfloat16 = self.device.type == "cpu" and bfloat16_is_faster_on_cpu()
        self.teacher_precision = (
            torch.float16 if self._use_amp else torch.bfloat16 if cpu_bfloat16 else None
        )
        self._scaler = torch.amp.GradScaler("cuda", enabled=self._use_amp)
        self._rng = np.random.default_rng(config.seed)
        self._generator = torch.Generator().manual_seed(config.seed)
        self._stop = threading.Event()
        self._sampler: PatchSampler | None = None

    def set_data(
        self,
        images: Sequence[ArrayLike],
        annotations: Sequence[ArrayLike],
        *,
        channel_axis: int | None = None,
        scales: Sequence[float] | None = None,
    ) -> None:
        """Use these (image, annotation) pairs from the next step on.

        Images are normalised and rescaled by ``config.object_scale`` here, so
        the caller passes raw arrays. Annotation 0 means "not annotated" (or
        background, when ``config.loss.sparse`` is False). ``scales`` gives
        each image its own resize factor instead, e.g. from its objects' sizes
        when images of many magnifications are trained together.

        Raises
        ------
        ValueError
            If shapes or channel counts do not match, an image holds NaN or
            infinite values or is too small, or nothing is annotated.
        """
        spatial_dims = self.config.model.spatial_dims
        if scales is None:
            scales = [self.config.object_scale] * len(images)
        if len(scales) != len(images):
            raise ValueError(f"{len(images)} images but {len(scales)} scales")
        prepared, labels = [], []
        for index, (image, annotation, scale) in enumerate(
            zip(images, annotations, scales, strict=True)
        ):
            check_image_values(image, name=f"image {index + 1}")
            image = prepare_image(image, spatial_dims=spatial_dims, channel_axis=channel_axis)
            check_image_size(image.shape[1:], scale)
            self.config.model.check_reads(spatial_dims, image.shape[0], what=f"image {index + 1}")
            annotation = np.asarray(annotation)
            if annotation.shape != image.shape[1:]:
                raise ValueError(
                    f"annotation shape {annotation.shape} does not match "
                    f"image shape {image.shape[1:]}"
                )
            prepared.append(rescale_spatial(image, scale, order=1, channel_first=True))
            labels.append(rescale_spatial(annotation, scale, order=0, channel_first=False))
        if not any(np.any(label) for label in labels) and not self.config.loss.consistency_only:
            raise ValueError("nothing is annotated: paint at least one object (0 = not annotated)")
        self._sampler = PatchSampler(
            prepared,
            labels,
            patch_shape=self.config.patch_shape,
            rng=self._rng,
            object_fraction=self.config.object_fraction,
            background_id=self.config.loss.background_id,
            mirror_labels=not self.config.loss.sparse,
        )

    def reconfigure(self, config: TrainConfig) -> None:
        """Use new settings from the next run on, keeping weights, teacher and optimiser.

        Pressing Train again may change iterations, learning rate, loss
        weights or the object scale; the architecture must stay. Call
        :meth:`set_data` afterwards: scale and background id affect the data.

        Raises
        ------
        ValueError
            If ``config.model`` differs from the current architecture.
        """
        if config.model != self.config.model:
            raise ValueError(
                "the architecture cannot change while training continues; start a new network"
            )
        _check_architecture(config)
        if config.keep_norm_statistics is None:  # this run's choice holds for the next ones
            config = replace(config, keep_norm_statistics=self.config.keep_norm_statistics)
        self.config = config
        if config.learning_rate is not None:
            self.learning_rate = config.learning_rate
        self._sampler = None

    def request_stop(self) -> None:
        """Ask :meth:`steps` to finish after the current step (thread-safe)."""
        self._stop.set()

    def steps(
        self,
        iterations: int | None = None,
        *,
        checkpoint_path: str | Path | None = None,
        checkpoint_every: int | None = None,
    ) -> Generator[TrainRecord, object, TrainResult]:
        """Train a run of ``iterations`` steps (default ``config.iterations``), yielding records.

        Each call is a new run with its own learning-rate schedule, except the
        first call of a resuming trainer, which does only the steps its run
        still lacks. A new run of fine-tuned weights peaks lower, unless the
        learning rate was chosen (:func:`~.recipe.default_learning_rate`). A
        value sent into the generator must be ``(images, annotations)`` and
        replaces the training data. When ``checkpoint_path`` is given, the
        model is saved there every ``checkpoint_every`` steps and when the run
        ends (also after a stop request).
        """
        if self._sampler is None:
            raise RuntimeError("call set_data() before training")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        run_total = self.config.iterations if iterations is None else iterations
        if self._resuming:
            self._resuming = False
        else:
            self.run_start_step = self.step
            if self._fine_tuned and self.config.learning_rate is None:
                self.learning_rate = default_learning_rate(True, fine_tuned_before=True)
        offset = self.step - self.run_start_step
        total = max(0, run_total - offset)
        done, window_losses, window_start = 0, [], time.perf_counter()
        for done in range(1, total + 1):
            if self._stop.is_set():
                done -= 1
                break
            lr = self._schedule(offset + done - 1, run_total)
            window_losses.append(self._train_step(lr))
            if checkpoint_path and checkpoint_every and done % checkpoint_every == 0:
                save_checkpoint(checkpoint_path, self.checkpoint())
            if done % self.config.report_every == 0 or done == total:
                elapsed = time.perf_counter() - window_start
                record = TrainRecord(
                    step=self.step,
                    losses={
                        k: float(np.mean([w[k] for w in window_losses])) for k in window_losses[0]
                    },
                    learning_rate=lr,
                    seconds_per_step=elapsed / len(window_losses),
                )
                self.history.append(record.to_dict())
                window_losses, window_start = [], time.perf_counter()
                new_data = yield record
                if new_data is not None:
                    self.set_data(*new_data)
        stopped = done < total
        self._fine_tuned |= done > 0 and bool(self.config.keep_norm_statistics)
        self._stop.clear()  # here, not at the start: a Stop pressed before the first step counts
        path = save_checkpoint(checkpoint_path, self.checkpoint()) if checkpoint_path else None
        return TrainResult(step=self.step, steps_done=done, stopped=stopped, checkpoint_path=path)

    def run(
        self,
        iterations: int | None = None,
        *,
        callback: Callable[[TrainRecord], None] | None = None,
        checkpoint_path: str | Path | None = None,
        checkpoint_every: int | None = None,
    ) -> TrainResult:
        """Drive :meth:`steps` to the end, calling ``callback`` with each record."""
        generator = self.steps(
            iterations, checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every
        )
        while True:
            try:
                record = next(generator)
            except StopIteration as finished:
                return finished.value
            if callback is not None:
                callback(record)

    def checkpoint(self) -> Checkpoint:
        """Snapshot of the current state, for :func:`save_checkpoint`."""
        return Checkpoint(
            config=replace(self.config, learning_rate=self.learning_rate),
            model_state={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            teacher_state={
                k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()
            },
            optimizer_state=_to_cpu(self.optimizer.state_dict()),
            step=self.step,
            history=list(self.history),
            run_start_step=self.run_start_step,
        )

    def _schedule(self, index: int, total: int) -> float:
        """Linear warm-up, then cosine decay to 10 % over this call's steps."""
        warmup = min(50, max(1, total // 10))
        if index < warmup:
            return self.learning_rate * (0.1 + 0.9 * index / warmup)
        progress = (index - warmup) / max(1, total - warmup)
        return self.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))

    def _train_step(self, lr: float) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images, labels = self._sampler.sample(self.config.batch_size)
        if self.config.object_contrast_probability > 0:
            images = vary_object_contrast(
                images, labels, self.config.object_contrast_probability, self._generator,
                background_id=self.config.loss.background_id,
            )  # fmt: skip
        if self.config.invert_probability > 0:
            flip = torch.rand(len(images), generator=self._generator)
            flip = (flip < self.config.invert_probability).view(-1, *[1] * (images.ndim - 1))
            images = torch.where(flip, 1 - images, images)
        student_view = photometric_augment(images, self._generator).to(self.device)
        teacher_view = photometric_augment(images, self._generator).to(self.device)
        labels = labels.to(self.device)
        self.model.train()
        self.teacher.train()
        model_config, loss_config = self.config.model, self.config.loss
        with torch.autocast(self.device.type, enabled=self._use_amp):
            output, bottleneck = self.model.forward_features(student_view)
            student, heads = split_output(output.float(), model_config, axis=1)
            projection = None
            if loss_config.projects_bottleneck:
                projection = self.model.projection(bottleneck)
        teacher = None
        if loss_config.consistency_weight > 0:
            precision = self.teacher_precision
            with (
                torch.no_grad(),
                torch.autocast(self.device.type, dtype=precision, enabled=precision is not None),
            ):
                teacher = split_output(self.teacher(teacher_view), model_config, axis=1)[0]
        losses = spoco_loss(
            student,
            labels,
            loss_config,
            teacher=None if teacher is None else teacher.float(),
            generator=self._generator,
        )
        extras = extension_losses(
            student, labels, loss_config, bottleneck=bottleneck, projection=projection,
            size_divisor=model_config.size_divisor, generator=self._generator,
        )  # fmt: skip
        for name, value in (*head_losses(heads, labels, loss_config).items(), *extras.items()):
            losses[name] = value
            losses["total"] = losses["total"] + getattr(loss_config, f"{name}_weight") * value
        if not torch.isfinite(losses["total"]):
            raise ValueError(
                f"training diverged at step {self.step + 1}: the loss is "
                f"{float(losses['total'].detach())}; try a lower learning rate "
                "(the model was not updated)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self._scaler.scale(losses["total"]).backward()
        self._scaler.step(self.optimizer)
        self._scaler.update()
        self._update_teacher()
        self.step += 1
        return {name: float(value.detach()) for name, value in losses.items()}

    @torch.no_grad()
    def _update_teacher(self) -> None:
        """theta_teacher <- m theta_teacher + (1 - m) theta_student; buffers are copied."""
        momentum = self.config.ema_momentum
        for teacher, student in zip(
            self.teacher.parameters(), self.model.parameters(), strict=True
        ):
            teacher.lerp_(student, 1 - momentum)
        for teacher, student in zip(self.teacher.buffers(), self.model.buffers(), strict=True):
            teacher.copy_(student)


def _freeze_norm_statistics(model: torch.nn.Module) -> None:
    """Stop batch norm from updating its running statistics; it still normalises by batch.

    Normalising fine-tuning batches by the running statistics instead (batch norm
    in eval mode) raised mAP on held-out training images but made more extra
    segments and lowered AP@0.5 on the NIH3T3 test images (docs/benchmarks.md).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0


def _check_architecture(config: TrainConfig) -> None:
    """Reject loss settings the network cannot serve (checked before any step runs)."""
    if config.loss.projects_bottleneck and not config.model.bottleneck_projection:
        raise ValueError(
            "triplet_on='bottleneck' needs a network with bottleneck_projection=True; "
            "start a new network or use triplet_on='embedding'"
        )


def _to_cpu(value: object) -> object:
    """Move every tensor inside nested dicts/lists to the CPU (portable model files)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value
