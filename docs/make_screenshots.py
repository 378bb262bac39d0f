"""Take the tutorial's screenshots from a real napari viewer running the SPOCO panel.

Usage (needs a display; on a headless machine run it on a virtual one)::

    xvfb-run -a -s "-screen 0 1600x1200x24" python docs/make_screenshots.py [--iterations N]

Writes docs/images/tutorial_*.png: the same steps as docs/tutorial.md, on the
bundled 2D nuclei sample, with a tenth of the nuclei and a few background
strokes painted by :func:`napari_spoco.testing.annotate_like_a_user`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import napari
import numpy as np
from qtpy.QtCore import QEventLoop
from qtpy.QtWidgets import QApplication
from superqt import QCollapsible

from napari_spoco.core.sample_data import load_nuclei_2d
from napari_spoco.testing import annotate_like_a_user

IMAGES = Path(__file__).parent / "images"


def _show_only(panel, title_start: str) -> None:
    """Expand the panel section whose title starts with ``title_start``, collapse the others."""
    for fold in panel.findChildren(QCollapsible):
        if fold.text() == "Advanced":
            continue
        if fold.text().startswith(title_start):
            fold.expand(animate=False)
        else:
            fold.collapse(animate=False)
    for _ in range(10):
        QApplication.processEvents()


def _shoot(viewer, name: str) -> None:
    for _ in range(10):
        QApplication.processEvents()
    iio.imwrite(IMAGES / f"tutorial_{name}.png", viewer.screenshot(canvas_only=False, flash=False))
    print("wrote", IMAGES / f"tutorial_{name}.png")


def _wait(signal) -> None:
    loop = QEventLoop()
    signal.connect(lambda *_: loop.quit())
    loop.exec()


def main() -> None:
    """Open the sample, run the tutorial's steps and save one screenshot per step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, help="default: the panel's")
    args = parser.parse_args()
    IMAGES.mkdir(exist_ok=True)
    image, truth = load_nuclei_2d()
    viewer = napari.Viewer(title="napari-spoco tutorial")
    viewer.window.resize(1500, 1000)
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(truth, name="ground truth", visible=False)
    _, panel = viewer.window.add_plugin_dock_widget("napari-spoco", "SPOCO")
    for _ in range(10):
        QApplication.processEvents()
    viewer.reset_view()

    layer = annotate_like_a_user(panel, truth, fraction=0.1, seed=0)
    layer.contour = 0
    _show_only(panel, "1")
    _shoot(viewer, "annotate")

    if args.iterations is not None:
        panel.train.settings.iterations.value = args.iterations
    iterations = panel.train.settings.iterations.value
    panel.train.settings.segment_when_done.setChecked(False)
    _show_only(panel, "2")
    panel.train.start()
    loop = QEventLoop()
    panel.train.plot.canvas.draw()

    def midway(update) -> None:
        done = update.record.step - panel.state.trainer.run_start_step
        if done >= iterations // 2 and "nuclei preview" in viewer.layers:
            loop.quit()

    panel.train.worker.yielded.connect(midway)
    loop.exec()
    panel.train.plot.draw()
    _shoot(viewer, "train")
    _wait(panel.train.finished)

    _show_only(panel, "3")
    panel.segment.predict()
    _wait(panel.segment.segmented)
    viewer.layers["nuclei annotation"].visible = False
    _shoot(viewer, "segment")

    _show_only(panel, "4")
    instances = viewer.layers["nuclei instances"]
    annotated = np.asarray(layer.data) > 0
    candidates = [
        i for i in np.unique(instances.data) if i and not annotated[instances.data == i].any()
    ]
    for instance_id in candidates[:3]:
        panel.correct.accept_at(tuple(np.argwhere(instances.data == instance_id)[0]))
    viewer.layers["nuclei annotation"].visible = True
    instances.opacity = 0.4
    listed = panel.correct.doubt_list
    listed.setCurrentRow(next(
        (i for i, (_, d) in enumerate(panel.correct._doubts) if d.label), 0
    ))  # fmt: skip
    panel.correct.doubt_buttons["goto"].click()
    viewer.layers["nuclei uncertainty"].visible = True
    viewer.layers["nuclei uncertainty"].opacity = 0.6
    _shoot(viewer, "correct")
    viewer.close()


if __name__ == "__main__":
    main()
