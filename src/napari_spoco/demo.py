"""The demo: the whole loop on the bundled sample, through the real panel in a real viewer.

``napari-spoco demo`` opens napari with the 2D nuclei sample and the SPOCO
panel docked, paints a tenth of the nuclei and a few background strokes the
way a user would, trains, segments and leaves the viewer open.
``napari-spoco demo --headless --out DIR`` does the same in a viewer that is
not shown, writes the results and exits. napari cannot draw under
``QT_QPA_PLATFORM=offscreen``: without a display, run it inside ``xvfb-run -a``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .widgets import SpocoWidget

__all__ = ["run_demo"]

logger = logging.getLogger("napari_spoco")


def run_demo(
    out: Path,
    *,
    iterations: int | None = None,
    fraction: float = 0.1,
    seed: int = 0,
    device: str = "auto",
    headless: bool = False,
) -> dict[str, float] | None:
    """Run the demo; headless, write results to ``out`` and return the scores.

    When the panel starts from a built-in generalist, the image is segmented
    with it first (zero-shot), then the generalist is fine-tuned on the
    painted nuclei and the image segmented again. Writes ``screenshot.png``
    (the whole window, panel included), ``instances.tif``, ``annotation.tif``,
    ``model.pt``, ``history.json`` and ``scores.json`` (against the sample's
    ground truth; the zero-shot scores under ``zero_shot``) to ``out``.

    Raises
    ------
    RuntimeError
        If training or segmentation fails.
    """
    import napari
    from qtpy.QtCore import QEventLoop

    from .core import training  # noqa: F401 (imports torch before the GUI starts)
    from .core.sample_data import load_nuclei_2d
    from .testing import annotate_like_a_user

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    image, truth = load_nuclei_2d()
    viewer = napari.Viewer(title="napari-spoco demo", show=not headless)
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(truth, name="ground truth", visible=False)
    _, panel = viewer.window.add_plugin_dock_widget("napari-spoco", "SPOCO")
    viewer.window.resize(1500, 1000)
    viewer.reset_view()
    panel.annotate.image_box.set_layer(viewer.layers["nuclei"])
    if device != "auto":
        panel.train.settings.device_box.setCurrentText(device)
    if iterations is not None:  # else the panel's default for its starting model
        panel.train.settings.iterations.value = iterations
    outcome: dict[str, Any] = {}
    loop = QEventLoop()

    def paint_and_train() -> None:
        outcome["layer"] = annotate_like_a_user(panel, truth, fraction=fraction, seed=seed)
        logger.info(
            "training (%s) on %d painted nuclei and background strokes for %d steps",
            panel.train.settings.size_box.currentText(), panel.annotate.object_count(),
            panel.train.settings.iterations.value,
        )  # fmt: skip
        panel.train.start()

    def zero_shot_segmented(name: str) -> None:
        instances = np.asarray(viewer.layers["nuclei instances"].data)
        outcome["zero_shot"] = _log_scores("before painting (zero-shot)", truth, instances)
        panel.segment.segmented.disconnect(zero_shot_segmented)
        panel.segment.segmented.connect(segmented)
        paint_and_train()

    def segmented(name: str) -> None:
        outcome["scores"] = _write_outputs(out, viewer, panel, truth, outcome)
        loop.quit()

    def trained(completed: bool) -> None:
        if not completed:
            outcome["error"] = "training did not complete (see the messages above)"
            loop.quit()

    panel.train.finished.connect(trained)
    if panel.state.loaded_builtin is not None:
        # Segment with the generalist before painting, so the demo shows what fine-tuning adds.
        panel.segment.segmented.connect(zero_shot_segmented)
        panel.segment.predict(viewer.layers["nuclei"])
    else:
        panel.segment.segmented.connect(segmented)
        paint_and_train()
    if not headless:
        napari.run()
        return outcome.get("scores")
    loop.exec()
    viewer.close()
    if "error" in outcome:
        raise RuntimeError(outcome["error"])
    return outcome["scores"]


def _log_scores(when: str, truth: np.ndarray, instances: np.ndarray) -> dict:
    from .core.metrics import evaluate

    scores = evaluate(truth, instances)
    logger.info(
        "%s: %d instances (ground truth: %d); AP@0.5 %.3f, SBD %.3f, |DiC| %d",
        when, int(instances.max()), len(np.unique(truth)) - 1, scores["ap50"], scores["sbd"],
        int(scores["abs_dic"]),
    )  # fmt: skip
    return scores


def _write_outputs(
    out: Path, viewer: Any, panel: SpocoWidget, truth: np.ndarray, outcome: dict
) -> dict:
    import imageio.v3 as iio
    import tifffile

    instances = np.asarray(viewer.layers["nuclei instances"].data)
    scores = _log_scores("after training", truth, instances)
    if "zero_shot" in outcome:
        scores = {**scores, "zero_shot": outcome["zero_shot"]}
    tifffile.imwrite(out / "instances.tif", instances.astype(np.uint32))
    tifffile.imwrite(out / "annotation.tif", np.asarray(outcome["layer"].data))
    panel.files.save_model(out / "model.pt")
    (out / "history.json").write_text(json.dumps(panel.state.trainer.history, indent=1))
    (out / "scores.json").write_text(json.dumps(scores, indent=1))
    iio.imwrite(out / "screenshot.png", viewer.screenshot(canvas_only=False, flash=False))
    logger.info("wrote the screenshot, instances, annotation, model, history and scores to %s", out)
    return scores
