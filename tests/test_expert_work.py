"""An expert replica's admission: bounded work, late calls dropped unstarted, uncancellable work keeps its slot."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from deployments.breaker import CircuitBreaker
from deployments.contracts import ServiceSettings
from deployments.deadline import Deadline, DeadlineExceeded, expert_deadline
from deployments.expert_calls import ExpertCalls
from deployments.expert_work import ExpertWork


def test_a_call_whose_deadline_passed_while_it_waited_is_dropped_unstarted() -> None:
    now = [100.0]
    work = ExpertWork(slots=1, cancellable=False, clock=lambda: now[0])
    started: list[str] = []

    async def judge(name: str, gate: asyncio.Event | None = None) -> str:
        started.append(name)
        if gate is not None:
            await gate.wait()
        return name

    async def scenario() -> tuple[Any, Any]:
        gate = asyncio.Event()
        first = asyncio.create_task(work.run(lambda: judge("first", gate), deadline_at=None))
        await asyncio.sleep(0)
        late = asyncio.create_task(work.run(lambda: judge("late"), deadline_at=101.0))
        await asyncio.sleep(0)
        now[0] = 102.0  # the late call's deadline passes while the first one computes
        gate.set()
        return await asyncio.gather(first, late, return_exceptions=True)

    first, late = asyncio.run(scenario())
    assert first == "first"
    assert isinstance(late, DeadlineExceeded) and "dropped before it started" in str(late)
    assert started == ["first"] and work.dropped == 1


def test_uncancellable_work_keeps_its_slot_after_its_caller_left() -> None:
    work = ExpertWork(slots=1, cancellable=False)
    release = threading.Event()
    order: list[str] = []

    def blocking() -> str:
        release.wait(10)
        order.append("thread done")
        return "abandoned"

    async def scenario() -> str:
        abandoned = asyncio.create_task(work.run(lambda: asyncio.to_thread(blocking), deadline_at=None))
        await asyncio.sleep(0.01)
        abandoned.cancel()  # the router gave up: the thread still computes
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        assert work.running == 1

        async def next_call() -> str:
            order.append("next started")
            return "next"

        waiting = asyncio.create_task(work.run(next_call, deadline_at=None))
        await asyncio.sleep(0.01)
        assert order == []  # no second call beside the abandoned thread
        release.set()
        return await waiting

    assert asyncio.run(scenario()) == "next"
    assert order == ["thread done", "next started"]


def test_cancellable_work_frees_its_slot_with_its_caller() -> None:
    work = ExpertWork(slots=1, cancellable=True)

    async def scenario() -> str:
        abandoned = asyncio.create_task(work.run(lambda: asyncio.sleep(3600), deadline_at=None))
        await asyncio.sleep(0)
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned

        async def answer() -> str:
            return "served"

        return await asyncio.wait_for(work.run(answer, deadline_at=None), 5)

    assert asyncio.run(scenario()) == "served"
    assert work.running == 0


def test_a_caller_that_leaves_the_queue_takes_no_slot() -> None:
    work = ExpertWork(slots=1, cancellable=True)

    async def scenario() -> dict[str, Any]:
        gate = asyncio.Event()
        busy = asyncio.create_task(work.run(gate.wait, deadline_at=None))
        await asyncio.sleep(0)
        queued = asyncio.create_task(work.run(lambda: asyncio.sleep(0), deadline_at=None))
        await asyncio.sleep(0)
        queued.cancel()
        gate.set()
        await busy
        await asyncio.gather(queued, return_exceptions=True)
        return work.state()

    state = asyncio.run(scenario())
    assert state["running"] == 0 and state["dropped"] == 0


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slots"):
        ExpertWork(slots=0, cancellable=True)


def _calls() -> ExpertCalls:
    settings = ServiceSettings(name="t", label_names=("ham", "spam"), modality="text", expert_name="e",
                               expert_timeout_s=30.0, max_samples_per_request=8)
    return ExpertCalls(settings, breaker=CircuitBreaker(failures=1, cooldown_s=60.0))


def test_the_requests_deadline_travels_with_the_expert_call() -> None:
    calls = _calls()
    seen: list[float | None] = []

    async def judge() -> str:
        seen.append(expert_deadline())
        return "ok"

    async def scenario() -> None:
        import time

        before = time.time()
        await calls.call(judge(), Deadline(time.perf_counter(), 5000.0))
        assert seen[0] is not None and before + 4.0 < seen[0] <= time.time() + 5.0
        await calls.call(judge(), None)
        assert seen[1] is None and expert_deadline() is None

    asyncio.run(scenario())


def test_a_call_dropped_by_the_expert_replica_is_no_expert_failure() -> None:
    calls = _calls()  # one failure would open the circuit

    async def dropped() -> str:
        raise DeadlineExceeded("dropped before it started")

    async def scenario() -> None:
        import time

        with pytest.raises(DeadlineExceeded):
            await calls.call(dropped(), Deadline(time.perf_counter(), 5000.0))

    asyncio.run(scenario())
    assert calls.breaker.state == "closed" and calls.breaker.consecutive_failures == 0


def test_a_slow_first_call_does_not_make_the_replica_drop_what_it_could_answer() -> None:
    work = ExpertWork(slots=1, cancellable=False)
    work.calls.observe(10_000.0)  # loading the model on the first call

    async def judge() -> str:
        return "answered"

    import time

    assert asyncio.run(work.run(judge, deadline_at=time.time() + 2.0)) == "answered"
    assert work.dropped == 0
