"""The durable outbox: a notification is committed here before it is sent, and stays until it is
delivered or expires. Survives restarts and kill -9; per-channel order is kept.

What was told about each incident (alert_state) changes in the same transaction as the
notifications that tell it: a crash can neither send a firing twice nor lose a resolved notice.

Each notification is claimed before it is sent (PostgreSQL: FOR UPDATE SKIP LOCKED, so two senders
never take the same row) and marked delivered after: at least once, and a second copy only for a
crash between the send and its mark. In a group of monitors the claim, like every new notification,
is fenced by the leader lease in the same transaction: a stale leader sends nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from clusterwatch.alerting.routing import Silence
from clusterwatch.store.db import Result, open_database, run_all
from clusterwatch.store.schema import migrate

RETRY_FIRST, RETRY_MAX = 2.0, 300.0
CLAIM_FOR = 120.0  # seconds a claimed notification is left to its sender (a crash mid-send frees it then)


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
    """Blocking calls: call them from a thread."""

    def __init__(self, location: str | os.PathLike[str], *, member: str = "local") -> None:
        self._db = open_database(location, pool=2, name="clusterwatch-outbox")
        migrate(self._db)
        self.member = member  # who claims notifications to send
        self.fence: Any = None  # the leader lease (a group of monitors)

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, args: Any = ()) -> Result:
        return self._tx([(sql, args)])[0]

    def _tx(self, statements: Iterable[tuple[str, Any]], *, fenced: bool = False) -> list[Result]:
        if fenced and self.fence is not None:
            return self.fence.run(self._db, list(statements))
        return run_all(self._db, list(statements))

    def _rows(self, sql: str, args: Any = ()) -> list[Any]:
        return self._db.rows(sql, args)

    # --- the queue --------------------------------------------------------------------------------

    def add(
        self,
        messages: list[Message],
        *,
        told: Iterable[tuple[Any, ...]] = (),
        done: Iterable[str] = (),
        offline: Iterable[tuple[Any, ...]] = (),
    ) -> list[int]:
        """Committed before this returns: from here on a notification can't be lost. `told` rows
        (alert_state) are written and `done` incidents' rows deleted in the same transaction; so are
        `offline` rows (told_offline: entity, incident, kind, severity, at, member, check_name, node) of a monitor
        alerting from its local outbox while the shared store is away."""
        now = time.time()
        statements: list[tuple[str, Any]] = [
            (
                "INSERT INTO outbox (created, channel, kind, severity, title, body, incidents, next_attempt) "
                "VALUES (?,?,?,?,?,?,?,?) RETURNING id",
                (now, m.channel, m.kind, m.severity, m.title, m.body, json.dumps(m.incidents), now),
            )
            for m in messages
        ]
        statements += [(_ALERT_STATE_UPSERT, row) for row in told]
        statements += [("DELETE FROM alert_state WHERE incident = ?", (incident,)) for incident in done]
        statements += [(_TOLD_OFFLINE, row) for row in offline]
        results = self._tx(statements, fenced=True)
        return [int(r.rows[0][0]) for r in results[: len(messages)]]

    def pending(self) -> list[Any]:
        return self._rows("SELECT * FROM outbox WHERE delivered IS NULL AND expired IS NULL ORDER BY channel, id")

    def claim(self, row_id: int) -> bool:
        """Taken for sending by this member, unless delivered, expired or claimed by another meanwhile."""
        now = time.time()
        lock = " FOR UPDATE SKIP LOCKED" if self._db.dialect == "postgresql" else ""
        result = self._tx(
            [
                (
                    "UPDATE outbox SET claimed_by = ?, claimed_until = ?, epoch = ? WHERE id IN (SELECT id FROM outbox "
                    "WHERE id = ? AND delivered IS NULL AND expired IS NULL AND (claimed_until IS NULL OR "
                    f"claimed_until < ? OR claimed_by = ?){lock}) RETURNING id",
                    (
                        self.member,
                        now + CLAIM_FOR,
                        self.fence.epoch if self.fence is not None else None,
                        row_id,
                        now,
                        self.member,
                    ),
                )
            ],
            fenced=True,
        )[0]
        return bool(result.rows)

    def release_claims(self, epoch: int) -> int:
        """A new leader frees what older leaders claimed and never marked: sent at most once more."""
        return self._tx(
            [
                (
                    "UPDATE outbox SET claimed_until = NULL WHERE delivered IS NULL AND expired IS NULL "
                    "AND claimed_until IS NOT NULL AND (epoch IS NULL OR epoch < ?)",
                    (epoch,),
                )
            ],
            fenced=True,
        )[0].rowcount

    def delivered(self, row_id: int) -> None:
        """Marked whoever holds the lease now: it was sent, and must not be sent again."""
        self._run(
            "UPDATE outbox SET delivered = ?, attempts = attempts + 1, last_error = NULL, claimed_until = NULL "
            "WHERE id = ?",
            (time.time(), row_id),
        )

    def failed(self, row_id: int, attempts: int, error: str) -> float:
        delay = retry_delay(attempts + 1)
        self._run(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?, claimed_until = NULL "
            "WHERE id = ?",
            (time.time() + delay, error, row_id),
        )
        return delay

    def expire(self, max_age: float) -> list[Any]:
        cutoff = time.time() - max_age
        rows = self._rows("SELECT * FROM outbox WHERE delivered IS NULL AND expired IS NULL AND created < ?", (cutoff,))
        if rows:
            self._run(
                f"UPDATE outbox SET expired = ? WHERE id IN ({','.join('?' * len(rows))})",
                (time.time(), *[r["id"] for r in rows]),
            )
        return rows

    def status(self) -> list[Any]:
        """Per channel: what is waiting, what arrived, what was given up, and the last error."""
        return self._rows(
            "SELECT channel, SUM(CASE WHEN delivered IS NULL AND expired IS NULL THEN 1 ELSE 0 END) AS pending, "
            "SUM(CASE WHEN delivered IS NOT NULL THEN 1 ELSE 0 END) AS delivered, "
            "SUM(CASE WHEN expired IS NOT NULL THEN 1 ELSE 0 END) AS expired, "
            "MAX(delivered) AS last_delivered, "
            "(SELECT last_error FROM outbox o2 WHERE o2.channel = outbox.channel AND o2.last_error IS NOT NULL "
            " ORDER BY id DESC LIMIT 1) AS last_error, "
            "MIN(CASE WHEN delivered IS NULL AND expired IS NULL THEN next_attempt END) AS next_attempt "
            "FROM outbox GROUP BY channel ORDER BY channel"
        )

    # --- what was told about each incident ----------------------------------------------------------

    def alert_states(self) -> list[Any]:
        return self._rows("SELECT * FROM alert_state")

    def save_states(self, told: Iterable[tuple[Any, ...]], done: Iterable[str] = ()) -> None:
        """alert_state rows (incident, entity, severity, notified, repeated, silenced, healed_by)."""
        self.add([], told=told, done=done)

    def closed_incidents(self, ids: list[str]) -> list[Any]:
        """Incidents that closed while nobody was there to say so (for resolved notices after a restart)."""
        if not ids:
            return []
        return self._rows(
            f"SELECT * FROM incidents WHERE closed IS NOT NULL AND id IN ({','.join('?' * len(ids))})", tuple(ids)
        )

    # --- told while the shared store was away -------------------------------------------------------

    def hand_over(self) -> list[Any]:
        """A local outbox's leftovers, taken out of it: what it told people (told_offline rows whose
        notice reached at least one channel). What it could not deliver is dropped: it was seen from
        one monitor cut off from the rest (perhaps cut off from the service too), and the leader tells
        from its own, current view."""
        with self._db.transaction() as tx:
            told = tx.execute(f"SELECT {_TOLD_COLUMNS} FROM told_offline").fetchall()
            # (incident, kind) pairs that reached a channel: a resolved notice held back must not count
            # because its firing went out.
            sent: set[tuple[str, str]] = set()
            for incidents, severity in tx.execute(
                "SELECT incidents, severity FROM outbox WHERE delivered IS NOT NULL"
            ).fetchall():
                kind = "resolved" if severity == "resolved" else "firing"
                sent.update((incident, kind) for incident in json.loads(incidents or "[]"))
            tx.execute("DELETE FROM told_offline")
            tx.execute(
                "UPDATE outbox SET expired = ?, last_error = ? WHERE delivered IS NULL AND expired IS NULL",
                (time.time(), "not sent: the shared store came back first, and its leader tells"),
            )
        return [tuple(r) for r in told if (r["incident"], r["kind"]) in sent]

    def take_over(self, told: list[Any]) -> None:
        """The shared store receives what a local outbox told (see hand_over), in one transaction."""
        if told:
            self._tx([(_TOLD_OFFLINE, row) for row in told])

    def told_offline(self, since: float) -> list[Any]:
        return self._rows(f"SELECT {_TOLD_COLUMNS} FROM told_offline WHERE at >= ? ORDER BY at", (since,))

    def forget_told_offline(self, entity: str, until: float) -> None:
        self._run("DELETE FROM told_offline WHERE entity = ? AND at <= ?", (entity, until))

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


_TOLD_COLUMNS = "entity, incident, kind, severity, at, member, check_name, node"
_TOLD_OFFLINE = f"INSERT INTO told_offline ({_TOLD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)"
_ALERT_STATE_UPSERT = (
    "INSERT INTO alert_state (incident, entity, severity, notified, repeated, silenced, healed_by) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT (incident) DO UPDATE SET entity = excluded.entity, "
    "severity = excluded.severity, notified = excluded.notified, repeated = excluded.repeated, "
    "silenced = excluded.silenced, healed_by = excluded.healed_by"
)
