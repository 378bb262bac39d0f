"""Training throughput and peak memory of the default 2D and 3D configurations.

Each configuration runs in its own process (so peak memory is its own), on
synthetic blob images with 10 % of the objects annotated. A plain PyTorch
loop — same network, same batch, mean-squared-error loss, no sampling or
augmentation — runs in the same invocation as the baseline, and the table
reports SPOCO's step time as a ratio to it (machines here are noisy; ratios
measured in one run are comparable, absolute seconds less so).

Usage::

    python benchmarks/train_speed.py [--steps 20] [--threads 2] [--out PATH.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import sys
import time
from pathlib import Path

CASES = {
    "2d": {"spatial_dims": 2, "patch_shape": (256, 256), "batch_size": 4, "image": (768, 768)},
    "3d": {
        "spatial_dims": 3,
        "patch_shape": (32, 96, 96),
        "batch_size": 2,
        "image": (48, 256, 256),
    },
}


def _config(case: dict, steps: int):
    from napari_spoco.core.config import ModelConfig, TrainConfig

    three_d = case["spatial_dims"] == 3
    model = ModelConfig(
        spatial_dims=case["spatial_dims"],
        norm="group" if three_d else "batch",
        anisotropic_pooling=three_d,
    )
    return TrainConfig(
        model=model,
        iterations=steps,
        batch_size=case["batch_size"],
        patch_shape=case["patch_shape"],
    )


def _blobs(shape: tuple[int, ...], seed: int = 0):
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    seeds = rng.random(shape) < 2e-4 if len(shape) == 2 else rng.random(shape) < 2e-5
    labels, _ = ndimage.label(ndimage.binary_dilation(seeds, iterations=6))
    image = (labels > 0) * 100.0 + rng.normal(10, 5, shape)
    return image.astype("float32"), labels


def _measure(name: str, steps: int, threads: int, queue) -> None:
    import numpy as np
    import torch

    from napari_spoco.core.annotation import keep_fraction_of_objects
    from napari_spoco.core.model import build_model
    from napari_spoco.core.training import Trainer

    torch.set_num_threads(threads)
    case = CASES[name]
    config = _config(case, steps)
    image, labels = _blobs(case["image"])
    trainer = Trainer(config, device="cpu")
    trainer.set_data([image], [keep_fraction_of_objects(labels, 0.1)])
    trainer.run(2)  # warm-up: first steps allocate
    records: list = []
    trainer.run(steps, callback=records.append)
    spoco = float(np.median([r.seconds_per_step for r in records]))

    model = build_model(config.model)
    optimizer = torch.optim.Adam(model.parameters())
    batch = torch.randn(config.batch_size, 1, *config.patch_shape)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        loss = model(batch).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    plain = float(np.median(times[2:]))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        {
            "case": name,
            "patch_shape": list(config.patch_shape),
            "batch_size": config.batch_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "spoco_seconds_per_step": spoco,
            "spoco_iterations_per_second": 1 / spoco,
            "plain_seconds_per_step": plain,
            "ratio_spoco_to_plain": spoco / plain,
            "peak_rss_mib": peak_mib,
        }
    )


def main() -> None:
    """Run every case in a fresh process, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    results = []
    for name in args.cases:
        queue = context.Queue()
        process = context.Process(target=_measure, args=(name, args.steps, args.threads, queue))
        process.start()
        results.append(queue.get())
        process.join()

    columns = ["case", "patch", "batch", "params", "it/s", "s/step", "plain s", "ratio", "peak MiB"]
    rows = [
        [
            r["case"],
            "x".join(map(str, r["patch_shape"])),
            str(r["batch_size"]),
            f"{r['parameters']:,}",
            f"{r['spoco_iterations_per_second']:.2f}",
            f"{r['spoco_seconds_per_step']:.3f}",
            f"{r['plain_seconds_per_step']:.3f}",
            f"{r['ratio_spoco_to_plain']:.2f}",
            f"{r['peak_rss_mib']:.0f}",
        ]
        for r in results
    ]
    for row in [columns, *rows]:
        print("  ".join(cell.rjust(10) for cell in row))
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {"processor": platform.processor(), "cpus": multiprocessing.cpu_count()},
        "threads": args.threads,
        "steps": args.steps,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
