"""The dask probe's deeper looks, against a real scheduler and real workers: a wedged worker (tasks
executing, none finishing, heartbeat fine), several workers on one host, the node of each worker."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from clusterwatch.model import Status
from clusterwatch.probes.dask import task_prefix
from tests.conftest import observe
from tests.helpers import Proc, wait_until
from tests.real.dask_cluster import DaskCluster

# A client in a process of its own (stopped by its PID): it submits, then holds its futures so the
# scheduler keeps the tasks. `wedge W`: one task on worker W that blocks forever on an Event, as a task
# stuck on a lock or a dead NFS mount does. `churn W`: short tasks on W, one after the other, for ever.
CLIENT = """
import sys, threading, time, uuid
from distributed import Client

def wedged(_):
    threading.Event().wait()

def short(i):
    time.sleep(0.2)
    return i

mode, worker, address = sys.argv[1:4]
client = Client(address, timeout=20)
if mode == "wedge":
    future = client.submit(wedged, 0, key=f"wedged-{uuid.uuid4().hex}", workers=[worker], pure=False)
    print("submitted", flush=True)
    while True:
        time.sleep(1)
i = 0
while True:
    client.submit(short, i, key=f"short-{uuid.uuid4().hex}", workers=[worker], pure=False).result()
    i += 1
    if i == 3:
        print("finishing tasks", flush=True)
