"""``predict`` and ``segment``: embeddings and instances of whole images or block by block."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._inputs import check_fits, spatial_shape_of

logger = logging.getLogger("napari_spoco")


def predict(args: argparse.Namespace) -> None:
    """``predict``: model + images → ``NAME_instances`` (and ``NAME_embeddings.zarr``)."""
    from ..core.annotation import object_scale_from_annotations
    from ..core.io import expand_paths, image_name, open_image, read_resolution
    from ..core.pretrained import load_model_source

    checkpoint = load_model_source(args.model)
    config = checkpoint.config
    segment_config = _segment_config(args)
    if _needs_teacher(segment_config) and checkpoint.teacher_state is None:
        raise ValueError(
            f"--method {args.method} needs the model's EMA teacher, and {args.model} holds none"
        )
    paths = expand_paths(args.images, skip_outputs=True)  # not the results of a former run
    _check_unique_names(paths, image_name)
    given = object_scale_from_annotations([], diameter=args.object_size)
    out = Path(args.out)
    jobs = []
    for path in paths:
        image, channel_axis = _fit_colour(open_image(path), path, config.model, args.channel_axis)
        known_scale = given or (1.0 if config.scale_per_image else config.object_scale)
        check_fits(image, path, config.model, channel_axis, object_scale=known_scale)
        blockwise = _blockwise(args, path, math.prod(spatial_shape_of(image, channel_axis)))
        if blockwise and config.scale_per_image and given is None:
            raise ValueError(
                f"{path}: block-wise prediction with a model that measures each image's object "
                "size (a built-in generalist) needs --object-size"
            )
        if blockwise and _needs_teacher(segment_config):
            raise ValueError(
                f"{path}: --method {args.method} is not available block-wise; choose another "
                "method for images this large"
            )
        if blockwise and args.uncertainty:
            raise ValueError(f"{path}: --uncertainty is not available block-wise")
        _check_targets(
            out, image_name(path), blockwise=blockwise, embeddings=args.embeddings,
            uncertainty=args.uncertainty,
        )  # fmt: skip
        jobs.append((path, image, channel_axis, blockwise))
    networks = None
    for path, image, channel_axis, blockwise in jobs:
        name = image_name(path)
        if blockwise:
            _predict_blockwise(args, checkpoint, image, out, name, segment_config, channel_axis)
            continue
        if networks is None:
            teacher = _needs_teacher(segment_config)
            networks = (
                _network(checkpoint, args.device),
                _network(checkpoint, args.device, teacher=True) if teacher else None,
            )
        _predict_whole(args, checkpoint, networks, np.asarray(image), out, name, segment_config,
                       channel_axis, resolution=read_resolution(path))  # fmt: skip


def _fit_colour(image: Any, path: Path, model: Any, channel_axis: int | None) -> tuple[Any, Any]:
    """Read a (Y, X, 3 or 4) image as RGB channels, or as grey for a single-channel model."""
    from ..core.image import looks_rgb, rgb_to_grey

    if channel_axis is not None or model.spatial_dims != 2 or not looks_rgb(image.shape):
        return image, channel_axis
    if model.in_channels == 1:
        logger.info("%s: colour image read as grey (the mean of R, G and B)", path.name)
        return rgb_to_grey(np.asarray(image)), None
    logger.info("%s: read as RGB (last axis = channels), as napari does", path.name)
    return image, -1


def _check_unique_names(paths: Sequence[Path], name_of: Callable[[Path], str]) -> None:
    """Refuse inputs whose results would have one name: one result would overwrite the other."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(name_of(path), []).append(path)
    clashes = [
        f"{' and '.join(map(str, group))} would write the same {name}_instances"
        for name, group in groups.items()
        if len(group) > 1
    ]
    if clashes:
        raise ValueError(
            f"{'; '.join(clashes)}: rename the inputs or run them with different --out folders"
        )


def _check_targets(
    out: Path, name: str, *, blockwise: bool, embeddings: bool, uncertainty: bool
) -> None:
    """Before any work, refuse outputs that would replace something other than a result."""
    from ..core.outputs import check_replaceable

    check_replaceable(out / f"{name}_instances.{'zarr' if blockwise else 'tif'}", folder=blockwise)
    if embeddings:
        check_replaceable(out / f"{name}_embeddings.zarr", folder=True)
    if uncertainty:
        check_replaceable(out / f"{name}_uncertainty.tif", folder=False)
        check_replaceable(out / f"{name}_doubts.csv", folder=False)


