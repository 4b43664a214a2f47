"""The healer's ledger: restart attempts and budgets, committed before anything is done.

An attempt is written (outcome `running`) before its action runs and finished after, so a
monitor killed in between finds it at the next start; a budget's window is counted from the
stored attempts, so a restart of the monitor does not give a target its attempts back.
Blocking calls: the healer runs them in an executor of its own. In a high-availability group an
attempt is fenced: it is written only if this monitor holds the leader lease with the epoch it
believes, checked by the database in the same transaction, so a leader that was paused and woke
after another took over cannot restart anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from clusterwatch.store.db import Database, Result, open_database, run_all
from clusterwatch.store.history import History
from clusterwatch.store.schema import migrate

RUNNING = "running"
INTERRUPTED = "interrupted"
RECOVERED = "recovered"  # healthy again during the attempt, but the evidence shows not by its action
FAILED = ("failed", INTERRUPTED)  # outcomes after which the next attempt backs off
STARTS_KEPT = 5  # a target's recent start times (restart to healthy) that its default verify window learns from


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
    start_times: list[float] = field(default_factory=list)  # recent credited restarts: seconds until healthy


class HealLedger:
    def __init__(self, location: str) -> None:
        self.location = location  # a SQLite file or a postgresql:// URL
        self._db: Database | None = None
        self.fence: Any = None  # the leader lease (a group of monitors): guards every attempt

    def open(self) -> None:
        if self._db is not None:
            return  # a monitor taking over a group resumes with the ledger it has
        self._db = open_database(self.location, pool=1, name="clusterwatch-healer")
        migrate(self._db)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _tx(self, statements: Iterable[tuple[str, Any]], *, fenced: bool = False) -> list[Result]:
        assert self._db is not None, "ledger not open"
        if fenced and self.fence is not None:
            return self.fence.run(self._db, list(statements))
        return run_all(self._db, list(statements))

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        assert self._db is not None, "ledger not open"
        return self._db.rows(sql, args)

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
                ],
                fenced=True,
            )
        return [Attempt(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def budgets(self, window_of: Callable[[str], float | None], now: float | None = None) -> dict[str, BudgetRow]:
        """Every target's budget, with the attempts that still count within its window (`window_of` a
        target: None for one no longer configured), and how long its recent credited restarts took."""
        now = time.time() if now is None else now
        found: dict[str, BudgetRow] = {}
        for row in self._rows("SELECT target, counts_from, exhausted, recovered_at FROM heal_budgets"):
            found[row[0]] = BudgetRow(row[0], row[1], row[2], row[3])
        targets = {r[0] for r in self._rows("SELECT DISTINCT target FROM actions")} | set(found)
        for target in sorted(targets):
            window = window_of(target)
            if window is None:
                continue
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
            starts = self._rows(
                "SELECT duration FROM actions WHERE target = ? AND outcome = 'succeeded' AND dry_run = 0 "
                "AND duration IS NOT NULL ORDER BY started DESC LIMIT ?",
                (target, STARTS_KEPT),
            )
            budget.start_times = [float(r[0]) for r in reversed(starts) if r[0] is not None and r[0] >= 0]
        return found

    # --- while running ------------------------------------------------------------------------------

    def begin(self, row: dict[str, Any]) -> int:
        """Committed before the action runs: from here on a crash cannot hide that it was tried."""
        fence = self.fence
        result = self._tx(
            [
                (
                    "INSERT INTO actions (started, check_name, entity, target, action, reason, attempt, outcome, "
                    "dry_run, epoch, monitor) VALUES (:started, :check, :entity, :target, :action, :reason, :attempt, "
                    ":outcome, :dry_run, :epoch, :monitor) RETURNING id",
                    {
                        **row,
                        "dry_run": int(bool(row.get("dry_run"))),
                        "outcome": RUNNING,
                        "epoch": fence.epoch or 0 if fence is not None else 0,
                        "monitor": fence.node if fence is not None else None,
                    },
                )
            ],
            fenced=True,
        )[0]
        return int(result.rows[0][0])

    def record(self, row: dict[str, Any]) -> None:
        """An attempt made elsewhere (a node's agent while cut off), filed finished: it counts in the budget."""
        self._tx(
            [
                (
                    "INSERT INTO actions (started, finished, duration, check_name, entity, target, action, reason, "
                    "attempt, outcome, detail, dry_run, epoch, monitor) VALUES (:started, :finished, :finished - "
                    ":started, :check, :entity, :target, :action, :reason, :attempt, :outcome, :detail, 0, :epoch, "
                    ":monitor)",
                    {**row, "epoch": (self.fence.epoch or 0) if self.fence is not None else 0},
                )
            ],
            fenced=True,
        )

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
            ],
            fenced=True,
        )

    # --- read only: what a person is told (`heal reset`, the dashboard, the API) ---------------------

    def needs_person(self) -> list[dict[str, Any]]:
        """Targets the healer gave up on: see `needs_person`."""
        return needs_person(self._rows)

    def budget_state(self, target: str, window: float, now: float | None = None) -> dict[str, Any]:
        """What a reset of `target` would undo: when it was given up on, the attempts that count in
        its window now and those since it last recovered or was reset, and the last attempt."""
        now = time.time() if now is None else now
        rows = self._rows("SELECT counts_from, exhausted, recovered_at FROM heal_budgets WHERE target = ?", (target,))
        counts_from = float(rows[0]["counts_from"] or 0.0) if rows else 0.0
        return {
            "target": target,
            "stored": bool(rows),
            "counts_from": counts_from,
            "exhausted": rows[0]["exhausted"] if rows else None,
            "recovered_at": rows[0]["recovered_at"] if rows else None,
            "counting": _attempts_since(self._rows, target, max(counts_from, now - window)),
            "episode": _attempts_since(self._rows, target, counts_from),
            "last": _last_attempt(self._rows, target),
        }

    def targets_of(self, check: str) -> list[str]:
        """Every target a check's restarts have acted on (one per entity for a per-entity restart)."""
        rows = self._rows(
            "SELECT target, MAX(id) AS last FROM actions WHERE check_name = ? AND dry_run = 0 GROUP BY target "
            "ORDER BY last",
            (check,),
        )
        return [r["target"] for r in rows]

    def checks_of(self, target: str) -> list[str]:
        """The checks whose restarts acted on `target`, as the ledger recorded them."""
        rows = self._rows("SELECT DISTINCT check_name FROM actions WHERE target = ? ORDER BY check_name", (target,))
        return [r["check_name"] for r in rows]

    def command_taken(self, kind: str, target: str) -> bool | None:
        """Whether a monitor has taken the newest such command from the queue; None: there is none."""
        rows = self._rows(
            "SELECT done FROM commands WHERE kind = ? AND target = ? ORDER BY id DESC LIMIT 1", (kind, target)
        )
        return None if not rows else rows[0]["done"] is not None


