"""Escalation under `clusterwatch run`: a restart ladder with a real supervisord and real commands.

Each step has attempts of its own; a step that did not help hands over to the next; the last one
gives up once, and the front page (and /api/v1/status) says a person is needed, with the reset.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, port_open, wait_until
from tests.real.daemon import Daemon, helper
from tests.real.supervisord import Supervisord


@pytest.fixture
def supervisord(tmp_path: Path):
    sv = Supervisord(tmp_path / "sv", {"sidecar": "/bin/sleep 3600"})
    try:
        yield sv
    finally:
        sv.stop()


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def monitor(tmp_path: Path, port: int, ladder: list[dict[str, Any]]) -> Daemon:
    return Daemon(
        tmp_path,
        {
            "interval": "500ms",
            "checks": [
                {"name": "api", "kind": "tcp", "port": port, "timeout": "1s", "fall": 2, "rise": 1, "restart": ladder}
            ],
        },
    )


def step1(sv: Supervisord) -> dict[str, Any]:
    """Restarts fine, and cannot help: the program is not what serves the check's port."""
    return {
        "supervisor": "sidecar",
        "supervisor_url": sv.url,
        "max_attempts": 2,
        "backoff": "200ms",
        "verify_timeout": "2s",
    }


def timeline(d: Daemon) -> str:
    rows = d.actions()
    t0 = rows[0]["started"] if rows else 0.0
    return "\n".join(
        f"  +{r['started'] - t0:5.1f}s #{r['attempt']} {r['target']} {r['outcome']}: {(r['detail'] or '')[:160]}"
        for r in rows
    )


def api_status(d: Daemon) -> dict[str, Any]:
    with urllib.request.urlopen(f"{d.url}/api/v1/status", timeout=10) as answer:
        return json.load(answer)


def test_first_step_cannot_help_second_does(tmp_path: Path, supervisord: Supervisord):
    port, pidfile = free_port(), tmp_path / "server.pid"
    serve = helper("--serve", str(port), "--pidfile", str(pidfile))
    d = monitor(tmp_path, port, [step1(supervisord), {"command": serve, "max_attempts": 2, "verify_timeout": "20s"}])
    sidecar = supervisord.pid("sidecar")
    try:
        d.start()
        d.wait_event("remediation_succeeded", "api", timeout=50)
        wait_until(lambda: port_open(port), timeout=10, what="the service step 2 started")
        rows = d.actions("api")
        print(f"\n{timeline(d)}")
        assert [(r["target"], r["attempt"], r["outcome"]) for r in rows] == [
            ("supervisor:sidecar", 1, "failed"),
            ("supervisor:sidecar", 2, "failed"),
            (f"command:{' '.join(serve)}", 1, "succeeded"),
        ]
        # step 1 really restarted its program, twice (a new pid each time), and that did not help
        assert supervisord.pid("sidecar") != sidecar
        assert all("supervisor restarted sidecar" in r["detail"] for r in rows[:2])
        assert all("still not healthy after 2s" in r["detail"] for r in rows[:2])
        # step 2's command is credited: the pid it started is the one holding the port
        assert f"pid {pidfile.read_text().strip()}" in rows[2]["detail"]
        assert not d.events("remediation_exhausted")
        escalated = [e for e in d.events("remediation_started", "api") if "step 2 of 2" in e["message"]]
        assert len(escalated) == 1
        time.sleep(2)  # healthy now: nothing more is tried
        assert len(d.actions("api")) == 3
        assert api_status(d)["needs_person"] == []
    finally:
        d.stop()
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_nothing_helps_every_step_in_order_then_one_page_and_the_banner(tmp_path: Path, supervisord: Supervisord):
    port, second, third = free_port(), tmp_path / "second", tmp_path / "third"
    recreate = helper("--count", str(second))
    reboot = helper("--count", str(third))
    ladder = [
        step1(supervisord),
        {"command": recreate, "max_attempts": 2, "backoff": "200ms", "verify_timeout": "2s"},
        {"command": reboot, "max_attempts": 1, "verify_timeout": "2s"},
    ]
    d = monitor(tmp_path, port, ladder)
    try:
        d.start()
        [exhausted] = d.wait_event("remediation_exhausted", "api", timeout=55)
        print(f"\n{timeline(d)}\n  exhausted: {exhausted['message']}")
        rows = d.actions("api")
        assert [(r["target"], r["attempt"], r["outcome"]) for r in rows] == [
            ("supervisor:sidecar", 1, "failed"),
            ("supervisor:sidecar", 2, "failed"),
            (f"command:{' '.join(recreate)}", 1, "failed"),
            (f"command:{' '.join(recreate)}", 2, "failed"),
            (f"command:{' '.join(reboot)}", 1, "failed"),
        ]
        assert [r["started"] for r in rows] == sorted(r["started"] for r in rows)
        assert lines(second) == 2 and lines(third) == 1  # each command ran as often as its step allowed
        last = f"command:{' '.join(reboot)}"
        assert f"gave up on {last} (the last of 3 steps)" in exhausted["message"]
        assert "needs a person" in exhausted["message"] and "clusterwatch heal reset api" in exhausted["message"]

        def banner() -> list[dict[str, Any]]:
            return api_status(d)["needs_person"]

        [person] = wait_until(banner, timeout=15, what="the needs-person entry in /api/v1/status")
        assert person["target"] == last and person["check"] == "api" and person["entity"] == "api"
        assert person["reset"] == "clusterwatch heal reset api"
        with urllib.request.urlopen(f"{d.url}/", timeout=10) as answer:
            page = answer.read().decode()
        assert "A person is needed (1)" in page and "clusterwatch heal reset api" in page
        time.sleep(3)  # still down: nothing more is tried, and it is said once
        assert len(d.actions("api")) == 5 and lines(second) == 2 and lines(third) == 1
        assert len(d.events("remediation_exhausted")) == 1
    finally:
        d.stop()
