"""The overview's background reads on a real store (SQLite and PostgreSQL): uptime slots aligned to their width,
the newest ones read again, a new slot shifting the others; the timeline from stored and live incidents."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest

from clusterwatch.engine.state import EntityState
from clusterwatch.model import Observation, Status
from clusterwatch.store.healing import HealingHistory
from clusterwatch.web import overview_data
from clusterwatch.web.overview_data import OverviewData
from tests.storecheck import execute, migrated

MINUTE_ROW = (
    "INSERT INTO rollup_minute (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)
POOL = ThreadPoolExecutor(2)


class Web:
    def __init__(self, location: str) -> None:
        self.history = type("H", (), {"reads": HealingHistory(location)})()

    @staticmethod
    async def read(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(POOL, partial(fn, *args))


class Monitor:
    def __init__(self, location: str, names: list[str]) -> None:
        self.web = Web(location)
        self.entities = {n: EntityState(name=n, check=n) for n in names}


def minute(entity: str, ts: float, ok: float) -> tuple[str, tuple[Any, ...]]:
    return MINUTE_ROW, (entity, int(ts // 60 * 60), 6, 6, 1.0, 2.0, 3.0, ok, 60.0)


def test_slots_read_once_then_only_the_newest(store_location: str, monkeypatch) -> None:
    migrated(store_location)
    now = time.time()
    m = Monitor(store_location, ["api", "db"])
    data = OverviewData(m)  # type: ignore[arg-type]
    w = data.windows["24h"]
    first = w.aligned_first(now)
    current = first + 47 * w.width
    execute(
        store_location,
        minute("api", first + 60, 30.0),  # slot 0: half a minute down
        minute("api", current - w.width + 60, 60.0),  # slot 46
        minute("db", first + 5 * w.width, 60.0),
    )
    asyncio.run(data.refresh_window(w))
    assert w.ready and w.first == first
    assert w.slot("api", 0) == (30.0, 60.0) and w.slot("api", 46) == (60.0, 60.0)
    assert w.slot("db", 5) == (60.0, 60.0) and w.slot("db", 0) == (0.0, 0.0)
    slots = w.slots("api")
    assert len(slots) == 48 and slots[0].down_share == pytest.approx(0.5) and slots[1].down_share is None
    assert w.share_up("api") == pytest.approx(90 / 120)
    # a minute written later into an old slot is not read again (it is done); one in the open slot is
    execute(store_location, minute("api", first + 120, 0.0), minute("api", current + 60, 0.0))
    asyncio.run(data.refresh_window(w))
    assert w.slot("api", 0) == (30.0, 60.0)
    assert w.slot("api", 47) == (0.0, 60.0)
    # the next slot begins: everything shifts by one, the new slot is empty until minutes land in it
    monkeypatch.setattr(overview_data.time, "time", lambda: now + w.width)
    w.drawn["api"] = "stale"
    asyncio.run(data.refresh_window(w))
    assert w.first == first + w.width
    assert w.slot("api", 45) == (60.0, 60.0) and w.slot("api", 46) == (0.0, 60.0)
    assert w.slot("api", 47) == (0.0, 0.0) and w.drawn == {}
    # an entity gone from the monitor is forgotten; a new one is read whole
    m.entities.pop("db")
    m.entities["new"] = EntityState(name="new", check="new")
    asyncio.run(data.refresh_window(w))
    assert set(w.values) == {"api", "new"}
    m.web.history.reads.close()


def test_timeline_open_incident_from_the_live_state_and_marks_on_its_lane(tmp_path) -> None:
    location = str(tmp_path / "state.db")
    migrated(location)
    now = time.time()
    m = Monitor(location, ["api"])
    api = m.entities["api"]
    api.last = Observation(name="api", kind="http", target="", status=Status.CRITICAL, message="refused", check="api")
    api.incident, api.incident_started = "inc-1", now - 30
    data = OverviewData(m)  # type: ignore[arg-type]
    data.incidents = [
        {
            "id": "old",
            "entity": "api",
            "opened": now - 7200,
            "closed": now - 7000,
            "status": "critical",
            "worst": "critical",
            "message": "timeout",
        },
        {
            "id": "gone",
            "entity": "api",
            "opened": now - 90000,
            "closed": now - 89000,
            "status": "warning",
            "message": "slow",
        },
    ]
    data.actions = [
        {
            "started": now - 20,
            "finished": None,
            "check_name": "api",
            "entity": "api",
            "target": "command:x",
            "action": "command",
            "attempt": 1,
            "outcome": "running",
            "detail": None,
        },
    ]
    spans, marks = data.timeline_data(now - 86400, now)
    assert {s.key for s in spans} == {"old", "inc-1"}  # the one closed before the window is left out
    assert next(s for s in spans if s.key == "inc-1").end is None
    assert [(k.kind, k.key) for k in marks] == [("started", "inc-1")]
    m.web.history.reads.close()


def test_a_row_with_nothing_written_yet_says_measuring_once_observed(tmp_path) -> None:
    """A new check's first minute is written when it ends: until then its row says "measuring", not "no data"
    (which stays for an entity nobody has observed), and the first minute written turns it into a number."""
    from clusterwatch.web.overview_parts import row_uptime

    location = str(tmp_path / "state.db")
    migrated(location)
    m = Monitor(location, ["seen", "unseen"])
    m.entities["seen"].last = Observation(
        name="seen", kind="http", target="", status=Status.OK, message="", check="seen"
    )
    data = overview_data._BY_MONITOR[m] = OverviewData(m)  # type: ignore[index,arg-type]
    w = data.windows["24h"]
    asyncio.run(data.refresh_window(w))
    assert '<span class="pct">measuring</span>' in row_uptime(m, "seen")  # type: ignore[arg-type]
    assert '<span class="pct">no data</span>' in row_uptime(m, "unseen")  # type: ignore[arg-type]
    execute(location, minute("seen", w.first + (w.count - 1) * w.width, 60.0))
    asyncio.run(data.refresh_window(w))
    assert '<span class="pct">100.00%</span>' in row_uptime(m, "seen")  # type: ignore[arg-type]
    m.web.history.reads.close()
