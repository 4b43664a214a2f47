"""The schema and its migrations, in one place per engine. Append a migration; never edit one.

SQLite's history starts at the first schema; PostgreSQL's at SQLite's fifth, in one migration:
both end at the same tables and columns (the types each engine's own), so one set of SQL runs on both.
"""

from __future__ import annotations

from clusterwatch.store.db import Database, SQLite, run_all

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE observations (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, entity TEXT NOT NULL, check_name TEXT NOT NULL,
        kind TEXT NOT NULL, node TEXT, status TEXT NOT NULL, message TEXT NOT NULL, latency_ms REAL,
        metrics TEXT, details TEXT);
    CREATE INDEX observations_entity_ts ON observations (entity, ts);
    CREATE INDEX observations_ts ON observations (ts);
    CREATE TABLE rollup_minute (
        entity TEXT NOT NULL, ts INTEGER NOT NULL, count INTEGER NOT NULL, ok INTEGER NOT NULL,
        p50 REAL, p95 REAL, max REAL, PRIMARY KEY (entity, ts)) WITHOUT ROWID;
    CREATE TABLE rollup_hour (
        entity TEXT NOT NULL, ts INTEGER NOT NULL, count INTEGER NOT NULL, ok INTEGER NOT NULL,
        p50 REAL, p95 REAL, max REAL, PRIMARY KEY (entity, ts)) WITHOUT ROWID;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, entity TEXT NOT NULL,
        check_name TEXT NOT NULL, node TEXT, old TEXT, new TEXT, message TEXT NOT NULL,
        incident TEXT, affected_by TEXT, details TEXT);
    CREATE INDEX events_ts ON events (ts);
    CREATE INDEX events_entity ON events (entity, ts);
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY, entity TEXT NOT NULL, check_name TEXT NOT NULL, node TEXT,
        opened REAL NOT NULL, closed REAL, status TEXT NOT NULL, message TEXT NOT NULL,
        last_message TEXT, duration REAL);
    CREATE INDEX incidents_open ON incidents (closed);
    CREATE TABLE actions (
        id INTEGER PRIMARY KEY, started REAL NOT NULL, finished REAL, check_name TEXT NOT NULL,
        entity TEXT NOT NULL, target TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL,
        attempt INTEGER NOT NULL, outcome TEXT NOT NULL, detail TEXT, duration REAL,
        dry_run INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX actions_started ON actions (started);
    CREATE TABLE entities (
        name TEXT PRIMARY KEY, check_name TEXT NOT NULL, kind TEXT NOT NULL, node TEXT,
        status TEXT NOT NULL, hard TEXT, since REAL, message TEXT, latency_ms REAL, updated REAL,
        incident TEXT, incident_started REAL, flapping INTEGER NOT NULL DEFAULT 0, affected_by TEXT,
        fail_streak INTEGER NOT NULL DEFAULT 0, ok_streak INTEGER NOT NULL DEFAULT 0, history TEXT);
    CREATE TABLE commands (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL,
        done REAL);
    """,
    # 2: alerting: the durable outbox, silences, and what was told about each incident
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY, created REAL NOT NULL, channel TEXT NOT NULL, kind TEXT NOT NULL,
        severity TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL, incidents TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL, delivered REAL, expired REAL,
        last_error TEXT);
    CREATE INDEX outbox_pending ON outbox (channel, id) WHERE delivered IS NULL AND expired IS NULL;
    CREATE TABLE silences (
        id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts REAL NOT NULL, ends REAL NOT NULL,
        reason TEXT NOT NULL, created REAL NOT NULL, created_by TEXT);
    CREATE TABLE alert_state (
        incident TEXT PRIMARY KEY, entity TEXT NOT NULL, severity TEXT NOT NULL, notified REAL,
        repeated REAL, silenced REAL, healed_by TEXT);
    """,
    # 3: whether an entity's last observation was "not serving" (a root that explains its dependants)
    """
    ALTER TABLE entities ADD COLUMN down INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: the healer's durable state: attempts are written before they run (outcome 'running' while in
    # flight), and each target's budget: since when attempts count, whether it gave up, healthy since,
    # and until when a person paused it (stopped on purpose: not to be restarted)
    """
    CREATE INDEX actions_target ON actions (target, started);
    CREATE TABLE heal_budgets (
        target TEXT PRIMARY KEY, counts_from REAL NOT NULL DEFAULT 0, exhausted REAL, recovered_at REAL,
        paused_until REAL, paused_reason TEXT);
    """,
    # 5: uptime by time: seconds ok / seconds known per rollup bucket (NULL in rows written before: those
    # fall back to counts). Incidents keep their severity: `status` is the current one and is no longer
    # overwritten by 'ok' at recovery; `worst` the worst seen. Both are recovered from the events of
    # incidents recorded before this schema.
    """
    ALTER TABLE rollup_minute ADD COLUMN seconds_ok REAL;
    ALTER TABLE rollup_minute ADD COLUMN seconds_known REAL;
    ALTER TABLE rollup_hour ADD COLUMN seconds_ok REAL;
    ALTER TABLE rollup_hour ADD COLUMN seconds_known REAL;
    ALTER TABLE incidents ADD COLUMN worst TEXT;
    CREATE TEMP TABLE severity_last AS
        SELECT incident, new AS severity, MAX(id) FROM events
        WHERE incident IS NOT NULL AND new IN ('critical', 'unknown', 'warning') GROUP BY incident;
    CREATE TEMP TABLE severity_worst AS
        SELECT incident, new AS severity,
            MIN(CASE new WHEN 'critical' THEN 0 WHEN 'unknown' THEN 1 ELSE 2 END) AS rank
        FROM events WHERE incident IS NOT NULL AND new IN ('critical', 'unknown', 'warning') GROUP BY incident;
    CREATE INDEX temp.severity_last_incident ON severity_last (incident);
    CREATE INDEX temp.severity_worst_incident ON severity_worst (incident);
    UPDATE incidents SET status = COALESCE(
        (SELECT severity FROM severity_last WHERE incident = incidents.id), 'unknown') WHERE status = 'ok';
    UPDATE incidents SET worst = CASE
        WHEN (SELECT rank FROM severity_worst WHERE incident = incidents.id)
            < CASE status WHEN 'critical' THEN 0 WHEN 'unknown' THEN 1 ELSE 2 END
        THEN (SELECT severity FROM severity_worst WHERE incident = incidents.id)
        ELSE status END;
    DROP TABLE temp.severity_last;
    DROP TABLE temp.severity_worst;
    """,
    # 6: high availability: who acted (the monitor and its leader epoch), outbox rows claimed by one
    # sender at a time, the leader lease and the group's members (used on PostgreSQL; present here so
    # that the same SQL runs on both engines)
    """
    ALTER TABLE actions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE actions ADD COLUMN monitor TEXT;
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN claimed_until REAL;
    ALTER TABLE outbox ADD COLUMN epoch INTEGER;
    CREATE TABLE ha_lease (
        name TEXT PRIMARY KEY, holder TEXT, node TEXT, epoch INTEGER NOT NULL DEFAULT 0,
        acquired_at REAL, renewed_at REAL, expires_at REAL);
    CREATE TABLE ha_members (
        member TEXT PRIMARY KEY, node TEXT NOT NULL, started REAL NOT NULL, last_seen REAL NOT NULL,
        epoch INTEGER, leads INTEGER NOT NULL DEFAULT 0);
    """,
    # 7: what a monitor told people while the shared store was away (from its local outbox): handed to
    # the shared store when it is back, so the leader does not tell the same transition a second time
    """
    CREATE TABLE told_offline (
        entity TEXT NOT NULL, incident TEXT, kind TEXT NOT NULL, severity TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
        member TEXT NOT NULL, check_name TEXT, node TEXT);
    CREATE INDEX told_offline_entity ON told_offline (entity, at);
    """,
    # 8: node agents: a token each (only its SHA-256 is kept), revocable; when and from where each was
    # last heard; the last of its queued items the store has filed (a resend after a lost answer is
    # filed once)
    """
    CREATE TABLE agents (
        name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, created DOUBLE PRECISION NOT NULL,
        revoked DOUBLE PRECISION, last_seen DOUBLE PRECISION, last_addr TEXT, acked BIGINT NOT NULL DEFAULT 0);
    """,
]

# PostgreSQL: SQLite's six migrations as one; later ones are appended to MIGRATIONS and run on both
# engines (so they write types both know: DOUBLE PRECISION for times, never REAL, which is 4 bytes there).
PG_MIGRATIONS: list[str] = [
    """
    CREATE TABLE observations (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, ts DOUBLE PRECISION NOT NULL,
        entity TEXT NOT NULL, check_name TEXT NOT NULL, kind TEXT NOT NULL, node TEXT, status TEXT NOT NULL,
        message TEXT NOT NULL, latency_ms DOUBLE PRECISION, metrics TEXT, details TEXT);
    CREATE INDEX observations_entity_ts ON observations (entity, ts);
    CREATE INDEX observations_ts ON observations (ts);
    CREATE TABLE rollup_minute (
        entity TEXT NOT NULL, ts BIGINT NOT NULL, count BIGINT NOT NULL, ok BIGINT NOT NULL,
        p50 DOUBLE PRECISION, p95 DOUBLE PRECISION, max DOUBLE PRECISION, seconds_ok DOUBLE PRECISION,
        seconds_known DOUBLE PRECISION, PRIMARY KEY (entity, ts));
    CREATE TABLE rollup_hour (
        entity TEXT NOT NULL, ts BIGINT NOT NULL, count BIGINT NOT NULL, ok BIGINT NOT NULL,
        p50 DOUBLE PRECISION, p95 DOUBLE PRECISION, max DOUBLE PRECISION, seconds_ok DOUBLE PRECISION,
        seconds_known DOUBLE PRECISION, PRIMARY KEY (entity, ts));
    CREATE TABLE events (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
        entity TEXT NOT NULL, check_name TEXT NOT NULL, node TEXT, old TEXT, new TEXT, message TEXT NOT NULL,
        incident TEXT, affected_by TEXT, details TEXT);
    CREATE INDEX events_ts ON events (ts);
    CREATE INDEX events_entity ON events (entity, ts);
    CREATE TABLE incidents (
        rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY, entity TEXT NOT NULL, check_name TEXT NOT NULL, node TEXT,
        opened DOUBLE PRECISION NOT NULL, closed DOUBLE PRECISION, status TEXT NOT NULL, message TEXT NOT NULL,
        last_message TEXT, duration DOUBLE PRECISION, worst TEXT);
    CREATE INDEX incidents_open ON incidents (closed);
    CREATE TABLE actions (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, started DOUBLE PRECISION NOT NULL,
        finished DOUBLE PRECISION, check_name TEXT NOT NULL, entity TEXT NOT NULL, target TEXT NOT NULL,
        action TEXT NOT NULL, reason TEXT NOT NULL, attempt INTEGER NOT NULL, outcome TEXT NOT NULL, detail TEXT,
        duration DOUBLE PRECISION, dry_run INTEGER NOT NULL DEFAULT 0, epoch BIGINT NOT NULL DEFAULT 0,
        monitor TEXT);
    CREATE INDEX actions_started ON actions (started);
    CREATE INDEX actions_target ON actions (target, started);
    CREATE TABLE entities (
        name TEXT PRIMARY KEY, check_name TEXT NOT NULL, kind TEXT NOT NULL, node TEXT,
        status TEXT NOT NULL, hard TEXT, since DOUBLE PRECISION, message TEXT, latency_ms DOUBLE PRECISION,
        updated DOUBLE PRECISION, incident TEXT, incident_started DOUBLE PRECISION,
        flapping INTEGER NOT NULL DEFAULT 0, affected_by TEXT, fail_streak INTEGER NOT NULL DEFAULT 0,
        ok_streak INTEGER NOT NULL DEFAULT 0, history TEXT, down INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE commands (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
        target TEXT NOT NULL, done DOUBLE PRECISION);
    CREATE TABLE outbox (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, created DOUBLE PRECISION NOT NULL,
        channel TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL,
        incidents TEXT, attempts INTEGER NOT NULL DEFAULT 0, next_attempt DOUBLE PRECISION NOT NULL,
        delivered DOUBLE PRECISION, expired DOUBLE PRECISION, last_error TEXT, claimed_by TEXT,
        claimed_until DOUBLE PRECISION, epoch BIGINT);
    CREATE INDEX outbox_pending ON outbox (channel, id) WHERE delivered IS NULL AND expired IS NULL;
    CREATE TABLE silences (
        id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts DOUBLE PRECISION NOT NULL, ends DOUBLE PRECISION NOT NULL,
        reason TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, created_by TEXT);
    CREATE TABLE alert_state (
        incident TEXT PRIMARY KEY, entity TEXT NOT NULL, severity TEXT NOT NULL, notified DOUBLE PRECISION,
        repeated DOUBLE PRECISION, silenced DOUBLE PRECISION, healed_by TEXT);
    CREATE TABLE heal_budgets (
        target TEXT PRIMARY KEY, counts_from DOUBLE PRECISION NOT NULL DEFAULT 0, exhausted DOUBLE PRECISION,
        recovered_at DOUBLE PRECISION, paused_until DOUBLE PRECISION, paused_reason TEXT);
    CREATE TABLE ha_lease (
        name TEXT PRIMARY KEY, holder TEXT, node TEXT, epoch BIGINT NOT NULL DEFAULT 0,
        acquired_at DOUBLE PRECISION, renewed_at DOUBLE PRECISION, expires_at DOUBLE PRECISION);
    CREATE TABLE ha_members (
        member TEXT PRIMARY KEY, node TEXT NOT NULL, started DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL, epoch BIGINT, leads INTEGER NOT NULL DEFAULT 0);
    """,
]
PG_BASE = 6  # the schema version PostgreSQL's first migration brings
PG_LOCK = 7_274_311  # advisory lock id: monitors starting together migrate one at a time


def _too_new(version: int) -> None:
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this clusterwatch "
            f"({len(MIGRATIONS)}): upgrade clusterwatch"
        )


def migrate(db: Database) -> int:
    """Bring the database to the newest schema; returns its version. One transaction per migration:
    a kill in the middle leaves the previous version intact."""
    if isinstance(db, SQLite):
        db.script("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        rows = db.rows("SELECT value FROM meta WHERE key = 'schema_version'")
        version = int(rows[0][0]) if rows else 0
        _too_new(version)
        for number in range(version + 1, len(MIGRATIONS) + 1):
            db.script(
                "BEGIN;"
                + MIGRATIONS[number - 1]
                + f"INSERT OR REPLACE INTO meta VALUES ('schema_version', '{number}');COMMIT;"
            )
        return len(MIGRATIONS)
    with db.transaction() as tx:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (PG_LOCK,))
        tx.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = tx.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        _too_new(version)
        steps = [(PG_BASE, PG_MIGRATIONS[0])] if version < PG_BASE else []
        steps += [(n, MIGRATIONS[n - 1]) for n in range(max(version, PG_BASE) + 1, len(MIGRATIONS) + 1)]
        for number, sql in steps:
            for statement in (s.strip() for s in sql.split(";")):
                if statement:
                    tx.execute(statement)
            tx.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(number),),
            )
    return len(MIGRATIONS)


def schema_version(db: Database) -> int:
    rows = run_all(db, [("SELECT value FROM meta WHERE key = 'schema_version'", ())])[0].rows
    return int(rows[0][0]) if rows else 0
