import json
import pickle

import numpy as np
import pytest
import tifffile
import zarr

from napari_spoco.core.io import (
    atomic_output,
    expand_paths,
    image_name,
    open_image,
    open_prediction,
    read_image,
    write_csv,
    write_json,
    write_prediction,
    write_tiff,
)
from napari_spoco.core.prediction import Prediction


def test_expand_paths_lists_folders_sorted_and_keeps_zarr_folders_whole(tmp_path):
    for name in ("b.tif", "a.tiff", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    zarr.create_array(tmp_path / "c.zarr", shape=(2, 2), dtype="uint8")
    assert [p.name for p in expand_paths([tmp_path])] == ["a.tiff", "b.tif", "c.zarr"]
    assert expand_paths([tmp_path / "c.zarr"]) == [tmp_path / "c.zarr"]
    with pytest.raises(FileNotFoundError, match="missing"):
        expand_paths([tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        expand_paths([empty])


def test_image_name_drops_image_suffixes():
    assert [image_name(n) for n in ("C.tif", "C.ome.tif", "x/C.ome.zarr", "C.zarr")] == ["C"] * 4


@pytest.mark.parametrize("layout", ["strips", "tiles", "compressed"])
def test_tiff_is_read_lazily_by_region(tmp_path, layout):
    image = np.arange(300 * 200, dtype=np.uint16).reshape(300, 200)
    options = {"tiles": {"tile": (64, 64)}, "compressed": {"compression": "zlib"}}
    tifffile.imwrite(tmp_path / "a.tif", image, **options.get(layout, {}))
    lazy = open_image(tmp_path / "a.tif")
    assert lazy.shape == (300, 200) and lazy.dtype == np.uint16 and lazy.axes is None
    np.testing.assert_array_equal(lazy[10:50, 100:], image[10:50, 100:])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(lazy))[5], image[5])
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), image)


def test_zarr_array_group_and_ome_zarr(tmp_path):
    image = np.random.default_rng(0).integers(0, 100, (1, 2, 30, 40)).astype(np.uint8)
    array = zarr.create_array(tmp_path / "plain.zarr", shape=(30, 40), dtype="uint8")
    array[...] = image[0, 0]
    np.testing.assert_array_equal(read_image(tmp_path / "plain.zarr"), image[0, 0])
    group = zarr.open_group(tmp_path / "group.zarr", mode="w")
    group.create_array("raw", shape=(30, 40), dtype="uint8")[...] = image[0, 1]
    np.testing.assert_array_equal(read_image(tmp_path / "group.zarr"), image[0, 1])
    ome = zarr.open_group(tmp_path / "image.ome.zarr", mode="w")
    ome.attrs["multiscales"] = [
        {"axes": [{"name": n} for n in "tcyx"], "datasets": [{"path": "0"}, {"path": "1"}]}
    ]
    ome.create_array("0", shape=image.shape, chunks=(1, 1, 16, 16), dtype="uint8")[...] = image
    ome.create_array("1", shape=(1, 2, 15, 20), dtype="uint8")
    lazy = open_image(tmp_path / "image.ome.zarr")
    assert lazy.shape == (2, 30, 40) and lazy.axes == "cyx"  # singleton t dropped
    np.testing.assert_array_equal(lazy[1, 3:9], image[0, 1, 3:9])
    np.testing.assert_array_equal(np.asarray(lazy), image[0])


def test_unreadable_files_raise_one_value_error_naming_them(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match="broken.tif"):
        read_image(tmp_path / "broken.tif")
    group = zarr.open_group(tmp_path / "two.zarr", mode="w")
    group.create_array("a", shape=(2,), dtype="uint8")
    group.create_array("b", shape=(2,), dtype="uint8")
    with pytest.raises(ValueError, match="2 arrays"):
        open_image(tmp_path / "two.zarr")
    with pytest.raises(FileNotFoundError):
        open_image(tmp_path / "nothing.tif")


def test_atomic_output_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "result.tif"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as temporary:
        temporary.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.tif"]
    with atomic_output(tmp_path / "folder.zarr") as temporary:
        temporary.mkdir()
        (temporary / "chunk").write_bytes(b"x")
    assert (tmp_path / "folder.zarr" / "chunk").read_bytes() == b"x"


def test_writers_round_trip(tmp_path):
    write_tiff(tmp_path / "a.tif", np.arange(6, dtype=np.uint32).reshape(2, 3))
    assert tifffile.imread(tmp_path / "a.tif").dtype == np.uint32
    write_json(tmp_path / "a.json", [{"step": 1}])
    assert json.loads((tmp_path / "a.json").read_text()) == [{"step": 1}]
    write_csv(tmp_path / "a.csv", [{"step": 1, "loss": 0.5}, {"step": 2, "other": 3}])
    assert (tmp_path / "a.csv").read_text().splitlines() == ["step,loss,other", "1,0.5,", "2,,3"]


