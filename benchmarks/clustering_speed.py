"""Wall time and peak memory of each clustering method of ``core.clustering.segment``.

Input: synthetic 16-d embeddings of dense disc-shaped objects (many touching)
on a background, per-pixel noise of norm ~0.3 (inside the pull margin
delta_v = 0.5), object means 2 delta_d = 4 or more apart, as a trained SPOCO
network produces. Each measurement runs in a fresh process pinned to ONE CPU
core with BLAS/OpenMP limited to one thread, so peak memory is its own:
``peak MiB`` is the growth of the resident set over the state just before the
call (input and imports already loaded; Linux ``clear_refs`` resets the
high-water mark), and ``total`` the process's peak. ARand is
``skimage.metrics.adapted_rand_error`` against the true instances (0 =
perfect), without ``min_size`` or background handling differences.

HDBSCAN, mean shift and consistency cluster a 16,384-pixel subsample, so their
cost hardly depends on the image size; they run on every size unless
``--point-max-size`` says otherwise. ``--backends`` compares the two compiled
mutex-watershed wheels (bioimage-cpp, used by the package, and mwatershed) on
the same 512 x 512 affinities.

Usage::

    python benchmarks/clustering_speed.py [--sizes 1024 2048] [--volume]
        [--backends] [--out benchmarks/results/clustering_speed.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from queue import Empty

METHODS = ("mutex_watershed", "mutex_watershed+auto", "hdbscan", "mean_shift", "consistency")
VOLUME = (64, 512, 512)
GOAL_SECONDS_PER_MEGAPIXEL = 1.0


def synthetic(shape, scene="nuclei", *, dims=16, seed=0):
    """Embeddings (dims, *shape) float32 and the true instances of a synthetic scene.

    ``"nuclei"``: the bundled StarDist nuclei masks (2D 512^2: 125 nuclei, 20 %
    foreground; 3D for volumes) tiled with flips to ``shape``, embeddings
    smooth in space like a U-Net's (Gaussian-filtered noise, norm ~0.3).
    ``"dense"``: random discs (balls) of radius 6-20 (4-10) covering ~60 %
    of the image, many touching, i.i.d. per-pixel noise: a worst case.
    Object means are N(0, 2^2) per channel (>= 2 delta_d = 4 apart), background -8 e_0.
    """
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    truth = _tiled_nuclei(shape) if scene == "nuclei" else _dense_discs(shape, rng)
    _, truth = np.unique(truth, return_inverse=True)
    truth = truth.reshape(shape)
    centres = rng.normal(0, 2, (int(truth.max()) + 1, dims)).astype(np.float32)
    centres[0] = 0
    centres[0, 0] = -8
    embeddings = np.empty((dims, *shape), dtype=np.float32)
    for channel in range(dims):
        noise = rng.standard_normal(shape, dtype=np.float32)
        if scene == "nuclei":
            noise = ndimage.gaussian_filter(noise, 1.5, truncate=2.0)
        noise *= 0.3 / np.sqrt(dims) / noise.std()
        embeddings[channel] = centres[truth, channel] + noise
    return embeddings, truth


def _tiled_nuclei(shape):
    import numpy as np

    from napari_spoco.core.sample_data import load_nuclei_2d, load_nuclei_3d

    tile = (load_nuclei_2d() if len(shape) == 2 else load_nuclei_3d())[1].astype(np.int64)
    reps = [-(-s // t) for s, t in zip(shape, tile.shape, strict=True)]
    out = np.zeros([r * t for r, t in zip(reps, tile.shape, strict=True)], dtype=np.int64)
    for index, position in enumerate(np.ndindex(*reps)):
        flipped = tile[tuple(slice(None, None, -1 if p % 2 else 1) for p in position)]
        box = tuple(slice(p * t, (p + 1) * t) for p, t in zip(position, tile.shape, strict=True))
        out[box] = np.where(flipped > 0, flipped + index * (tile.max() + 1), 0)
    return out[tuple(slice(0, s) for s in shape)]


def _dense_discs(shape, rng):
    import numpy as np

    truth = np.zeros(shape, dtype=np.int64)
    radius_range = (6, 20) if len(shape) == 2 else (4, 10)
    for label in range(1, int(np.prod(shape) / (600 if len(shape) == 2 else 3000)) + 1):
        radius = rng.uniform(*radius_range)
        centre = [rng.uniform(0, s) for s in shape]
        box = tuple(
            slice(max(0, int(c - radius)), min(s, int(c + radius) + 1))
            for c, s in zip(centre, shape, strict=True)
        )
        grids = np.ogrid[box]
        ball = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius**2
        truth[box][ball] = label
    return truth


def rss_mib(field: str) -> float:
    """VmRSS or VmHWM of this process in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to VmRSS
    except OSError:
        pass


