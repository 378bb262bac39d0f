import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_spoco.core.checkpoint import load_checkpoint, load_model, save_checkpoint
from napari_spoco.core.config import ModelConfig, TrainConfig
from napari_spoco.core.device import available_devices, resolve_device
from napari_spoco.core.recipe import FINE_TUNE_LR, NEW_MODEL_LR, REFINE_LR_SHARE
from napari_spoco.core.training import Trainer

SMALL = TrainConfig(
    model=ModelConfig(depth=2, base_features=8),
    iterations=3,
    batch_size=2,
    patch_shape=(48, 48),
)


def _sparse(blobs):
    image, labels = blobs
    return [image], [np.where(np.isin(labels, [1, 2, 3]), labels, 0)]


def _trainer(blobs, config=SMALL, **kwargs):
    trainer = Trainer(config, device="cpu", **kwargs)
    trainer.set_data(*_sparse(blobs))
    return trainer


def test_same_seed_gives_the_same_run(blobs):
    first = [r.losses for r in _collect(_trainer(blobs))]
    second = [r.losses for r in _collect(_trainer(blobs))]
    assert first == second
    assert all(np.isfinite(list(losses.values())).all() for losses in first)


def _collect(trainer, iterations=None):
    records = []
    trainer.run(iterations, callback=records.append)
    return records


def test_stop_then_resume_keeps_optimizer_and_teacher(blobs):
    trainer = _trainer(blobs)
    generator = trainer.steps(5)
    next(generator)
    trainer.request_stop()
    with pytest.raises(StopIteration) as finished:
        next(generator)
    result = finished.value.value
    assert result.stopped and result.steps_done == 1 and trainer.step == 1
    teacher_before = [p.clone() for p in trainer.teacher.parameters()]
    adam_steps = float(trainer.optimizer.state[next(iter(trainer.model.parameters()))]["step"])
    assert trainer.run(2).steps_done == 2 and trainer.step == 3
    assert trainer.optimizer.state[next(iter(trainer.model.parameters()))]["step"] == adam_steps + 2
    assert any(
        not torch.equal(a, b)
        for a, b in zip(teacher_before, trainer.teacher.parameters(), strict=True)
    )


def test_teacher_is_an_exponential_moving_average(blobs):
    trainer = _trainer(blobs)
    old_teacher = [p.clone() for p in trainer.teacher.parameters()]
    trainer.run(1)
    m = SMALL.ema_momentum
    for old, teacher, student in zip(
        old_teacher, trainer.teacher.parameters(), trainer.model.parameters(), strict=True
    ):
        torch.testing.assert_close(teacher, m * old + (1 - m) * student)
    assert not any(p.requires_grad for p in trainer.teacher.parameters())


def test_new_annotations_sent_into_a_running_generator_are_used(blobs):
    image, labels = blobs
    trainer = _trainer(blobs)
    generator = trainer.steps(3)
    next(generator)
    assert trainer._sampler.n_objects == 3
    generator.send(([image], [labels]))
    assert trainer._sampler.n_objects == labels.max()


def test_bad_data_is_rejected_with_a_reason(blobs):
    image, labels = blobs
    trainer = Trainer(SMALL, device="cpu")
    with pytest.raises(ValueError, match="nothing is annotated"):
        trainer.set_data([image], [np.zeros_like(labels)])
    with pytest.raises(ValueError, match="does not match"):
        trainer.set_data([image], [labels[:10]])
    with pytest.raises(ValueError, match="channel"):
        trainer.set_data([np.stack([image, image])], [labels], channel_axis=0)
    with pytest.raises(RuntimeError, match="set_data"):
        next(trainer.steps())


