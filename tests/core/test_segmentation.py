import numpy as np
import pytest
import torch

from napari_spoco.core.config import LossConfig, ModelConfig, SegmentConfig
from napari_spoco.core.model import build_model
from napari_spoco.core.prediction import Prediction, predict
from napari_spoco.core.segmentation import segment_prediction, split_at_cores


def _two_touching_discs():
    yy, xx = np.indices((40, 60))
    first = (yy - 20) ** 2 + (xx - 20) ** 2 <= 100
    second = (yy - 20) ** 2 + (xx - 38) ** 2 <= 100
    labels = np.zeros((40, 60), dtype=np.int64)
    labels[first] = 1
    labels[second & ~first] = 2
    distance = np.maximum(
        np.clip(1 - np.sqrt((yy - 20) ** 2 + (xx - 20) ** 2) / 10, 0, 1),
        np.clip(1 - np.sqrt((yy - 20) ** 2 + (xx - 38) ** 2) / 10, 0, 1),
    ).astype(np.float32)
    return labels, distance


def test_split_at_cores_divides_a_merged_segment_between_its_cores():
    truth, distance = _two_touching_discs()
    merged = (truth > 0).astype(np.int64)
    split = split_at_cores(merged, distance, 0.5)
    assert split.max() == 2
    for obj in (1, 2):
        _, counts = np.unique(split[truth == obj], return_counts=True)
        assert counts.max() / counts.sum() > 0.95  # the watershed line may shift a pixel
    assert split[20, 20] != split[20, 38]


def test_split_at_cores_keeps_segments_with_one_core_and_never_merges():
    truth, distance = _two_touching_discs()
    result = split_at_cores(truth, distance, 0.5)
    assert result.max() == 2
    # Two segments sharing one core stay two segments.
    halves = np.where(truth > 0, 1 + (np.arange(60)[None, :] >= 20), 0)
    assert split_at_cores(halves, np.where(truth == 1, distance, 0), 0.5).max() == 2


def test_segment_prediction_uses_the_foreground_head_and_distance_seeds():
    truth, distance = _two_touching_discs()
    embeddings = np.zeros((4, 40, 60), dtype=np.float32)  # one cluster: only the heads separate
    foreground = (truth > 0).astype(np.float32)
    prediction = Prediction(embeddings, foreground=foreground, distance=distance)
    instances = segment_prediction(prediction, SegmentConfig(seed_threshold=0.5, min_size=5))
    assert instances.dtype == np.uint32 and instances.max() == 2
    assert (instances[truth == 0] == 0).all()
    no_seeds = segment_prediction(prediction, SegmentConfig(seed_threshold=None, min_size=5))
    assert no_seeds.max() == 1


def test_segment_prediction_falls_back_to_the_embedding_without_heads():
    embeddings = np.zeros((2, 30, 30), dtype=np.float32)
    embeddings[0, 5:15, 5:15] = 6.0
    embeddings[1, 18:27, 18:27] = 6.0
    instances = segment_prediction(Prediction(embeddings), SegmentConfig(min_size=5))
    assert instances.max() == 2


def test_predict_splits_the_heads_and_keeps_the_image_size():
    config = ModelConfig(depth=2, base_features=8, foreground_head=True, distance_head=True)
    torch.manual_seed(0)
    model = build_model(config).eval()
    image = np.random.default_rng(0).random((37, 45)).astype(np.float32)
    prediction = predict(model, image, loss=LossConfig(delta_d=3.0), object_scale=0.5)
    assert prediction.embeddings.shape == (16, 37, 45)
    assert prediction.foreground.shape == prediction.distance.shape == (37, 45)
    assert 0 <= prediction.foreground.min() and prediction.foreground.max() <= 1
    assert prediction.delta_d == 3.0
    plain = predict(build_model(ModelConfig(depth=2, base_features=8)), image)
    assert plain.foreground is None and plain.distance is None


def test_segment_config_rejects_bad_values():
    with pytest.raises(ValueError, match="method"):
        SegmentConfig(method="kmeans")
    with pytest.raises(ValueError, match="foreground_threshold"):
        SegmentConfig(foreground_threshold=1.5)
    with pytest.raises(ValueError, match="foreground"):
        SegmentConfig(foreground="magic")
