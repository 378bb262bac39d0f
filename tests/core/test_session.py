import json

import numpy as np
import pytest

from napari_spoco.core.config import ModelConfig, TrainConfig
from napari_spoco.core.session import SessionPair, load_session, save_session, update_session
from napari_spoco.core.training import Trainer


def _contents():
    image = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    annotation = np.zeros((20, 30), dtype=np.uint32)
    annotation[2:6, 3:9] = 1
    annotation[0, :] = 5
    pairs = [SessionPair("cells/1", "cells/1 annotation", "YX", background_id=5)]
    return pairs, {"cells/1": image}, {"cells/1 annotation": annotation}


def test_round_trip_with_model_and_odd_layer_names(tmp_path):
    pairs, images, annotations = _contents()
    trainer = Trainer(TrainConfig(model=ModelConfig(depth=2, base_features=8)), device="cpu")
    folder = save_session(
        tmp_path / "s", pairs, images, annotations, checkpoint=trainer.checkpoint()
    )
    session = load_session(folder)
    assert session.pairs == pairs
    np.testing.assert_array_equal(session.images["cells/1"], images["cells/1"])
    np.testing.assert_array_equal(
        session.annotations["cells/1 annotation"], annotations["cells/1 annotation"]
    )
    assert session.checkpoint.config.model.depth == 2


def test_images_with_a_file_are_referenced_not_copied(tmp_path):
    import tifffile

    pairs, images, annotations = _contents()
    source = tmp_path / "raw.tif"
    tifffile.imwrite(source, images["cells/1"])
    pairs = [SessionPair("cells/1", "cells/1 annotation", "YX", image_source=str(source))]
    folder = save_session(tmp_path / "s", pairs, {}, annotations)
    assert not (folder / "images").exists()
    np.testing.assert_array_equal(load_session(folder).images["cells/1"], images["cells/1"])
    source.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_session(folder)


def test_saving_over_a_session_replaces_it_but_not_a_foreign_folder(tmp_path):
    pairs, images, annotations = _contents()
    folder = save_session(tmp_path / "s", pairs, images, annotations)
    annotations["cells/1 annotation"][10, 10] = 2
    save_session(folder, pairs, images, annotations)
    assert load_session(folder).annotations["cells/1 annotation"][10, 10] == 2
    assert not list(tmp_path.glob(".s.*"))  # no staging or retired folders left
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_text("x")
    with pytest.raises(ValueError, match="not a napari-spoco session"):
        save_session(foreign, pairs, images, annotations)
    assert (foreign / "holiday.jpg").exists()


def test_update_session_rewrites_annotations_and_keeps_images_and_model(tmp_path):
    pairs, images, annotations = _contents()
    trainer = Trainer(TrainConfig(model=ModelConfig(depth=2, base_features=8)), device="cpu")
    folder = save_session(
        tmp_path / "s", pairs, images, annotations, checkpoint=trainer.checkpoint()
    )
    image_file = (
        folder / json.loads((folder / "session.json").read_text())["pairs"][0]["image_file"]
    )
    written = image_file.stat().st_mtime_ns
    annotations["cells/1 annotation"][15, 15] = 3
    update_session(folder, pairs, images, annotations)
    session = load_session(folder)
    assert session.annotations["cells/1 annotation"][15, 15] == 3
    assert image_file.stat().st_mtime_ns == written and session.checkpoint is not None


def test_not_a_session(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a napari-spoco session"):
        load_session(tmp_path)
    (tmp_path / "session.json").write_text("{broken")
    with pytest.raises(ValueError, match="damaged"):
        load_session(tmp_path)
    pairs, images, annotations = _contents()
    with pytest.raises(ValueError, match="no data"):
        save_session(tmp_path / "x", pairs, images, {})


def test_saving_into_a_session_replaces_only_its_own_files(tmp_path):
    import os
    import stat

    import tifffile

    pairs, images, annotations = _contents()
    folder = save_session(tmp_path / "s", pairs, images, annotations)
    stored_image = folder / "images" / "cells_1.tif"
    assert stored_image.exists()
    raw = folder / "raw.tif"  # the user keeps the raw image inside the session folder
    tifffile.imwrite(raw, images["cells/1"])
    (folder / "notes.txt").write_text("mine")
    (folder / "annotations" / "renamed.tif").write_text("not a session file")
    pairs = [SessionPair("cells/1", "renamed", "YX", image_source=str(raw))]
    save_session(folder, pairs, {}, {"renamed": annotations["cells/1 annotation"]})

    session = load_session(folder)
    np.testing.assert_array_equal(session.images["cells/1"], images["cells/1"])
    assert raw.exists() and (folder / "notes.txt").read_text() == "mine"
    assert (folder / "annotations" / "renamed.tif").read_text() == "not a session file"
    manifest = json.loads((folder / "session.json").read_text())
    assert manifest["pairs"][0]["annotation_file"] == "annotations/renamed-2.tif"
    assert not stored_image.exists()  # the session's own files it no longer lists are removed
    assert not (folder / "annotations" / "cells_1_annotation.tif").exists()
    assert not [p for p in folder.rglob(".*")] and not list(tmp_path.glob(".s.*"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((folder / "session.json").stat().st_mode) == 0o666 & ~umask


def test_a_session_left_as_old_by_an_interrupted_swap_is_recovered(tmp_path):
    pairs, images, annotations = _contents()
    folder = save_session(tmp_path / "s", pairs, images, annotations)
    (folder / "notes.txt").write_text("mine")
    # An older save crashed between its two renames: s → .s.old done, staging → s not.
    folder.rename(tmp_path / ".s.old")
    (tmp_path / ".s.abcd1234.tmp").mkdir()
    session = load_session(folder)
    assert session.pairs == pairs and (folder / "notes.txt").read_text() == "mine"
    assert not (tmp_path / ".s.old").exists()

    folder.rename(tmp_path / ".s.old")
    annotations["cells/1 annotation"][10, 10] = 2
    save_session(folder, pairs, images, annotations)  # saving recovers it too, then saves into it
    assert (folder / "notes.txt").read_text() == "mine"
    assert load_session(folder).annotations["cells/1 annotation"][10, 10] == 2