def _network(checkpoint: Any, device: str, *, teacher: bool = False) -> Any:
    from ..core.checkpoint import network_from_checkpoint
    from ..core.device import resolve_device

    return network_from_checkpoint(checkpoint, resolve_device(device), teacher=teacher)


def _predict_whole(args, checkpoint, networks, image, out, name, config, channel_axis, *,  # noqa: PLR0913
                   resolution=None) -> None:  # fmt: skip
    """Predict one image in memory and cluster it; ``networks`` is (model, teacher or None).

    TIFF results carry the input's ``resolution`` (pixel size), see ``core.io.read_resolution``.
    """
    from ..core.config import REFERENCE_DIAMETER
    from ..core.io import write_prediction, write_tiff
    from ..core.prediction import predict as predict_image
    from ..core.segmentation import prediction_scale, segment_prediction

    network, teacher = networks
    scale = prediction_scale(
        network, checkpoint.config, image, diameter=args.object_size, channel_axis=channel_axis,
        tile_shape=args.tile,
    )  # fmt: skip
    if scale != checkpoint.config.object_scale:
        logger.info(
            "%s: objects of %.1f px, resized by %.3g", name, REFERENCE_DIAMETER / scale, scale
        )
    options = {"loss": checkpoint.config.loss, "object_scale": scale,
               "channel_axis": channel_axis, "tile_shape": args.tile,
               "augment": _augment(args, network)}  # fmt: skip
    prediction = predict_image(network, image, **options)
    teacher_view = None if teacher is None else predict_image(teacher, image, **options).embeddings
    instances = segment_prediction(prediction, config, teacher=teacher_view)
    if args.embeddings:
        write_prediction(out / f"{name}_embeddings.zarr", prediction)
    write_tiff(out / f"{name}_instances.tif", instances, resolution=resolution)
    count = int(instances.max())  # napari's pytest plugin makes numpy log arguments str
    logger.info("%s: %d instances → %s", name, count, out / f"{name}_instances.tif")
    if args.uncertainty:
        _write_doubts(out, name, prediction, instances, teacher_view, resolution, scale)


def _write_doubts(  # noqa: PLR0913
    out: Path, name: str, prediction: Any, instances: Any, teacher: Any, resolution: Any,
    scale: float,
) -> None:  # fmt: skip
    """Write the uncertainty map and the instances ranked by how likely they are wrong.

    Sizes are judged against the objects the model was sized for at ``scale``
    (what the painted objects give in the panel), not the median instance,
    which systematic merges would make a merge itself.
    """
    from ..core.config import REFERENCE_DIAMETER
    from ..core.io import write_csv, write_tiff
    from ..core.uncertainty import Doubt, assess, object_size

    area = object_size(REFERENCE_DIAMETER / scale, instances.ndim)
    doubt, ranked = assess(prediction, instances, teacher=teacher, reference_area=area)
    write_tiff(out / f"{name}_uncertainty.tif", doubt, resolution=resolution)
    rows = [{"rank": n, **doubt.to_row()} for n, doubt in enumerate(ranked, start=1)]
    write_csv(out / f"{name}_doubts.csv", rows, columns=["rank", *Doubt.columns(instances.ndim)])
    worst = f"; most likely wrong: #{ranked[0].label} ({ranked[0].why})" if ranked else ""
    logger.info("%s: uncertainty → %s_uncertainty.tif, %s_doubts.csv%s", name, name, name, worst)


def _augment(args: argparse.Namespace, network: Any) -> bool:
    """``--augment`` for this model: "auto" follows the core's rule for its dimensions."""
    from ..core.prediction import augment_or_default
    from ..core.settings import AUGMENT_CHOICES

    return augment_or_default(AUGMENT_CHOICES[args.augment], network.config.spatial_dims)


