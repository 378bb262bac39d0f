"""The block grid and the dask plumbing behind :mod:`napari_spoco.bigdata`.

A :class:`Block` knows every region a block-wise step needs: the core it
writes, the overlap it clusters (core plus ``halo``), the region it reads
(overlap plus the network's ``context``) and the strips it shares with its
upper and lower neighbours for stitching. :func:`compute` runs dask tasks on
the threaded scheduler or a dask.distributed cluster and reports progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .core.config import ModelConfig
from .core.image import percentile_bounds
from .core.io import atomic_output

Scheduler = Any  # None, a "tcp://host:port" address or a distributed.Client

Region = tuple[slice, ...]

# Percentiles come from the whole image up to this many pixels, else from a sample of blocks.
NORMALIZATION_PIXELS = 1 << 24


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of the grid; regions in image coordinates unless noted.

    ``core`` is written; ``overlap`` (core + halo) is clustered; ``outer``
    (overlap + context) is read. ``inner`` is the core within ``outer``,
    ``context`` the overlap within ``outer``, ``inner_of_overlap`` the core
    within the overlap. ``strips`` maps ``(axis, +1 or -1)`` to the strip
    shared with the upper or lower neighbour along ``axis``, within the overlap.
    """

    index: tuple[int, ...]
    core: Region
    outer: Region
    inner: Region
    context: Region
    inner_of_overlap: Region
    strips: dict[tuple[int, int], Region]

    def upper_neighbours(self) -> Iterator[tuple[int, tuple[int, ...]]]:
        """(axis, grid index) of the next block along every axis."""
        for axis in range(len(self.index)):
            yield axis, tuple(i + (a == axis) for a, i in enumerate(self.index))


