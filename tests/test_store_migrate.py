"""`clusterwatch store migrate`: a store written by the real writer, healer ledger and outbox is copied
by the real CLI (a subprocess) into a fresh PostgreSQL database, and into another SQLite file, then
read back with the real readers: the same history, incidents paged in the same order, the same
budgets, pending notifications and silences, every row with its id. New writes on the target get ids
above the copied ones. A target with rows is refused, a store that cannot be reached is one line
(exit 3), a copy whose counts differ exits 1, and the URL's password is never printed."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterwatch.alerting.routing import Silence
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import EntityState
from clusterwatch.model import Observation, Status
from clusterwatch.store import migrate as store_migrate
from clusterwatch.store.db import shown
from clusterwatch.store.healing import BudgetRow, HealLedger
from clusterwatch.store.history import PAGED, History
from clusterwatch.store.outbox import Message, Outbox
from clusterwatch.store.schema import MIGRATIONS, schema_version
from clusterwatch.store.writer import Store
from tests.helpers import run_cli
from tests.pg import PASSWORD, PostgresServer, fresh_database, running_server
from tests.storecheck import engine, execute, fail_when, migrated, rows, store_options

NOW = time.time()
TARGETS = {"docker/api": 3600.0, "docker/web": 3600.0}
INCIDENTS = [f"{letter}-{n}" for n, letter in enumerate("zyxwvutsr", 1)]  # opened in the reverse of id order


# --- a real PostgreSQL and a real store to copy --------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """This module's own server (skipped where PostgreSQL cannot run), stopped by PID at the end."""
    with running_server() as server:
        yield server


@pytest.fixture
def fresh_url(pg: PostgresServer) -> Iterator[str]:
    with fresh_database(pg, "mig") as url:
        yield url


def write_store(location: str) -> None:
    """History, incidents, actions, budgets, a pause, the outbox (waiting, failed, delivered), what was
    told and a silence: each through the component that writes it in a running monitor."""
    store = Store(store_options(location)).open()
    try:
        for i in range(120):
            entity = ("api", "web", "db")[i % 3]
            status = Status.CRITICAL if i % 11 == 0 else Status.OK
            obs = Observation(
                entity,
                "http",
                f"http://{entity}",
                status,
                f"probe {i}",
                latency_ms=1.5 + i,
                metrics={"bytes": float(i)} if i % 2 else {},
                details={"n": i} if i % 5 == 0 else {},
                check=entity,
                node="gpu-1" if i % 2 else None,
            )
            store.observation(obs, NOW - 7200 + i * 60, expected_every=60)
        for name in ("api", "web"):
            state = EntityState(name, name, node="gpu-1", hard=Status.OK, since=NOW - 100, last_at=NOW - 10)
            store.entity(state, "http")
        for n, incident in enumerate(INCIDENTS):
            at = NOW - 3600 + n * 60
            store.event(
                Event(EventKind.INCIDENT_OPENED, "api", "api", at, "down", new=Status.WARNING, incident=incident)
            )
            store.event(
                Event(EventKind.STATE_CHANGE, "api", "api", at + 5, "worse", new=Status.CRITICAL, incident=incident)
            )
            if n % 2:
                store.event(
                    Event(EventKind.INCIDENT_CLOSED, "api", "api", at + 30, "up", new=Status.OK, incident=incident)
                )
        store.command("heal_reset", "docker/api")
        assert store.flush(60)
        assert (store.failures, store.failed_items, store.dropped) == (0, 0, 0)
    finally:
        store.close()

    ledger = HealLedger(location)
    ledger.open()
    try:
        for n, started in enumerate((NOW - 900, NOW - 600, NOW - 300, NOW - 60)):
            row = {"started": started, "check": "api", "entity": "api", "target": "docker/api", "action": "restart"}
            attempt = ledger.begin({**row, "reason": "down", "attempt": n + 1})
            if n < 3:  # the last one is still running, as after a crash
                ledger.finish(attempt, finished=started + 5, outcome="failed" if n < 2 else "ok", detail=f"try {n}")
        ledger.save_budget(BudgetRow("docker/api", counts_from=NOW - 1000, exhausted=NOW - 30))
        ledger.pause("docker/web", NOW + 3600, "driver upgrade")
    finally:
        ledger.close()

    outbox = Outbox(location)
    try:
        messages = [
            Message(channel, "firing", "critical", f"api down ({n})", "body", [INCIDENTS[n]])
            for n, channel in enumerate(("mail", "slack", "mail", "slack"))
        ]
        ids = outbox.add(messages, told=[(INCIDENTS[0], "api", "critical", NOW - 50, None, None, None)])
        outbox.delivered(ids[0])
        outbox.failed(ids[1], 0, "smtp said no")
        outbox.add_silence(Silence.new({"node": "gpu-*"}, 3600, "maintenance", "ops"))
        outbox.add_silence(Silence("old1", {"check": "web"}, NOW - 7200, NOW - 3600, "over", ""))
    finally:
        outbox.close()
    # Gaps, as retention leaves them: a copy that numbered rows anew would page incidents differently.
    execute(
        location,
        ("DELETE FROM incidents WHERE id IN (?, ?)", (INCIDENTS[1], INCIDENTS[3])),
        "DELETE FROM observations WHERE id <= 5",
        "DELETE FROM events WHERE id IN (2, 3)",
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("source") / "state.db")
    write_store(path)
    return path


