"""The fair run queue: a burst in one namespace does not make another wait for it."""

from __future__ import annotations

import threading
import time

from safehold.engine.queue import FairQueue


def test_a_run_of_another_namespace_goes_before_the_rest_of_a_burst() -> None:
    queue = FairQueue(workers=2).start()
    gate = threading.Event()
    order: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        gate.wait(10)
        with lock:
            order.append(name)

    for i in range(20):
        assert queue.submit(f"a{i}", "burst", "nightly", lambda i=i: work(f"a{i}")) is not None
    time.sleep(0.2)  # two of the burst are running
    assert queue.submit("b0", "quiet", "", lambda: work("b0")) == 0
    assert queue.submit("b0", "quiet", "", lambda: work("b0")) is None  # never twice
    gate.set()
    deadline = time.monotonic() + 10
    while len(order) < 21 and time.monotonic() < deadline:
        time.sleep(0.05)
    queue.stop()
    assert len(order) == 21
    assert order.index("b0") <= 3  # right after the two that were running


def test_policies_of_one_namespace_take_turns() -> None:
    queue = FairQueue(workers=1)
    for i in range(3):
        queue.submit(f"p{i}", "ns", "big", lambda: None)
    queue.submit("q0", "ns", "small", lambda: None)
    first = queue._pick()
    assert first is not None
    queue._running["ns"] -= 1
    queue._running_groups[("ns", first.group)] -= 1
    second = queue._pick()
    assert second is not None
    assert {first.group, second.group} == {"big", "small"}
