import numpy as np

from napari_spoco.core.config import ModelConfig, TrainConfig
from napari_spoco.core.interactive import Inbox, PreviewRequest, train_with_previews
from napari_spoco.core.training import Trainer

CONFIG = TrainConfig(
    model=ModelConfig(depth=2, base_features=8, foreground_head=True, distance_head=True),
    iterations=4,
    batch_size=2,
    patch_shape=(32, 32),
)


def _trainer(blobs):
    image, labels = blobs
    trainer = Trainer(CONFIG, device="cpu")
    trainer.set_data([image], [np.where(np.isin(labels, [1, 2]), labels, 0)])
    return trainer


def _drain(generator):
    updates = []
    while True:
        try:
            updates.append(next(generator))
        except StopIteration as finished:
            return updates, finished.value


def test_previews_are_attached_when_due_and_to_the_last_step(blobs):
    image, _ = blobs
    inbox = Inbox()
    inbox.post_preview(PreviewRequest(image[10:60, 20:80], offset=(10, 20)))
    updates, result = _drain(train_with_previews(_trainer(blobs), inbox=inbox, preview_every=1e9))
    assert [u.record.step for u in updates] == [1, 2, 3, 4] and result.steps_done == 4
    previews = [u.preview for u in updates]
    assert previews[:3] == [None, None, None]
    last = previews[-1]
    assert last.offset == (10, 20) and last.step == 4
    assert last.rgb.shape == (50, 60, 3) and last.instances.shape == (50, 60)
    assert last.prediction.foreground.shape == (50, 60)


def test_every_step_previews_when_the_interval_is_zero(blobs):
    image, _ = blobs
    inbox = Inbox()
    inbox.post_preview(PreviewRequest(image, offset=(0, 0)))
    updates, _ = _drain(train_with_previews(_trainer(blobs), 2, inbox=inbox, preview_every=0))
    assert all(u.preview is not None for u in updates)


def test_posted_annotations_are_used_from_the_next_step(blobs):
    image, labels = blobs
    trainer = _trainer(blobs)
    inbox = Inbox()
    generator = train_with_previews(trainer, 3, inbox=inbox)
    next(generator)
    assert trainer._sampler.n_objects == 2
    inbox.post_data([image[..., None]], [labels], channel_axis=-1)
    next(generator)
    assert trainer._sampler.n_objects == labels.max()
    assert inbox.take_data() is None


def test_a_failing_preview_is_skipped_not_fatal(blobs):
    image, _ = blobs
    inbox = Inbox()
    inbox.post_preview(PreviewRequest(image[..., None, None], offset=(0, 0)))  # wrong axes
    updates, result = _drain(train_with_previews(_trainer(blobs), 2, inbox=inbox, preview_every=0))
    assert result.steps_done == 2 and all(u.preview is None for u in updates)
