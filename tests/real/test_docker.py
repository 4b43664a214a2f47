"""The docker probe against a real Docker Engine."""

from __future__ import annotations

from pathlib import Path

from clusterwatch.model import Status
from tests.conftest import observe
from tests.helpers import wait_until
from tests.real.docker_engine import DockerEngine


def docker_config(engine: DockerEngine, containers: list[str]) -> dict:
    return {"checks": [{"name": "docker", "kind": "docker", "socket": engine.socket, "containers": containers}]}


def test_running_container_found_by_compose_name(tmp_path: Path, docker: DockerEngine):
    docker.run("cluster-ai-backend-1")
    docker.run("open-webui")
    obs = observe(tmp_path, docker_config(docker, ["backend", "open-webui"]))
    assert obs["docker"].status is Status.OK
    assert obs["docker"].message.startswith("Docker ") and "2 running, 0 stopped" in obs["docker"].message
    backend = obs["docker/backend"]
    assert backend.status is Status.OK and backend.target == "cluster-ai-backend-1"
    assert backend.message.startswith("running, up ")
    assert obs["docker/open-webui"].status is Status.OK


def test_name_matching_is_not_a_substring_match(tmp_path: Path, docker: DockerEngine):
    docker.run("cluster-ai-backendish-1")
    obs = observe(tmp_path, docker_config(docker, ["backend"]))
    assert obs["docker/backend"].status is Status.CRITICAL
    assert obs["docker/backend"].message.startswith("no container matches 'backend'")


def test_stopped_container(tmp_path: Path, docker: DockerEngine):
    docker.run("redis", command=("sh", "-c", "exit 3"))
    wait_until(lambda: docker.inspect("redis", "{{.State.Status}}") == "exited", what="container to exit")
    obs = observe(tmp_path, docker_config(docker, ["redis"]))["docker/redis"]
    assert obs.status is Status.CRITICAL
    assert obs.message == "exited, exit code 3 — `docker start redis`"
    assert obs.metrics["exit_code"] == 3 and obs.metrics["running"] == 0


def test_unhealthy_container(tmp_path: Path, docker: DockerEngine):
    docker.run("open-webui", "--health-cmd", "echo db down; false", "--health-interval", "1s", "--health-retries", "1")
    wait_until(
        lambda: docker.inspect("open-webui", "{{.State.Health.Status}}") == "unhealthy",
        timeout=30,
        what="container to turn unhealthy",
    )
    obs = observe(tmp_path, docker_config(docker, ["open-webui"]))["docker/open-webui"]
    assert obs.status is Status.CRITICAL
    assert obs.message.startswith("unhealthy (")
    assert "db down" in obs.message
    assert obs.details["health"] == "unhealthy"


def test_healthy_container(tmp_path: Path, docker: DockerEngine):
    docker.run("frontend", "--health-cmd", "true", "--health-interval", "1s")
    wait_until(
        lambda: docker.inspect("frontend", "{{.State.Health.Status}}") == "healthy",
        timeout=30,
        what="container to turn healthy",
    )
    obs = observe(tmp_path, docker_config(docker, ["frontend"]))["docker/frontend"]
    assert obs.status is Status.OK and obs.message.startswith("running, healthy, up")


def test_restart_count_rising(tmp_path: Path, docker: DockerEngine):
    docker.run("flaky", "--restart", "on-failure:2", command=("sh", "-c", "sleep 0.3; exit 1"))
    wait_until(lambda: docker.inspect("flaky", "{{.RestartCount}}") == "2", timeout=30, what="two restarts")
    obs = observe(tmp_path, docker_config(docker, ["flaky"]))["docker/flaky"]
    assert obs.metrics["restart_count"] == 2
    assert obs.status in (Status.WARNING, Status.CRITICAL)  # restarting, or exited after its last try


def test_missing_container(tmp_path: Path, docker: DockerEngine):
    obs = observe(tmp_path, docker_config(docker, ["prometheus"]))["docker/prometheus"]
    assert obs.status is Status.CRITICAL
    assert obs.message == "no container matches 'prometheus' — start it (`docker compose up -d prometheus`)"


def test_daemon_down(tmp_path: Path):
    missing = tmp_path / "docker.sock"
    obs = observe(tmp_path, {"checks": [{"name": "docker", "kind": "docker", "socket": str(missing)}]})["docker"]
    assert obs.status is Status.CRITICAL
    assert obs.message == f"Docker socket {missing} does not exist — is Docker installed and `dockerd` running?"
    # A socket file nobody listens on: a daemon that died without cleaning up.
    import socket

    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(dead))
    obs = observe(tmp_path, {"checks": [{"name": "docker", "kind": "docker", "socket": str(dead)}]})["docker"]
    assert obs.status is Status.CRITICAL and "connection refused" in obs.message
