"""What the agent runs on its node: the config built from the monitor's AgentConfig (each check on its
own), and the node's own report, which must read exactly like the SSH script's, judged by the same code."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clusterwatch.agent.local import (
    ConfigProblem,
    build_config,
    dask_worker_running,
    local_policy,
    node_report,
    probe_node,
)
from clusterwatch.agent.protocol import AgentConfig
from clusterwatch.config.schema import Config, Node
from clusterwatch.model import Group, Status
from clusterwatch.probes.ssh import REMOTE_SCRIPT, judge, parse_report
from tests.helpers import wait_until


def agent_config(checks: list[dict[str, Any]], **extra: Any) -> AgentConfig:
    return AgentConfig(
        node={"name": "phone-1", "agent": True, "expect_dask_worker": False, **extra.pop("node", {})},
        checks=checks,
        defaults={"interval": 7.0, "timeout": 3.0, "fall": 3, "rise": 1, **extra.pop("defaults", {})},
        agent_timeout=21.0,
        version="v1",
        server_time=1_700_000_000.0,
        **extra,
    )


def http(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "http", "url": "http://127.0.0.1:8788/health", "node": "phone-1", **extra}


# --- the config ----------------------------------------------------------------------------------------


def test_a_runnable_config_from_defaults_the_node_and_its_checks(tmp_path: Path) -> None:
    built = build_config(agent_config([http("worker")]), str(tmp_path))
    config = built.config
    assert (config.interval, config.timeout, config.fall, config.rise) == (7.0, 3.0, 3, 1)
    assert [n.name for n in config.nodes] == ["phone-1"] and config.nodes[0].agent and config.nodes[0].host is None
    assert [c.name for c in config.checks] == ["worker"]
    assert config.web.enabled is False
    assert config.store.path == str(tmp_path / "heal.db")
    assert not built.broken


def test_what_the_monitor_alone_decides_is_not_taken_from_its_defaults(tmp_path: Path) -> None:
    built = build_config(
        agent_config([], defaults={"web": {"listen": "0.0.0.0:80"}, "alerts": {"channels": {"x": "json://h"}}}),
        str(tmp_path),
    )
    assert built.config.web.enabled is False and not built.config.alerts.channels


def test_a_check_that_cannot_run_here_is_reported_not_fatal(tmp_path: Path) -> None:
    checks = [
        http("ok-check"),
        http("tls-check", url="https://127.0.0.1:8443/", ca_file=str(tmp_path / "missing-ca.pem")),
        http("future-check", some_option_of_a_newer_monitor=True),
        {"name": "new-kind", "kind": "quantum", "node": "phone-1", "interval": 12},
    ]
    built = build_config(agent_config(checks), str(tmp_path))
    assert [c.name for c in built.config.checks] == ["ok-check"]
    assert set(built.broken) == {"tls-check", "future-check", "new-kind"}
    assert "missing-ca.pem" in built.broken["tls-check"].error
    assert "some_option_of_a_newer_monitor" in built.broken["future-check"].error
    assert built.broken["new-kind"].interval == 12.0
    obs = built.broken["tls-check"].observation()
    assert obs.status is Status.UNKNOWN and obs.check == "tls-check" and obs.node == "phone-1"
    assert obs.message.startswith("cannot run on this node: ca_file")
    assert not obs.down


def test_a_ca_file_that_is_here_runs(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    built = build_config(agent_config([http("tls", url="https://127.0.0.1:8443/", ca_file=str(ca))]), str(tmp_path))
    assert [c.name for c in built.config.checks] == ["tls"] and not built.broken


def test_checks_that_clash_with_each_other_leave_only_the_clashing_one_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checks = [http("a"), http("a", url="http://127.0.0.1:1/"), http("phone-1"), http("b"), http("c", kind="x")]
    checks.append(http("no spaces in names"))
    built = build_config(agent_config(checks), str(tmp_path))
    assert [c.name for c in built.config.checks] == ["a", "b"]
    # Reported as unknown under its own name, it would stand for the check (or node) of that name: logged only.
    assert set(built.broken) == {"c"}
    assert "second check named a" in caplog.text and "duplicate name" in caplog.text
    assert "second check named phone-1" in caplog.text
    assert "unusable name was left out: 'no spaces in names'" in caplog.text


def test_roots_on_other_nodes_are_the_monitors_to_judge(tmp_path: Path) -> None:
    checks = [http("api", depends_on=["scheduler-on-another-node", "db"]), http("db")]
    built = build_config(agent_config(checks), str(tmp_path))
    api = next(c for c in built.config.checks if c.name == "api")
    assert api.depends_on == ["db"]


def test_a_restart_on_this_node_runs_here_and_keeps_the_monitors_budget_name(tmp_path: Path) -> None:
    checks = [
        http("w1", restart={"command": ["dask", "worker", "tcp://10.0.0.1:8786"], "node": "phone-1"}),
        http("w2", restart={"dask_worker": {"node": "phone-1", "name": "w2", "command": ["dask", "worker"]}}),
        http("w3", restart={"systemd": "x.service", "node": "another-node"}),
    ]
    built = build_config(agent_config(checks), str(tmp_path))
    by_name = {c.name: c for c in built.config.checks}
    assert by_name["w1"].restart is not None and by_name["w1"].restart[0].node is None
    assert by_name["w2"].restart is not None and by_name["w2"].restart[0].dask_worker.node is None
    assert by_name["w3"].restart is None, "another node's restart is not this agent's to run"
    assert built.targets["command:dask worker tcp://10.0.0.1:8786@phone-1"] == "command:dask worker tcp://10.0.0.1:8786"
    assert built.targets["dask_worker:phone-1/w2"] == "dask_worker:local/w2"


def test_a_commanded_policy_always_runs_here() -> None:
    policy = local_policy({"command": ["true"], "node": "phone-1", "max_attempts": 2})
    assert policy.node is None and policy.max_attempts == 2 and policy.target == "command:true"
    worker = local_policy({"dask_worker": {"node": "phone-1", "name": "w", "command": ["dask", "worker"]}})
    assert worker.dask_worker is not None and worker.dask_worker.node is None


def test_a_node_or_defaults_that_cannot_run_at_all_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigProblem, match="node"):
        build_config(agent_config([], node={"battery_warning": 500}), str(tmp_path))
    with pytest.raises(ConfigProblem, match="defaults"):
        build_config(agent_config([], defaults={"interval": -1}), str(tmp_path))


# --- the node's own report ---------------------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def script_report(home: str) -> dict[str, Any]:
    """What the SSH probe gets from this same machine: REMOTE_SCRIPT run here, parsed by its own parser."""
    env = {**os.environ, "HOME": home}
    out = subprocess.run(["sh", "-c", REMOTE_SCRIPT], capture_output=True, text=True, env=env, timeout=30, check=True)
    return parse_report(out.stdout)


def test_the_report_reads_like_the_ssh_scripts_on_the_same_machine(tmp_path: Path) -> None:
    home = str(tmp_path)
    ours = run(node_report(home=home, sample=0.2))
    theirs = script_report(home)
    assert ours["nproc"] == theirs["nproc"]
    assert ours["MemTotal"] == theirs["MemTotal"]
    assert [line.split()[0] for line in ours["df"]] == [line.split()[0] for line in theirs["df"]]
    for mine, script in zip(ours["df"], theirs["df"], strict=True):
        assert mine.split()[1] == script.split()[1], "the same size in kB"
    assert ("stat1" in ours) == ("stat1" in theirs)
    assert ("dask_worker" in ours) == ("dask_worker" in theirs) or "dask_worker" not in theirs  # no pgrep there
    node = Node(name="n1", agent=True)
    config = Config()
    a, b = judge(node, config, ours, "here", 1.0), judge(node, config, theirs, "here", 1.0)
    assert set(a.metrics) == set(b.metrics)
    assert a.metrics["memory_total_bytes"] == b.metrics["memory_total_bytes"]
    assert a.metrics["cpus"] == b.metrics["cpus"]
    assert a.kind == b.kind == "ssh" and a.group is Group.NODES


def test_the_node_is_judged_with_the_ssh_nodes_thresholds_and_words(tmp_path: Path) -> None:
    node = Node(name="phone-1", agent=True, expect_dask_worker=False)
    # Warnings that always fire, nothing critical: the outcome cannot depend on how busy this machine is.
    limits = {"cpu": {"warning": 0}, "disk": {"warning": 0}, "memory": {}}
    config = Config(node_thresholds=limits)
    (obs,) = run(probe_node(node, config, sample=0.1))
    assert obs.name == obs.check == obs.node == "phone-1"
    assert obs.status is Status.WARNING, obs.message
    assert "cpu" in obs.message and "disk /" in obs.message
    assert obs.target.startswith("agent on ")
    assert obs.latency_ms is not None and obs.latency_ms < 5000


def test_battery_from_termux_battery_status_when_there_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "termux-battery-status"
    data = {"health": "GOOD", "percentage": 15, "plugged": "UNPLUGGED", "status": "DISCHARGING"}
    tool.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(data, indent=2)}\nEOF\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    report = run(node_report(home=str(tmp_path), sample=0.05))
    assert json.loads(report["battery"]) == data
    quiet = Config(node_thresholds={"cpu": {}, "memory": {}, "disk": {}})  # only the battery is graded
    obs = judge(Node(name="phone-1", agent=True, expect_dask_worker=False), quiet, report, "here", 1.0)
    assert obs.metrics["battery_percent"] == 15
    assert "battery 15%" in obs.message and obs.status is Status.WARNING


def test_a_battery_tool_that_hangs_costs_a_bounded_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clusterwatch.agent.local as local

    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "termux-battery-status"
    tool.write_text("#!/bin/sh\nexec sleep 30\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(local, "BATTERY_TIMEOUT", 0.5)
    report = run(node_report(home=str(tmp_path), sample=0.05))
    assert "battery" not in report and report["MemTotal"]


def test_a_dask_worker_process_is_found_by_its_command_line(tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "dask-worker", "tcp://127.0.0.1:1"],
        start_new_session=True,
    )
    try:
        wait_until(dask_worker_running, 10, what="the worker seen")
        report = run(node_report(home=str(tmp_path), sample=0.05))
        assert report["dask_worker"] == "1"
        obs = judge(Node(name="n", agent=True), Config(), report, "here", 1.0)
        assert obs.metrics["dask_worker_running"] == 1.0 and "no dask worker" not in obs.message
    finally:
        worker.kill()
        worker.wait(10)
