"""The SQLite schema and its migrations, in one place. Append a migration; never edit one."""

from __future__ import annotations

import sqlite3

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
]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to the newest schema; returns its version."""
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this clusterwatch "
            f"({len(MIGRATIONS)}): upgrade clusterwatch"
        )
    for number in range(version + 1, len(MIGRATIONS) + 1):
        # One transaction per migration: a kill in the middle leaves the previous version intact.
        conn.executescript(
            "BEGIN;"
            + MIGRATIONS[number - 1]
            + f"INSERT OR REPLACE INTO meta VALUES ('schema_version', '{number}');COMMIT;"
        )
    return len(MIGRATIONS)
