"""Spread GUI work that arrives in bursts over several turns of the event loop."""

from __future__ import annotations

import time
from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer

__all__ = ["Pacer"]


class Pacer(QObject):
    """Run queued jobs on the main thread one at a time, at least ``spacing_ms`` apart.

    A training update can bring a loss-plot redraw and two preview layers at
    once; each costs 30-120 ms on the main thread, so done together they froze
    the viewer for ~300 ms. Run one per turn, the viewer repaints and handles
    input between them. A job submitted under a key that is still queued
    replaces the queued one (only the newest preview matters) and keeps its
    place in the queue.
    """

    def __init__(self, parent: QObject, spacing_ms: int = 50) -> None:
        super().__init__(parent)
        self.spacing_ms = spacing_ms
        self._jobs: dict[str, Callable[[], None]] = {}
        self._last_run = 0.0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._run_next)

    def submit(self, key: str, job: Callable[[], None]) -> None:
        """Queue ``job``; it runs in a later turn of the event loop."""
        self._jobs[key] = job
        if not self._timer.isActive():
            waited_ms = (time.monotonic() - self._last_run) * 1000
            self._timer.start(max(0, round(self.spacing_ms - waited_ms)))

    def _run_next(self) -> None:
        if not self._jobs:
            return
        key = next(iter(self._jobs))
        job = self._jobs.pop(key)
        try:
            job()
        finally:
            self._last_run = time.monotonic()
            if self._jobs:
                self._timer.start(self.spacing_ms)