def blocks_for(
    shape: Sequence[int],
    block_shape: Sequence[int],
    halo: Sequence[int],
    context: Sequence[int] | None,
    roi: Region | None,
) -> list[Block]:
    """All blocks of a regular grid over ``shape`` (those meeting ``roi`` if given)."""
    if roi is not None and len(roi) != len(shape):
        raise ValueError(f"roi must have {len(shape)} slices, got {len(roi)}")
    context = tuple(context) if context is not None else (0,) * len(shape)
    grid = [range(-(-s // b)) for s, b in zip(shape, block_shape, strict=True)]
    blocks = []
    for index in itertools.product(*grid):
        core = tuple(
            slice(i * b, min((i + 1) * b, s))
            for i, b, s in zip(index, block_shape, shape, strict=True)
        )
        if roi is not None and not _meets(core, roi, shape):
            continue
        overlap = _grow(core, halo, shape)
        outer = _grow(overlap, context, shape)
        strips = {}
        for axis, (sl, s, b, h) in enumerate(zip(core, shape, block_shape, halo, strict=True)):
            for side, face in ((-1, sl.start), (+1, sl.stop)):
                if 0 < face < s:
                    width = max(1, min(h // 2, b, s - face))
                    strip = list(core)
                    strip[axis] = slice(face - width, face + width)
                    strips[(axis, side)] = _within(tuple(strip), overlap)
        blocks.append(
            Block(
                index=index,
                core=core,
                outer=outer,
                inner=_within(core, outer),
                context=_within(overlap, outer),
                inner_of_overlap=_within(core, overlap),
                strips=strips,
            )
        )
    return blocks


def _grow(region: Region, margin: Sequence[int], shape: Sequence[int]) -> Region:
    return tuple(
        slice(max(0, r.start - m), min(s, r.stop + m))
        for r, m, s in zip(region, margin, shape, strict=True)
    )


def _within(region: Region, container: Region) -> Region:
    return tuple(
        slice(r.start - c.start, r.stop - c.start) for r, c in zip(region, container, strict=True)
    )


def _meets(core: Region, roi: Region, shape: Sequence[int]) -> bool:
    bounds = [r.indices(s)[:2] for r, s in zip(roi, shape, strict=True)]
    return all(
        c.start < stop and start < c.stop for c, (start, stop) in zip(core, bounds, strict=True)
    )


@dataclasses.dataclass
class TaskRunner:
    """Where tasks run: the threaded scheduler (``client`` None) or a distributed client."""

    client: Any = None

    def share(self, value: Any) -> Any:
        """Send a large argument to every worker once (a no-op without a cluster)."""
        if self.client is None or value is None:
            return value
        return self.client.scatter(value, broadcast=True, hash=False)

    @staticmethod
    def delayed(function: Callable) -> Callable:
        """``dask.delayed`` without hashing arguments (models, arrays) for task keys."""
        import dask

        return dask.delayed(function, pure=False)


@contextlib.contextmanager
def make_output(
    out: str | os.PathLike | None,
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: str,
    attributes: dict[str, Any],
    scheduler: Scheduler,
) -> Iterator[tuple[Any, TaskRunner]]:
    """Create the zarr output (in memory, or at a temporary path renamed at the end)."""
    import zarr

    if out is None and scheduler is not None:
        raise ValueError("on a dask.distributed cluster, pass an output path (workers write it)")
    with _task_runner(scheduler) as runner:
        if out is None:
            array = zarr.create_array(
                zarr.storage.MemoryStore(), shape=tuple(shape), chunks=tuple(chunks), dtype=dtype,
                fill_value=0, attributes=attributes,
            )  # fmt: skip
            yield array, runner
            return
        with atomic_output(out) as temporary:
            array = zarr.create_array(
                temporary, shape=tuple(shape), chunks=tuple(chunks), dtype=dtype, fill_value=0,
                attributes=attributes,
            )  # fmt: skip
            yield array, runner


def finalize_output(out: str | os.PathLike | None, array: Any) -> Any:
    """Return the finished output: the in-memory array, or the renamed zarr (read-only)."""
    if out is None:
        return array
    import zarr

    return zarr.open_array(out, mode="r")


@contextlib.contextmanager
def _task_runner(scheduler: Scheduler) -> Iterator[TaskRunner]:
    if scheduler is None:
        yield TaskRunner()
        return
    from distributed import Client

    if isinstance(scheduler, Client):
        yield TaskRunner(scheduler)
        return
    if not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address or a distributed.Client, got {scheduler!r}")
    try:
        client = Client(scheduler, timeout="20s")
    except OSError as error:
        raise ValueError(f"cannot reach the dask scheduler at {scheduler}: {error}") from error
    with client:
        yield TaskRunner(client)


def compute(
    runner: TaskRunner,
    tasks: list[Any],
    n_threads: int | None,
    progress: Callable[[int, int], None] | None,
) -> list[Any]:
    """Run dask ``tasks``; call ``progress(done, len(tasks))`` as each finishes."""
    import dask
    from dask.callbacks import Callback

    if not tasks:
        return []
    if runner.client is not None:
        from distributed import as_completed

        futures = runner.client.compute(tasks)
        if progress is not None:
            for done, _ in enumerate(as_completed(futures), 1):
                progress(done, len(tasks))
        return runner.client.gather(futures)
    keys = {task.key for task in tasks}
    finished = [0]

    def posttask(key: Any, *_: Any) -> None:
        if key in keys:
            finished[0] += 1
            progress(finished[0], len(tasks))

    callback = Callback(posttask=posttask) if progress is not None else contextlib.nullcontext()
    with callback:
        return list(dask.compute(*tasks, scheduler="threads", num_workers=n_threads))


# --------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class Source:
    """The input array and where its channel axis is; regions are spatial."""

    array: Any
    channel_axis: int | None
    shape: tuple[int, ...]

    @classmethod
    def of(cls, image: ArrayLike, channel_axis: int | None, config: ModelConfig) -> Source:
        array = image if hasattr(image, "shape") and hasattr(image, "dtype") else np.asarray(image)
        ndim = len(array.shape)
        axis = None if channel_axis is None else _axis(channel_axis, ndim)
        channels = 1 if axis is None else array.shape[axis]
        config.check_reads(
            ndim - (axis is not None), channels, what=f"an image of shape {tuple(array.shape)}"
        )
        if not np.issubdtype(np.dtype(array.dtype), np.number):
            raise TypeError(f"image must hold real numbers, got dtype {array.dtype}")
        shape = tuple(s for i, s in enumerate(array.shape) if i != axis)
        return cls(array, axis, shape)

    def read(self, region: tuple[slice, ...]) -> NDArray:
        """Channels-first (C, *region) copy of a spatial region."""
        index = list(region)
        if self.channel_axis is not None:
            index.insert(self.channel_axis, slice(None))
        piece = self.array[tuple(index)]
        if hasattr(piece, "compute"):  # a dask array: read here, never a nested scheduler
            piece = piece.compute(scheduler="synchronous")
        piece = np.asarray(piece)
        return (
            piece[np.newaxis]
            if self.channel_axis is None
            else np.moveaxis(piece, self.channel_axis, 0)
        )

    def percentiles(
        self, levels: tuple[float, float], cores: list[tuple[slice, ...]]
    ) -> tuple[NDArray, NDArray]:
        """Per-channel percentiles of the whole image, or of up to 16 blocks spread over it."""
        if math.prod(self.shape) <= NORMALIZATION_PIXELS:
            sample = self.read(tuple(slice(0, s) for s in self.shape))
        else:
            chosen = np.unique(np.linspace(0, len(cores) - 1, 16).round().astype(int))
            pieces = [self.read(cores[i]) for i in chosen]
            sample = np.concatenate([p.reshape(p.shape[0], -1) for p in pieces], axis=1)
        return percentile_bounds(sample, low=levels[0], high=levels[1])


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"channel_axis {axis} is out of range for {ndim} axes")
    return axis % ndim


@dataclasses.dataclass(frozen=True)
class Layout:
    block_shape: tuple[int, ...]
    halo: tuple[int, ...]
    blocks: list[Block]

    @property
    def cores(self) -> list[tuple[slice, ...]]:
        return [block.core for block in self.blocks]

    @classmethod
    def build(cls, shape, block_shape, halo, roi, context) -> Layout:
        check_lengths(len(shape), block_shape=block_shape, halo=halo)
        return cls(
            tuple(block_shape), tuple(halo), blocks_for(shape, block_shape, halo, context, roi)
        )


def check_lengths(dims: int, **settings: tuple[int, ...]) -> None:
    for name, values in settings.items():
        if len(values) != dims or any(int(v) < 0 for v in values):
            raise ValueError(f"{name} must be {dims} non-negative integers, got {tuple(values)}")
    if any(int(b) < 1 for b in settings.get("block_shape", ())):
        raise ValueError(f"block_shape must be positive, got {settings['block_shape']}")
