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

__all__ = ["start_worker"]


def start_worker(
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

    ``progress`` (``{"total": n, "desc": "..."}``) adds a bar to napari's
    activity dock; a generator advances it by one per yield.
    """
    worker = create_worker(function, *args, _progress=progress or False, **kwargs)
    if on_yield is not None:
        worker.yielded.connect(on_yield)
    if on_return is not None:
        worker.returned.connect(on_return)
    if on_error is not None:
        worker.errored.connect(on_error)
    if on_finish is not None:
        worker.finished.connect(on_finish)
    worker.start()
    return worker
