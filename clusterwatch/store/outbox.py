"""The durable outbox: a notification is committed here before it is sent, and stays until it is
delivered or expires. Survives restarts and kill -9; per-channel order is kept.

What was told about each incident (alert_state) changes in the same transaction as the
notifications that tell it: a crash can neither send a firing twice nor lose a resolved notice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterwatch.alerting.routing import Silence
from clusterwatch.store.schema import migrate
from clusterwatch.store.sqlite import connect, transaction

RETRY_FIRST, RETRY_MAX = 2.0, 300.0


def retry_delay(attempts: int) -> float:
    """2 s, 4 s, 8 s ... up to 5 minutes between tries of one notification."""
    return min(RETRY_MAX, RETRY_FIRST * 2 ** max(0, attempts - 1))


@dataclass
class Message:
    channel: str
    kind: str  # firing, resolved, escalated, repeat, healed, monitor, test
    severity: str
    title: str
    body: str
    incidents: list[str]


class Outbox:
    """Blocking SQLite calls on one connection, serialised by a lock: call them from a thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(os.path.expanduser(path))  # as the store reads `~/...`
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._conn = connect(self.path)
        migrate(self._conn)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _run(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        return self._tx([(sql, args)])[0]

    def _tx(self, statements: Iterable[tuple[str, Any]]) -> list[sqlite3.Cursor]:
        assert self._conn is not None, "not open"
        with self._lock:
            return transaction(self._conn, statements)

    def _rows(self, sql: str, args: Any = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # --- the queue --------------------------------------------------------------------------------

    def add(
        self,
        messages: list[Message],
        *,
        told: Iterable[tuple[Any, ...]] = (),
        done: Iterable[str] = (),
    ) -> list[int]:
        """Committed before this returns: from here on a notification can't be lost. `told` rows
        (alert_state) are written and `done` incidents' rows deleted in the same transaction."""
        now = time.time()
        statements: list[tuple[str, Any]] = [
            (
                "INSERT INTO outbox (created, channel, kind, severity, title, body, incidents, next_attempt) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (now, m.channel, m.kind, m.severity, m.title, m.body, json.dumps(m.incidents), now),
            )
            for m in messages
        ]
        statements += [("INSERT OR REPLACE INTO alert_state VALUES (?,?,?,?,?,?,?)", row) for row in told]
        statements += [("DELETE FROM alert_state WHERE incident = ?", (incident,)) for incident in done]
        cursors = self._tx(statements)
        return [c.lastrowid for c in cursors[: len(messages)] if c.lastrowid is not None]

    def pending(self) -> list[sqlite3.Row]:
        return self._rows("SELECT * FROM outbox WHERE delivered IS NULL AND expired IS NULL ORDER BY channel, id")

    def delivered(self, row_id: int) -> None:
        self._run(
            "UPDATE outbox SET delivered = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
            (time.time(), row_id),
        )

    def failed(self, row_id: int, attempts: int, error: str) -> float:
        delay = retry_delay(attempts + 1)
        self._run(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE id = ?",
            (time.time() + delay, error, row_id),
        )
        return delay

    def expire(self, max_age: float) -> list[sqlite3.Row]:
        cutoff = time.time() - max_age
        rows = self._rows("SELECT * FROM outbox WHERE delivered IS NULL AND expired IS NULL AND created < ?", (cutoff,))
        if rows:
            self._run(
                f"UPDATE outbox SET expired = ? WHERE id IN ({','.join('?' * len(rows))})",
                (time.time(), *[r["id"] for r in rows]),
            )
        return rows

    def status(self) -> list[sqlite3.Row]:
        """Per channel: what is waiting, what arrived, what was given up, and the last error."""
        return self._rows(
            "SELECT channel, SUM(delivered IS NULL AND expired IS NULL) AS pending, "
            "SUM(delivered IS NOT NULL) AS delivered, SUM(expired IS NOT NULL) AS expired, "
            "MAX(delivered) AS last_delivered, "
            "(SELECT last_error FROM outbox o2 WHERE o2.channel = outbox.channel AND o2.last_error IS NOT NULL "
            " ORDER BY id DESC LIMIT 1) AS last_error, "
            "MIN(CASE WHEN delivered IS NULL AND expired IS NULL THEN next_attempt END) AS next_attempt "
            "FROM outbox GROUP BY channel ORDER BY channel"
        )

    # --- what was told about each incident ----------------------------------------------------------

    def alert_states(self) -> list[sqlite3.Row]:
        return self._rows("SELECT * FROM alert_state")

    def save_states(self, told: Iterable[tuple[Any, ...]], done: Iterable[str] = ()) -> None:
        """alert_state rows (incident, entity, severity, notified, repeated, silenced, healed_by)."""
        self.add([], told=told, done=done)

    def closed_incidents(self, ids: list[str]) -> list[sqlite3.Row]:
        """Incidents that closed while nobody was there to say so (for resolved notices after a restart)."""
        if not ids:
            return []
        return self._rows(
            f"SELECT * FROM incidents WHERE closed IS NOT NULL AND id IN ({','.join('?' * len(ids))})", tuple(ids)
        )

    # --- silences ----------------------------------------------------------------------------------

    def add_silence(self, silence: Silence) -> None:
        self._run(
            "INSERT INTO silences VALUES (?,?,?,?,?,?,?)",
            (
                silence.id,
                json.dumps(silence.matchers),
                silence.starts,
                silence.ends,
                silence.reason,
                time.time(),
                silence.created_by,
            ),
        )

    def silences(self, *, active_only: bool = True) -> list[Silence]:
        sql = "SELECT * FROM silences" + (" WHERE ends > ?" if active_only else "") + " ORDER BY starts"
        return [Silence.from_row(r) for r in self._rows(sql, (time.time(),) if active_only else ())]

    def remove_silence(self, silence_id: str) -> bool:
        return self._run("DELETE FROM silences WHERE id = ?", (silence_id,)).rowcount > 0
