"""bioimage.io round trip: export, validate with bioimageio.core, reproduce, import."""

import numpy as np
import pytest
import torch

from napari_spoco.core.bioimageio import (
    export_bioimageio,
    import_bioimageio,
    load_checkpoint_or_package,
)
from napari_spoco.core.checkpoint import Checkpoint, save_checkpoint
from napari_spoco.core.config import ModelConfig, TrainConfig
from napari_spoco.core.image import prepare_image
from napari_spoco.core.model import build_model
from napari_spoco.core.tiling import predict_embeddings

pytest.importorskip("bioimageio.core")


@pytest.fixture(scope="module")
def checkpoint():
    torch.manual_seed(0)
    config = TrainConfig(
        model=ModelConfig(depth=2, base_features=8, foreground_head=True),
        patch_shape=(64, 64),
        object_scale=1.0,
    )
    model = build_model(config.model)
    return Checkpoint(
        config=config,
        model_state=model.state_dict(),
        step=7,
        history=[{"step": 7, "loss_total": 1.0}],
    )


def test_export_validates_reproduces_and_imports(checkpoint, blobs, tmp_path):
    from bioimageio.core import load_model_description, predict, test_model

    image = np.tile(blobs[0], (1, 2))  # 96 x 192
    package = export_bioimageio(checkpoint, tmp_path / "model.zip", test_image=image)
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]
    assert test_model(package).status == "passed"  # the library's own validator

    # bioimage.io's pipeline (its own normalisation) reproduces our prediction.
    descr = load_model_description(package)
    sample = predict(model=descr, inputs={"raw": image[np.newaxis, np.newaxis].astype("float32")})
    theirs = sample.members["embeddings"].data.values[0]
    network = build_model(checkpoint.config.model)
    network.load_state_dict(checkpoint.model_state)
    ours = predict_embeddings(network.eval(), prepare_image(image, spatial_dims=2))
    np.testing.assert_allclose(theirs, ours, atol=1e-4)

    back = import_bioimageio(package)
    assert back.config == checkpoint.config and back.step == 7
    assert back.history == checkpoint.history
    for key, value in checkpoint.model_state.items():
        torch.testing.assert_close(back.model_state[key], value)
    assert load_checkpoint_or_package(package).config == checkpoint.config


def test_export_refuses_a_test_image_that_does_not_fit(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="channel"):
        export_bioimageio(
            checkpoint, tmp_path / "m.zip", test_image=np.zeros((3, 32, 32)), channel_axis=0
        )
    with pytest.raises(ValueError, match="is 1-channel 3D"):
        export_bioimageio(checkpoint, tmp_path / "m.zip", test_image=np.zeros((4, 32, 32)))
    assert not list(tmp_path.iterdir())


def test_import_refuses_files_that_are_not_napari_spoco_packages(checkpoint, tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"no zip")
    with pytest.raises(ValueError):
        import_bioimageio(tmp_path / "junk.zip")
    save_checkpoint(tmp_path / "model.pt", checkpoint)
    assert load_checkpoint_or_package(tmp_path / "model.pt").step == 7


def test_import_explains_a_package_whose_weights_are_a_url(checkpoint, blobs, tmp_path):
    import zipfile

    import yaml

    package = export_bioimageio(checkpoint, tmp_path / "m.zip", test_image=blobs[0], validate=False)
    folder = tmp_path / "unpacked"
    zipfile.ZipFile(package).extractall(folder)
    description = next(folder.glob("*.yaml"))
    rdf = yaml.safe_load(description.read_text())
    rdf["weights"]["pytorch_state_dict"]["source"] = "https://example.org/weights.pt"
    description.write_text(yaml.safe_dump(rdf))
    with pytest.raises(ValueError, match="refers to weights at https://example.org/weights.pt"):
        load_checkpoint_or_package(description)
