"""The demo on the bundled sample: sparse annotation → training → segmentation → scores.

``napari-spoco demo`` calls :func:`run_demo`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

__all__ = ["run_demo"]

logger = logging.getLogger("napari_spoco")


def run_demo(
    out: Path,
    *,
    iterations: int = 300,
    fraction: float = 0.1,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, float]:
    """Train on the 2D nuclei sample with ``fraction`` of nuclei annotated; return the scores."""
    import numpy as np
    import tifffile
    from skimage.io import imsave

    from .core.annotation import keep_fraction_of_objects
    from .core.config import TrainConfig
    from .core.inference import predict, segment_prediction
    from .core.metrics import evaluate
    from .core.sample_data import load_nuclei_2d
    from .core.training import Trainer
    from .core.visualize import embeddings_to_rgb

    out.mkdir(parents=True, exist_ok=True)
    image, ground_truth = load_nuclei_2d()
    annotation = keep_fraction_of_objects(ground_truth, fraction, seed=seed)
    logger.info(
        "sample image %s: %d of %d nuclei annotated",
        image.shape,
        len(np.unique(annotation)) - 1,
        len(np.unique(ground_truth)) - 1,
    )
    config = TrainConfig(iterations=iterations, patch_shape=(128, 128), seed=seed)
    trainer = Trainer(config, device=device)
    trainer.set_data([image], [annotation])

    def report(record) -> None:
        if record.step % 25 == 0 or record.step == iterations:
            logger.info(
                "step %4d  loss %.3f  %.2f s/step",
                record.step,
                record.losses["total"],
                record.seconds_per_step,
            )

    trainer.run(callback=report, checkpoint_path=out / "model.pt")
    prediction = predict(
        trainer.model, image, loss=config.loss, object_scale=config.object_scale,
        device=trainer.device,
    )  # fmt: skip
    instances = segment_prediction(prediction)
    scores = evaluate(ground_truth, instances)
    logger.info(
        "%d instances (ground truth: %d); AP@0.5 %.3f, SBD %.3f, |DiC| %d",
        instances.max(), len(np.unique(ground_truth)) - 1, scores["ap50"], scores["sbd"],
        scores["abs_dic"],
    )  # fmt: skip
    tifffile.imwrite(out / "instances.tif", instances)
    (out / "scores.json").write_text(json.dumps(scores, indent=1))
    tifffile.imwrite(out / "annotation.tif", annotation)
    rgb = embeddings_to_rgb(prediction.embeddings)
    imsave(out / "embeddings_rgb.png", (rgb * 255).astype(np.uint8))
    (out / "history.json").write_text(json.dumps(trainer.history, indent=1))
    logger.info("wrote model, annotation, embeddings, instances, scores and history to %s", out)
    return scores
