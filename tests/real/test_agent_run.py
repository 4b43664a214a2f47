"""A real `clusterwatch agent run` pushing to a real `clusterwatch run`: the node and its check show in
the API; a killed service is restarted by the monitor's healer through the agent; with the monitor
gone the agent heals it by itself, and the monitor files what it did when it is back."""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Proc, free_port, port_open, run_cli, wait_until
from tests.real.daemon import Daemon, helper, kill_pidfile

NODE = "phone-1"


def status(d: Daemon) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"{d.url}/api/v1/status", timeout=5) as resp:
        return {c["name"]: c for c in json.load(resp)["checks"]}


def healthy(d: Daemon, *names: str) -> bool:
    found = status(d)
    return all(found.get(n, {}).get("status") == "ok" for n in names)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def setup(tmp_path: Path):
    port = free_port()
    pidfile, counter = tmp_path / "svc.pid", tmp_path / "restarts"
    start = helper("--serve", str(port), "--pidfile", str(pidfile), "--count", str(counter))
    d = Daemon(
        tmp_path,
        {
            "interval": "1s",
            # A busy test machine must not make the node critical (its checks would be affected, not healed).
            "node_thresholds": {"cpu": {}, "memory": {}, "disk": {}, "load": {}},
            "nodes": [{"name": NODE, "agent": True, "expect_dask_worker": False}],
            "checks": [
                {
                    "name": "svc",
                    "kind": "http",
                    "url": f"http://127.0.0.1:{port}/",
                    "node": NODE,
                    "timeout": "1s",
                    "restart": {"command": start, "backoff": "200ms", "verify_timeout": "15s", "window": "10m"},
                }
            ],
        },
    )
    token = tmp_path / "agent-token"
    enrolled = run_cli("agent", "enroll", NODE, "-c", str(d.config_path), "--token-file", str(token))
    assert enrolled.returncode == 0, enrolled.stderr
    agent: list[Proc] = []
    try:
        Proc(start, tmp_path / "first-start.log").popen.wait(30)
        wait_until(lambda: port_open(port), 20, what="the service")
        counter.unlink()
        yield d, port, pidfile, counter, token, agent
    finally:
        for proc in agent:
            proc.stop(timeout=10)
        d.stop()
        kill_pidfile(pidfile)


def start_agent(tmp: Path, d: Daemon, token: Path) -> Proc:
    argv = [sys.executable, "-m", "clusterwatch", "agent", "run", "--server", d.url, "--name", NODE]
    argv += ["--token-file", str(token), "--state-dir", str(tmp / "agent-state")]
    return Proc(argv, tmp / "agent.log")


def test_agent_reports_and_heals_through_the_monitor_and_alone(tmp_path: Path, setup) -> None:
    d, port, pidfile, counter, token, agent = setup
    d.start()
    agent.append(proc := start_agent(tmp_path, d, token))
    wait_until(lambda: healthy(d, NODE, "svc"), 30, what=f"the node and its check ok\n{proc.tail()}")
    node = status(d)[NODE]
    assert node["kind"] == "agent" and node["group"] == "nodes" and "cpu" in node["message"]

    # The service dies: the monitor's healer decides, the agent runs the restart on its node.
    kill_pidfile(pidfile)
    d.wait_event("remediation_succeeded", "svc", timeout=60)
    assert lines(counter) == 1
    wait_until(lambda: healthy(d, "svc"), 20, what="the service ok again")
    wait_until(lambda: "as the monitor asked" in proc.tail(100), 10, what="the agent's line for the restart")
    assert [a["outcome"] for a in d.actions("svc")] == ["succeeded"]

    # The monitor goes away and the service dies again: the agent heals it by itself.
    d.stop()
    kill_pidfile(pidfile)
    wait_until(lambda: "healing on its own" in proc.tail(100), 30, what=f"the agent cut off\n{proc.tail()}")
    wait_until(lambda: lines(counter) == 2 and port_open(port), 60, what=f"the agent's own restart\n{proc.tail()}")
    # its attempt verified before the monitor returns (else "returned" comes between started and succeeded)
    wait_until(lambda: "for svc: succeeded" in proc.tail(100), 60, what=f"the agent's own verdict\n{proc.tail()}")

    # The monitor is back: it files what the agent did, in order, and healing is its own again.
    d.start()
    d.wait_event("agent_healing_returned", NODE, timeout=60)
    kinds = [e["kind"] for e in d.events() if e["kind"].startswith(("agent_healing", "remediation"))]
    assert kinds[-4:] == [
        "agent_healing_taken",
        "remediation_started",
        "remediation_succeeded",
        "agent_healing_returned",
    ], kinds
    wait_until(lambda: len(d.actions("svc")) == 2, 20, what="the agent's restart in the monitor's ledger")
    assert [a["outcome"] for a in d.actions("svc")] == ["succeeded", "succeeded"]
    wait_until(lambda: healthy(d, NODE, "svc"), 30, what="the node and its check ok")
    assert "back: sent" in proc.tail(200)

    # A clean stop on SIGTERM; the token never reached the log.
    proc.signal(signal.SIGTERM)
    assert proc.popen.wait(15) == 0
    text = proc.log.read_text()
    assert "agent stopped" in text
    assert token.read_text().strip() not in text