# --- reading both sides ---------------------------------------------------------------------------------


def without_rowid(item: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL's incidents show their rowid column in `*`; SQLite's is implicit (the cursor shows both)."""
    return {k: v for k, v in item.items() if k != "rowid"}


def walk(history: History, table: str) -> list[dict[str, Any]]:
    """Every page of a table the way the API walks them: 7 items at a time, cursor after cursor."""
    items: list[dict[str, Any]] = []
    before = None
    while True:
        page = history.page(table, limit=7, before=before)
        items += [without_rowid(i) for i in page["items"]]
        if page["next"] is None:
            return items
        before = page["next"]


def seen(location: str) -> dict[str, Any]:
    """What the monitor's readers make of a store."""
    history = History(location)
    try:
        uptime = history.uptime(0)
        found: dict[str, Any] = {
            "pages": {table: walk(history, table) for table in PAGED},
            "uptime": {e: (u.probes, u.p95_ms, u.max_ms) for e, u in uptime.items()},
            "uptime_seconds": {e: (u.seconds_ok, u.seconds_known) for e, u in uptime.items()},
            "counts": {k: sorted(map(repr, v)) for k, v in history.counts().items()},
            "incidents": [without_rowid(i) for i in history.incidents_during(0)],
            "actions": history.actions_since(0),
            "closed": history.events_since("incident_closed", 0),
            "recent": history.recent_observations("api", 500),
        }
    finally:
        history.close()
    outbox = Outbox(location)
    try:
        found["pending"] = [dict(r) for r in outbox.pending()]
        found["status"] = [dict(r) for r in outbox.status()]
        found["silences"] = outbox.silences(active_only=False)
        found["alert_states"] = [dict(r) for r in outbox.alert_states()]
    finally:
        outbox.close()
    ledger = HealLedger(location)
    ledger.open()
    try:
        found["budgets"] = ledger.budgets(TARGETS.get, now=NOW)
        found["paused"] = ledger.paused(NOW)
    finally:
        ledger.close()
    return found


def table_rows(location: str, table: str) -> list[dict[str, Any]]:
    """Every row with every column, SQLite's implicit rowid included, in key order."""
    columns = "rowid AS rowid, *" if table in store_migrate.IMPLICIT_ROWID and engine(location) == "sqlite" else "*"
    key = store_migrate.KEYS.get(table)
    found = rows(location, f"SELECT {columns} FROM {table}" + (f" ORDER BY {', '.join(key)}" if key else ""))
    return found if key else sorted(found, key=lambda r: repr(sorted(r.items())))


def assert_same(source: str, target: str) -> None:
    mine, theirs = seen(source), seen(target)
    for name in ("uptime_seconds",):  # sums of floats: the engines may add the hours in another order
        a, b = mine.pop(name), theirs.pop(name)
        assert a.keys() == b.keys()
        for entity in a:
            assert b[entity] == pytest.approx(a[entity], rel=1e-12), (name, entity)
    for name in mine:
        assert theirs[name] == mine[name], name
    for table in store_migrate.tables():
        assert table_rows(target, table) == table_rows(source, table), table
    # Not vacuous: the source has what a running monitor writes, and pages across batches.
    assert len(mine["pages"]["observations"]) == 115
    kept = [i for i in INCIDENTS if i not in (INCIDENTS[1], INCIDENTS[3])]
    assert [(i["id"], i["cursor"]) for i in mine["pages"]["incidents"]] == [
        (i, INCIDENTS.index(i) + 1) for i in kept[::-1]
    ]
    assert [len(mine[k]) for k in ("pending", "silences", "alert_states")] == [3, 2, 1]
    assert len(mine["budgets"]["docker/api"].attempts) == 4 and mine["budgets"]["docker/api"].exhausted
    assert mine["paused"] == {"docker/web": "driver upgrade"}


def max_id(location: str, table: str, column: str = "id") -> int:
    return int(rows(location, f"SELECT MAX({column}) AS m FROM {table}")[0]["m"])


def migrate_cli(source: str, target: str, *extra: str) -> Any:
    return run_cli("store", "migrate", "--from", source, "--to", target, *extra, timeout=180)


def new_writes_follow_the_copied_ids(target: str) -> None:
    """The copied ids stay; a monitor writing to the target next gets new ones, with no duplicate key."""
    before = {
        "observations": max_id(target, "observations"),
        "events": max_id(target, "events"),
        "actions": max_id(target, "actions"),
        "outbox": max_id(target, "outbox"),
        "commands": max_id(target, "commands"),
        "incidents": max_id(target, "incidents", "rowid"),
    }
    store = Store(store_options(target)).open()
    try:
        store.observation(Observation("api", "http", "http://api", Status.OK, "after"), NOW + 1, expected_every=60)
        store.event(Event(EventKind.INCIDENT_OPENED, "db", "db", NOW + 2, "down", new=Status.CRITICAL, incident="new"))
        store.command("heal_reset", "docker/web")
        assert store.flush(60)
        assert (store.failures, store.failed_items) == (0, 0)
    finally:
        store.close()
    ledger = HealLedger(target)
    ledger.open()
    try:
        row = {"started": NOW + 3, "check": "db", "entity": "db", "target": "docker/db", "action": "restart"}
        attempt = ledger.begin({**row, "reason": "down", "attempt": 1})
    finally:
        ledger.close()
    outbox = Outbox(target)
    try:
        (message,) = outbox.add([Message("mail", "firing", "critical", "db down", "body", ["new"])])
    finally:
        outbox.close()
    assert attempt == before["actions"] + 1 and message == before["outbox"] + 1
    (new_obs,) = rows(target, "SELECT id FROM observations WHERE message = ?", "after")
    assert new_obs["id"] == before["observations"] + 1
    assert max_id(target, "events") > before["events"] and max_id(target, "commands") == before["commands"] + 1
    column = "rowid AS rowid" if engine(target) == "sqlite" else "rowid"
    (incident,) = rows(target, f"SELECT {column} FROM incidents WHERE id = ?", "new")
    assert incident["rowid"] == before["incidents"] + 1


# --- the tests --------------------------------------------------------------------------------------------


def test_every_table_but_the_groups_own_is_copied(tmp_path: Path):
    """A table a later schema adds is copied too, without a list to keep up to date."""
    path = str(tmp_path / "fresh.db")
    migrated(path)
    conn = sqlite3.connect(path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert set(store_migrate.tables()) == names - set(store_migrate.LEFT_OUT)
    assert {"observations", "incidents", "actions", "heal_budgets", "silences", "outbox"} <= names


def test_sqlite_to_postgresql_keeps_everything_and_its_ids(source: str, fresh_url: str):
    result = migrate_cli(f"sqlite://{source}", fresh_url, "--batch", "7")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert PASSWORD not in out and shown(fresh_url) in out
    for table in store_migrate.tables():
        (line,) = [line for line in result.stdout.splitlines() if line.split()[:1] == [table]]
        assert int(line.split()[1]) == len(table_rows(source, table)), line
    assert "they match" in result.stdout.splitlines()[-1]
    assert_same(source, fresh_url)
    assert rows(fresh_url, "SELECT COUNT(*) AS n FROM ha_lease") == [{"n": 0}]

    again = migrate_cli(source, fresh_url)  # the same target twice: refused, nothing written
    assert again.returncode == 1, again.stderr
    assert "fresh, empty database" in again.stderr and "observations: 115" in again.stderr
    assert PASSWORD not in again.stdout + again.stderr
    assert_same(source, fresh_url)

    new_writes_follow_the_copied_ids(fresh_url)


def test_sqlite_to_sqlite(source: str, tmp_path: Path):
    target = str(tmp_path / "copy" / "state.db")
    result = migrate_cli(source, f"sqlite://{target}", "--batch", "5")
    assert result.returncode == 0, result.stderr
    assert_same(source, target)
    assert migrate_cli(source, target).returncode == 1
    new_writes_follow_the_copied_ids(target)


def test_postgresql_to_sqlite_and_back(source: str, pg: PostgresServer, fresh_url: str, tmp_path: Path):
    assert migrate_cli(source, fresh_url).returncode == 0
    back = str(tmp_path / "back.db")
    result = migrate_cli(fresh_url, back, "--batch", "11")
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert_same(fresh_url, back)
    assert_same(source, back)
    with fresh_database(pg, "again") as again:  # its own prefix: the fixture's names share the counter
        assert migrate_cli(fresh_url, again, "--batch", "3").returncode == 0
        assert_same(fresh_url, again)
        new_writes_follow_the_copied_ids(again)


def test_an_older_sqlite_source_is_brought_up_to_date_first(tmp_path: Path, fresh_url: str):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
        for sql in MIGRATIONS[:5]:
            conn.executescript(sql)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '5')")
        conn.execute(
            "INSERT INTO actions (started, check_name, entity, target, action, reason, attempt, outcome) "
            "VALUES (?, 'api', 'api', 'docker/api', 'restart', 'down', 1, 'ok')",
            (NOW,),
        )
    finally:
        conn.close()
    result = migrate_cli(str(path), fresh_url)
    assert result.returncode == 0, result.stderr
    assert schema_version_of(str(path)) == len(MIGRATIONS)
    assert rows(fresh_url, "SELECT id, target, epoch, monitor FROM actions") == [
        {"id": 1, "target": "docker/api", "epoch": 0, "monitor": None}
    ]


def schema_version_of(location: str) -> int:
    from clusterwatch.store.db import open_database

    db = open_database(location, readonly=True)
    try:
        return schema_version(db)
    finally:
        db.close()


def test_a_copy_whose_counts_differ_exits_1(source: str, tmp_path: Path):
    """The target drops some rows silently (a trigger): the count at the end says so."""
    target = str(tmp_path / "lossy.db")
    migrated(target)
    conn = sqlite3.connect(target)
    try:
        conn.execute("CREATE TRIGGER lossy BEFORE INSERT ON events WHEN NEW.id % 2 = 0 BEGIN SELECT RAISE(IGNORE); END")
        conn.commit()
    finally:
        conn.close()
    result = migrate_cli(source, target)
    assert result.returncode == 1, result.stderr
    events = table_rows(source, "events")
    kept = sum(1 for e in events if e["id"] % 2)
    assert 0 < kept < len(events)
    assert f"events: {len(events)} rows in the source, {kept} in the target" in result.stderr
    assert "does not match" in result.stderr and "Traceback" not in result.stderr


def test_a_write_the_target_refuses_is_one_line(source: str, fresh_url: str):
    migrated(fresh_url)
    fail_when(fresh_url, "no_events", "INSERT", "events", message="refused here")
    result = migrate_cli(source, fresh_url)
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "copying events stopped after 0 rows" in line and "refused here" in line and "partial copy" in line
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "target",
    [
        f"postgresql://clusterwatch:{PASSWORD}@127.0.0.1:{{closed}}/clusterwatch",
        f"postgresql://clusterwatch:{PASSWORD}@127.0.0.1:port/clusterwatch",
        f"mysql://clusterwatch:{PASSWORD}@127.0.0.1/clusterwatch",
        "sqlite://relative/state.db",
    ],
    ids=["unreachable", "no-port", "not-a-store", "relative-sqlite-url"],
)
def test_a_store_that_cannot_be_used_is_one_line_and_exit_3(source: str, target: str, tmp_path: Path):
    from tests.pg import free_port

    result = migrate_cli(source, target.replace("{closed}", str(free_port())))
    assert result.returncode == 3, (result.returncode, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("clusterwatch: store migrate: ")
    assert PASSWORD not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_no_source_is_refused(tmp_path: Path):
    result = migrate_cli(str(tmp_path / "none.db"), str(tmp_path / "target.db"))
    assert result.returncode == 1
    assert "no store at" in result.stderr
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "target.db").exists()