def test_checkpoint_round_trip_and_fine_tuning(blobs, tmp_path):
    trainer = _trainer(blobs)
    trainer.run(checkpoint_path=tmp_path / "model.pt")
    assert trainer.learning_rate == NEW_MODEL_LR
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert checkpoint.step == 3 and len(checkpoint.history) == 3
    assert checkpoint.config.model == SMALL.model

    resumed = _trainer(
        blobs,
        config=TrainConfig(iterations=2, batch_size=2, patch_shape=(48, 48)),
        checkpoint=checkpoint,
    )
    assert resumed.config.model == SMALL.model  # architecture comes from the file
    assert resumed.learning_rate == FINE_TUNE_LR
    for a, b in zip(
        resumed.model.state_dict().values(), trainer.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)
    resumed.run()
    assert resumed.step == 5 and len(resumed.history) == 5

    model = load_model(tmp_path / "model.pt")
    x = torch.randn(1, 1, 32, 32)
    trainer.model.eval()
    torch.testing.assert_close(model(x), trainer.model(x))


def test_foreign_and_damaged_files_give_clear_errors(tmp_path):
    (tmp_path / "text.pt").write_text("not a model")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with open(tmp_path / "evil.pt", "wb") as stream:
        pickle.dump(Exception("arbitrary object"), stream)
    for name in ("text.pt", "other.pt", "evil.pt"):
        with pytest.raises(ValueError, match="not a napari-spoco model file"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_interrupted_save_keeps_the_previous_file(blobs, tmp_path, monkeypatch):
    trainer = _trainer(blobs)
    path = save_checkpoint(tmp_path / "model.pt", trainer.checkpoint())
    before = path.read_bytes()

    def failing_save(obj, target):
        Path(target).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, trainer.checkpoint())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_devices():
    assert available_devices()[-1] == "cpu"
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device(available_devices()[0])
    with pytest.raises(ValueError, match="not available"):
        resolve_device("cuda:7")
    with pytest.raises(ValueError, match="unknown device 'foo'; choose one of"):
        resolve_device("foo")


def test_multichannel_images_train_with_a_matching_network(blobs):
    image, labels = blobs
    two_channels = np.stack(
        [image, image[::-1]], axis=-1
    )  # (Y, X, C) as napari shows RGB-like data
    config = TrainConfig(
        model=ModelConfig(in_channels=2, depth=2, base_features=8),
        iterations=2,
        batch_size=2,
        patch_shape=(48, 48),
    )
    trainer = Trainer(config, device="cpu")
    trainer.set_data([two_channels], [labels], channel_axis=-1)
    assert trainer.run().steps_done == 2


def test_bad_pixels_and_tiny_images_stop_training_before_any_step(blobs):
    image, labels = blobs
    trainer = Trainer(SMALL, device="cpu")
    broken = image.copy()
    broken[5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        trainer.set_data([broken], [labels])
    with pytest.raises(ValueError, match="too small"):
        trainer.set_data([image[:5, :5]], [labels[:5, :5]])


def test_a_non_finite_loss_stops_training_without_touching_the_weights(blobs, monkeypatch):
    import napari_spoco.core.training as training

    trainer = _trainer(blobs)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    real_loss = training.spoco_loss

    def diverged(*args, **kwargs):
        losses = real_loss(*args, **kwargs)
        losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(training, "spoco_loss", diverged)
    with pytest.raises(ValueError, match="diverged at step 1"):
        trainer.run()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)


def _peak(records):
    return max(record.learning_rate for record in records)


def test_a_fine_tuned_model_trained_again_takes_smaller_steps(blobs, tmp_path):
    """After corrections, full-rate runs pull the network towards the few painted images."""
    new = _trainer(blobs)
    assert _peak(_collect(new)) == _peak(_collect(new)) == NEW_MODEL_LR  # a new network's
    tuned = _trainer(blobs, checkpoint=new.checkpoint())
    assert _peak(_collect(tuned)) == pytest.approx(FINE_TUNE_LR)
    tuned.reconfigure(replace(tuned.config, learning_rate=None))  # Train again, rate on auto
    tuned.set_data(*_sparse(blobs))
    again = FINE_TUNE_LR * REFINE_LR_SHARE
    assert _peak(_collect(tuned)) == pytest.approx(again)
    # A saved fine-tuned model, fine-tuned again from the file (the command line's --from).
    saved = load_checkpoint(save_checkpoint(tmp_path / "tuned.pt", tuned.checkpoint()))
    assert _peak(_collect(_trainer(blobs, checkpoint=saved))) == pytest.approx(again)
    # A rate the user chose is kept, run after run.
    chosen = _trainer(blobs, config=replace(SMALL, learning_rate=2e-4), checkpoint=saved)
    assert _peak(_collect(chosen)) == _peak(_collect(chosen)) == pytest.approx(2e-4)


