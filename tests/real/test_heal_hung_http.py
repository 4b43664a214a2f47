"""A hung (SIGSTOP'd) HTTP service under `clusterwatch run`, healed by a command restart.

A frozen process keeps its port: the kernel still accepts connections into its backlog, so a second
copy started beside it dies on "address already in use", and the old one, resumed later, looks like
the restart's work. With `stop:` the old instance goes first and the new one is credited; without
it the attempt must never be recorded as what fixed it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import Proc, free_port, port_open, wait_until
from tests.real.daemon import Daemon, helper

STOP_SCRIPT = """\
#!/bin/sh
# Stop the service by its pidfile: SIGTERM, SIGCONT (a stopped process acts on nothing else), then SIGKILL.
pid=$(cat "$1" 2>/dev/null) || exit 0
[ -n "$pid" ] || exit 0
kill -TERM "$pid" 2>/dev/null
kill -CONT "$pid" 2>/dev/null
n=0
while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 20 ]; do sleep 0.1; n=$((n+1)); done
kill -KILL "$pid" 2>/dev/null
exit 0
"""


# A service that hangs without being stopped (a deadlock): psutil sees it "sleeping", as a healthy one.
DEADLOCKING_SERVER = """\
import http.server, os, sys, time

FLAG = sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        while os.path.exists(FLAG):  # held: every request waits, as behind a lock that is never released
            time.sleep(0.1)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\\n")

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

# Starts the server detached (as a service manager would) and notes its pid; exits 0 at once.
DEADLOCKING_START = """\
import subprocess, sys

server, port, flag, pids, log = sys.argv[1:6]
with open(log, "ab") as out:
    child = subprocess.Popen([sys.executable, server, port, flag], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=out, start_new_session=True)
with open(pids, "a") as f:
    f.write(f"{child.pid}\\n")
"""


def http_servers(port: int) -> list[int]:
    """PIDs of the HTTP servers on PORT the tests started (for stopping them, and counting copies)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = process.info["cmdline"] or []
            server = "http.server" in cmdline or any(arg.endswith("server.py") for arg in cmdline)
            if server and str(port) in cmdline and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process.pid)
    return found


@pytest.fixture
def service(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real `python -m http.server` on a free loopback port, started (detached) by the start script,
    its pid in a pidfile; every server on that port is killed by its PID at the end."""
    port, pidfile, starts = free_port(), tmp_path / "server.pid", tmp_path / "starts"
    stop = tmp_path / "stop.sh"
    stop.write_text(STOP_SCRIPT)
    stop.chmod(0o755)
    start = helper("--serve", str(port), "--pidfile", str(pidfile), "--count", str(starts))
    try:
        Proc(start, tmp_path / "first-start.log").popen.wait(15)
        wait_until(lambda: port_open(port), timeout=20, what="the HTTP service")
        yield {"port": port, "pidfile": pidfile, "starts": starts, "start": start, "stop": [str(stop), str(pidfile)]}
    finally:
        for pid in http_servers(port):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def monitor(tmp_path: Path, port: int, restart: dict[str, Any]) -> Daemon:
    return Daemon(
        tmp_path,
        {
            "interval": "500ms",
            "checks": [
                {
                    "name": "web",
                    "kind": "http",
                    "url": f"http://127.0.0.1:{port}/",
                    "timeout": "1s",
                    "fall": 2,
                    "rise": 1,
                    "restart": restart,
                }
            ],
        },
    )


def healthy(d: Daemon) -> bool:
    row = d.entity("web")
    return row is not None and row["hard"] == "ok"


def finished(d: Daemon) -> list:
    rows = d.actions("web")
    return rows if rows and all(r["outcome"] != "running" for r in rows) else []


def timeline(d: Daemon) -> str:
    return "\n".join(
        f"  {r['attempt']} {r['target']} {r['outcome']} {r['duration'] or 0:.1f}s: {r['detail']}" for r in d.actions()
    )


def test_hung_service_with_stop_is_stopped_then_started_and_credited(tmp_path: Path, service: dict[str, Any]):
    port, pidfile = service["port"], service["pidfile"]
    d = monitor(
        tmp_path,
        port,
        {
            "command": service["start"],
            "stop": service["stop"],
            "stop_timeout": "10s",
            "verify_timeout": "20s",
            "max_attempts": 2,
            "backoff": "500ms",
        },
    )
    try:
        d.start()
        wait_until(lambda: healthy(d), timeout=30, what=f"the service healthy at first\n{d.log()[-2000:]}")
        hung = int(pidfile.read_text())
        os.kill(hung, signal.SIGSTOP)
        stopped_at = time.time()
        [action] = wait_until(lambda: finished(d), timeout=50, interval=0.3, what=f"the attempt\n{d.log()[-3000:]}")
        new = int(pidfile.read_text())
        print(f"\nhung pid {hung}, new pid {new}\n{timeline(d)}")
        assert action["target"].startswith("command:") and action["attempt"] == 1
        assert action["started"] >= stopped_at
        assert action["outcome"] == "succeeded", action["detail"]
        # stopped first (the frozen pid let its port go), then started; the new pid is what serves
        assert f"pid {hung} free after" in action["detail"]
        assert f"pid {new}" in action["detail"] and new != hung
        assert not psutil.pid_exists(hung) or psutil.Process(hung).status() == psutil.STATUS_ZOMBIE
        assert http_servers(port) == [new]  # one copy, the restarted one
        assert len(service["starts"].read_text().splitlines()) == 2  # the fixture's start and the restart's
        wait_until(lambda: healthy(d), timeout=20, what="the service healthy again")
        [succeeded] = d.wait_event("remediation_succeeded", "web", timeout=20)  # events are written apart
        assert "not by the restart" not in succeeded["message"]
    finally:
        d.stop()


