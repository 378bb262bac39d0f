"""Start every background job the same way: a napari worker with its slots connected.

Slots (``on_yield``, ``on_return``, ``on_error``, ``on_finish``) run on the
main thread; only they may touch layers or widgets. napari already turns a
worker's exception into a notification, so ``on_error`` is for restoring the
widget's state, not for reporting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker, create_worker
from qtpy.QtCore import QObject, Slot

__all__ = ["start_worker"]


class _Relay(QObject):
    """Calls the slots on the owner's behalf and dies with the owner.

    A worker may finish after its panel was closed (an autosave, a prediction);
    Qt drops a connection whose receiver was destroyed, so a relay parented to
    the owner keeps the slots from touching deleted widgets.
    """

    def __init__(self, owner: QObject, slots: dict[str, Callable[..., None] | None]) -> None:
        super().__init__(owner)
        self.slots = slots

    @Slot(object)
    def yielded(self, value: Any) -> None:
        self.slots["yielded"](value)

    @Slot(object)
    def returned(self, value: Any) -> None:
        self.slots["returned"](value)

    @Slot(object)
    def errored(self, error: Any) -> None:
        self.slots["errored"](error)

    @Slot()
    def finished(self) -> None:
        if self.slots["finished"] is not None:
            self.slots["finished"]()
        self.deleteLater()


def start_worker(
    owner: QObject,
    function: Callable[..., Any],
    *args: Any,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    on_finish: Callable[[], None] | None = None,
    progress: dict[str, Any] | None = None,
    **kwargs: Any,
) -> FunctionWorker | GeneratorWorker:
    """Run ``function(*args, **kwargs)`` in a worker thread and return the started worker.

    The slots are called only while ``owner`` (the widget that started the
    job) exists. ``progress`` (``{"total": n, "desc": "..."}``) adds a bar to
    napari's activity dock; a generator advances it by one per yield.
    """
    worker = create_worker(function, *args, _progress=progress or False, **kwargs)
    slots = {"yielded": on_yield, "returned": on_return, "errored": on_error}
    relay = _Relay(owner, {**slots, "finished": on_finish})
    for name, slot in slots.items():
        if slot is not None:
            getattr(worker, name).connect(getattr(relay, name))
    worker.finished.connect(relay.finished)
    worker.start()
    return worker
