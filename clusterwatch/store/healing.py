"""The healer's ledger: restart attempts and budgets, committed before anything is done.

An attempt is written (outcome `running`) before its action runs and finished after, so a
monitor killed in between finds it at the next start; a budget's window is counted from the
stored attempts, so a restart of the monitor does not give a target its attempts back.
Blocking calls on one connection: the healer runs them in an executor of its own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterwatch.store.schema import migrate
from clusterwatch.store.sqlite import connect, transaction

RUNNING = "running"
INTERRUPTED = "interrupted"
FAILED = ("failed", INTERRUPTED)  # outcomes after which the next attempt backs off


@dataclass
class Attempt:
    id: int
    target: str
    check: str
    entity: str
    started: float
    attempt: int


@dataclass
class BudgetRow:
    target: str
    counts_from: float = 0.0  # attempts before this (a reset, a recovery) no longer count
    exhausted: float | None = None  # when the healer gave up; None while it may act
    recovered_at: float | None = None  # healthy since; the budget comes back after `stable_for`
    attempts: list[float] = field(default_factory=list)  # starts of the attempts that count
    failed_streak: int = 0  # attempts in a row that did not help: the backoff grows with them
    last_finished: float | None = None  # when the last attempt ended: the backoff counts from there


class HealLedger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(os.path.expanduser(path))  # as the store reads `~/...`
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._conn = connect(self.path)
        migrate(self._conn)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _tx(self, statements: Iterable[tuple[str, Any]]) -> list[sqlite3.Cursor]:
        assert self._conn is not None, "not open"
        with self._lock:
            return transaction(self._conn, statements)

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        assert self._conn is not None, "ledger not open"
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # --- at start ---------------------------------------------------------------------------------

    def take_interrupted(self, now: float | None = None) -> list[Attempt]:
        """Attempts a crash cut short: recorded as such (once), and handed back to be looked at."""
        now = time.time() if now is None else now
        rows = self._rows(
            "SELECT id, target, check_name, entity, started, attempt FROM actions WHERE outcome = ? ORDER BY id",
            (RUNNING,),
        )
        if rows:
            self._tx(
                [
                    (
                        "UPDATE actions SET outcome = ?, finished = ?, duration = ? - started, detail = "
                        "'the monitor stopped while this attempt ran; its result was looked at after the restart' "
                        "WHERE id = ? AND outcome = ?",
                        (INTERRUPTED, now, now, r["id"], RUNNING),
                    )
                    for r in rows
                ]
            )
        return [Attempt(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def budgets(self, window_of: dict[str, float], now: float | None = None) -> dict[str, BudgetRow]:
        """Every target's budget, with the attempts that still count within its window."""
        now = time.time() if now is None else now
        found: dict[str, BudgetRow] = {}
        for row in self._rows("SELECT target, counts_from, exhausted, recovered_at FROM heal_budgets"):
            found[row[0]] = BudgetRow(row[0], row[1], row[2], row[3])
        for target, window in window_of.items():
            budget = found.setdefault(target, BudgetRow(target))
            # A clock set back (no RTC at boot) leaves attempts "in the future": they still count.
            since = max(budget.counts_from, now - window)
            rows = self._rows(
                "SELECT started, finished, outcome FROM actions WHERE target = ? AND dry_run = 0 AND started >= ? "
                "ORDER BY started",
                (target, since),
            )
            budget.attempts = [r[0] for r in rows]
            for _started, finished, outcome in rows:
                budget.failed_streak = budget.failed_streak + 1 if outcome in FAILED else 0
                budget.last_finished = finished
        return found

    # --- while running ------------------------------------------------------------------------------

    def begin(self, row: dict[str, Any]) -> int:
        """Committed before the action runs: from here on a crash cannot hide that it was tried."""
        cursor = self._tx(
            [
                (
                    "INSERT INTO actions (started, check_name, entity, target, action, reason, attempt, outcome, "
                    "dry_run) VALUES (:started, :check, :entity, :target, :action, :reason, :attempt, :outcome, "
                    ":dry_run)",
                    {**row, "outcome": RUNNING},
                )
            ]
        )[0]
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish(self, attempt_id: int, *, finished: float, outcome: str, detail: str) -> None:
        self._tx(
            [
                (
                    "UPDATE actions SET finished = ?, outcome = ?, detail = ?, duration = ? - started WHERE id = ?",
                    (finished, outcome, detail, finished, attempt_id),
                )
            ]
        )

    def paused(self, now: float | None = None) -> dict[str, str]:
        """Targets a person stopped on purpose, and why: the healer leaves them alone until then."""
        now = time.time() if now is None else now
        rows = self._rows("SELECT target, paused_reason FROM heal_budgets WHERE paused_until > ?", (now,))
        return {r[0]: r[1] or "paused by a person" for r in rows}

    def pause(self, target: str, until: float | None, reason: str = "") -> None:
        """`until` None resumes. Written straight to the store: a running monitor reads it on its next look."""
        self._tx(
            [
                (
                    "INSERT INTO heal_budgets (target, paused_until, paused_reason) VALUES (?,?,?) "
                    "ON CONFLICT (target) DO UPDATE SET paused_until = excluded.paused_until, "
                    "paused_reason = excluded.paused_reason",
                    (target, until, reason or None),
                )
            ]
        )

    def save_budget(self, budget: BudgetRow) -> None:
        self._tx(
            [
                (
                    "INSERT INTO heal_budgets (target, counts_from, exhausted, recovered_at) VALUES (?,?,?,?) "
                    "ON CONFLICT (target) DO UPDATE SET counts_from = excluded.counts_from, "
                    "exhausted = excluded.exhausted, recovered_at = excluded.recovered_at",
                    (budget.target, budget.counts_from, budget.exhausted, budget.recovered_at),
                )
            ]
        )