Rows = Callable[[str, tuple[Any, ...]], list[Any]]
NEEDS_PERSON_MAX = 100  # targets given up on, newest first: a front page, not a report


def _attempts_since(rows: Rows, target: str, since: float) -> int:
    found = rows("SELECT COUNT(*) FROM actions WHERE target = ? AND dry_run = 0 AND started >= ?", (target, since))
    return int(found[0][0])


def _last_attempt(rows: Rows, target: str) -> dict[str, Any] | None:
    found = rows(
        "SELECT started, finished, check_name, entity, action, attempt, outcome, detail FROM actions "
        "WHERE target = ? AND dry_run = 0 ORDER BY id DESC LIMIT 1",
        (target,),
    )
    return {k: found[0][k] for k in found[0].keys()} if found else None  # noqa: SIM118 - a row, not a dict


def needs_person(rows: Rows) -> list[dict[str, Any]]:
    """Targets the healer gave up on, newest first, while their budget is still spent: a reset or a
    recovery (healthy for `stable_for`) clears `exhausted`. Each with since when, the attempts since it
    last recovered or was reset, whether it is healthy again meanwhile, and the last attempt."""
    found = []
    for row in rows(
        "SELECT target, counts_from, exhausted, recovered_at FROM heal_budgets WHERE exhausted IS NOT NULL "
        "ORDER BY exhausted DESC LIMIT ?",
        (NEEDS_PERSON_MAX,),
    ):
        last = _last_attempt(rows, row["target"])
        found.append(
            {
                "target": row["target"],
                "check": last["check_name"] if last else None,
                "entity": last["entity"] if last else None,
                "since": row["exhausted"],
                "attempts": _attempts_since(rows, row["target"], float(row["counts_from"] or 0.0)),
                "healthy_since": row["recovered_at"],
                "last_attempt": last,
            }
        )
    return found


class HealingHistory(History):
    """The store's read side (read-only connections) with the ledger's questions, for the web."""

    def needs_person(self) -> list[dict[str, Any]]:
        return needs_person(self._rows)
