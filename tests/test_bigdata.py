"""Block-wise prediction and segmentation agree with whole-image results."""

import numpy as np
import pytest
import tifffile
import torch
import zarr
from conftest import make_blobs

from napari_spoco import bigdata
from napari_spoco.core.checkpoint import Checkpoint, network_from_checkpoint
from napari_spoco.core.config import LossConfig, ModelConfig, SegmentConfig, TrainConfig
from napari_spoco.core.io import open_image, prediction_attributes, prediction_to_array
from napari_spoco.core.metrics import average_precision
from napari_spoco.core.model import EmbeddingUNet, build_model
from napari_spoco.core.prediction import Prediction, predict
from napari_spoco.core.segmentation import segment_prediction


@pytest.fixture(scope="module")
def checkpoint():
    """An untrained tiny network: block-wise prediction must reproduce it exactly."""
    import torch

    torch.manual_seed(0)
    config = TrainConfig(model=ModelConfig(depth=2, base_features=8), patch_shape=(64, 64))
    model = build_model(config.model).eval()
    return Checkpoint(config=config, model_state=model.state_dict())


def _synthetic_prediction(shape=(200, 232), seed=0):
    """Blobs with one well-separated embedding each: clustering them is unambiguous."""
    _, labels = make_blobs(shape, n_objects=40, radius=9, seed=seed)
    rng = np.random.default_rng(seed)
    centres = np.concatenate([np.zeros((1, 16)), rng.normal(size=(labels.max(), 16)) * 6])
    embeddings = centres[labels].transpose(2, 0, 1) + rng.normal(scale=0.05, size=(16, *shape))
    foreground = np.where(labels > 0, 0.99, 0.01).astype(np.float32)
    prediction = Prediction(embeddings.astype(np.float32), foreground=foreground)
    return prediction, labels


def test_blockwise_prediction_equals_whole_image_prediction(checkpoint, blobs):
    image = np.tile(blobs[0], (2, 2))[:180, :170]  # 3 x 3 blocks, ragged at the ends
    network = network_from_checkpoint(checkpoint)
    # Like Segment in the panel, a 2D image averages the eight orientations by default.
    whole = predict(network, image, loss=checkpoint.config.loss, augment=True)
    seen = []
    result = bigdata.predict_blockwise(
        checkpoint, image, block_shape=(64, 64), progress=lambda done, total: seen.append(done)
    )
    assert result.shape == (16, 180, 170) and result.chunks == (16, 64, 64)
    np.testing.assert_allclose(result[...], whole.embeddings, atol=1e-4)
    assert seen[-1] == 9 and sorted(seen) == seen
    # Too small a halo shows: the test above is sensitive to the context.
    cramped = bigdata.predict_blockwise(checkpoint, image, block_shape=(64, 64), halo=(0, 0))
    assert np.abs(cramped[...] - whole.embeddings).max() > 1e-3
    plain = bigdata.predict_blockwise(checkpoint, image, block_shape=(64, 64), augment=False)
    one_pass = predict(network, image, loss=checkpoint.config.loss, augment=False)
    np.testing.assert_allclose(plain[...], one_pass.embeddings, atol=1e-4)
    assert np.abs(one_pass.embeddings - whole.embeddings).max() > 1e-3


def test_blockwise_prediction_of_a_zarr_with_channels_writes_chunked_zarr(tmp_path, blobs):
    config = TrainConfig(model=ModelConfig(depth=2, base_features=8, in_channels=2))
    checkpoint = Checkpoint(config=config, model_state=build_model(config.model).state_dict())
    image = np.stack([blobs[0], blobs[0][::-1]], axis=-1)  # (Y, X, C)
    source = zarr.create_array(tmp_path / "in.zarr", shape=image.shape, chunks=(40, 40, 2),
                               dtype="float32")  # fmt: skip
    source[...] = image
    out = bigdata.predict_blockwise(
        checkpoint, source, channel_axis=-1, block_shape=(48, 48), out=tmp_path / "out.zarr"
    )
    whole = predict(network_from_checkpoint(checkpoint), image, channel_axis=-1, augment=True)
    np.testing.assert_allclose(zarr.open_array(tmp_path / "out.zarr")[...], whole.embeddings,
                               atol=1e-4)  # fmt: skip
    assert out.attrs["napari_spoco"]["embedding_dim"] == 16
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_blockwise_instances_agree_with_whole_image_instances():
    prediction, labels = _synthetic_prediction()
    config = SegmentConfig(min_size=10)
    whole = segment_prediction(prediction, config)
    assert average_precision(labels, whole) > 0.95  # the synthetic case is unambiguous
    store = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(17, *labels.shape), chunks=(17, 64, 64),
        dtype="float32", attributes=prediction_attributes(16, ["foreground"], 0.5, 2.0),
    )  # fmt: skip
    store[...] = prediction_to_array(prediction)
    blocks = bigdata.segment_prediction_blockwise(
        store, segment_config=config, block_shape=(64, 64), halo=(24, 24)
    )
    result = blocks[...]
    assert result.dtype == np.uint32 and result.shape == labels.shape
    assert average_precision(whole, result) >= 0.95
    ids = np.unique(result)
    assert ids.tolist() == list(range(ids.size))  # consecutive: no id skipped or reused
    crossing = [i for i in np.unique(labels[:, 63:65]) if i]  # objects on a block face
    for object_id in crossing:
        assert np.unique(result[labels == object_id]).size == 1  # not split at the face