def _predict_blockwise(args, checkpoint, image, out, name, config, channel_axis) -> None:
    from ..bigdata import predict_blockwise, segment_blockwise, segment_prediction_blockwise
    from ..core.settings import AUGMENT_CHOICES

    blocks = _block_options(args)
    target = out / f"{name}_instances.zarr"
    from ..core.device import resolve_device

    # Cluster workers pick their own device; "auto" means CPU there.
    local = args.scheduler is None or args.device != "auto"
    device = str(resolve_device(args.device)) if local else None
    from ..core.annotation import object_scale_from_annotations

    scale = object_scale_from_annotations([], diameter=args.object_size)
    run = {"device": device, "tile_shape": args.tile, "channel_axis": channel_axis,
           "object_scale": scale, "augment": AUGMENT_CHOICES[args.augment]}  # fmt: skip
    if args.embeddings:
        blockwise = {key: value for key, value in blocks.items() if key != "halo"}
        with _Bar(args, f"{name}: predicting") as progress:
            prediction = predict_blockwise(
                checkpoint, image, out=out / f"{name}_embeddings.zarr", progress=progress,
                **run, **blockwise,
            )  # fmt: skip
        with _Bar(args, f"{name}: segmenting") as progress:
            result = segment_prediction_blockwise(
                prediction, segment_config=config, out=target, progress=progress, **blocks
            )
    else:
        with _Bar(args, f"{name}: segmenting") as progress:
            result = segment_blockwise(
                checkpoint, image, segment_config=config, out=target, progress=progress,
                **run, **blocks,
            )  # fmt: skip
    logger.info("%s: block-wise instances → %s (%s)", name, target, result.shape)


def segment(args: argparse.Namespace) -> None:
    """``segment``: saved predictions → instances, with any method that needs no teacher."""
    from ..bigdata import segment_prediction_blockwise
    from ..core.io import (
        expand_paths,
        image_name,
        open_prediction,
        prediction_from_array,
        write_tiff,
    )
    from ..core.segmentation import segment_prediction

    config = _segment_config(args)
    if _needs_teacher(config):
        raise ValueError(
            f"--method {args.method} needs the teacher's embeddings, which saved predictions "
            "do not hold; run predict with the model instead"
        )
    paths = expand_paths(args.embeddings)
    _check_unique_names(paths, lambda path: image_name(path).removesuffix("_embeddings"))
    arrays = [(path, open_prediction(path)) for path in paths]
    out = Path(args.out)
    for path, array in arrays:
        name = image_name(path).removesuffix("_embeddings")
        if _blockwise(args, None, math.prod(array.shape[1:])):
            target = out / f"{name}_instances.zarr"
            with _Bar(args, f"{name}: segmenting") as progress:
                segment_prediction_blockwise(
                    array, segment_config=config, out=target, progress=progress,
                    **_block_options(args),
                )  # fmt: skip
        else:
            prediction = prediction_from_array(np.asarray(array[...]), dict(array.attrs))
            target = write_tiff(
                out / f"{name}_instances.tif", segment_prediction(prediction, config)
            )
        logger.info("%s: instances → %s", name, target)


def _segment_config(args: argparse.Namespace) -> Any:
    """Build the SegmentConfig of the flags; refuse a setting of another method than --method."""
    from ..core.clustering_methods import CLUSTERING_METHODS
    from ..core.config import SegmentConfig
    from ..core.settings import SEGMENT_SETTINGS, config_value

    params = {}
    for name, method in CLUSTERING_METHODS.items():
        for setting in method.settings:
            value = getattr(args, setting.name)
            if value is not None and name != args.method:
                flag = "--" + setting.name.replace("_", "-")
                raise ValueError(f"{flag} is a setting of --method {name}, not {args.method}")
            if value is not None:
                params[setting.name] = value
    chosen = {
        name: config_value(setting, getattr(args, name))
        for name, setting in SEGMENT_SETTINGS.items()
    }
    return SegmentConfig(
        method=args.method, foreground=args.foreground, params=params, **chosen
    )  # fmt: skip


def _needs_teacher(config: Any) -> bool:
    from ..core.clustering_methods import CLUSTERING_METHODS

    return CLUSTERING_METHODS[config.method].needs_teacher


def _blockwise(args: argparse.Namespace, path: Path | None, pixels: int) -> bool:
    from ..bigdata import LARGE_IMAGE_PIXELS

    is_zarr = path is not None and path.is_dir()
    return bool(args.block_shape or args.scheduler or is_zarr or pixels > LARGE_IMAGE_PIXELS)


def _block_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "block_shape": args.block_shape, "halo": args.halo, "n_threads": args.n_threads,
        "scheduler": args.scheduler,
    }  # fmt: skip


class _Bar:
    """A tqdm bar whose ``progress(done, total)`` callback block-wise functions call."""

    def __init__(self, args: argparse.Namespace, title: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(desc=title, unit="task", disable=args.quiet, file=sys.stderr)

    def __enter__(self) -> Any:
        def progress(done: int, total: int) -> None:
            self._bar.total = total
            self._bar.update(done - self._bar.n)

        return progress

    def __exit__(self, *_: object) -> None:
        self._bar.close()
