"""The store's read side and incidents: an incident keeps its current and worst severity through its
life and after it closes (schema 5 recovers both for older incidents); pages filter without SQL from
the caller; the web's wrapper understands the API's filters and refuses anything else. On both engines
but schema 5's migration of an older SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from clusterwatch.engine.events import Event, EventKind
from clusterwatch.model import Observation, Status
from clusterwatch.store import schema
from clusterwatch.store.db import SQLite
from clusterwatch.store.healing import HealLedger
from clusterwatch.store.history import History
from clusterwatch.store.writer import Store
from clusterwatch.web.queries import History as WebHistory
from tests.storecheck import store_options

T0 = 1_700_000_000.0


def event(kind: EventKind, at: float, new: Status | None, incident: str | None = "i1", entity: str = "api") -> Event:
    return Event(kind, entity, entity, at, f"{kind.value} {new.value if new else ''}", new=new, incident=incident)


@pytest.fixture
def store(store_location: str):
    s = Store(store_options(store_location)).open()
    yield s
    s.close()


@pytest.fixture
def history(store: Store):
    """The store's read side; closed after the test (on PostgreSQL it holds a pool)."""
    reads = History(store.location)
    yield reads
    reads.close()


@pytest.fixture
def web(store: Store):
    """The web's wrapper of the read side."""
    wrapper = WebHistory(store.location)
    yield wrapper
    wrapper.reads.close()


def incident(store: Store, ident: str = "i1") -> dict:
    history = History(store.location)
    try:
        (row,) = [r for r in history.incidents_during(0) if r["id"] == ident]
    finally:
        history.close()
    return row


def test_an_incident_keeps_its_severity_through_its_life_and_after(store: Store):
    store.event(event(EventKind.STATE_CHANGE, T0, Status.WARNING, incident=None))
    store.event(event(EventKind.INCIDENT_OPENED, T0, Status.WARNING))
    assert store.flush(30)
    assert (incident(store)["status"], incident(store)["worst"]) == ("warning", "warning")
    store.event(event(EventKind.STATE_CHANGE, T0 + 10, Status.CRITICAL))
    assert store.flush(30)
    assert (incident(store)["status"], incident(store)["worst"]) == ("critical", "critical")
    store.event(event(EventKind.STATE_CHANGE, T0 + 20, Status.UNKNOWN))
    store.event(event(EventKind.STATE_CHANGE, T0 + 30, Status.WARNING))
    assert store.flush(30)
    assert (incident(store)["status"], incident(store)["worst"]) == ("warning", "critical")
    # Recovery: the state change to ok comes first, then the close; neither makes it 'ok'.
    store.event(event(EventKind.STATE_CHANGE, T0 + 40, Status.OK))
    store.event(event(EventKind.INCIDENT_CLOSED, T0 + 40, Status.OK))
    assert store.flush(30)
    row = incident(store)
    assert (row["status"], row["worst"]) == ("warning", "critical")
    assert row["closed"] == T0 + 40 and row["duration"] == pytest.approx(40)


def test_schema_5_recovers_the_severity_of_older_incidents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "old.db"
    db = SQLite(path)
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:4])
    schema.migrate(db)
    monkeypatch.undo()
    conn = sqlite3.connect(path, isolation_level=None)
    # As schema 4 left them: a closed incident says 'ok', its severities only in its events.
    conn.executescript(
        """
        INSERT INTO incidents (id, entity, check_name, opened, closed, status, message)
            VALUES ('a', 'api', 'api', 1, 9, 'ok', 'm'), ('b', 'db', 'db', 1, NULL, 'critical', 'm'),
                   ('c', 'web', 'web', 1, 9, 'ok', 'm');
        INSERT INTO events (ts, kind, entity, check_name, new, message, incident) VALUES
            (1, 'incident_opened', 'api', 'api', 'warning', 'm', 'a'),
            (2, 'state_change', 'api', 'api', 'critical', 'm', 'a'),
            (3, 'state_change', 'api', 'api', 'warning', 'm', 'a'),
            (9, 'state_change', 'api', 'api', 'ok', 'm', 'a'),
            (1, 'incident_opened', 'db', 'db', 'critical', 'm', 'b');
        """
    )
    assert schema.migrate(db) == len(schema.MIGRATIONS) >= 5
    found = {r[0]: r[1:] for r in conn.execute("SELECT id, status, worst FROM incidents")}
    conn.close()
    db.close()
    assert found == {"a": ("warning", "critical"), "b": ("critical", "critical"), "c": ("unknown", "unknown")}