def test_hung_service_without_stop_is_never_credited(tmp_path: Path, service: dict[str, Any]):
    port, pidfile = service["port"], service["pidfile"]
    d = monitor(
        tmp_path,
        port,
        {"command": service["start"], "verify_timeout": "5s", "max_attempts": 1},
    )
    try:
        d.start()
        wait_until(lambda: healthy(d), timeout=30, what=f"the service healthy at first\n{d.log()[-2000:]}")
        hung = int(pidfile.read_text())
        os.kill(hung, signal.SIGSTOP)
        wait_until(lambda: finished(d), timeout=50, interval=0.3, what=f"the attempt\n{d.log()[-3000:]}")
        d.wait_event("remediation_exhausted", "web", timeout=20)
        os.kill(hung, signal.SIGCONT)  # a person (or the kernel) resumes the old process
        wait_until(lambda: healthy(d), timeout=30, what=f"the resumed service healthy\n{d.log()[-2000:]}")
        print(f"\nhung pid {hung}\n{timeline(d)}")
        [action] = d.actions("web")
        assert action["outcome"] != "succeeded", action["detail"]
        # What the action does: it sees the frozen holder of the port and refuses to start a second copy.
        assert action["outcome"] == "failed"
        assert f"pid {hung} holds port {port}" in action["detail"] and "`stop:`" in action["detail"]
        assert len(service["starts"].read_text().splitlines()) == 1  # the start command never ran
        assert http_servers(port) == [hung]  # the resumed old process is what serves
        assert not d.events("remediation_succeeded", "web")
    finally:
        d.stop()


def test_deadlocked_service_without_stop_resumed_meanwhile_is_recovered_not_succeeded(tmp_path: Path):
    """The case that was seen: the hang is invisible to the process table, so the start-only command
    runs, its copy dies on the port, and the old process serves again within the verify window."""
    port, flag, pids, log = free_port(), tmp_path / "held", tmp_path / "pids", tmp_path / "servers.log"
    server, start_script = tmp_path / "server.py", tmp_path / "start.py"
    server.write_text(DEADLOCKING_SERVER)
    start_script.write_text(DEADLOCKING_START)
    start = [sys.executable, str(start_script), str(server), str(port), str(flag), str(pids), str(log)]

    def started() -> list[int]:
        return [int(p) for p in pids.read_text().split()] if pids.exists() else []

    d = monitor(tmp_path, port, {"command": start, "verify_timeout": "30s", "max_attempts": 1})
    try:
        Proc(start, tmp_path / "first-start.log").popen.wait(15)
        wait_until(lambda: port_open(port), timeout=20, what="the HTTP service")
        [old] = started()
        d.start()
        wait_until(lambda: healthy(d), timeout=30, what=f"the service healthy at first\n{d.log()[-2000:]}")
        flag.touch()  # deadlocked: it accepts connections and never answers
        wait_until(lambda: len(started()) == 2, timeout=40, what=f"the restart's start command\n{d.log()[-3000:]}")
        copy = started()[1]
        # The second copy dies on the port; the attempt is still inside its verify window.
        wait_until(
            lambda: not psutil.pid_exists(copy) or psutil.Process(copy).status() == psutil.STATUS_ZOMBIE,
            timeout=20,
            what="the second copy to die on the port",
        )
        assert "Address already in use" in log.read_text()
        assert [r["outcome"] for r in d.actions("web")] == ["running"]
        flag.unlink()  # the old process gets going again by itself
        [action] = wait_until(lambda: finished(d), timeout=40, interval=0.3, what=f"the attempt\n{d.log()[-3000:]}")
        print(f"\nold pid {old}, the restart's copy {copy}\n{timeline(d)}")
        assert action["outcome"] == "recovered", action["detail"]
        assert f"healthy again, but not by this action: pid {old}" in action["detail"]
        assert http_servers(port) == [old]
        [event] = d.wait_event("remediation_succeeded", "web", timeout=20)
        assert "not by the restart" in event["message"]
    finally:
        d.stop()
        with contextlib.suppress(FileNotFoundError):
            flag.unlink()
        for pid in {*started(), *http_servers(port)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