def _pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})


def _arand(truth, labels) -> float:
    from skimage.metrics import adapted_rand_error

    return float(adapted_rand_error(truth.astype("uint32"), labels.astype("uint32"))[0])


def measure_method(method: str, shape: tuple, scene: str, queue) -> None:
    _pin_to_one_core()
    import numpy as np

    from napari_spoco.core.clustering import segment

    embeddings, truth = synthetic(shape, scene)
    name, _, variant = method.partition("+")
    params = {"foreground": "auto"} if variant == "auto" else {}
    warm = embeddings[(slice(None), *(slice(0, 64) for _ in shape))]
    teacher = {"teacher": warm} if name == "consistency" else {}
    segment(warm, name, **params, **teacher)  # warm-up: imports, numba compilation
    teacher = {"teacher": embeddings} if name == "consistency" else {}
    before = rss_mib("VmRSS")
    reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    labels = segment(embeddings, name, **params, **teacher)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    peak = rss_mib("VmHWM")
    megapixels = float(np.prod(shape)) / 1e6
    queue.put(
        {
            "method": method,
            "scene": scene,
            "shape": list(shape),
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "seconds_per_megapixel": seconds / megapixels,
            "peak_extra_mib": peak - before,
            "peak_total_mib": peak,
            "segments": int(labels.max()),
            "true_objects": int(truth.max()),
            "adapted_rand_error": _arand(truth, labels),
        }
    )


def _measure_backend(backend: str, strides: int, scene: str, queue, side: int = 512) -> None:
    """One mutex-watershed call of ``backend`` on the same 512^2 affinities (median of 3)."""
    _pin_to_one_core()
    import numpy as np

    from napari_spoco.core.clustering.mutex import embedding_affinities, grid_offsets

    embeddings, truth = synthetic((side, side), scene)
    offsets = grid_offsets(2)
    grid = (strides, strides)
    priorities = embedding_affinities(
        embeddings, offsets, n_attractive=2, delta_d=2.0, strides=grid
    )
    if backend == "bioimage-cpp":
        from bioimage_cpp.segmentation import mutex_watershed

        def run():
            return mutex_watershed(priorities, offsets, 2, strides=None if strides == 1 else grid)
    else:
        from mwatershed import agglom

        per_offset = [[1, 1]] * 2 + [list(grid)] * (len(offsets) - 2)

        def run():  # mwatershed: sign = attractive/mutex, |weight| = priority, float64 only
            weights = priorities.astype(np.float64)
            weights[2:] *= -1
            return agglom(weights, offsets, strides=None if strides == 1 else per_offset)

    run()
    before = rss_mib("VmRSS")
    reset_peak()
    times = []
    for _ in range(3):
        cpu = time.process_time()
        labels = run()
        times.append(time.process_time() - cpu)
    queue.put(
        {
            "backend": backend,
            "scene": scene,
            "strides": strides,
            "shape": [side, side],
            "cpu_seconds_median": float(np.median(times)),
            "cpu_seconds_all": times,
            "peak_extra_mib": rss_mib("VmHWM") - before,
            "segments": len(np.unique(labels)),
            "adapted_rand_error": _arand(truth, labels),
        }
    )


