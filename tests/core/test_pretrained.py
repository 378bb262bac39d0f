"""The built-in nuclei generalist: loading by name, zero-shot quality, and fine-tuning from it.

The bundled sample is a crop of the one DSB image the generalist was never
trained on (``split: excluded``), so these scores are honest.
"""

import pytest

from napari_spoco.core.annotation import keep_fraction_of_objects, median_object_diameter
from napari_spoco.core.config import TrainConfig
from napari_spoco.core.metrics import average_precision
from napari_spoco.core.model import build_model
from napari_spoco.core.prediction import augment_or_default, predict
from napari_spoco.core.pretrained import (
    BUILTIN_MODELS,
    builtin_model_path,
    default_start_model,
    load_model_source,
)
from napari_spoco.core.sample_data import load_nuclei_2d
from napari_spoco.core.segmentation import (
    estimate_object_diameter,
    prediction_scale,
    segment_prediction,
)
from napari_spoco.core.training import Trainer


@pytest.fixture(scope="module")
def generalist():
    checkpoint = load_model_source("nuclei")
    network = build_model(checkpoint.config.model)
    network.load_state_dict(checkpoint.model_state)
    return checkpoint, network.eval()


@pytest.fixture(scope="module")
def sample():
    return load_nuclei_2d()


def _score(network, config, image, truth, scale):
    """AP@0.5 as Segment gets it: in 2D, averaged over the eight orientations."""
    augment = augment_or_default(None, spatial_dims=2)
    prediction = predict(network, image, loss=config.loss, object_scale=scale, augment=augment)
    return average_precision(truth, segment_prediction(prediction), threshold=0.5)


def test_every_builtin_model_ships_with_its_card_and_loads_by_name(tmp_path, monkeypatch):
    for model in BUILTIN_MODELS.values():
        path = builtin_model_path(model.name)
        assert path.is_file() and path.with_name(model.card).is_file()
        assert path.stat().st_size < 10e6
        checkpoint = load_model_source(model.name)
        assert checkpoint.config.scale_per_image and checkpoint.optimizer_state is None
        assert (checkpoint.config.model.spatial_dims, checkpoint.config.model.in_channels) == (
            model.spatial_dims,
            model.in_channels,
        )
    assert default_start_model(2, 1) == "nuclei" and default_start_model(3, 1) is None
    # A file of the same name in the working folder wins over the built-in name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nuclei").write_text("not a model")
    with pytest.raises(ValueError):
        load_model_source("nuclei")


def test_the_generalist_measures_object_size_and_segments_the_sample_zero_shot(generalist, sample):
    checkpoint, network = generalist
    image, truth = sample
    true_diameter = median_object_diameter(truth)
    measured = estimate_object_diameter(network, image, loss=checkpoint.config.loss)
    assert measured == pytest.approx(true_diameter, rel=0.15)  # 1.00 measured
    scale = prediction_scale(network, checkpoint.config, image)
    # The target: 0.750 measured with the eight orientations averaged (0.693 before
    # the foreground head was moved to the threshold chosen on DSB val; the model card).
    assert _score(network, checkpoint.config, image, truth, scale) >= 0.7
    # Painted objects set the scale instead of the measurement.
    painted = keep_fraction_of_objects(truth, 0.1, seed=0)
    from_paint = prediction_scale(network, checkpoint.config, image, annotations=[painted])
    assert from_paint == pytest.approx(24 / median_object_diameter(painted))
    # A model with its own scale keeps it.
    own = TrainConfig(model=checkpoint.config.model, object_scale=0.7)
    assert prediction_scale(network, own, image) == 0.7


@pytest.mark.parametrize("zoom", [0.5, 3.0])
def test_the_measured_size_follows_the_objects_when_they_are_far_from_the_reference(
    generalist, sample, zoom
):
    """Nuclei of ~70 px are not measured as the ~24 px pieces a network cuts them into."""
    from scipy import ndimage

    checkpoint, network = generalist
    image, truth = sample
    resized = ndimage.zoom(image, zoom, order=1)
    measured = estimate_object_diameter(network, resized, loss=checkpoint.config.loss)
    assert measured == pytest.approx(zoom * median_object_diameter(truth), rel=0.35)


def test_fine_tuning_on_a_tenth_of_the_nuclei_does_not_fall_below_zero_shot(generalist, sample):
    checkpoint, network = generalist
    image, truth = sample
    zero_shot = _score(
        network,
        checkpoint.config,
        image,
        truth,
        prediction_scale(network, checkpoint.config, image),
    )
    painted = keep_fraction_of_objects(truth, 0.1, seed=0)
    scale = prediction_scale(network, checkpoint.config, image, annotations=[painted])
    config = TrainConfig(
        model=checkpoint.config.model, iterations=30, batch_size=4, patch_shape=(128, 128),
        object_scale=scale, seed=0,
    )  # fmt: skip
    trainer = Trainer(config, device="cpu", checkpoint=checkpoint)
    trainer.set_data([image], [painted])
    trainer.run()
    tuned = trainer.model.eval()
    # Fixed seeds make this deterministic on one machine; the margin covers other CPUs' rounding.
    assert _score(tuned, trainer.config, image, truth, scale) >= zero_shot - 0.02
