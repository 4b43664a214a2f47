"""`clusterwatch heal reset` answers with what it did, and fails (exit 3) when there was nothing to reset.

It reads the stored budget first, asks the monitor through the store's command queue, and says what
was done (a running monitor) or what was asked (none took it yet). A check name stands for every step
of its restart ladder; a target for that one. Against a real `clusterwatch run` where one runs."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from clusterwatch.store.healing import BudgetRow, HealLedger
from tests.helpers import free_port, run_cli, wait_until
from tests.real.daemon import Daemon

T0 = time.time() - 3600  # an hour ago: attempts within the default 10-minute window are made "now"


def config(tmp_path: Path, restart: Any) -> Path:
    path = tmp_path / "c.yaml"
    text = yaml.safe_dump(
        {
            "store": {"path": str(tmp_path / "state.db")},
            "checks": [
                {"name": "api", "kind": "tcp", "port": free_port(), "restart": restart},
                {"name": "plain", "kind": "tcp", "port": free_port()},
            ],
        }
    )
    path.write_text(text)
    return path


def spend(tmp_path: Path, target: str, n: int, *, at: float, exhausted: float | None = None) -> None:
    """Attempts (and the healer's giving up) as the healer files them, with the real ledger."""
    ledger = HealLedger(str(tmp_path / "state.db"))
    ledger.open()
    try:
        for attempt in range(1, n + 1):
            row = {"started": at + attempt, "check": "api", "entity": "api", "target": target, "action": "command"}
            row |= {"reason": "connection refused", "attempt": attempt, "dry_run": 0}
            ledger.finish(ledger.begin(row), finished=at + attempt + 0.5, outcome="failed", detail="still refused")
        if exhausted is not None:
            ledger.save_budget(BudgetRow(target, counts_from=0.0, exhausted=exhausted))
    finally:
        ledger.close()


def queued(tmp_path: Path) -> list[tuple[str, str]]:
    db = tmp_path / "state.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("SELECT kind, target FROM commands ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # never migrated: nothing was asked
            return []


def clock(at: float) -> str:
    today = time.localtime(at)[:3] == time.localtime()[:3]
    return time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S", time.localtime(at))


def test_nothing_to_reset_is_exit_3_and_nothing_is_asked(tmp_path: Path):
    path = config(tmp_path, {"command": ["/bin/false"], "max_attempts": 1})
    untouched = run_cli("heal", "reset", "api", "-c", str(path), "--wait", "0")
    assert untouched.returncode == 3, untouched
    assert untouched.stderr.strip() == (
        "clusterwatch: nothing to reset: the restart budget of command:/bin/false is untouched "
        "(not exhausted, no attempts counting)"
    )
    assert untouched.stdout == ""
    spend(tmp_path, "command:/bin/false", 2, at=T0)  # an hour ago: out of the window, and not given up
    old = run_cli("heal", "reset", "api", "-c", str(path), "--wait", "0")
    assert old.returncode == 3 and "nothing to reset" in old.stderr, old
    for name in ("plain", "nosuch"):  # no restart there: no budget could be meant
        unknown = run_cli("heal", "reset", name, "-c", str(path), "--wait", "0")
        assert unknown.returncode == 3 and f"no check with a restart action is named '{name}'" in unknown.stderr
    assert queued(tmp_path) == []


def test_no_monitor_running_says_what_was_asked(tmp_path: Path):
    path = config(tmp_path, {"command": ["/bin/false"], "max_attempts": 3})
    now = time.time()
    spend(tmp_path, "command:/bin/false", 3, at=now - 60, exhausted=now - 50)
    asked = run_cli("heal", "reset", "api", "-c", str(path), "--wait", "0")
    assert asked.returncode == 0, asked
    assert asked.stdout.strip() == (
        f"asked the monitor to reset the restart budget of command:/bin/false (exhausted since {clock(now - 50)} "
        "after 3 attempts); no monitor took it within 0s: a running one does within seconds, else `clusterwatch "
        "run` does when it starts"
    )
    assert queued(tmp_path) == [("heal_reset", "api")]


def test_attempts_counting_are_named(tmp_path: Path):
    path = config(tmp_path, {"command": ["/bin/false"], "max_attempts": 3})
    spend(tmp_path, "command:/bin/false", 2, at=time.time() - 30)
    asked = run_cli("heal", "reset", "command:/bin/false", "-c", str(path), "--wait", "0")  # by target
    assert asked.returncode == 0, asked
    assert "reset the restart budget of command:/bin/false (with 2 attempts counting)" in asked.stdout
    assert queued(tmp_path) == [("heal_reset", "command:/bin/false")]


def test_a_running_monitor_resets_every_step_of_a_ladder_and_says_so(tmp_path: Path):
    """Both steps used up, the healer gave up; `heal reset api` gives both back, and says how they stood."""
    d = Daemon(
        tmp_path,
        {
            "interval": "200ms",
            "checks": [
                {
                    "name": "api",
                    "kind": "tcp",
                    "port": free_port(),
                    "restart": [
                        {"command": ["/bin/false"], "max_attempts": 1, "backoff": "100ms", "verify_timeout": "300ms"},
                        {"command": ["/bin/true"], "max_attempts": 1, "backoff": "100ms", "verify_timeout": "300ms"},
                    ],
                }
            ],
        },
    )
    try:
        d.start()
        d.wait_event("remediation_exhausted", "api", timeout=60)
        exhausted = {r["target"]: r["exhausted"] for r in d.query("SELECT * FROM heal_budgets")}
        assert set(exhausted) == {"command:/bin/false", "command:/bin/true"} and all(exhausted.values())
        done = run_cli("heal", "reset", "api", "-c", str(d.config_path), "--wait", "60")
        assert done.returncode == 0, done
        lines = done.stdout.strip().splitlines()
        assert lines == [
            f"reset the restart budget of {target} (was exhausted since {clock(exhausted[target])} after 1 attempt)"
            for target in ("command:/bin/false", "command:/bin/true")  # in the ladder's order
        ], done.stdout
        wait_until(lambda: "reset by a person" in d.log(), timeout=30, what="the monitor's own word of it")
        d.wait_event("remediation_exhausted", "api", timeout=60, count=2)  # tried the ladder once more, gave up
        by_target = run_cli("heal", "reset", "command:/bin/true", "-c", str(d.config_path), "--wait", "60")
        assert by_target.returncode == 0, by_target
        assert re.fullmatch(
            r"reset the restart budget of command:/bin/true \(was exhausted since [0-9:]+ after 1 attempt\)\n",
            by_target.stdout,
        )
    finally:
        d.stop()


def test_pause_and_resume_cover_every_step(tmp_path: Path):
    path = config(tmp_path, [{"command": ["/bin/false"]}, {"command": ["/bin/true"]}])
    paused = run_cli("heal", "pause", "api", "--for", "2h", "--reason", "maintenance", "-c", str(path))
    assert paused.returncode == 0, paused
    with sqlite3.connect(tmp_path / "state.db") as conn:
        rows = conn.execute("SELECT target, paused_reason FROM heal_budgets ORDER BY target").fetchall()
    assert rows == [("command:/bin/false", "maintenance"), ("command:/bin/true", "maintenance")]
    resumed = run_cli("heal", "resume", "api", "-c", str(path))
    assert resumed.returncode == 0 and resumed.stdout.strip() == "the healer may restart api again"
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM heal_budgets WHERE paused_until IS NOT NULL").fetchone() == (0,)
