"""The scheduler alone: its own interval, no drift, no overlap, one-shot retries, 10,000 at once."""

from __future__ import annotations

import asyncio
import time

from clusterwatch.engine import scheduler as scheduler_module
from clusterwatch.engine.scheduler import Job, Scheduler


def run(coro):
    return asyncio.run(coro)


def test_each_check_at_its_interval_on_a_grid():
    async def scenario():
        starts: dict[str, list[float]] = {"fast": [], "slow": []}

        async def job(j: Job) -> None:
            starts[j.key].append(time.monotonic())
            await asyncio.sleep(0.05)  # work must not push the next run later

        s = Scheduler(job, concurrency=10)
        stop = asyncio.Event()
        s.add("fast", None, 0.2, first_delay=0)
        s.add("slow", None, 0.5, first_delay=0)
        loop = asyncio.create_task(s.run_forever(stop))
        await asyncio.sleep(2.05)
        stop.set()
        await loop
        return starts

    starts = run(scenario())
    assert 10 <= len(starts["fast"]) <= 11 and 4 <= len(starts["slow"]) <= 5
    fast = starts["fast"]
    # No drift: the n-th run is at n * interval after the first, within a small jitter.
    assert all(abs((t - fast[0]) - i * 0.2) < 0.05 for i, t in enumerate(fast))


def test_never_overlaps_itself():
    async def scenario():
        running = {"now": 0, "max": 0, "runs": 0}

        async def job(j: Job) -> None:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
            running["runs"] += 1
            await asyncio.sleep(0.35)  # slower than its interval
            running["now"] -= 1

        s = Scheduler(job, concurrency=10)
        stop = asyncio.Event()
        s.add("slow", None, 0.1, first_delay=0)
        loop = asyncio.create_task(s.run_forever(stop))
        await asyncio.sleep(1.0)
        stop.set()
        await loop
        await s.cancel_running()
        return running, s.skipped

    running, skipped = run(scenario())
    assert running["max"] == 1
    assert running["runs"] == 3 and skipped >= 5


def test_run_soon_is_one_extra_run_not_a_second_grid():
    async def scenario():
        starts: list[float] = []

        async def job(j: Job) -> None:
            starts.append(time.monotonic())

        s = Scheduler(job, concurrency=10)
        stop = asyncio.Event()
        s.add("c", None, 0.5, first_delay=0)
        loop = asyncio.create_task(s.run_forever(stop))
        await asyncio.sleep(0.1)
        s.run_soon("c", 0.1)
        await asyncio.sleep(1.3)
        stop.set()
        await loop
        return [t - starts[0] for t in starts]

    offsets = run(scenario())
    assert len(offsets) == 4  # 0, the retry at ~0.2, then the grid at 0.5 and 1.0
    assert abs(offsets[1] - 0.2) < 0.06 and abs(offsets[2] - 0.5) < 0.06 and abs(offsets[3] - 1.0) < 0.06


def test_ten_thousand_checks_are_all_scheduled_within_their_first_interval():
    async def scenario():
        seen: set[str] = set()

        async def job(j: Job) -> None:
            seen.add(j.key)

        s = Scheduler(job, concurrency=500, max_first_delay=1.0)
        stop = asyncio.Event()
        for i in range(10000):
            s.add(f"c{i}", None, 10.0)
        loop = asyncio.create_task(s.run_forever(stop))
        await asyncio.sleep(1.5)  # jittered over the first second, then all have run once
        stop.set()
        await loop
        return seen, s

    seen, s = run(scenario())
    assert len(s.jobs) == 10000 and len(seen) == 10000


def test_a_sleeping_loop_wakes_for_a_new_job_and_for_stop(monkeypatch):
    """With an hour between beats, a job added while the loop sleeps still runs at once, and stop ends the loop
    at once: neither waits for the timer."""
    monkeypatch.setattr(scheduler_module, "BEAT", 3600.0)

    async def scenario() -> None:
        ran = asyncio.Event()

        async def run(job: Job) -> None:
            ran.set()

        s = Scheduler(run, concurrency=4)
        stop = asyncio.Event()
        loop = asyncio.create_task(s.run_forever(stop))
        await asyncio.sleep(0.05)  # asleep on the empty heap
        s.add("late", None, 3600.0, first_delay=0)
        await asyncio.wait_for(ran.wait(), 30)
        stop.set()
        await asyncio.wait_for(loop, 30)

    asyncio.run(scenario())