def test_resuming_continues_the_schedule_where_the_run_stopped(blobs, tmp_path):
    """Six steps in one go, or three, a saved checkpoint and three more: the same run."""
    config = TrainConfig(**{**SMALL.__dict__, "iterations": 6})
    whole = _collect(_trainer(blobs, config))
    first = _trainer(blobs, config)
    first.run(3)
    assert first.step == 3
    first.request_stop()
    path = save_checkpoint(tmp_path / "run.pt", first.checkpoint())
    saved = load_checkpoint(path)
    resumed = Trainer(config, device="cpu", checkpoint=saved, resume=True)
    resumed.set_data(*_sparse(blobs))
    rest = _collect(resumed)
    assert resumed.step == 6 and [r.step for r in rest] == [4, 5, 6]
    assert [r.learning_rate for r in rest] == pytest.approx([r.learning_rate for r in whole[3:]])


def _running_means(model):
    return [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def _changed(before, after):
    return any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_fine_tuning_keeps_the_norm_statistics_a_new_network_learns_them(blobs, tmp_path):
    """Patches around painted objects are not whole images: fine-tuning keeps the stats."""
    new = _trainer(blobs)
    before = _running_means(new.model)
    new.run(checkpoint_path=tmp_path / "model.pt")
    assert not new.config.keep_norm_statistics
    assert any(
        not torch.equal(a, b) for a, b in zip(before, _running_means(new.model), strict=True)
    )

    checkpoint = load_checkpoint(tmp_path / "model.pt")
    tuned = _trainer(blobs, checkpoint=checkpoint)
    saved = _running_means(tuned.model)
    tuned.run(checkpoint_path=tmp_path / "tuned.pt")
    assert tuned.config.keep_norm_statistics
    tuned.reconfigure(replace(tuned.config, keep_norm_statistics=None))  # Train pressed again
    assert tuned.config.keep_norm_statistics
    tuned.set_data(*_sparse(blobs))
    tuned.run()
    assert not _changed(saved, _running_means(tuned.model))
    assert not _changed(saved, _running_means(tuned.model))
    assert _changed(list(tuned.model.parameters()), list(new.model.parameters()))  # weights learn
    resumed = _trainer(blobs, checkpoint=load_checkpoint(tmp_path / "tuned.pt"), resume=True)
    assert resumed.config.keep_norm_statistics  # a resumed run keeps its choice
    relearn = _trainer(
        blobs, config=replace(SMALL, keep_norm_statistics=False), checkpoint=checkpoint
    )
    relearn.run()
    assert any(
        not torch.equal(a, b) for a, b in zip(saved, _running_means(relearn.model), strict=True)
    )


@pytest.mark.parametrize("bfloat16", [True, False])
def test_teacher_runs_in_bfloat16_only_where_the_cpu_is_faster_with_it(
    blobs, monkeypatch, bfloat16
):
    monkeypatch.setattr("napari_spoco.core.training.bfloat16_is_faster_on_cpu", lambda: bfloat16)
    trainer = _trainer(blobs)
    seen = {}

    def record_dtype(name):
        def hook(_module, _inputs, output):
            seen.setdefault(name, output.dtype)

        return hook

    for name, model in (("student", trainer.model), ("teacher", trainer.teacher)):
        first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(record_dtype(name))
    records = _collect(trainer, 2)
    assert seen == {
        "student": torch.float32,
        "teacher": torch.bfloat16 if bfloat16 else torch.float32,
    }
    assert records[-1].losses["consistency"] > 0  # the teacher's targets reach the loss
