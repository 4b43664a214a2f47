"""The Engine API client against a real Docker Engine: a container list of more than 1 MB and an
inspect answer sent in two chunks are read whole, and the restart action restarts exactly the
containers the name matches."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from clusterwatch.config.schema import Config
from clusterwatch.heal.actions import perform
from clusterwatch.model import Status
from clusterwatch.probes.docker_client import Engine
from tests.conftest import observe
from tests.helpers import wait_until
from tests.real.docker_engine import DockerEngine

LABELS = 8
LABEL_BYTES = 16_000  # under the kernel's 128 kB limit for one argument, 8 per `docker create`


def raw_answer(socket: str, path: str) -> bytes:
    """An answer as Docker sends it, read the plain way, to know how large it really is."""

    async def read() -> bytes:
        connector = aiohttp.UnixConnector(path=socket)
        async with aiohttp.ClientSession(connector=connector) as session, session.get(f"http://docker{path}") as resp:
            return await resp.read()

    return asyncio.run(read())


def test_container_list_over_one_megabyte_is_read_whole(tmp_path: Path, docker: DockerEngine):
    names = [f"big-{i:02d}" for i in range(9)]
    for i, name in enumerate(names):
        labels = [f"--label=org.example.note{k}={chr(97 + i) * LABEL_BYTES}" for k in range(LABELS)]
        docker.docker("create", "--name", name, "--network", "host", *labels, "tiny:latest", "sleep", "3600")
    docker.run("web")
    size = len(raw_answer(docker.socket, "/containers/json?all=1"))
    assert size > 1_000_000, size

    started = time.perf_counter()
    check = {"name": "docker", "kind": "docker", "socket": docker.socket, "containers": ["web", "big-08"]}
    config = {"checks": [check]}
    obs = observe(tmp_path, config)
    took = time.perf_counter() - started
    daemon = obs["docker"]
    assert daemon.status is Status.OK, daemon.message
    assert daemon.message.endswith(": 1 running, 9 stopped"), daemon.message
    assert daemon.metrics["containers_total"] == 10
    assert obs["docker/web"].status is Status.OK
    last = obs["docker/big-08"]
    assert last.status is Status.CRITICAL and last.message == "created, exit code 0 — `docker start big-08`"
    print(f"container list of {size / 1e6:.2f} MB: probe round in {took:.2f}s")

    async def listed() -> list[dict]:
        async with Engine(docker.socket, timeout=30) as engine:
            return await engine.containers()

    summaries = asyncio.run(listed())
    assert sorted(n for s in summaries for n in s["Names"]) == sorted(f"/{n}" for n in [*names, "web"])


def test_restart_action_restarts_the_matching_containers(docker: DockerEngine):
    docker.run("cluster-ai-backend-1")
    docker.run("cluster-ai-backendish-1")
    names = ("cluster-ai-backend-1", "cluster-ai-backendish-1")
    before = {name: docker.inspect(name, "{{.State.StartedAt}}") for name in names}
    config = Config.model_validate(
        {
            "checks": [
                {
                    "name": "docker",
                    "kind": "docker",
                    "socket": docker.socket,
                    "containers": ["backend"],
                    "restart": {"docker": "backend", "timeout": "60s"},
                }
            ]
        }
    )
    check = config.checks[0]
    assert check.restart is not None
    outcome = asyncio.run(perform(check.restart[0], check, config))
    assert outcome.ok and outcome.detail == "restarted container cluster-ai-backend-1 through the Engine API"
    wait_until(lambda: docker.inspect("cluster-ai-backend-1", "{{.State.Running}}") == "true", what="running again")
    assert docker.inspect("cluster-ai-backend-1", "{{.State.StartedAt}}") != before["cluster-ai-backend-1"]
    assert docker.inspect("cluster-ai-backendish-1", "{{.State.StartedAt}}") == before["cluster-ai-backendish-1"]

    missing = check.restart[0].model_copy(update={"docker": "prometheus"})
    outcome = asyncio.run(perform(missing, check, config))
    assert not outcome.ok and outcome.detail == "no container matches 'prometheus'"


def test_an_inspect_answer_sent_in_several_chunks_is_read_whole(docker: DockerEngine):
    """What made test_unhealthy_container fail: with five health-check log entries a container's
    inspect answer is over Go's 4 kB write buffer, so Docker sends it in two chunks, and a reader
    that takes what is buffered got the first one alone about one time in twenty."""
    docker.run("open-webui", "--health-cmd", "echo db down; false", "--health-interval", "1s", "--health-retries", "1")
    wait_until(
        lambda: int(docker.inspect("open-webui", "{{.State.Health.FailingStreak}}")) >= 5,
        timeout=60,
        what="five failed health checks",
    )
    container_id = docker.inspect("open-webui", "{{.Id}}")
    assert len(raw_answer(docker.socket, f"/containers/{container_id}/json")) > 4096

    async def inspect_many() -> list[dict]:
        async with Engine(docker.socket, timeout=120) as engine:
            return [await engine.inspect(container_id) or {} for _ in range(100)]

    answers = asyncio.run(inspect_many())
    assert all(len(a["State"]["Health"]["Log"]) == 5 for a in answers)
