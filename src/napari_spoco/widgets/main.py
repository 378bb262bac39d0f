"""The SPOCO dock widget: annotate → train → segment → correct, plus files."""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING

from qtpy.QtCore import QThreadPool
from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget
from superqt import QCollapsible

from ._state import SpocoState
from .annotate import AnnotateSection
from .correct import CorrectSection
from .files import FilesSection
from .segment import SegmentSection
from .train import TrainSection

if TYPE_CHECKING:
    import napari

__all__ = ["SpocoWidget"]


class SpocoWidget(QWidget):
    """One panel with a section per step of the workflow.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers the panel reads and writes.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.state = SpocoState(viewer)
        self.annotate = AnnotateSection(viewer, self.state)
        self.train = TrainSection(viewer, self.state)
        self.segment = SegmentSection(viewer, self.state)
        self.correct = CorrectSection(viewer, self.state)
        self.files = FilesSection(viewer, self.state)
        body = QWidget()
        column = QVBoxLayout(body)
        for title, section in (
            ("1 · Annotate", self.annotate),
            ("2 · Train", self.train),
            ("3 · Segment", self.segment),
            ("4 · Correct", self.correct),
            ("Files", self.files),
        ):
            fold = QCollapsible(title)
            fold.addWidget(section)
            fold.expand(animate=False)
            column.addWidget(fold)
        column.addStretch()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self.setMinimumWidth(380)
        # Qt sends no close event to a docked widget when its window closes, but it
        # destroys it: release the model and the cached predictions then.
        self.destroyed.connect(partial(_release, self.state))
        self.train.finished.connect(self._training_finished)
        self.train.model_file_requested.connect(lambda: self.files.load_model())
        self.segment.segmented.connect(self.correct.attach)
        viewer.layers.selection.events.active.connect(self._follow_active_layer)

    def _training_finished(self, completed: bool) -> None:
        if completed and self.train.settings.segment_when_done.isChecked():
            pair = self.state.chosen_pair()
            self.segment.predict(pair.image if pair else None)

    def _follow_active_layer(self, event: object) -> None:
        """Follow the layer list: selecting an annotation selects its image for segmenting."""
        layer = self.viewer.layers.selection.active
        pair = self.state.pair_for(layer)
        if pair is not None:
            self.segment.image_box.set_layer(pair.image)

    def stop_workers(self, timeout_ms: int = 10_000) -> bool:
        """Stop training and this panel's jobs, and wait for their threads; True if all ended.

        Only our own workers are waited for: napari's global thread pool also
        runs other plugins' and napari's jobs, which are not ours to wait on.
        """
        if self.state.trainer is not None:
            self.state.trainer.request_stop()
        pool = QThreadPool.globalInstance()
        running = []
        for worker in list(self.state.workers):
            worker.quit()
            try:
                if not pool.tryTake(worker):  # a queued job is dropped, a running one awaited
                    running.append(worker)
            except RuntimeError:  # a finished job: Qt has already deleted it
                continue
        # superqt clears is_running once the job's last signal is sent; polling it
        # (rather than processing events) keeps a closing panel from re-entering Qt.
        deadline = time.monotonic() + timeout_ms / 1000
        while any(w.is_running for w in running) and time.monotonic() < deadline:
            time.sleep(0.01)
        return not any(w.is_running for w in running)

    def closeEvent(self, event: object) -> None:  # noqa: N802 (Qt's name)
        """Stop the workers and drop the model when the panel closes."""
        self.stop_workers()
        _release(self.state)
        super().closeEvent(event)


def _release(state: SpocoState) -> None:
    """Stop training and forget the model and predictions (a panel that is going away)."""
    if state.trainer is not None:
        state.trainer.request_stop()
    for worker in list(state.workers):
        worker.quit()
    state.trainer = None
    state.loaded_checkpoint = None
    state.loaded_builtin = None
    state.predictions.clear()
    state.doubts.clear()
