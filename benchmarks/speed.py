"""How long a user waits: training, prediction, clustering and the GUI, with in-run baselines.

Every measurement runs in a fresh process (so peak memory is its own) on the
product's defaults, and each comes with a baseline measured in the same
invocation, because absolute seconds on a shared machine are noisy while
ratios are not:

* ``train``: it/s and peak memory of a SPOCO step, 2D and 3D defaults
  (``model_config_for`` with both heads, ``DEFAULT_PATCH_SHAPE``, batch 4,
  10 % of the objects painted plus background strokes), against a plain
  PyTorch loop with the same network and the discriminative loss only (pull,
  push, regulariser; one fixed batch: no sampling, augmentation, teacher or
  heads). The teacher's forward runs in bfloat16 on CPUs with bfloat16 units
  (``teacher_precision``). A third row repeats 2D with
  ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads that spin while they wait make a
  2-thread step many times slower whenever another process wants the CPU.
* ``predict``: megapixels (2D, 2048²) and megavoxels (3D, 64 x 256²) per second
  of ``core.prediction.predict`` (normalise, tile, run the network), untrained
  weights (speed does not depend on them).
* ``cluster``: seconds per megapixel of every ``core.clustering`` method on
  1024² synthetic embeddings, one core each, via ``clustering_speed.py``;
  ratio of HDBSCAN to the mutex watershed.
* ``gui``: gaps of a 10 ms QTimer on napari's main thread while the panel
  trains ``--gui-steps`` steps on the bundled nuclei (painted by
  ``testing.annotate_like_a_user``, live previews on) and then segments the
  image, against napari's own time to add and draw one Labels layer in the
  same process. Needs a display: without
  ``DISPLAY`` it runs under ``xvfb-run -a``, and is skipped with a note when
  that is missing too.
* ``worker``: steps/s of the same Trainer driven by a plain loop (the CLI)
  and inside napari's ``create_worker`` with a Qt event loop (the panel).

Usage::

    python benchmarks/speed.py [--parts train predict cluster gui worker] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _data import print_table, write_json  # noqa: E402
from clustering_speed import in_fresh_process, reset_peak, rss_mib  # noqa: E402

PARTS = ("train", "predict", "cluster", "uncertainty", "gui", "worker")
RESULTS = Path(__file__).parent / "results"
CLUSTER_METHODS = (
    "mutex_watershed",
    "mutex_watershed+auto",
    "hdbscan",
    "mean_shift",
    "consistency",
)
TRAIN_CASES = {
    "2d": {"dims": 2, "image": (768, 768), "env": {}},
    "2d, OMP passive": {"dims": 2, "image": (768, 768), "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "3d": {"dims": 3, "image": (48, 256, 256), "env": {}},
}


def _product_config(dims: int, steps: int):  # noqa: ANN202
    from napari_spoco.core.recipe import train_config

    return train_config(
        [], spatial_dims=dims, channels=1, background_id=1000, iterations=steps, batch_size=4
    )


def _blobs(shape: tuple[int, ...], seed: int = 0):  # noqa: ANN202
    """Bright blobs on noise: speed does not depend on the content, only on the shape."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    seeds = rng.random(shape) < 2e-4 if len(shape) == 2 else rng.random(shape) < 2e-5
    labels, _ = ndimage.label(ndimage.binary_dilation(seeds, iterations=6))
    image = (labels > 0) * 100.0 + rng.normal(10, 5, shape)
    return image.astype("float32"), labels


def _product_data(shape: tuple[int, ...]):  # noqa: ANN202
    """Synthetic blobs, 10 % of them painted, and background strokes (id 1000)."""
    import numpy as np

    from napari_spoco.core.annotation import (
        keep_fraction_of_objects,
        simulate_background_scribbles,
    )

    image, labels = _blobs(shape)
    annotation = keep_fraction_of_objects(labels, 0.1).astype(np.int32)
    annotation[simulate_background_scribbles(labels) & (annotation == 0)] = 1000
    return image, annotation