def test_pages_filter_by_value_and_refuse_sql(store: Store, history: History, web: WebHistory):
    for i in range(5):
        store.observation(Observation("a" if i % 2 else "b", "tcp", "t", Status.OK, f"m{i}", metrics={"x": i}), T0 + i)
    store.event(event(EventKind.INCIDENT_OPENED, T0, Status.CRITICAL, incident="open1"))
    store.event(event(EventKind.INCIDENT_OPENED, T0, Status.CRITICAL, incident="done1", entity="db"))
    store.event(event(EventKind.INCIDENT_CLOSED, T0 + 5, Status.OK, incident="done1", entity="db"))
    assert store.flush(30)
    page = history.page("observations", limit=2, equals={"entity": "b"})
    assert [o["message"] for o in page["items"]] == ["m4", "m2"] and page["items"][0]["metrics"] == {"x": 4}
    rest = history.page("observations", limit=2, before=page["next"], equals={"entity": "b"})
    assert [o["message"] for o in rest["items"]] == ["m0"] and rest["next"] is None
    assert [i["id"] for i in history.page("incidents", limit=10, closed=False)["items"]] == ["open1"]
    assert [i["id"] for i in history.page("incidents", limit=10, closed=True)["items"]] == ["done1"]
    with pytest.raises(ValueError):
        history.page("observations", limit=1, equals={"1=1; DROP TABLE events; --": 1})
    with pytest.raises(ValueError):
        history.page("sqlite_master", limit=1)

    async def through_the_web() -> None:
        by_entity = await web.page("observations", limit=10, before=None, equals={"entity": "a"})
        assert [o["message"] for o in by_entity["items"]] == ["m3", "m1"]
        closed = await web.page("incidents", limit=10, before=None, closed=True)
        assert [i["id"] for i in closed["items"]] == ["done1"]
        with pytest.raises(ValueError):
            await web.page("events", limit=10, before=None, equals={"1=1 OR entity": "a"})
        assert [o["message"] for o in await web.recent_observations("a", 1)] == ["m3"]
        assert [e["kind"] for e in await web.recent_events("db")] == ["incident_closed", "incident_opened"]
        assert await web.recent_actions() == []

    asyncio.run(through_the_web())


def test_counts_for_metrics(store: Store, history: History):
    row = {
        "started": T0,
        "finished": T0 + 1,
        "check": "api",
        "entity": "api",
        "target": "api",
        "action": "command",
        "reason": "down",
        "attempt": 1,
        "outcome": "succeeded",
        "detail": "",
        "duration": 1.0,
        "dry_run": 0,
    }
    ledger = HealLedger(store.location)  # the healer's own writes: committed before and after each attempt
    ledger.open()
    for attempt, outcome in ((1, "succeeded"), (2, "failed"), (3, "failed")):
        attempt_id = ledger.begin({**row, "attempt": attempt})
        ledger.finish(attempt_id, finished=T0 + 1, outcome=outcome, detail="")
    ledger.close()
    counts = history.counts()
    assert sorted((r["outcome"], r["n"]) for r in counts["restarts"]) == [("failed", 2), ("succeeded", 1)]
    assert counts["alerts"] == []


def test_metrics_show_time_based_uptime_and_the_store(store: Store, web: WebHistory):
    """/metrics renders the web's uptime cache (from the store's time-based uptime) and the writer's health."""
    from types import SimpleNamespace

    from clusterwatch.web.metrics import counts, render

    for i in range(7):  # up for 60 s, then down for 10 s, probed every 10 s
        store.observation(
            Observation("api", "tcp", "t", Status.OK if i < 6 else Status.CRITICAL, "m"), T0 + 10 * i, expected_every=10
        )
    store.observation(Observation("api", "tcp", "t", Status.OK, "m"), T0 + 70, expected_every=10)
    assert store.flush(30)
    web.uptime = web.reads.uptime_windows({"24h": 86400}, T0 + 80)
    monitor = SimpleNamespace(  # what the web is given of the monitor (web/view.py)
        entities={},
        kinds={},
        lag_percentiles=lambda: (0.0, 0.0),
        probes_started=8,
        store_health=store.health,
        ha_enabled=False,  # one monitor, no group
        web=SimpleNamespace(history=web, counts=counts(web)),
    )
    text = render(monitor).decode()  # type: ignore[arg-type]
    assert 'clusterwatch_uptime_ratio{name="api",window="24h"} 0.857142857142857' in text  # 60 of 70 s
    assert "clusterwatch_store_writes_total 8.0" in text
    assert "clusterwatch_store_queue_depth 0.0" in text
    assert 'clusterwatch_store_dropped_total{reason="queue_full"} 0.0' in text
