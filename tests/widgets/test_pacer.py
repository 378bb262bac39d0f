import time
from itertools import pairwise

from qtpy.QtCore import QObject, QTimer

from napari_spoco.widgets._pacer import Pacer


def test_jobs_run_one_per_turn_in_order_and_apart(qtbot):
    owner = QObject()
    pacer = Pacer(owner, spacing_ms=40)
    ran: list[tuple[str, float]] = []
    ticks: list[float] = []
    probe = QTimer()
    probe.setInterval(5)
    probe.timeout.connect(lambda: ticks.append(time.monotonic()))
    probe.start()
    for key in ("plot", "image", "labels"):
        pacer.submit(key, lambda key=key: ran.append((key, time.monotonic())))
    assert ran == []  # nothing runs inside submit: the caller's slot returns first
    qtbot.waitUntil(lambda: len(ran) == 3, timeout=2000)
    probe.stop()
    assert [key for key, _ in ran] == ["plot", "image", "labels"]
    times = [t for _, t in ran]
    assert all(later - earlier >= 0.035 for earlier, later in pairwise(times))
    # The event loop turned (the probe ticked) between consecutive jobs.
    assert all(any(a < tick < b for tick in ticks) for a, b in pairwise(times))


def test_a_newer_job_replaces_the_queued_one_in_place(qtbot):
    owner = QObject()  # the pacer dies with its owner
    pacer = Pacer(owner, spacing_ms=20)
    ran: list[str] = []
    pacer.submit("preview", lambda: ran.append("old preview"))
    pacer.submit("plot", lambda: ran.append("plot"))
    pacer.submit("preview", lambda: ran.append("new preview"))
    qtbot.waitUntil(lambda: len(ran) == 2, timeout=2000)
    assert ran == ["new preview", "plot"]


def test_a_failing_job_does_not_stop_the_queue(qtbot):
    owner = QObject()  # the pacer dies with its owner
    pacer = Pacer(owner, spacing_ms=10)
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("layer gone")

    with qtbot.captureExceptions() as exceptions:
        pacer.submit("first", broken)
        pacer.submit("second", lambda: ran.append("second"))
        qtbot.waitUntil(lambda: ran == ["second"], timeout=2000)
    assert [str(error) for _, error, _ in exceptions] == ["layer gone"]