def _train_case(name: str, steps: int, threads: int, queue) -> None:  # noqa: ANN001
    """Median SPOCO and plain step time and peak memory of one case (in a child process)."""
    import numpy as np
    import torch

    from napari_spoco.core.config import LossConfig
    from napari_spoco.core.losses import spoco_loss
    from napari_spoco.core.model import build_model, split_output
    from napari_spoco.core.training import Trainer

    torch.set_num_threads(threads)
    case = TRAIN_CASES[name]
    config = _product_config(case["dims"], steps)
    image, annotation = _product_data(case["image"])
    trainer = Trainer(config, device="cpu")
    trainer.set_data([image], [annotation])
    before = rss_mib("VmRSS")
    reset_peak()
    trainer.run(2)  # warm-up: the first steps allocate
    records: list = []
    trainer.run(steps, callback=records.append)
    spoco = float(np.median([r.seconds_per_step for r in records]))
    peak_extra = rss_mib("VmHWM") - before

    model = build_model(config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    disc_only = LossConfig(
        background_id=1000, instance_weight=0, unlabeled_push_weight=0, consistency_weight=0
    )
    batch, labels = trainer._sampler.sample(config.batch_size)  # one fixed batch
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        embeddings, _ = split_output(model(batch), config.model, axis=1)
        loss = spoco_loss(embeddings, labels, disc_only)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    plain = float(np.median(times[2:]))
    queue.put(
        {
            "case": name,
            "patch_shape": list(config.patch_shape),
            "batch_size": config.batch_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "threads": threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "teacher_precision": str(trainer.teacher_precision or torch.float32),
            "spoco_seconds_per_step": spoco,
            "spoco_iterations_per_second": 1 / spoco,
            "plain_seconds_per_step": plain,
            "ratio_spoco_to_plain": spoco / plain,
            "training_peak_extra_mib": peak_extra,
            "peak_rss_mib": rss_mib("VmHWM"),
        }
    )


def _predict_case(shape: tuple[int, ...], threads: int, queue) -> None:  # noqa: ANN001
    import numpy as np
    import torch

    from napari_spoco.core.model import build_model
    from napari_spoco.core.prediction import predict
    from napari_spoco.core.recipe import model_config_for

    torch.set_num_threads(threads)
    dims = len(shape)
    model = build_model(model_config_for(dims, 1, anisotropic_pooling=True)).eval()
    image = np.random.default_rng(0).normal(100, 20, shape).astype(np.float32)
    predict(model, image[tuple(slice(0, 64) for _ in shape)])  # warm-up
    start = time.perf_counter()
    predict(model, image)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    predict(model, image, augment=True)  # the eight orientations, as Segment does in 2D
    augmented = time.perf_counter() - start
    mega = float(np.prod(shape)) / 1e6
    queue.put(
        {
            "case": f"{dims}d",
            "shape": list(shape),
            "threads": threads,
            "seconds": seconds,
            "augmented_seconds": augmented,
            "augmented_over_plain": augmented / seconds,
            "mega_per_second": mega / seconds,
            "peak_rss_mib": rss_mib("VmHWM"),
        }
    )


def _uncertainty_case(repeat: int, threads: int, queue) -> None:  # noqa: ANN001
    """Cost of the likely-mistakes map and list against the plain predict + cluster path.

    The nuclei generalist on the bundled sample tiled ``repeat`` x ``repeat``: real
    instances, as a user gets them (an untrained network's would not be).
    """
    import numpy as np
    import torch

    from napari_spoco.core.checkpoint import network_from_checkpoint
    from napari_spoco.core.prediction import predict
    from napari_spoco.core.pretrained import load_model_source
    from napari_spoco.core.sample_data import load_nuclei_2d
    from napari_spoco.core.segmentation import segment_prediction
    from napari_spoco.core.uncertainty import assess

    torch.set_num_threads(threads)
    start = load_model_source("nuclei")
    student = network_from_checkpoint(start)
    teacher = network_from_checkpoint(start, teacher=True)
    image = np.tile(load_nuclei_2d()[0], (repeat, repeat))
    loss = start.config.loss
    predict(student, image[:64, :64], loss=loss)  # warm-up
    times = {}
    began = time.perf_counter()
    prediction = predict(student, image, loss=loss)
    times["predict"] = time.perf_counter() - began
    began = time.perf_counter()
    instances = segment_prediction(prediction)
    times["cluster"] = time.perf_counter() - began
    began = time.perf_counter()
    assess(prediction, instances, k=10)
    times["assess"] = time.perf_counter() - began
    began = time.perf_counter()
    teacher_embeddings = predict(teacher, image, loss=loss).embeddings
    assess(prediction, instances, teacher=teacher_embeddings, k=10)
    times["assess_with_teacher"] = time.perf_counter() - began
    plain = times["predict"] + times["cluster"]
    queue.put({
        "shape": list(image.shape), "instances": int(instances.max()), "threads": threads,
        **{f"{k}_seconds": v for k, v in times.items()},
        "ratio": (plain + times["assess"]) / plain,
        "ratio_with_teacher": (plain + times["assess_with_teacher"]) / plain,
    })  # fmt: skip


def _with_env(env: dict[str, str], target, *args) -> dict:  # noqa: ANN001
    """:func:`in_fresh_process` with ``env`` set for the child (OpenMP reads it at start-up)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return in_fresh_process(target, *args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure_train(args: argparse.Namespace) -> list[dict]:
    """SPOCO step vs a plain loop, each training case in its own process."""
    return [
        _with_env(
            TRAIN_CASES[case]["env"],
            _train_case,
            case,
            args.steps_3d if TRAIN_CASES[case]["dims"] == 3 else args.steps,
            args.threads,
        )
        for case in args.train_cases
    ]


def measure_predict(args: argparse.Namespace) -> list[dict]:
    """Prediction throughput in 2D and 3D."""
    return [
        in_fresh_process(_predict_case, tuple(shape), args.threads) for shape in args.predict_shapes
    ]


def measure_uncertainty(args: argparse.Namespace) -> list[dict]:
    """The likely-mistakes map and list over a plain prediction, 1x1 and 2x2 sample tiles."""
    return [in_fresh_process(_uncertainty_case, n, args.threads) for n in (1, 2)]


def measure_cluster(args: argparse.Namespace) -> list[dict]:
    """Every clustering method on 1024² synthetic nuclei embeddings, one core each."""
    import clustering_speed

    env = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    side = args.cluster_size
    return [
        _with_env(env, clustering_speed.measure_method, m, (side, side), "nuclei")
        for m in args.cluster_methods
    ]


def measure_gui(args: argparse.Namespace) -> dict:
    """Run :func:`gui_child` in a subprocess with a display; a note if there is none."""
    command = [sys.executable, __file__, "--gui-child", "--gui-steps", str(args.gui_steps)]
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        if shutil.which("xvfb-run") is None:
            return {"skipped": "no DISPLAY and no xvfb-run: GUI stall not measured"}
        command = ["xvfb-run", "-a", *command]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "gui.json"
        result = subprocess.run(
            [*command, "--out", str(out)], capture_output=True, text=True, timeout=900
        )
        if result.returncode != 0 or not out.exists():
            return {"skipped": f"GUI child failed: {result.stderr.strip()[-500:]}"}
        return json.loads(out.read_text())


def gui_child(steps: int, out: Path) -> None:
    """In a viewer with the panel: paint, train, segment; record main-thread gaps.

    Baseline, same process: how long napari itself takes to add a Labels layer
    of the preview's size and draw it, with nothing else running.
    """
    import napari
    import numpy as np
    from qtpy.QtCore import QEventLoop, QThreadPool, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_spoco.core.sample_data import load_nuclei_2d
    from napari_spoco.testing import annotate_like_a_user
    from napari_spoco.widgets import SpocoWidget

    viewer = napari.Viewer(show=True)
    image, truth = load_nuclei_2d()
    viewer.add_image(image, name="nuclei")
    panel = SpocoWidget(viewer)
    viewer.window.add_dock_widget(panel, name="SPOCO")
    panel.annotate.image_box.set_layer(viewer.layers["nuclei"])
    annotate_like_a_user(panel, truth, fraction=0.1)
    panel.train.settings.iterations.value = steps
    panel.train.settings.segment_when_done.setChecked(True)
    # The panel warms torch up in a worker when it opens; a user paints for longer.
    QThreadPool.globalInstance().waitForDone()
    app = QApplication.instance()

    def settle(milliseconds: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(milliseconds, loop.quit)
        loop.exec()

    settle(1000)
    adds = []
    for _ in range(3):
        before = time.perf_counter()
        viewer.add_labels(np.zeros(truth.shape, np.uint32) + truth, name="baseline")
        app.processEvents()  # includes the first paint of the new layer
        adds.append(time.perf_counter() - before)
        viewer.layers.remove("baseline")
        settle(300)

    gaps: list[tuple[str, float]] = []
    last = [time.perf_counter()]
    phase = ["train"]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append((phase[0], now - last[0]))
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    loop = QEventLoop()
    outcome = {}

    def trained(completed: bool) -> None:
        outcome["ok"] = completed
        phase[0] = "segment"

    panel.train.finished.connect(trained)
    panel.segment.segmented.connect(lambda _: loop.quit())
    start = time.perf_counter()
    last[0] = start
    timer.start()
    panel.train.start()
    loop.exec()
    settle(500)  # the last result layer is drawn after `segmented`
    timer.stop()
    seconds = time.perf_counter() - start
    panel.stop_workers()
    viewer.close()
    report = {
        "steps": steps,
        "completed": bool(outcome.get("ok")),
        "train_and_segment_seconds": seconds,
        "timer_interval_ms": 10,
        "baseline_layer_add_ms": 1000 * float(np.median(adds)),
        "display": os.environ.get("DISPLAY", ""),
    }
    for name in ("train", "segment"):
        gaps_ms = np.array([gap for which, gap in gaps if which == name]) * 1000
        report[name] = {
            "ticks": len(gaps_ms),
            "max_gap_ms": float(gaps_ms.max()),
            "p99_gap_ms": float(np.percentile(gaps_ms, 99)),
            "median_gap_ms": float(np.median(gaps_ms)),
            "gaps_over_100_ms": int((gaps_ms > 100).sum()),
            "max_gap_to_layer_add": float(gaps_ms.max()) / (1000 * float(np.median(adds))),
        }
    out.write_text(json.dumps(report))


def _worker_case(steps: int, threads: int, queue) -> None:  # noqa: ANN001
    """Same Trainer, same steps: a plain loop, napari's create_worker, a plain loop again."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import torch
    from napari.qt.threading import create_worker
    from qtpy.QtCore import QEventLoop, QThreadPool
    from qtpy.QtWidgets import QApplication

    from napari_spoco.core.training import Trainer

    torch.set_num_threads(threads)
    app = QApplication.instance() or QApplication([])
    image, annotation = _product_data((768, 768))
    trainer = Trainer(_product_config(2, steps), device="cpu")
    trainer.set_data([image], [annotation])
    trainer.run(2)
    timings = {"plain": [], "worker": []}
    workers = []  # kept alive until the end: a collected worker loses its signals mid-run
    for mode in ("plain", "worker", "plain", "worker"):
        start = time.perf_counter()
        if mode == "plain":
            trainer.run(steps)
        else:
            loop = QEventLoop()
            worker = create_worker(trainer.steps, steps)
            workers.append(worker)
            worker.yielded.connect(lambda record: None)  # the panel's slot runs on this thread
            worker.finished.connect(loop.quit)
            worker.start()
            loop.exec()
            QThreadPool.globalInstance().waitForDone()  # the worker's own clean-up, too
        timings[mode].append(steps / (time.perf_counter() - start))
    del app
    plain, worker = (sum(v) / len(v) for v in (timings["plain"], timings["worker"]))
    queue.put(
        {
            "steps": steps,
            "threads": threads,
            "plain_steps_per_second": plain,
            "worker_steps_per_second": worker,
            "ratio_worker_to_plain": worker / plain,
            "all": timings,
        }
    )


def measure_worker(args: argparse.Namespace) -> dict:
    """CLI loop vs napari worker, in one fresh process."""
    return in_fresh_process(_worker_case, args.steps, args.threads)


def _report(results: dict) -> None:
    if "train" in results:
        print("\ntraining (median s/step; plain = same network, discriminative loss, fixed batch)")
        print_table(
            ["case", "patch x batch", "params", "it/s", "s/step", "plain s", "ratio", "peak MiB"],
            [
                [
                    r["case"],
                    "x".join(map(str, r["patch_shape"])) + f" x {r['batch_size']}",
                    f"{r['parameters']:,}",
                    f"{r['spoco_iterations_per_second']:.2f}",
                    f"{r['spoco_seconds_per_step']:.3f}",
                    f"{r['plain_seconds_per_step']:.3f}",
                    f"{r['ratio_spoco_to_plain']:.2f}",
                    f"{r['peak_rss_mib']:.0f}",
                ]
                for r in results["train"]
            ],
        )
    if "predict" in results:
        print("\nprediction (normalise, tile, network)")
        print_table(
            ["case", "shape", "seconds", "M px or vox / s", "8 orientations s", "ratio"],
            [
                [
                    r["case"],
                    "x".join(map(str, r["shape"])),
                    f"{r['seconds']:.2f}",
                    f"{r['mega_per_second']:.2f}",
                    f"{r['augmented_seconds']:.2f}",
                    f"{r['augmented_over_plain']:.1f}",
                ]
                for r in results["predict"]
            ],
        )
    if "cluster" in results:
        print("\nclustering, one core (segments / true objects; ARand vs the truth)")
        print_table(
            ["method", "shape", "s", "s / MP", "peak MiB", "segs/true", "ARand"],
            [
                [
                    r["method"],
                    "x".join(map(str, r["shape"])),
                    f"{r['seconds']:.2f}",
                    f"{r['seconds_per_megapixel']:.2f}",
                    f"{r['peak_extra_mib']:.0f}",
                    f"{r['segments']}/{r['true_objects']}",
                    f"{r['adapted_rand_error']:.3f}",
                ]
                for r in results["cluster"]
            ],
        )
    if "uncertainty" in results:
        print("\nlikely mistakes (core.uncertainty.assess) over predict + cluster, same run")
        print_table(
            ["shape", "instances", "predict s", "cluster s", "assess s", "ratio",
             "with teacher"],
            [["x".join(map(str, r["shape"])), str(r["instances"]),
              f"{r['predict_seconds']:.2f}", f"{r['cluster_seconds']:.2f}",
              f"{r['assess_seconds']:.2f}", f"{r['ratio']:.2f}",
              f"{r['ratio_with_teacher']:.2f}"] for r in results["uncertainty"]],
        )  # fmt: skip
    for key in ("cluster_ratio", "gui", "worker"):
        if key in results:
            print(f"\n{key}: {json.dumps(results[key])}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--quick", action="store_true", help="tiny run that checks the script")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per 2D case")
    parser.add_argument("--steps-3d", type=int, default=5, help="timed training steps in 3D")
    parser.add_argument(
        "--predict-shapes",
        type=lambda text: [int(n) for n in text.split("x")],
        nargs="+",
        default=[[2048, 2048], [64, 256, 256]],
        help="image shapes for prediction, e.g. 2048x2048 64x256x256",
    )
    parser.add_argument("--train-cases", nargs="+", default=list(TRAIN_CASES), choices=TRAIN_CASES)
    parser.add_argument("--cluster-size", type=int, default=1024)
    parser.add_argument(
        "--cluster-methods", nargs="+", default=list(CLUSTER_METHODS), choices=CLUSTER_METHODS
    )
    parser.add_argument("--gui-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    parser.add_argument("--gui-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.steps_3d, args.gui_steps = 1, 1, 2
        args.train_cases, args.predict_shapes = ["2d"], [[128, 128], [16, 64, 64]]
        args.cluster_size, args.cluster_methods = 128, ["mutex_watershed", "hdbscan"]
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure the chosen parts, print tables and write JSON."""
    args = _parse(argv)
    if args.gui_child:
        gui_child(args.gui_steps, args.out)
        return 0
    started, results = time.perf_counter(), {}
    measures = {
        "train": measure_train,
        "predict": measure_predict,
        "cluster": measure_cluster,
        "uncertainty": measure_uncertainty,
        "gui": measure_gui,
        "worker": measure_worker,
    }
    for part in args.parts:
        part_start = time.perf_counter()
        results[part] = measures[part](args)
        print(f"{part}: {time.perf_counter() - part_start:.0f} s", flush=True)
    if "cluster" in results:
        by_method = {r["method"]: r for r in results["cluster"]}
        if "hdbscan" in by_method:
            results["cluster_ratio"] = {
                f"hdbscan / {m}": by_method["hdbscan"]["seconds"] / by_method[m]["seconds"]
                for m in by_method
                if m.startswith("mutex")
            }
    _report(results)
    wall = time.perf_counter() - started
    print(f"\nwall time {wall / 60:.1f} min")
    write_json(
        args.out, {"benchmark": "speed", "settings": vars(args), "wall_seconds": wall, **results}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
