"""`clusterwatch run` against real service managers: supervisord with a Dask worker, Docker Engine."""

from __future__ import annotations

import signal
import xmlrpc.client
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.real.daemon import Daemon
from tests.real.docker_engine import DockerEngine


def test_killed_dask_worker_restarted_through_supervisor(tmp_path: Path, supervised_worker):
    cluster, url = supervised_worker
    d = Daemon(
        tmp_path,
        {
            "interval": "500ms",
            "checks": [
                {
                    "name": "dask",
                    "kind": "dask",
                    "scheduler": cluster.address,
                    "dashboard": cluster.dashboard,
                    "expect_workers": ["w1"],
                    "restart": {"supervisor": "dask-worker-w1", "supervisor_url": url, "verify_timeout": "30s"},
                }
            ],
        },
    )
    d.start()
    try:
        wait_until(
            lambda: (e := d.entity("dask/w1")) is not None and e["hard"] == "ok",
            timeout=20,
            what="the worker seen healthy",
        )
        rpc = xmlrpc.client.ServerProxy(url)
        old_pid = rpc.supervisor.getProcessInfo("dask-worker-w1")["pid"]
        import os

        os.kill(old_pid, signal.SIGKILL)
        d.wait_event("remediation_succeeded", timeout=60)
        d.wait_event("incident_closed", "dask/w1", timeout=30)
        info = rpc.supervisor.getProcessInfo("dask-worker-w1")
        assert info["statename"] == "RUNNING" and info["pid"] != old_pid
        assert "w1" in cluster.worker_names()
        [action] = d.actions()
        assert action["action"] == "supervisor" and action["outcome"] == "succeeded"
        assert action["target"] == "supervisor:dask-worker-w1"
        assert "supervisor restarted dask-worker-w1" in action["detail"]
        opened = d.events("incident_opened", "dask/w1")[0]
        closed = d.events("incident_closed", "dask/w1")[0]
        assert opened["incident"] == closed["incident"]
        [incident] = d.query("SELECT * FROM incidents WHERE entity = 'dask/w1'")
        assert incident["closed"] is not None and incident["duration"] > 0
        assert "not connected" in incident["message"]
    finally:
        d.stop()


@pytest.mark.usefixtures("docker")
def test_unhealthy_container_restarted_through_engine_api(tmp_path: Path, docker: DockerEngine):
    docker.run(
        "web",
        "--health-cmd",
        "test ! -f /tmp/broken",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        command=("sh", "-c", "rm -f /tmp/broken; sleep 3600"),
    )
    wait_until(lambda: docker.inspect("web", "{{.State.Health.Status}}") == "healthy", timeout=30, what="healthy")
    started_before = docker.inspect("web", "{{.State.StartedAt}}")
    d = Daemon(
        tmp_path,
        {
            "interval": "500ms",
            "checks": [
                {
                    "name": "docker",
                    "kind": "docker",
                    "socket": docker.socket,
                    "containers": ["web"],
                    "restart": {"docker": "web", "verify_timeout": "30s"},
                }
            ],
        },
    )
    d.start()
    try:
        wait_until(
            lambda: (e := d.entity("docker/web")) is not None and e["hard"] == "ok",
            timeout=20,
            what="the container seen healthy",
        )
        docker.docker("exec", "web", "touch", "/tmp/broken")
        d.wait_event("remediation_succeeded", "docker/web", timeout=60)
        [action] = d.actions()
        assert action["action"] == "docker" and action["outcome"] == "succeeded"
        assert "through the Engine API" in action["detail"]
        assert docker.inspect("web", "{{.State.StartedAt}}") != started_before
        assert docker.inspect("web", "{{.State.Health.Status}}") in ("healthy", "starting")
        unhealthy = [e for e in d.events("state_change", "docker/web") if e["new"] == "critical"]
        assert unhealthy and "unhealthy" in unhealthy[0]["message"]
    finally:
        d.stop()
