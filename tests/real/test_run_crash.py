"""The monitor killed with -9 in the middle of its work, and started again: it carries on from the
store as if it had not died — no restart lost, none doubled, no budget given back."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import free_port, port_open, run_cli, wait_until
from tests.real.daemon import Daemon, helper, kill_pidfile


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def kill_9(d: Daemon) -> None:
    """`kill -9 PID` of the monitor alone, as an OOM kill or a crash would: what it started lives on."""
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.popen.wait(10)
    d.proc.stop()


@pytest.fixture
def service(tmp_path: Path):
    """The restarted service's pidfile: whatever the healer started is stopped by its PID."""
    pidfile = tmp_path / "service.pid"
    yield pidfile
    kill_pidfile(pidfile)


def api_daemon(tmp_path: Path, port: int, counter: Path, service: Path, *extra: str, **restart: object) -> Daemon:
    """One TCP check on `port`, restarted by a command that counts its runs and serves the port again."""
    command = helper("--count", str(counter), "--serve", str(port), "--pidfile", str(service), *extra)
    check = {"name": "api", "kind": "tcp", "port": port, "timeout": "1s", "restart": {"command": command, **restart}}
    return Daemon(tmp_path, {"interval": "300ms", "checks": [check]})


def test_kill_9_while_a_restart_is_in_flight(tmp_path: Path, service: Path):
    port, counter = free_port(), tmp_path / "restarts"
    # The service takes 4 s to come up: the monitor dies in the middle of that.
    d = api_daemon(
        tmp_path, port, counter, service, "--delay", "4", timeout="20s", verify_timeout="20s", backoff="500ms"
    )
    try:
        d.start()
        wait_until(  # the attempt written, and its command begun (the healer first asks what serves)
            lambda: [a for a in d.actions("api") if a["outcome"] == "running"] and lines(counter) == 1,
            timeout=30,
            what=f"an attempt in flight, its command started\n{d.log()[-2000:]}",
        )
        kill_9(d)
        assert not port_open(port), "the service came up before the monitor was killed: the test proves nothing"
        restarted = time.time()
        d.start()
        wait_until(
            lambda: (e := d.entity("api")) is not None and e["hard"] == "ok",
            timeout=60,
            what=f"api healthy again\n{d.log()[-3000:]}",
        )
        time.sleep(2)  # anything the new monitor would wrongly do next, it would do now
        assert lines(counter) == 1, "a second restart ran while the first one's service was coming up"
        [action] = d.actions("api")
        assert action["outcome"] == "succeeded" and action["attempt"] == 1 and action["finished"] is not None
        assert "cut short when the monitor stopped" in action["detail"]
        succeeded = d.events("remediation_succeeded", "api")
        assert len(succeeded) == 1 and "cut short" in succeeded[0]["message"]
        # (the first monitor's own remediation_started may be lost with the batch it died in: history,
        # not state — the attempt itself was committed before it ran)
        assert all(e["ts"] < restarted for e in d.events("remediation_started", "api"))
        assert "was cut short when the monitor stopped" in d.log()
        [incident] = d.query("SELECT * FROM incidents WHERE entity = 'api'")
        assert incident["closed"] is not None
    finally:
        d.stop()


def test_restart_budget_holds_across_a_monitor_restart(tmp_path: Path, service: Path):
    port, counter = free_port(), tmp_path / "restarts"
    d = api_daemon(
        tmp_path,
        port,
        counter,
        service,
        max_attempts=3,
        window="10m",
        stable_for="10m",  # each recovery here is a blip: the budget never comes back
        backoff="200ms",
        verify_timeout="10s",
    )

    def healed(n: int) -> None:
        wait_until(lambda: lines(counter) == n and port_open(port), timeout=40, what=f"restart {n}\n{d.log()[-2000:]}")
        wait_until(lambda: len(d.events("remediation_succeeded", "api")) == n, timeout=30, what=f"verified {n}")

    try:
        d.start()
        healed(1)  # down from the start: restart 1
        kill_pidfile(service)
        healed(2)
        kill_9(d)
        d.start()
        kill_pidfile(service)
        healed(3)
        kill_pidfile(service)
        d.wait_event("remediation_exhausted", "api", timeout=40)
        time.sleep(2)
        assert lines(counter) == 3, "the monitor's restart gave the target its attempts back"
        assert [a["attempt"] for a in d.actions("api")] == [1, 2, 3]
        assert not port_open(port)
    finally:
        d.stop()


def test_a_target_paused_by_a_person_is_not_restarted_until_resumed(tmp_path: Path, service: Path):
    port, counter = free_port(), tmp_path / "restarts"
    d = api_daemon(tmp_path, port, counter, service, verify_timeout="10s")
    # Stopped on purpose before the monitor even starts: maintenance.
    paused = run_cli("heal", "pause", "api", "--for", "1h", "--reason", "maintenance", "-c", str(d.config_path))
    assert paused.returncode == 0, paused.stderr
    try:
        d.start()
        d.wait_event("incident_opened", "api", timeout=30)
        time.sleep(3)
        assert lines(counter) == 0, "restarted a service a person stopped on purpose"
        assert "maintenance" in d.log()
        resumed = run_cli("heal", "resume", "-c", str(d.config_path), "api")
        assert resumed.returncode == 0, resumed.stderr
        d.wait_event("remediation_succeeded", "api", timeout=30)
        assert lines(counter) == 1
    finally:
        d.stop()
