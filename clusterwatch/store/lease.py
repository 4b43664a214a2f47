"""The leader lease and the group's members, in the shared store (PostgreSQL), timed by its clock.

One row: taken or renewed with a single conditional UPDATE; the epoch goes up at every change of
holder. A fenced transaction ends by asking the database, holding the lease row `FOR SHARE` until it
commits, whether this member still holds the lease with the epoch it believes: a new leader's take
waits for that commit, and a stale leader's write is refused (`Fenced`) instead of being made.
No session advisory locks: they break behind a transaction pooler and across a database failover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clusterwatch.store.db import PG_CONNECT_TIMEOUT_S, Database, Fenced, Result, Tx, open_database, run_all
from clusterwatch.store.schema import migrate

# The database's clock in seconds since the epoch: one clock for every member of the group.
NOW = {
    "postgresql": "extract(epoch from clock_timestamp())::float8",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
MEMBERS_KEPT_FOR = 86400.0  # seconds a member that stopped renewing stays listed


@dataclass(frozen=True)
class Held:
    """The lease as its holder got it: the epoch, since when this holder has it, until when."""

    epoch: int
    acquired_at: float
    expires_at: float


class LeaseStore:
    def __init__(self, location: str) -> None:
        self._db: Database = open_database(location, pool=2, name="clusterwatch-lease")
        self._now = NOW[self._db.dialect]
        self._lock = " FOR SHARE" if self._db.dialect == "postgresql" else ""

    def open(self) -> LeaseStore:
        migrate(self._db)
        run_all(self._db, [("INSERT INTO ha_lease (name) VALUES ('leader') ON CONFLICT (name) DO NOTHING", ())])
        return self

    def close(self) -> None:
        self._db.close()

    def take(self, member: str, node: str, lease: float) -> Held | None:
        """Renew it if this member holds it, take it if nobody holds it any more; None: another does."""
        now = self._now
        rows = run_all(
            self._db,
            [
                (
                    f"UPDATE ha_lease SET epoch = CASE WHEN holder = :member THEN epoch ELSE epoch + 1 END, "
                    f"acquired_at = CASE WHEN holder = :member THEN acquired_at ELSE {now} END, "
                    f"holder = :member, node = :node, renewed_at = {now}, expires_at = {now} + :lease "
                    f"WHERE name = 'leader' AND (holder = :member OR holder IS NULL OR expires_at < {now}) "
                    "RETURNING epoch, acquired_at, expires_at",
                    {"member": member, "node": node, "lease": lease},
                )
            ],
        )[0].rows
        return Held(int(rows[0][0]), float(rows[0][1]), float(rows[0][2])) if rows else None

    def left(self) -> float:
        """Seconds until the current lease runs out, by the database's clock (0: it has)."""
        rows = self._db.rows(f"SELECT expires_at - {self._now} FROM ha_lease WHERE name = 'leader'")
        return max(0.0, float(rows[0][0])) if rows and rows[0][0] is not None else 0.0

    def release(self, member: str) -> bool:
        """A clean stop hands the lease on at once instead of after `lease` seconds."""
        return (
            run_all(
                self._db,
                [(f"UPDATE ha_lease SET expires_at = {self._now} - 1 WHERE name = 'leader' AND holder = ?", (member,))],
            )[0].rowcount
            > 0
        )

    def seen(self, member: str, node: str, started: float, epoch: int | None) -> None:
        """This member is alive (and whether it leads): for the dashboard's picture of the group."""
        now = self._now
        run_all(
            self._db,
            [
                (
                    f"INSERT INTO ha_members (member, node, started, last_seen, epoch, leads) "
                    f"VALUES (:member, :node, :started, {now}, :epoch, :leads) ON CONFLICT (member) DO UPDATE SET "
                    f"last_seen = {now}, epoch = excluded.epoch, leads = excluded.leads",
                    {"member": member, "node": node, "started": started, "epoch": epoch, "leads": int(bool(epoch))},
                ),
                (f"DELETE FROM ha_members WHERE last_seen < {now} - ?", (MEMBERS_KEPT_FOR,)),
            ],
        )

    def ping(self, timeout: float = PG_CONNECT_TIMEOUT_S) -> None:
        """Raises unless the store answers, asked on a connection opened for it and closed after (not
        the pool's, which a network cut may have left broken or waiting: see Database.probe)."""
        self._db.probe(timeout)

    def group(self) -> dict[str, Any]:
        """Who leads, since when, until when; each member's last renewal; the database's time now."""
        lease = self._db.rows(
            f"SELECT holder, node, epoch, acquired_at, renewed_at, expires_at, {self._now} AS now "
            "FROM ha_lease WHERE name = 'leader'"
        )
        members = self._db.rows("SELECT member, node, started, last_seen, epoch, leads FROM ha_members ORDER BY node")
        row = lease[0] if lease else None
        return {
            "lease": {k: row[k] for k in row.keys()} if row else None,  # noqa: SIM118 - a row
            "members": [{k: m[k] for k in m.keys()} for m in members],  # noqa: SIM118 - a row
        }

    # --- fencing -------------------------------------------------------------------------------------

    def check(self, tx: Tx, member: str, epoch: int | None) -> None:
        """In the caller's transaction: refuse unless `member` holds the lease with `epoch`, now."""
        if epoch is None:
            raise Fenced("not the leader")
        row = tx.execute(
            f"SELECT epoch FROM ha_lease WHERE name = 'leader' AND holder = ? AND epoch = ? "
            f"AND expires_at > {self._now}{self._lock}",
            (member, epoch),
        ).fetchone()
        if row is None:
            raise Fenced(f"the leader lease (epoch {epoch}) is no longer held by this monitor")

    def run(self, db: Database, statements: Sequence[tuple[str, Any]], member: str, epoch: int | None) -> list[Result]:
        """Statements in one transaction that first checks the lease (see `check`)."""
        with db.transaction() as tx:
            results = [Result(tx.execute(sql, args)) for sql, args in statements]
            # Last, just before COMMIT: as safe as first (nobody can take the lease between this check
            # and the commit), and the holder's own renewal waits for the lease row only that long.
            self.check(tx, member, epoch)
            return results