def test_prediction_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    prediction = Prediction(
        rng.random((16, 20, 30), dtype=np.float32),
        distance=rng.random((20, 30), dtype=np.float32),
        delta_v=0.4,
        delta_d=1.5,
    )
    write_prediction(tmp_path / "p.zarr", prediction, chunks=(8, 8))
    array = open_prediction(tmp_path / "p.zarr")
    assert array.shape == (17, 20, 30) and array.chunks == (17, 8, 8)
    from napari_spoco.core.io import prediction_from_array

    back = prediction_from_array(array[...], dict(array.attrs))
    np.testing.assert_array_equal(back.embeddings, prediction.embeddings)
    np.testing.assert_array_equal(back.distance, prediction.distance)
    assert back.foreground is None and (back.delta_v, back.delta_d) == (0.4, 1.5)
    zarr.create_array(tmp_path / "other.zarr", shape=(2,), dtype="uint8")
    with pytest.raises(ValueError, match="not a napari-spoco prediction"):
        open_prediction(tmp_path / "other.zarr")


def test_outputs_replace_only_earlier_outputs_of_the_same_kind(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=f"{folder} is a folder that napari-spoco did not write"):
        write_csv(folder, [{"a": 1}])
    with pytest.raises(ValueError, match="did not write"), atomic_output(folder) as temporary:
        temporary.mkdir()
    foreign = zarr.create_array(tmp_path / "foreign.zarr", shape=(2,), dtype="uint8")
    with pytest.raises(ValueError, match="foreign.zarr is a folder"):
        write_prediction(foreign.store.root, Prediction(np.zeros((2, 4, 4), np.float32)))
    assert (folder / "keep.txt").read_text() == "mine" and (tmp_path / "foreign.zarr").is_dir()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    ours = tmp_path / "p.zarr"
    write_prediction(ours, Prediction(np.zeros((2, 4, 4), np.float32)))
    write_prediction(ours, Prediction(np.ones((3, 4, 4), np.float32)))  # a result replaces one
    assert open_prediction(ours).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="p.zarr is a zarr folder; it is not replaced by a file"):
        write_tiff(ours, np.zeros((2, 2)))
    write_tiff(tmp_path / "a.tif", np.zeros((2, 2)))
    write_tiff(tmp_path / "a.tif", np.ones((2, 2)))  # a file replaces a file
    with pytest.raises(ValueError, match="a.tif is a file; it is not replaced by a zarr"):
        write_prediction(tmp_path / "a.tif", Prediction(np.zeros((2, 4, 4), np.float32)))
    assert tifffile.imread(tmp_path / "a.tif").max() == 1


def test_expand_paths_can_skip_results_of_predict(tmp_path, caplog):
    for name in ("C.tif", "C_instances.tif", "D_instances.TIF"):
        (tmp_path / name).write_bytes(b"")
    zarr.create_array(tmp_path / "C_embeddings.zarr", shape=(2,), dtype="uint8")
    zarr.create_array(tmp_path / "C_instances.zarr", shape=(2,), dtype="uint8")
    assert len(expand_paths([tmp_path])) == 5  # other callers (segment, evaluate) see all
    with caplog.at_level("INFO", logger="napari_spoco.core.io"):
        assert expand_paths([tmp_path], skip_outputs=True) == [tmp_path / "C.tif"]
    assert "skipping 4 earlier result(s)" in caplog.text and "C_instances.zarr" in caplog.text
    named = tmp_path / "C_instances.tif"
    assert expand_paths([named], skip_outputs=True) == [named]  # asked for by name
    (tmp_path / "C.tif").unlink()
    with pytest.raises(ValueError, match="holds no image.*skipped 4 earlier result"):
        expand_paths([tmp_path], skip_outputs=True)


def test_a_save_removes_stale_temporaries_of_its_target_and_writes_a_normal_mode(tmp_path):
    import os
    import stat
    import time

    hour_ago = time.time() - 3600
    stale_file, stale_folder = tmp_path / ".a.tif.abcd1234.tmp", tmp_path / ".a.tif.x_y9zz00.tmp"
    stale_file.write_bytes(b"killed")
    (stale_folder / "a.tif").mkdir(parents=True)
    fresh = tmp_path / ".a.tif.fresh000.tmp"  # perhaps a save still running elsewhere
    fresh.write_bytes(b"")
    others = [tmp_path / ".b.tif.abcd1234.tmp", tmp_path / ".a.tif.notours.tmp", tmp_path / "a.tmp"]
    for path in others:
        path.write_bytes(b"")
    for path in (stale_file, stale_folder, stale_folder / "a.tif", *others):
        os.utime(path, (hour_ago, hour_ago))

    with atomic_output(tmp_path / "a.tif") as temporary:  # a writer like mkstemp: mode 0600
        os.close(os.open(temporary, os.O_CREAT | os.O_WRONLY, 0o600))
    assert not stale_file.exists() and not stale_folder.exists()
    assert fresh.exists() and all(path.exists() for path in others)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.tif").stat().st_mode) == 0o666 & ~umask  # 0644 usually
