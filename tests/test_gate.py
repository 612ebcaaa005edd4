"""The compute gate: ticks take turns for their CPU-bound steps, and never wait long."""

from __future__ import annotations

import threading
import time

from coordinator.worker.gate import ComputeGate


def test_ticks_take_turns_inside_the_gate() -> None:
    gate = ComputeGate()
    inside = 0
    most = 0
    lock = threading.Lock()

    def tick() -> None:
        nonlocal inside, most
        for _ in range(50):
            with gate.held():
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)  # releases the GIL, as numpy does
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1 and gate.bypassed == 0


def test_a_stuck_holder_delays_the_others_by_the_wait_only() -> None:
    """An inline solve that broke its promise to be quick must not stop every city."""
    gate = ComputeGate(wait=0.05)
    release = threading.Event()

    def stuck() -> None:
        with gate.held():
            release.wait(10)

    holder = threading.Thread(target=stuck)
    holder.start()
    time.sleep(0.05)
    started = time.monotonic()
    with gate.held():
        waited = time.monotonic() - started
    release.set()
    holder.join()
    assert 0.04 <= waited < 0.5 and gate.bypassed == 1


def test_work_that_is_not_gated_does_not_wait() -> None:
    gate = ComputeGate(wait=5.0)
    with gate.held():
        started = time.monotonic()
        with gate.held(False):
            pass
        assert time.monotonic() - started < 0.1


def test_a_group_waits_for_a_busy_holder_past_the_wait_but_not_for_a_stuck_one() -> None:
    """Groups compute one at a time (a 100-city group computes for longer than ``wait``),
    yet a holder stuck past ``patience`` still costs a group no more than that."""
    gate = ComputeGate(wait=0.05, patience=0.4)
    has_it = threading.Event()
    held_since: list[float] = []

    def hold(seconds: float) -> threading.Thread:
        has_it.clear()

        def run() -> None:
            with gate.held(patient=True):
                held_since.append(time.monotonic())
                has_it.set()
                time.sleep(seconds)
        thread = threading.Thread(target=run)
        thread.start()
        has_it.wait(5.0)  # it has the gate (however late a loaded machine started it)
        return thread

    busy = hold(0.2)  # busy for 4 x wait, well within patience
    started = time.monotonic()
    with gate.held(patient=True):
        got = time.monotonic()
    busy.join()
    waited = got - started
    # it got the gate once the holder was done with it, not after ``wait``
    assert got - held_since[-1] >= 0.19 and waited < 0.3 and gate.bypassed == 0, waited

    stuck = hold(3.0)
    started = time.monotonic()
    with gate.held(patient=True):
        waited = time.monotonic() - started
    assert 0.3 <= waited < 0.6 and gate.bypassed == 1, waited
    stuck.join()
