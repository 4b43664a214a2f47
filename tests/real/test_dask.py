"""The dask probe against a real scheduler and real workers."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from clusterwatch.model import Group, Status
from tests.conftest import observe
from tests.helpers import wait_until
from tests.real.dask_cluster import DaskCluster


@pytest.fixture
def cluster(tmp_path: Path):
    c = DaskCluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def dask_config(c: DaskCluster, **extra) -> dict:
    return {
        "checks": [
            {"name": "dask", "kind": "dask", "scheduler": c.address, "dashboard": c.dashboard, "timeout": "3s", **extra}
        ]
    }


def test_all_healthy(tmp_path: Path, cluster: DaskCluster):
    cluster.start_scheduler()
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    obs = observe(tmp_path, dask_config(cluster, min_workers=2, expect_workers=["w1", "w2"]))
    scheduler = obs["dask"]
    assert scheduler.status is Status.OK, scheduler.message
    assert scheduler.message.startswith("2 worker(s) (min 2), 2 threads, 0 erred task(s)")
    assert scheduler.details["metrics"] == "available"
    assert scheduler.metrics["workers"] == 2
    for name in ("dask/w1", "dask/w2"):
        assert obs[name].status is Status.OK and obs[name].group is Group.WORKERS, obs[name].message
        assert obs[name].metrics["heartbeat_age_seconds"] < 3
        assert obs[name].metrics["memory_limit_bytes"] > 0


def test_killed_worker_is_critical_by_name(tmp_path: Path, cluster: DaskCluster):
    cluster.start_scheduler()
    cluster.start_worker("w1")
    victim = cluster.start_worker("w2")
    victim.signal(signal.SIGKILL)
    wait_until(lambda: "w2" not in cluster.worker_names(), timeout=15, what="scheduler to drop w2")
    obs = observe(tmp_path, dask_config(cluster, min_workers=2, expect_workers=["w1", "w2"]))
    assert obs["dask/w1"].status is Status.OK
    gone = obs["dask/w2"]
    assert gone.status is Status.CRITICAL
    assert (
        gone.message
        == f"worker w2 is not connected to the scheduler — start it there with `dask worker {cluster.address}`"
    )
    assert obs["dask"].status is Status.CRITICAL
    assert "1 worker(s) connected, at least 2 needed" in obs["dask"].message


def test_hung_worker_is_critical_within_seconds(tmp_path: Path, cluster: DaskCluster):
    """SIGSTOP: the scheduler keeps listing it as running for its 5-minute TTL; we must not."""
    cluster.start_scheduler()
    cluster.start_worker("w1")
    hung = cluster.start_worker("w2")
    hung.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    config = dask_config(cluster, heartbeat_warning="2s", heartbeat_critical="4s")

    def hung_seen():
        obs = observe(tmp_path, config)
        return obs if obs["dask/w2"].status is Status.CRITICAL else None

    obs = wait_until(hung_seen, timeout=20, interval=0.5, what="the hung worker to turn critical")
    assert time.monotonic() - stopped_at < 10
    assert obs["dask/w2"].message.startswith("no heartbeat for ")
    assert "hung" in obs["dask/w2"].message
    assert obs["dask/w1"].status is Status.OK
    assert "w2" in cluster.worker_names()  # the scheduler itself still believes in it
    hung.signal(signal.SIGCONT)


def test_scheduler_down(tmp_path: Path, cluster: DaskCluster):
    cluster.start_scheduler()
    cluster.scheduler.stop()
    obs = observe(tmp_path, dask_config(cluster, expect_workers=["w1"]))
    assert obs["dask"].status is Status.CRITICAL
    assert obs["dask"].message == (
        f"scheduler port: connection refused at 127.0.0.1:{cluster.port} — is `dask scheduler` running?"
    )
    assert obs["dask/w1"].status is Status.UNKNOWN


def test_scheduler_without_prometheus_client(tmp_path: Path):
    c = DaskCluster(tmp_path, prometheus=False)
    try:
        c.start_scheduler()
        c.start_worker("w1")
        obs = observe(tmp_path, dask_config(c, min_workers=1))
    finally:
        c.stop()
    scheduler = obs["dask"]
    assert scheduler.status is Status.OK, scheduler.message
    assert scheduler.metrics["workers"] == 1  # "no metrics" is not "zero workers"
    assert scheduler.details["metrics"].startswith("not available")
    assert "workers_idle" not in scheduler.metrics


def test_workers_expected_from_cluster_yaml(tmp_path: Path, cluster: DaskCluster, write):
    cluster.start_scheduler()
    cluster.start_worker("anything")  # on 127.0.0.1: matches gpu-box by host
    write(
        "cluster.yaml",
        "workers:\n  gpu-box: {host: 127.0.0.1, user: u}\n"
        "  phone-1: {ip: 127.0.0.3, user: u0_a1, port: 8022}\n"
        "  old: {host: 127.0.0.4, status: inactive}\n",
    )
    config = dask_config(cluster)
    config["cluster_ai"] = {"cluster_yaml": "cluster.yaml"}
    obs = observe(tmp_path, config)
    assert obs["dask/anything"].status is Status.OK
    assert "dask/gpu-box" not in obs
    missing = obs["dask/phone-1"]
    assert missing.status is Status.CRITICAL
    assert missing.message.startswith("worker phone-1 (127.0.0.3) is not connected to the scheduler")
    assert "dask/old" not in obs
