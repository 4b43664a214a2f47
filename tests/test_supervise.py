"""Self-supervision: no background task dies quietly, and "healthy" means the scheduler progresses."""

from __future__ import annotations

import asyncio

from clusterwatch.supervise import GIVE_UP_AFTER, STALL_AFTER, Health, Supervisor


def test_a_loop_that_dies_stops_the_monitor_with_the_reason():
    async def scenario() -> tuple[bool, str | None]:
        stop = asyncio.Event()
        supervisor = Supervisor(stop)

        async def scheduler() -> None:
            await asyncio.sleep(0)
            raise ZeroDivisionError("float division by zero")

        async def web() -> None:
            await asyncio.Event().wait()

        supervisor.spawn("scheduler", scheduler())
        supervisor.spawn("web", web())
        await asyncio.wait_for(stop.wait(), 5)
        await supervisor.stop()
        return stop.is_set(), supervisor.failure

    stopped, failure = asyncio.run(scenario())
    assert stopped
    assert failure is not None and "scheduler" in failure and "ZeroDivisionError" in failure


def test_a_loop_that_returns_is_a_failure_a_finished_job_is_not():
    async def scenario() -> tuple[str | None, str | None]:
        stop = asyncio.Event()
        supervisor = Supervisor(stop)

        async def done() -> None:
            return None

        supervisor.spawn("reload", done(), oneshot=True)
        supervisor.spawn("reload", done(), oneshot=True)
        await asyncio.sleep(0.05)
        quiet = supervisor.failure
        supervisor.spawn("watch", done())
        await asyncio.wait_for(stop.wait(), 5)
        await supervisor.stop()
        return quiet, supervisor.failure

    quiet, failure = asyncio.run(scenario())
    assert quiet is None
    assert failure is not None and "watch" in failure and "returned" in failure


def test_alive_only_while_the_scheduler_beats_and_the_store_commits():
    now = [100.0]
    beat = [100.0]
    store = {"writer_alive": True}
    lag = [0.0]
    supervisor = Supervisor(asyncio.Event())
    health = Health(
        beat=lambda: beat[0],
        has_work=lambda: True,
        lag_p99=lambda: lag[0],
        store=lambda: store,
        supervisor=supervisor,
        clock=lambda: now[0],
    )
    assert health.alive() and health.problems() == []
    now[0] += STALL_AFTER + 1
    assert any("no progress" in p for p in health.problems())
    assert health.stuck() is None  # unhealthy for now; not yet a reason to exit
    now[0] += GIVE_UP_AFTER
    assert health.stuck() is not None
    beat[0] = now[0]
    assert health.alive()
    store["writer_alive"] = False
    assert any("writer" in p for p in health.problems())
    store["writer_alive"] = True
    store.update(queue_depth=500, last_commit_age_s=45.0)  # alive, but committing nothing (a full disk)
    assert any("committed nothing" in p for p in health.failures())
    store.update(queue_depth=0)
    assert health.alive()
    lag[0] = 9.0
    assert any("late" in p for p in health.problems())
    assert health.alive(), "an overloaded monitor is degraded, not dead: no watchdog restart for lag"
    lag[0] = 0.0
    supervisor.failure = "background task scheduler stopped"
    assert health.problems() == ["background task scheduler stopped"]