def in_fresh_process(target, *args, timeout: float = 1800.0) -> dict:  # noqa: ANN001
    """Run ``target(*args, queue)`` in a fresh (spawned) process and return what it puts.

    A child that dies, or hangs past ``timeout`` seconds, raises instead of
    blocking the benchmark forever.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not process.is_alive():
                raise RuntimeError(
                    f"{target.__name__} exited with code {process.exitcode} and no result"
                ) from None
            if time.monotonic() > deadline:
                process.kill()
                raise TimeoutError(f"{target.__name__} gave no result in {timeout:.0f} s") from None
    process.join()
    return result


def _print_table(columns: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def _compare_backends(scenes: list[str]) -> list[dict]:
    results = []
    for scene in scenes:
        for strides in (1, 2, 4):
            for backend in ("bioimage-cpp", "mwatershed"):
                try:
                    results.append(in_fresh_process(_measure_backend, backend, strides, scene))
                except ImportError as error:  # optional wheel
                    print(f"skipping {backend}: {error}")
    rows = [
        [
            r["scene"],
            r["backend"],
            str(r["strides"]),
            f"{r['cpu_seconds_median']:.3f}",
            f"{r['peak_extra_mib']:.0f}",
            str(r["segments"]),
            f"{r['adapted_rand_error']:.4f}",
        ]
        for r in results
    ]
    print("\nmutex-watershed backends, 512 x 512 x 16-d, same affinities, one core, median of 3")
    _print_table(["scene", "backend", "strides", "cpu s", "peak MiB", "segments", "ARand"], rows)
    return results


def main() -> None:
    """Measure every method and size in a fresh process, print tables and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--scenes", nargs="+", default=["nuclei"], choices=["nuclei", "dense"])
    parser.add_argument("--point-max-size", type=int, default=2048)
    parser.add_argument("--volume", action="store_true", help="mutex watershed on 64x512x512")
    parser.add_argument("--backends", action="store_true", help="compare bioimage-cpp/mwatershed")
    parser.add_argument("--out", default="benchmarks/results/clustering_speed.json")
    args = parser.parse_args()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"  # inherited by the spawned children

    cases = [
        (method, (size, size), scene)
        for scene in args.scenes
        for size in args.sizes
        for method in args.methods
        if method.startswith("mutex") or size <= args.point_max_size
    ]
    if args.volume:
        cases += [(m, VOLUME, "nuclei") for m in args.methods if m.startswith("mutex")]
    results = []
    for case in cases:
        results.append(in_fresh_process(measure_method, *case))
        print(f"{case[0]:22s} {case[2]:6s} {_shape(case[1]):12s} {results[-1]['seconds']:8.2f} s")
    rows = [
        [
            r["method"],
            r["scene"],
            _shape(r["shape"]),
            f"{r['seconds']:.2f}",
            f"{r['seconds_per_megapixel']:.2f}",
            f"{r['peak_extra_mib']:.0f}",
            f"{r['peak_total_mib']:.0f}",
            f"{r['segments']}/{r['true_objects']}",
            f"{r['adapted_rand_error']:.3f}",
        ]
        for r in results
    ]
    print("\nsegment(), one CPU core (mutex_watershed+auto: foreground='auto')")
    columns = ["method", "scene", "shape", "s", "s/MP", "peak MiB", "total", "segs/true", "ARand"]
    _print_table(columns, rows)
    summary = _summary(results)
    backends = _compare_backends(args.scenes) if args.backends else []
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {"processor": platform.processor(), "cpus": os.cpu_count()},
        "load_average_at_end": os.getloadavg(),
        "results": results,
        "summary": summary,
        "backends": backends,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def _summary(results: list[dict]) -> dict:
    """Speed-up of the mutex watershed over HDBSCAN, and the 1 s/megapixel goal."""
    by_key = {(r["method"], r["scene"], _shape(r["shape"])): r for r in results}
    summary: dict = {"speedup_over_hdbscan": {}, "goal_met": {}}
    for (method, scene, shape), r in by_key.items():
        if not method.startswith("mutex"):
            continue
        key = f"{method} {scene} {shape}"
        met = r["seconds_per_megapixel"] < GOAL_SECONDS_PER_MEGAPIXEL
        summary["goal_met"][key] = met
        verdict = "MET" if met else "NOT met"
        print(f"{key}: {r['seconds_per_megapixel']:.2f} s/MP, goal < 1 s/MP {verdict}")
        other = by_key.get(("hdbscan", scene, shape))
        if other is not None:
            summary["speedup_over_hdbscan"][key] = other["seconds"] / r["seconds"]
            print(f"  {other['seconds'] / r['seconds']:.1f}x faster than HDBSCAN on this input")
    return summary


if __name__ == "__main__":
    main()
