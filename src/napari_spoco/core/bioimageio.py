"""Share models in the bioimage.io model format, and read them back for fine-tuning.

:func:`export_bioimageio` writes a bioimage.io package (a zip): the weights as
a PyTorch state dict, the architecture as :func:`spoco_network` of this
package with the network's settings as keyword arguments, the normalisation
as ``scale_range`` preprocessing (percentiles 1 and 99.8 per channel, as in
training), a test input/output pair cut from an image of the user's, and the
full training configuration under ``config["napari-spoco"]``. The package is
then checked with bioimageio.core's own ``test_model``, which validates the
description and re-runs the test input through bioimage.io's pipeline to
reproduce our output. :func:`import_bioimageio` turns such a package back
into a :class:`~napari_spoco.core.checkpoint.Checkpoint`, so fine-tuning
starts from it like from a model file.

The network reads images resized by the model's ``object_scale``; bioimage.io
has no resize step, so other tools must resize inputs by that factor (it is
in the package's description and config). bioimageio libraries load lazily.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from .checkpoint import Checkpoint, load_checkpoint, network_from_checkpoint
from .config import ModelConfig, config_from_dict
from .image import prepare_image, rescale_spatial
from .io import atomic_output
from .model import EmbeddingUNet, build_model
from .tiling import predict_embeddings

__all__ = [
    "CONFIG_KEY",
    "export_bioimageio",
    "import_bioimageio",
    "load_checkpoint_or_package",
    "spoco_network",
    "validate_bioimageio",
]

#: Key of our settings in a package's ``config``.
CONFIG_KEY = "napari-spoco"
_TEST_SHAPE = {2: (256, 256), 3: (32, 128, 128)}
_AXES = {2: "yx", 3: "zyx"}


def spoco_network(**settings: Any) -> EmbeddingUNet:
    """Build the embedding U-Net from :class:`ModelConfig` fields (the packages' architecture).

    Examples
    --------
    >>> spoco_network(depth=2, base_features=8).config.depth
    2
    """
    return build_model(ModelConfig(**settings))


def load_checkpoint_or_package(path: str | os.PathLike) -> Checkpoint:
    """Read a napari-spoco model file or a bioimage.io package (zip, rdf.yaml, folder).

    Which one it is comes from the content, not the name: a model file renamed
    ``.pth`` or ``.PT`` still opens as one.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if _is_torch_file(path):
        return load_checkpoint(path)
    return import_bioimageio(path)


def _is_torch_file(path: Path) -> bool:
    """Whether ``path`` is a ``torch.save`` file rather than a bioimage.io package.

    ``torch.save`` writes a zip holding ``<name>/data.pkl``; a package is a
    folder, a YAML description or a zip holding one. Any other file goes to
    the model file reader, whose message says it is not a model.
    """
    if path.is_dir() or path.suffix.lower() in (".yaml", ".yml"):
        return False
    if not zipfile.is_zipfile(path):
        return True
    with zipfile.ZipFile(path) as archive:
        return any(name.rpartition("/")[2] == "data.pkl" for name in archive.namelist())


def export_bioimageio(
    model: Checkpoint | str | os.PathLike,
    out: str | os.PathLike,
    *,
    test_image: ArrayLike,
    channel_axis: int | None = None,
    name: str = "napari-spoco embedding model",
    description: str | None = None,
    authors: Sequence[str] = ("napari-spoco user",),
    license: str = "CC-BY-4.0",
    validate: bool = True,
) -> Path:
    """Write ``model`` as a bioimage.io package (zip) at ``out``, atomically.

    Parameters
    ----------
    model : Checkpoint or path
        A napari-spoco model.
    out : path
        The package to write, conventionally ``*.zip``.
    test_image : array_like
        Raw image (as the model would be applied to) from which the test
        input is cut (at most 256×256 or 32×128×128 pixels, from the centre).
    channel_axis : int, optional
        Channel axis of ``test_image``.
    name, description, authors, license :
        Package metadata; ``license`` is an SPDX identifier.
    validate : bool
        Run bioimageio.core's ``test_model`` on the written package and
        raise if it fails (the file is then not kept).

    Raises
    ------
    ValueError
        If the test image does not fit the model or validation fails.
    """
    checkpoint = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    network = network_from_checkpoint(checkpoint)
    test_input = _test_input(checkpoint, test_image, channel_axis)
    normalized = prepare_image(test_input, spatial_dims=network.config.spatial_dims, channel_axis=0)
    test_output = predict_embeddings(network, normalized, tile_shape=test_input.shape[1:])
    out = Path(out)
    with tempfile.TemporaryDirectory() as folder, atomic_output(out) as temporary:
        descr = _describe(checkpoint, Path(folder), test_input, test_output, name, description,
                          authors, license)  # fmt: skip
        from bioimageio.spec import save_bioimageio_package

        save_bioimageio_package(descr, output_path=temporary)
        if validate:
            validate_bioimageio(temporary)
    return out


def validate_bioimageio(source: str | os.PathLike) -> None:
    """Validate a package with bioimageio.core (format, loading, reproducing test outputs).

    Raises
    ------
    ValueError
        With the first failed check, if the package does not pass.
    """
    from bioimageio.core import test_model

    summary = test_model(Path(source))
    if summary.status not in ("passed", "valid-format"):
        errors = [f"{e.loc}: {e.msg}" for d in summary.details for e in d.errors]
        reason = errors[0] if errors else summary.status
        raise ValueError(f"bioimage.io validation failed: {' '.join(str(reason).split())[:300]}")


def import_bioimageio(source: str | os.PathLike) -> Checkpoint:
    """Read a bioimage.io package written by :func:`export_bioimageio` as a checkpoint.

    Only packages of napari-spoco models can be imported: training needs our
    architecture and settings. The weights load with ``weights_only=True``.

    Raises
    ------
    ValueError
        If ``source`` is not a valid bioimage.io model or not a napari-spoco one.
    """
    from bioimageio.spec import InvalidDescr, load_model_description
    from bioimageio.spec.utils import get_reader

    descr = load_model_description(Path(source), perform_io_checks=False)
    if isinstance(descr, InvalidDescr):
        raise ValueError(f"{source} is not a valid bioimage.io model")
    settings = (descr.config.model_extra or {}).get(CONFIG_KEY)
    weights = descr.weights.pytorch_state_dict
    if settings is None or weights is None or weights.architecture.callable != "spoco_network":
        raise ValueError(
            f"{source} is a bioimage.io model, but not a napari-spoco one (no {CONFIG_KEY} config)"
        )
    if str(weights.source).startswith(("http://", "https://")):
        raise ValueError(
            f"{source} refers to weights at {weights.source}; napari-spoco opens only "
            "packages that hold their weights (download the package's zip)"
        )
    try:
        buffer = io.BytesIO(get_reader(weights).read())
        state = torch.load(buffer, map_location="cpu", weights_only=True)
        config = config_from_dict(settings["train_config"])
        build_model(config.model).load_state_dict(state)
    except (KeyError, TypeError, RuntimeError, OSError) as error:
        raise ValueError(
            f"{source} holds damaged napari-spoco settings or weights: {error}"
        ) from error
    return Checkpoint(
        config=config,
        model_state=state,
        step=int(settings.get("step", 0)),
        history=list(settings.get("history", [])),
        normalization=dict(settings.get("normalization", {})),
    )


def _test_input(
    checkpoint: Checkpoint, image: ArrayLike, channel_axis: int | None
) -> NDArray[np.float32]:
    """Raw (C, *spatial) crop, resized by the training scale, a multiple of the size divisor."""
    config = checkpoint.config.model
    image = np.asarray(image)
    channels = 1 if channel_axis is None else image.shape[channel_axis]
    dims = image.ndim - (channel_axis is not None)
    config.check_reads(dims, channels, what=f"the test image (shape {image.shape})")
    image = image[np.newaxis] if channel_axis is None else np.moveaxis(image, channel_axis, 0)
    scaled = rescale_spatial(
        image.astype(np.float32), checkpoint.config.object_scale, order=1, channel_first=True
    )
    crop = []
    for size, limit, divisor in zip(
        scaled.shape[1:], _TEST_SHAPE[config.spatial_dims], config.size_divisor, strict=True
    ):
        length = min(size, limit) // divisor * divisor
        if length == 0:
            raise ValueError(f"test image is too small: {size} < {divisor} pixels on an axis")
        start = (size - length) // 2
        crop.append(slice(start, start + length))
    return np.ascontiguousarray(scaled[(slice(None), *crop)])


def _describe(
    checkpoint: Checkpoint,
    folder: Path,
    test_input: NDArray,
    test_output: NDArray,
    name: str,
    description: str | None,
    authors: Sequence[str],
    license: str,
) -> Any:
    """Build the bioimage.io model description; its files go to ``folder``."""
    import bioimageio.spec.model.v0_5 as v05

    config = checkpoint.config
    model = config.model
    axes = _AXES[model.spatial_dims]
    np.save(folder / "test_input.npy", test_input[np.newaxis])
    np.save(folder / "test_output.npy", test_output[np.newaxis])
    torch.save(checkpoint.model_state, folder / "weights.pt")
    (folder / "environment.yaml").write_text(
        "name: napari-spoco\nchannels: [conda-forge]\ndependencies:\n"
        f"  - python>=3.10\n  - pytorch>={torch.__version__.split('+')[0]}\n  - pip\n"
        "  - pip: [napari-spoco]\n",
        encoding="utf-8",
    )
    scale_note = (
        f"Resize inputs in Y and X by {config.object_scale:g} before prediction (the training "
        "scale, config.napari-spoco.train_config.object_scale)."
    )
    (folder / "README.md").write_text(
        f"# {name}\n\nA SPOCO pixel-embedding U-Net trained with napari-spoco from sparse "
        "annotations. Output channels 0-"
        f"{model.embedding_dim - 1} are the pixel embedding; cluster them into instances "
        f"with napari-spoco. {scale_note}\n\n# Validation\n\nThe test output was computed by "
        "napari-spoco and is reproduced by bioimageio.core's `test_model`. Check the "
        "segmentation of new data visually or against a few annotated objects.\n",
        encoding="utf-8",
    )
    spatial_in = [
        v05.SpaceInputAxis(id=v05.AxisId(a), size=v05.ParameterizedSize(min=d, step=d))
        for a, d in zip(axes, model.size_divisor, strict=True)
    ]
    spatial_out = [
        v05.SpaceOutputAxis(
            id=v05.AxisId(a), size=v05.SizeReference(tensor_id=v05.TensorId("raw"), axis_id=a)
        )
        for a in axes
    ]
    channel_names = [f"embedding{i}" for i in range(model.embedding_dim)]
    channel_names += [f"{head}_logit" for head in model.heads]
    preprocessing = [
        v05.EnsureDtypeDescr(kwargs=v05.EnsureDtypeKwargs(dtype="float32")),
        v05.ScaleRangeDescr(
            kwargs=v05.ScaleRangeKwargs(
                axes=[v05.AxisId(a) for a in axes],
                min_percentile=float(checkpoint.normalization.get("low", 1.0)),
                max_percentile=float(checkpoint.normalization.get("high", 99.8)),
            )
        ),
    ]
    return v05.ModelDescr(
        name=name,
        description=description or f"SPOCO embedding network (napari-spoco). {scale_note}",
        authors=[v05.Author(name=author) for author in authors],
        cite=[
            v05.CiteEntry(
                text="Wolny et al., Sparse Object-level Supervision for Instance Segmentation "
                "with Pixel Embeddings, CVPR 2022",
                doi=v05.Doi("10.1109/CVPR52688.2022.00439"),
            )
        ],
        license=license,
        documentation=v05.FileDescr(source=folder / "README.md"),
        tags=["instance-segmentation", "pixel-embedding", "spoco", "napari-spoco"],
        inputs=[
            v05.InputTensorDescr(
                id=v05.TensorId("raw"),
                axes=[
                    v05.BatchAxis(),
                    v05.ChannelAxis(
                        channel_names=[f"channel{i}" for i in range(model.in_channels)]
                    ),
                    *spatial_in,
                ],
                test_tensor=v05.FileDescr(source=folder / "test_input.npy"),
                data=v05.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=preprocessing,
            )
        ],
        outputs=[
            v05.OutputTensorDescr(
                id=v05.TensorId("embeddings"),
                axes=[v05.BatchAxis(), v05.ChannelAxis(channel_names=channel_names), *spatial_out],
                test_tensor=v05.FileDescr(source=folder / "test_output.npy"),
                data=v05.IntervalOrRatioDataDescr(type="float32"),
            )
        ],
        weights=v05.WeightsDescr(
            pytorch_state_dict=v05.PytorchStateDictWeightsDescr(
                source=folder / "weights.pt",
                architecture=v05.ArchitectureFromLibraryDescr(
                    callable="spoco_network",
                    import_from="napari_spoco.core.bioimageio",
                    kwargs=_plain(config.to_dict()["model"]),
                ),
                pytorch_version=v05.Version(torch.__version__.split("+")[0]),
                dependencies=v05.FileDescr(source=folder / "environment.yaml"),
            )
        ),
        config={
            CONFIG_KEY: {
                "train_config": _plain(config.to_dict()),
                "normalization": _plain(checkpoint.normalization),
                "step": checkpoint.step,
                "history": _plain(checkpoint.history),
            }
        },
    )


def _plain(value: Any) -> Any:
    """Tuples to lists (YAML), recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