"""


@pytest.fixture
def cluster(tmp_path: Path):
    c = DaskCluster(tmp_path / "dask")
    clients: list[Proc] = []
    c.clients = clients  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        for proc in clients:
            proc.stop()
        c.stop()


def client(c: DaskCluster, tmp_path: Path, mode: str, worker: str) -> Proc:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    proc = Proc([sys.executable, str(script), mode, worker, c.address], tmp_path / f"client-{mode}-{worker}.log")
    c.clients.append(proc)  # type: ignore[attr-defined]
    return proc


def executing(c: DaskCluster, name: str) -> float:
    """What the worker itself last told the scheduler it is executing."""
    for w in c.identity()["workers"].values():
        if w.get("name") == name:
            return float(w.get("metrics", {}).get("task_counts", {}).get("executing", 0))
    return 0.0


def dask_config(c: DaskCluster, **extra) -> dict:
    check = {"name": "dask", "kind": "dask", "scheduler": c.address, "dashboard": c.dashboard, "timeout": "3s"}
    return {"checks": [{**check, **extra}]}


def test_wedged_worker_is_a_warning_naming_its_task_prefix(tmp_path: Path, cluster: DaskCluster):
    cluster.start_scheduler()
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    wedge = client(cluster, tmp_path, "wedge", "w1")
    wait_until(lambda: executing(cluster, "w1") >= 1, timeout=30, what=f"the wedged task to run ({wedge.tail()})")
    config = dask_config(cluster, stuck_after="2s", expect_workers=["w1", "w2"])

    first = observe(tmp_path, config)
    assert first["dask/w1"].status is Status.OK, first["dask/w1"].message  # one look proves nothing yet
    assert first["dask/w1"].metrics["tasks_executing"] == 1
    assert first["dask/w1"].metrics["no_progress_seconds"] < 2

    def stuck():
        obs = observe(tmp_path, config)
        return obs if obs["dask/w1"].status is Status.WARNING else None

    obs = wait_until(stuck, timeout=30, interval=0.5, what="the wedged worker to be called stuck")
    w1 = obs["dask/w1"]
    assert w1.message.startswith("stuck: 1 task(s) executing and none finished for "), w1.message
    assert "(task prefix wedged) while its heartbeat is fine" in w1.message
    assert w1.message.endswith("nothing in Dask brings a wedged worker back; restart it")
    assert w1.metrics["no_progress_seconds"] >= 2 and w1.metrics["heartbeat_age_seconds"] < 5
    assert w1.details["processing_sample"][0].startswith("wedged-")
    assert obs["dask/w2"].status is Status.OK  # idle is not stuck
    assert obs["dask"].status is Status.OK, obs["dask"].message


def test_stuck_names_this_checks_restart_for_that_worker(tmp_path: Path, cluster: DaskCluster):
    cluster.start_scheduler()
    cluster.start_worker("w1")
    wedge = client(cluster, tmp_path, "wedge", "w1")
    wait_until(lambda: executing(cluster, "w1") >= 1, timeout=30, what=f"the wedged task to run ({wedge.tail()})")
    config = dask_config(cluster, stuck_after="1s", restart={"supervisor": "dask-worker-{entity}"})

    def stuck():
        obs = observe(tmp_path, config)
        return obs if obs["dask/w1"].status is Status.WARNING else None

    w1 = wait_until(stuck, timeout=30, interval=0.5, what="the wedged worker to be called stuck")["dask/w1"]
    assert w1.message.endswith("restart it: `supervisorctl restart dask-worker-w1`"), w1.message


def test_a_worker_that_finishes_tasks_is_not_stuck(tmp_path: Path, cluster: DaskCluster):
    """Short tasks one after the other: always one executing, but they leave. Meanwhile the scheduler's
    identity.json answers 500 whenever a heartbeat carries the timings of finished tasks (a Dask
    fault): the workers are read from its table of workers then, and stay visible."""
    cluster.start_scheduler()
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    churn = client(cluster, tmp_path, "churn", "w2")
    wait_until(lambda: "finishing tasks" in churn.tail(), timeout=30, what="short tasks to run")
    config = dask_config(cluster, stuck_after="3s", expect_workers=["w1", "w2"])
    sources: set[str] = set()
    started = time.monotonic()
    rounds = 0
    while time.monotonic() - started < 8 or rounds < 5:  # well past stuck_after, whatever the machine's pace
        obs = observe(tmp_path, config)
        rounds += 1
        assert obs["dask"].status is Status.OK, obs["dask"].message
        for name in ("dask/w1", "dask/w2"):
            assert obs[name].status is Status.OK, obs[name].message
        sources.add(obs["dask"].details["workers_from"])
    assert churn.alive()
    # The fallback was needed, and used (with the installed Dask, the fault shows within seconds).
    assert any(s.startswith("workers.html (identity.json: HTTP 500)") for s in sources), sources


def test_workers_per_host_and_each_workers_node(tmp_path: Path, cluster: DaskCluster):
    """Three workers on one host (as `dask worker --nworkers 3` makes): the scheduler counts three; that
    host's own worker dashboard would speak for one (dask/distributed #8544)."""
    cluster.start_scheduler()
    for name in ("w1", "w2", "w3"):
        cluster.start_worker(name)
    config = dask_config(cluster, expect_workers=["w1", "w2", "w3", "w4"])
    config["nodes"] = [{"name": "box", "host": "127.0.0.1", "agent": True}]
    obs = observe(tmp_path, config)
    scheduler = obs["dask"]
    assert scheduler.message.endswith("; 1 host (3 workers on 127.0.0.1)"), scheduler.message
    assert scheduler.metrics["hosts"] == 1 and scheduler.metrics["max_workers_per_host"] == 3
    assert scheduler.details["workers_per_host"] == {"127.0.0.1": {"workers": 3, "threads": 3, "executing": 0}}
    for name in ("dask/w1", "dask/w2", "dask/w3"):
        assert obs[name].node == "box", (name, obs[name].node)  # a templated restart acts on box
    assert obs["dask/w4"].status is Status.CRITICAL and obs["dask/w4"].node is None  # host w4: no such node

    alone = observe(tmp_path, dask_config(cluster))
    assert all(o.node is None for o in alone.values())  # no configured node has the host: none


def test_missing_worker_says_this_checks_restart(tmp_path: Path, cluster: DaskCluster):
    cluster.start_scheduler()
    config = dask_config(cluster, expect_workers=["w9"], restart={"supervisor": "dask-worker-{entity}"})
    gone = observe(tmp_path, config)["dask/w9"]
    assert (
        gone.message == "worker w9 is not connected to the scheduler — start it: `supervisorctl restart dask-worker-w9`"
    )


@pytest.mark.parametrize(
    ("key", "prefix"),
    [
        ("wedged-3f2a9c0d1e2b4a5f8c7d6e5f4a3b2c1d", "wedged"),
        ("('sum-aggregate-3f2a9c0d1e2b4a5f8c7d6e5f4a3b2c1d', 4)", "sum-aggregate"),
        ("read-parquet-deadbeef", "read-parquet"),
        ("load-deadbeef", "load"),
        ("3f2a9c0d1e2b4a5f8c7d6e5f4a3b2c1d", "data"),
        ("<lambda>-0a1b", "lambda"),
        ("", "?"),
    ],
)
def test_task_prefix_groups_keys_as_dask_does(key: str, prefix: str):
    assert task_prefix(key) == prefix
