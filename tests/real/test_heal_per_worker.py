"""Per-worker healing under `clusterwatch run`: a real Dask scheduler, three workers each run by a real
supervisord as `dask-worker-wN`, and `restart: {supervisor: "dask-worker-{entity}"}`.

A worker that dies or hangs is restarted on its own — never its neighbours — with a budget of its
own, and an attempt is credited only when the evidence shows a new instance (a new pid) serves.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import wait_until
from tests.real.daemon import Daemon
from tests.real.dask_cluster import BIN, DaskCluster
from tests.real.supervisord import Supervisord

WORKERS = ("w1", "w2", "w3")
WORKER_TTL = "8s"  # the scheduler drops a worker silent this long (Dask's floor is 10 heartbeats, 5 s)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[DaskCluster, Supervisord]]:
    dask = DaskCluster(tmp_path / "dask")
    dask.env["DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL"] = WORKER_TTL
    sv: Supervisord | None = None
    try:
        dask.start_scheduler()
        programs = {
            f"dask-worker-{name}": f"{BIN / 'dask'} worker {dask.address} --name {name} --nthreads 1 "
            "--host 127.0.0.1 --dashboard-address 127.0.0.1:0 --no-nanny"
            for name in WORKERS
        }
        sv = Supervisord(tmp_path / "sv", programs, stopwaitsecs=2)
        wait_until(lambda: dask.worker_names() >= set(WORKERS), timeout=60, what="three workers at the scheduler")
        yield dask, sv
    finally:
        if sv is not None:
            sv.stop()
        dask.stop()


def monitor(tmp_path: Path, dask: DaskCluster, sv: Supervisord) -> Daemon:
    return Daemon(
        tmp_path,
        {
            "interval": "1s",
            "checks": [
                {
                    "name": "dask",
                    "kind": "dask",
                    "scheduler": dask.address,
                    "dashboard": dask.dashboard,
                    "expect_workers": list(WORKERS),
                    "fall": 2,
                    "rise": 1,
                    # A hung worker is noticed here by the scheduler dropping it (worker-ttl), not its late heartbeat.
                    "heartbeat_warning": "40s",
                    "heartbeat_critical": "60s",
                    "restart": {
                        "supervisor": "dask-worker-{entity}",
                        "supervisor_url": sv.url,
                        "max_attempts": 1,
                        "verify_timeout": "40s",
                    },
                }
            ],
        },
    )


def pids(sv: Supervisord) -> dict[str, int]:
    return {name: sv.pid(f"dask-worker-{name}") for name in WORKERS}


def addresses(dask: DaskCluster) -> dict[str, str]:
    """Each worker's address at the scheduler (for the story printed: a restarted worker joins on a random
    port, which may be the one the killed worker freed)."""
    return {str(w.get("name")): address for address, w in dask.identity()["workers"].items()}


def all_healthy(d: Daemon) -> bool:
    rows = [d.entity(f"dask/{name}") for name in WORKERS]
    return all(row is not None and row["hard"] == "ok" for row in rows)


def finished(d: Daemon, entity: str) -> list[Any]:
    rows = [r for r in d.actions("dask") if r["entity"] == entity]
    return rows if rows and all(r["outcome"] != "running" for r in rows) else []


def timeline(d: Daemon) -> str:
    return "\n".join(
        f"  {r['entity']} #{r['attempt']} {r['target']} {r['outcome']} {r['duration'] or 0:.1f}s: {r['detail']}"
        for r in d.actions()
    )


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_killed_worker_only_its_own_program_restarted_with_its_own_budget(tmp_path: Path, cluster):
    dask, sv = cluster
    d = monitor(tmp_path, dask, sv)
    try:
        d.start()
        wait_until(lambda: all_healthy(d), timeout=40, what=f"three healthy workers\n{d.log()[-2000:]}")
        before = pids(sv)
        os.kill(before["w2"], signal.SIGKILL)
        [action] = wait_until(lambda: finished(d, "dask/w2"), timeout=50, interval=0.3, what="w2's restart")
        after = pids(sv)
        print(f"\nkill -9 w2 (pid {before['w2']}): pids {before} -> {after}\n{timeline(d)}")
        assert action["target"] == "supervisor:dask-worker-w2" and action["attempt"] == 1
        assert action["outcome"] == "succeeded", action["detail"]
        assert after["w2"] != before["w2"] and f"pid {after['w2']}" in action["detail"]
        assert after["w1"] == before["w1"] and after["w3"] == before["w3"]  # the neighbours untouched
        wait_until(lambda: all_healthy(d), timeout=30, what="w2 back at the scheduler")
        assert [r["target"] for r in d.actions()] == ["supervisor:dask-worker-w2"]

        # w2's budget (one attempt) is spent; w1's is its own: killed too, it gets its own first attempt.
        os.kill(after["w1"], signal.SIGKILL)
        [w1] = wait_until(lambda: finished(d, "dask/w1"), timeout=50, interval=0.3, what="w1's restart")
        again = pids(sv)
        print(f"kill -9 w1 (pid {after['w1']}): pids {after} -> {again}\n{timeline(d)}")
        assert w1["target"] == "supervisor:dask-worker-w1" and w1["attempt"] == 1
        assert w1["outcome"] == "succeeded", w1["detail"]
        assert again["w2"] == after["w2"] and again["w3"] == after["w3"]
        assert not d.events("remediation_exhausted")
        assert [r["target"] for r in d.actions()] == ["supervisor:dask-worker-w2", "supervisor:dask-worker-w1"]
    finally:
        d.stop()


def test_hung_worker_dropped_by_the_scheduler_is_stopped_then_started_and_credited(tmp_path: Path, cluster):
    dask, sv = cluster
    d = monitor(tmp_path, dask, sv)
    try:
        d.start()
        wait_until(lambda: all_healthy(d), timeout=40, what=f"three healthy workers\n{d.log()[-2000:]}")
        before, where = pids(sv), addresses(dask)
        os.kill(before["w3"], signal.SIGSTOP)  # hung: its connection stays open, its heartbeats stop
        stopped_at = time.time()
        wait_until(lambda: "w3" not in dask.worker_names(), timeout=40, what="the scheduler to drop w3 (worker-ttl)")
        [action] = wait_until(lambda: finished(d, "dask/w3"), timeout=50, interval=0.3, what="w3's restart")
        after = pids(sv)
        wait_until(lambda: all_healthy(d), timeout=30, what="w3 back at the scheduler")
        now = addresses(dask)
        print(
            f"\nSIGSTOP w3 (pid {before['w3']}, {where['w3']}): dropped, then pid {after['w3']}, {now['w3']}; "
            f"attempt {action['started'] - stopped_at:.1f}s after the stop\n{timeline(d)}"
        )
        assert action["target"] == "supervisor:dask-worker-w3" and action["attempt"] == 1
        assert "not connected to the scheduler" in action["reason"]
        assert action["outcome"] == "succeeded", action["detail"]
        # stop, then start: the frozen process was killed (SIGTERM, SIGKILL after stopwaitsecs) before the new one
        assert gone(before["w3"])
        log = (sv.workdir / "supervisord.log").read_text()
        assert f"killing 'dask-worker-w3' ({before['w3']}) with SIGKILL" in log
        # credited for what it brought: a new pid
        assert after["w3"] != before["w3"] and f"pid {after['w3']}" in action["detail"]
        # ... and the scheduler dropped w3 (above) and has a w3 again: a new worker (its port may be the same)
        assert "w3" in now
        assert after["w1"] == before["w1"] and after["w2"] == before["w2"]
        assert [r["target"] for r in d.actions()] == ["supervisor:dask-worker-w3"]
    finally:
        d.stop()
