"""The store's reads behind the pictures (uptime bars, latency chart, incident timeline), on a real
SQLite file and a real PostgreSQL: rows set by hand, so each number is known."""

from __future__ import annotations

from clusterwatch.store.history import History
from tests.storecheck import execute, migrated

T0 = 1_700_000_000 // 3600 * 3600  # an hour's start
MINUTE_ROW = (
    "INSERT INTO rollup_minute (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)
HOUR_ROW = (
    "INSERT INTO rollup_hour (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)


def test_uptime_slots_by_time_from_minutes_and_hours(store_location: str) -> None:
    migrated(store_location)
    execute(
        store_location,
        (MINUTE_ROW, ("api", T0, 6, 6, 10.0, 12.0, 15.0, 60.0, 60.0)),  # slot 0: a whole minute up
        (MINUTE_ROW, ("api", T0 + 60, 6, 3, 10.0, 40.0, 50.0, 30.0, 60.0)),  # slot 0: half down
        (MINUTE_ROW, ("api", T0 + 1800, 6, 0, None, None, None, 0.0, 45.0)),  # slot 1: down
        (MINUTE_ROW, ("api", T0 + 3600, 4, 1, 5.0, 5.0, 5.0, None, None)),  # before schema 5: counts only
        (MINUTE_ROW, ("db", T0, 1, 1, 1.0, 1.0, 1.0, 60.0, 60.0)),
        (MINUTE_ROW, ("api", T0 - 60, 1, 1, 1.0, 1.0, 1.0, 60.0, 60.0)),  # before the window
        (HOUR_ROW, ("api", T0, 18, 9, 10.0, 40.0, 50.0, 90.0, 165.0)),
        (HOUR_ROW, ("api", T0 + 7200, 10, 10, 1.0, 1.0, 1.0, 3600.0, 3600.0)),
    )
    history = History(store_location)
    try:
        found = history.uptime_slots(T0, T0 + 4 * 1800, 4)
        assert found["api"] == [(90.0, 120.0), (0.0, 45.0), (15.0, 60.0), (0.0, 0.0)]
        assert found["db"] == [(60.0, 60.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)]
        assert set(history.uptime_slots(T0, T0 + 4 * 1800, 4, ["db"])) == {"db"}
        assert history.uptime_slots(T0, T0 + 1800, 1, []) == {}
        hours = history.uptime_slots(T0, T0 + 4 * 3600, 2)  # two-hour slots: the hours
        assert hours["api"] == [(90.0, 165.0), (3600.0, 3600.0)]
    finally:
        history.close()


def test_latency_series_and_the_window_reads(store_location: str) -> None:
    migrated(store_location)
    execute(
        store_location,
        (MINUTE_ROW, ("api", T0, 2, 2, 10.0, 12.0, 15.0, 60.0, 60.0)),
        (MINUTE_ROW, ("api", T0 + 60, 6, 6, 20.0, 40.0, 50.0, 60.0, 60.0)),
        (MINUTE_ROW, ("api", T0 + 1200, 3, 0, None, None, None, 0.0, 60.0)),  # no latency: refused
        (MINUTE_ROW, ("api", T0 + 1800, 3, 3, 30.0, 31.0, 32.0, 60.0, 60.0)),
        (
            "INSERT INTO incidents (id, entity, check_name, opened, closed, status, message, worst) "
            "VALUES (?,?,?,?,?,?,?,?)",
            ("i1", "api", "api", T0 - 100, T0 + 50, "critical", "down", "critical"),
        ),
        (
            "INSERT INTO incidents (id, entity, check_name, opened, closed, status, message, worst) "
            "VALUES (?,?,?,?,?,?,?,?)",
            ("i2", "api", "api", T0 + 5000, None, "critical", "down", "critical"),
        ),
        (
            "INSERT INTO incidents (id, entity, check_name, opened, closed, status, message, worst) "
            "VALUES (?,?,?,?,?,?,?,?)",
            ("i0", "db", "db", T0 - 900, T0 - 800, "warning", "slow", "warning"),
        ),
        (
            "INSERT INTO actions (started, check_name, entity, target, action, reason, attempt, outcome) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (T0 + 10, "api", "api", "api", "command", "down", 1, "succeeded"),
        ),
        (
            "INSERT INTO events (ts, kind, entity, check_name, message) VALUES (?,?,?,?,?)",
            (T0 + 10, "state_changed", "api", "api", "down"),
        ),
    )
    history = History(store_location)
    try:
        series = history.latency_series("api", T0, T0 + 3600, 2)  # half-hour slices
        assert [s["ts"] for s in series] == [T0, T0 + 1800]
        first = series[0]
        assert first["p50"] == (2 * 10.0 + 6 * 20.0) / 8  # weighted by the minutes' probes with a latency
        assert (first["p95"], first["max"], first["count"]) == (40.0, 50.0, 11)
        assert series[1]["p50"] == 30.0
        assert [i["id"] for i in history.incidents_between(T0, T0 + 7200)] == ["i1", "i2"]
        assert [i["id"] for i in history.incidents_between(T0 + 100, T0 + 7200)] == ["i2"]
        assert [i["id"] for i in history.incidents_between(T0 - 1000, T0, ["db"])] == ["i0"]
        assert [a["outcome"] for a in history.actions_between(T0, T0 + 60, "api")] == ["succeeded"]
        assert history.actions_between(T0 + 60, T0 + 120) == []
        assert [e["message"] for e in history.events_between("api", T0, T0 + 60)] == ["down"]
    finally:
        history.close()


def test_uptime_windows_in_one_statement_match_each_window_read_alone(store_location: str) -> None:
    """The web's uptime per window (one statement for all) is what `uptime` says for each window alone, old
    hours (counts only, before time was measured) included; an entity without hours in a window has none."""
    migrated(store_location)
    now = T0 + 40 * 86400
    execute(
        store_location,
        (HOUR_ROW, ("api", now - 3600, 360, 300, 1.0, 2.0, 3.0, 3000.0, 3600.0)),  # in every window
        (HOUR_ROW, ("api", now - 3 * 86400, 360, 360, 1.0, 2.0, 3.0, 3600.0, 3600.0)),  # 7 d and 30 d
        (HOUR_ROW, ("api", now - 20 * 86400, 360, 180, 1.0, 2.0, 3.0, None, None)),  # 30 d, before schema 5
        (HOUR_ROW, ("db", now - 10 * 86400, 360, 90, 1.0, 2.0, 3.0, None, None)),  # only in 30 d, old
        (HOUR_ROW, ("old", now - 35 * 86400, 360, 360, 1.0, 2.0, 3.0, 3600.0, 3600.0)),  # in none
    )
    windows = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
    history = History(store_location)
    try:
        found = history.uptime_windows(windows, now)
        for name, seconds in windows.items():
            alone = {e: u.percent for e, u in history.uptime(now - seconds).items()}
            assert {e: w[name] for e, w in found.items() if name in w} == alone, name
        assert found["api"]["24h"] == 100.0 * 3000 / 3600
        assert found["api"]["30d"] == 100.0 * (3000 + 3600 + 1800) / (3 * 3600)
        assert found["db"] == {"30d": 25.0}
        assert "old" not in found
        assert history.uptime_windows({}, now) == {}
    finally:
        history.close()
