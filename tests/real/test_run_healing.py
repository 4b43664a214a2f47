"""`clusterwatch run` healing real services: budgets, flapping, dependencies, SSH."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.helpers import Proc, ServerThread, free_port, port_open, wait_until
from tests.real.daemon import Daemon, helper, kill_pidfile
from tests.real.sshd import SSHServer


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def test_never_recovers_exact_attempts_then_exhausted_then_budget_back(tmp_path: Path, daemons):
    port, counter = free_port(), tmp_path / "restarts"
    d = Daemon(
        tmp_path,
        {
            "interval": "300ms",
            "checks": [
                {
                    "name": "api",
                    "kind": "tcp",
                    "port": port,
                    "timeout": "1s",
                    "restart": {
                        "command": helper("--count", str(counter)),
                        "max_attempts": 3,
                        "backoff": "200ms",
                        "verify_timeout": "1s",
                        "window": "10m",
                        "stable_for": "1s",
                    },
                }
            ],
        },
    )
    daemons.append(d)
    d.start()
    d.wait_event("remediation_exhausted", "api", timeout=40)
    assert lines(counter) == 3
    time.sleep(3)  # nothing more while it stays down
    assert lines(counter) == 3
    assert len(d.events("remediation_exhausted")) == 1
    assert [a["outcome"] for a in d.actions("api")] == ["failed", "failed", "failed"]
    assert [a["attempt"] for a in d.actions("api")] == [1, 2, 3]
    gaps = [b["started"] - a["started"] for a, b in zip(d.actions("api"), d.actions("api")[1:], strict=False)]
    assert gaps[1] > gaps[0]  # growing delays

    server = Proc(["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"], tmp_path / "srv.log")
    try:
        d.wait_event("incident_closed", "api", timeout=20)
        time.sleep(1.5)  # healthy for longer than stable_for: a real recovery, not a blip
    finally:
        server.stop()
    # Down again: the budget is back after the recovery, so the healer acts again.
    d.wait_event("remediation_started", "api", timeout=20, count=4)
    wait_until(lambda: lines(counter) >= 4, timeout=10, what="a fourth restart")
    assert len(d.query("SELECT * FROM incidents WHERE entity = 'api'")) == 2


def test_flapping_service_gets_no_restart_storm(tmp_path: Path, daemons):
    counter = tmp_path / "restarts"
    flips = {"n": 0}

    async def health(request: web.Request) -> web.Response:
        flips["n"] += 1
        return web.Response(status=200 if flips["n"] % 2 else 500)

    app = web.Application()
    app.router.add_get("/health", health)
    with ServerThread(app) as server:
        d = Daemon(
            tmp_path,
            {
                "interval": "250ms",
                "checks": [
                    {
                        "name": "flappy",
                        "kind": "http",
                        "url": f"{server.url}/health",
                        "fall": 1,
                        "rise": 1,
                        "restart": {
                            "command": helper("--count", str(counter)),
                            "max_attempts": 3,
                            "backoff": "100ms",
                            "verify_timeout": "1s",
                        },
                    }
                ],
            },
        )
        daemons.append(d)
        d.start()
        d.wait_event("flapping_started", "flappy", timeout=30)
        at_flapping = lines(counter)
        time.sleep(5)
        after = lines(counter)
    # Each flap "recovers", but a blip is no recovery: the budget of 3 holds across the flaps,
    # and once flapping is recognised nothing more is restarted.
    assert at_flapping <= 3, "restarts before flapping was recognised"
    assert after == at_flapping, "restarts while flapping"
    state = d.entity("flappy")
    assert state is not None and state["flapping"] == 1


def test_root_down_one_incident_only_root_restarted(tmp_path: Path, daemons):
    port = free_port()
    pids, root_count, dep_count = tmp_path / "pids", tmp_path / "root", tmp_path / "dependant"
    serve = helper("--serve", str(port), "--pidfile", str(pids))
    Proc(serve, tmp_path / "first.log").popen.wait(10)
    wait_until(lambda: port_open(port), what="the service")
    d = Daemon(
        tmp_path,
        {
            "interval": "300ms",
            "checks": [
                {
                    "name": "ollama",
                    "kind": "tcp",
                    "port": port,
                    "interval": "200ms",
                    "restart": {
                        "command": [*serve, "--count", str(root_count), "--delay", "1.5"],
                        "verify_timeout": "10s",
                    },
                },
                {
                    "name": "webui",
                    "kind": "http",
                    "url": f"http://127.0.0.1:{port}/",
                    "depends_on": ["ollama"],
                    "restart": {"command": helper("--count", str(dep_count)), "verify_timeout": "2s"},
                },
            ],
        },
    )
    daemons.append(d)
    try:
        d.start()
        wait_until(lambda: (e := d.entity("webui")) is not None and e["hard"] == "ok", what="healthy start")
        kill_pidfile(pids)  # the root dies, taking its dependant down with it
        d.wait_event("remediation_succeeded", "ollama", timeout=30)
        wait_until(
            lambda: (e := d.entity("webui")) is not None and e["hard"] == "ok",
            timeout=15,
            what="the dependant to recover with its root",
        )
        time.sleep(1)
        incidents = d.query("SELECT entity FROM incidents")
        assert [row["entity"] for row in incidents] == ["ollama"]
        assert lines(root_count) == 1 and lines(dep_count) == 0
        affected = [e for e in d.events("state_change", "webui") if e["new"] == "critical"]
        assert affected and affected[0]["affected_by"] == "ollama"
    finally:
        kill_pidfile(pids)


def test_restart_over_ssh(tmp_path: Path, daemons):
    port = free_port()
    pids = tmp_path / "pids"
    sshd = SSHServer(tmp_path / "sshd")
    try:
        node = sshd.node("box")
        d = Daemon(
            tmp_path,
            {
                "interval": "300ms",
                "nodes": [node],
                "checks": [
                    {
                        "name": "api",
                        "kind": "http",
                        "url": f"http://127.0.0.1:{port}/",
                        "node": "box",
                        "restart": {
                            "command": helper("--serve", str(port), "--pidfile", str(pids)),
                            "node": "box",
                            "verify_timeout": "10s",
                        },
                    }
                ],
            },
        )
        daemons.append(d)
        d.start()
        d.wait_event("remediation_succeeded", "api", timeout=40)
        [action] = d.actions("api")
        assert action["outcome"] == "succeeded" and "on box exited 0" in action["detail"]
        assert port_open(port)
        assert "Accepted publickey" in sshd.proc.tail(50)
    finally:
        kill_pidfile(pids)
        sshd.stop()


def test_dry_run_only_logs(tmp_path: Path, daemons):
    counter = tmp_path / "restarts"
    d = Daemon(
        tmp_path,
        {
            "interval": "300ms",
            "healing": {"dry_run": True},
            "checks": [
                {
                    "name": "api",
                    "kind": "tcp",
                    "port": free_port(),
                    "restart": {"command": helper("--count", str(counter))},
                }
            ],
        },
    )
    daemons.append(d)
    d.start()
    wait_until(lambda: d.actions("api"), timeout=20, what="a recorded dry run")
    time.sleep(2)
    assert not counter.exists()
    [action] = d.actions("api")
    assert action["outcome"] == "dry_run" and action["dry_run"] == 1
    assert "would restart command:" in d.log()


def test_secrets_in_a_restart_command_reach_neither_store_nor_logs(tmp_path: Path, daemons):
    secret = "s3cr3t-token-4711"
    d = Daemon(
        tmp_path,
        {
            "interval": "300ms",
            "checks": [
                {
                    "name": "api",
                    "kind": "tcp",
                    "port": free_port(),
                    "restart": {"command": ["/bin/echo", "${CW_TOKEN}"], "max_attempts": 1, "verify_timeout": "500ms"},
                }
            ],
        },
        env={"CW_TOKEN": secret},
    )
    daemons.append(d)
    d.start()
    d.wait_event("remediation_exhausted", "api", timeout=20)
    d.stop()
    [action] = d.actions("api")
    assert "/bin/echo ***" in action["detail"]
    for path in [d.db_path, *tmp_path.glob("state.db*"), *tmp_path.glob("daemon-*.log"), *tmp_path.glob("logs/*")]:
        assert secret.encode() not in path.read_bytes(), path
