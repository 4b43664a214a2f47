"""The restart actions that cannot run for real here (no systemd as PID 1, no compose plugin) are
run against stand-in commands on PATH that record their argv: what would reach systemctl and
docker compose is exactly what a person would type, with no shell in between."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from clusterwatch.config.schema import Config
from clusterwatch.heal.actions import perform

RECORDER = """#!/bin/sh
printf '%s\\n' "$0" "$@" >> "{log}"
exit {code}
"""


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch):
    log = tmp_path / "argv.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, code in (("systemctl", 0), ("docker", 0)):
        script = bin_dir / name
        script.write_text(RECORDER.format(log=log, code=code))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def run(config: dict) -> tuple[bool, str]:
    cfg = Config.model_validate(config)
    check = cfg.checks[0]
    assert check.restart is not None
    outcome = asyncio.run(perform(check.restart[0], check, cfg))
    return outcome.ok, outcome.detail


def test_systemd_restart_argv(recorded: Path):
    ok, detail = run(
        {"checks": [{"name": "ollama", "kind": "tcp", "port": 1, "restart": {"systemd": "ollama.service; rm -rf /"}}]}
    )
    assert ok, detail
    lines = recorded.read_text().splitlines()
    assert lines[0].endswith("/systemctl") and lines[1:] == ["restart", "ollama.service; rm -rf /"]


def test_compose_up_argv(recorded: Path):
    ok, detail = run(
        {
            "checks": [
                {
                    "name": "webui",
                    "kind": "tcp",
                    "port": 1,
                    "restart": {
                        "compose": {
                            "project": "cluster-ai",
                            "service": "open-webui",
                            "file": "/srv/cluster-ai/docker-compose.yml",
                        }
                    },
                }
            ]
        }
    )
    assert ok, detail
    assert recorded.read_text().splitlines()[1:] == [
        "compose",
        "-p",
        "cluster-ai",
        "-f",
        "/srv/cluster-ai/docker-compose.yml",
        "up",
        "-d",
        "open-webui",
    ]


def test_a_failing_command_is_an_outcome_not_an_exception(tmp_path: Path):
    ok, detail = run(
        {
            "checks": [
                {
                    "name": "api",
                    "kind": "tcp",
                    "port": 1,
                    "restart": {"command": ["/bin/sh", "-c", "echo nope; exit 3"]},
                }
            ]
        }
    )
    assert not ok and "exited 3: nope" in detail
    marker = tmp_path / "still-running"
    ok, detail = run(
        {
            "checks": [
                {
                    "name": "api",
                    "kind": "tcp",
                    "port": 1,
                    "restart": {"command": ["/bin/sh", "-c", f"sleep 1; touch {marker}"], "timeout": "300ms"},
                }
            ]
        }
    )
    assert not ok and ("did not finish within 0.3s" in detail or "killed after 0.3s" in detail)
    import time

    time.sleep(1.5)
    assert not marker.exists()  # killed, not left running


def test_a_start_command_that_leaves_a_daemon_is_done_when_it_exits(tmp_path: Path):
    """`nohup service &` keeps the output open: the action ends with the command, and the daemon lives on."""
    pidfile = tmp_path / "daemon.pid"
    script = f"echo starting; sleep 60 & echo $! > {pidfile}"
    ok, detail = run({"checks": [{"name": "api", "kind": "tcp", "port": 1,
                                  "restart": {"command": ["sh", "-c", script], "timeout": "20s"}}]})
    pid = int(pidfile.read_text())
    try:
        assert ok and "exited 0: starting" in detail, detail
        os.kill(pid, 0)  # still there: not killed as "out of time"
    finally:
        os.kill(pid, 9)