def test_segmentation_needs_an_overlap_to_stitch():
    """Blocks are matched in their overlap: without one, objects would split at faces."""
    prediction, labels = _synthetic_prediction()
    store = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(17, *labels.shape), chunks=(17, 64, 64),
        dtype="float32", attributes=prediction_attributes(16, ["foreground"], 0.5, 2.0),
    )  # fmt: skip
    store[...] = prediction_to_array(prediction)
    with pytest.raises(ValueError, match="halo"):
        bigdata.segment_prediction_blockwise(store, block_shape=(64, 64), halo=(0, 0))


class _IntensityCode(EmbeddingUNet):
    """Gives every intensity its own embedding: objects of distinct brightness are instances."""

    def forward(self, image):
        phase = 2 * torch.pi * image[:, :1] * torch.arange(1, 9).view(1, 8, 1, 1)
        return 6 * torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)


def test_segment_blockwise_predicts_clusters_and_stitches_like_the_whole_image():
    _, labels = make_blobs((150, 170), n_objects=24, radius=7, seed=1)
    image = np.where(labels > 0, 0.2 + 0.8 * labels / labels.max(), 0.0).astype(np.float32)
    network = _IntensityCode(ModelConfig(depth=1, base_features=1)).eval()
    config = SegmentConfig(foreground="embedding", min_size=10)
    whole = segment_prediction(predict(network, image), config)
    assert average_precision(labels, whole) > 0.95  # the test case is meaningful
    result = bigdata.segment_blockwise(
        network, image, segment_config=config, block_shape=(48, 48), halo=(24, 24),
        loss=LossConfig(), object_scale=1.0,
    )[...]  # fmt: skip
    assert average_precision(whole, result) >= 0.95
    on_faces = {i for i in np.unique(labels[:, 47:49]) if i} | {
        i for i in np.unique(labels[47:49]) if i
    }
    assert on_faces and all(np.unique(result[labels == i]).size == 1 for i in on_faces)


def test_roi_limits_the_blocks_computed(checkpoint, blobs):
    image = blobs[0]
    result = bigdata.predict_blockwise(
        checkpoint, image, block_shape=(32, 32), roi=(slice(0, 20), slice(0, 20))
    )[...]
    assert (
        np.any(result[:, :32, :32])
        and not np.any(result[:, 32:, :])
        and not np.any(result[:, :, 32:])
    )


def test_blockwise_prediction_takes_a_builtin_model_by_name(blobs):
    from napari_spoco.core.pretrained import load_model_source

    image = blobs[0][:96, :96]
    by_name = bigdata.predict_blockwise("nuclei", image, block_shape=(64, 64))[...]
    loaded = bigdata.predict_blockwise(load_model_source("nuclei"), image, block_shape=(64, 64))
    np.testing.assert_array_equal(by_name, loaded[...])


def test_bad_settings_are_refused(checkpoint, blobs):
    with pytest.raises(ValueError, match="channel"):
        bigdata.predict_blockwise(checkpoint, np.zeros((3, 32, 32)), channel_axis=0)
    with pytest.raises(ValueError, match="block_shape"):
        bigdata.predict_blockwise(checkpoint, blobs[0], block_shape=(32,))
    with pytest.raises(ValueError, match="output path"):
        bigdata.predict_blockwise(checkpoint, blobs[0], scheduler="tcp://127.0.0.1:1")


def test_local_cluster_run_matches_threaded_run(checkpoint, blobs, tmp_path):
    distributed = pytest.importorskip("distributed")
    image = np.tile(blobs[0], (2, 1))
    tifffile.imwrite(tmp_path / "image.tif", image, tile=(32, 32))
    lazy = open_image(tmp_path / "image.tif")  # pickled by path for the worker process
    threaded = bigdata.predict_blockwise(checkpoint, image, block_shape=(64, 64))[...]
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        done = []
        bigdata.predict_blockwise(
            checkpoint, lazy, block_shape=(64, 64), out=tmp_path / "prediction.zarr",
            scheduler=client, progress=lambda d, total: done.append((d, total)),
        )  # fmt: skip
        labels = bigdata.segment_blockwise(
            checkpoint, lazy, block_shape=(64, 64), out=tmp_path / "labels.zarr", scheduler=client
        )
    np.testing.assert_allclose(zarr.open_array(tmp_path / "prediction.zarr")[...], threaded,
                               atol=1e-5)  # fmt: skip
    assert done[-1] == (6, 6)
    assert labels.shape == image.shape and labels.dtype == np.uint32
