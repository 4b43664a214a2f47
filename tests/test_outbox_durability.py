"""The outbox and what it tells, under failing writes and restarts: no wedge, no loss, no double. On both
engines: a write the database refuses is a trigger that raises (SQLite's RAISE, PostgreSQL's RAISE
EXCEPTION)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from clusterwatch.alerting.alerter import Alerter
from clusterwatch.config.schema import AlertOptions
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.model import Status
from clusterwatch.store.db import errors
from clusterwatch.store.outbox import Message, Outbox
from tests.storecheck import drop_trigger, execute, fail_when, open_transactions, store_options


def options(**extra) -> AlertOptions:
    return AlertOptions.model_validate({"channels": {"ops": "json://127.0.0.1:9/"}, "group_wait": "0s", **extra})


def opened(incident: str, entity: str = "api") -> Event:
    return Event(EventKind.INCIDENT_OPENED, entity, entity, time.time(), "connection refused",
                 new=Status.CRITICAL, incident=incident)


def closed(incident: str, entity: str = "api") -> Event:
    return Event(EventKind.INCIDENT_CLOSED, entity, entity, time.time(), "serving again",
                 new=Status.OK, incident=incident)


def trigger(db: str, table: str) -> None:
    """A write that fails inside the database itself, as a full disk or a broken schema would."""
    fail_when(db, f"fail_{table}", "INSERT", table)


def untrigger(db: str, table: str) -> None:
    drop_trigger(db, f"fail_{table}", table)


def test_a_failing_insert_rolls_back_and_never_wedges(store_location: str):
    db = store_location
    outbox = Outbox(db)
    try:
        trigger(db, "outbox")
        with pytest.raises(errors()):
            outbox.add([Message("ops", "firing", "critical", "t", "b", ["i1"])], told=[("i1", "api", "critical",
                                                                                      1.0, None, None, None)])
        # Nothing of that transaction is there: not the message, not the state that said it was told.
        assert outbox.pending() == [] and outbox.alert_states() == []
        # The connection is not left inside a transaction: the next writes work at once.
        assert open_transactions(db) == 0
        outbox.save_states([("i2", "db", "warning", None, None, 5.0, None)])
        assert [r["incident"] for r in outbox.alert_states()] == ["i2"]
        untrigger(db, "outbox")
        [row_id] = outbox.add([Message("ops", "firing", "critical", "t", "b", ["i1"])])
        assert [r["id"] for r in outbox.pending()] == [row_id]
    finally:
        outbox.close()


def test_firing_and_its_told_state_are_one_commit(store_location: str):
    """A failed alert_state write takes the notifications with it: after a crash nobody is told twice."""
    db = store_location
    outbox = Outbox(db)

    async def scenario() -> None:
        alerter = Alerter(options(), outbox)
        alerter.on_event(opened("inc1"))
        trigger(db, "alert_state")
        with pytest.raises(errors()):
            await alerter.flush()
        assert outbox.pending() == [], "a notification was committed without the state that says it was sent"
        assert alerter.incidents["inc1"].notified is None
        untrigger(db, "alert_state")
        assert await alerter.flush() == 1
        assert alerter.incidents["inc1"].notified is not None
        await alerter.stop()

    try:
        asyncio.run(scenario())
        assert len(outbox.pending()) == 1
        [state] = outbox.alert_states()
        assert state["incident"] == "inc1" and state["notified"] is not None
    finally:
        outbox.close()


def test_resolved_notice_survives_a_crash_between_close_and_send(store_location: str):
    """The monitor dies after the incident closed and before the resolved notice reached the outbox:
    the next monitor finds "told, and closed" in the store and says it is resolved, once."""
    db = store_location
    outbox = Outbox(db)

    async def first_life() -> None:
        alerter = Alerter(options(), outbox)
        alerter.on_event(opened("inc1"))
        await alerter.flush()  # firing is in the outbox, and so is "inc1 was told"
        alerter.on_event(closed("inc1"))  # ... and the monitor is killed before the next flush
        await alerter.stop()

    async def second_life() -> list[str]:
        alerter = Alerter(options(), outbox)
        await alerter.resume([])  # nothing open any more
        await alerter.flush()
        await alerter.flush()  # and never a second time
        await alerter.stop()
        return [r["title"] for r in outbox.pending()]

    try:
        asyncio.run(first_life())
        assert outbox.alert_states(), "the told state must outlive the in-memory note"
        # The store closed the incident (the engine's writer does that on incident_closed).
        now = time.time()
        execute(
            db,
            (
                "INSERT INTO incidents (id, entity, check_name, node, opened, closed, status, message, last_message) "
                "VALUES ('inc1', 'api', 'api', NULL, ?, ?, 'critical', 'connection refused', 'serving again')",
                (now - 60, now),
            ),
        )
        titles = asyncio.run(second_life())
        assert len(titles) == 2 and titles[0].startswith("[CRITICAL] api") and titles[1].startswith("[RESOLVED] api")
        assert outbox.alert_states() == [], "the incident's state goes in the same commit as its resolved notice"
    finally:
        outbox.close()


def test_an_incident_closing_while_its_firing_is_written_still_gets_its_resolved(store_location: str):
    """The service recovers while the firing is being committed (the store's writer holds the lock)."""
    outbox = Outbox(store_location)
    real_add = outbox.add
    entered, release = threading.Event(), threading.Event()

    def held_add(*args, **kwargs):
        entered.set()
        release.wait(10)
        return real_add(*args, **kwargs)

    async def scenario() -> None:
        alerter = Alerter(options(), outbox)
        alerter.on_event(opened("inc1"))
        outbox.add = held_add  # type: ignore[method-assign]
        flush = asyncio.create_task(alerter.flush())
        await asyncio.to_thread(entered.wait, 10)
        alerter.on_event(closed("inc1"))  # ... while the firing is on its way into the outbox
        release.set()
        await flush
        outbox.add = real_add  # type: ignore[method-assign]
        await alerter.flush(everything=True)
        await alerter.stop()

    try:
        asyncio.run(scenario())
        kinds = [r["kind"] for r in outbox.pending()]
        assert kinds == ["firing", "resolved"], kinds
        assert outbox.alert_states() == []
    finally:
        outbox.close()


def test_an_incident_whose_close_was_lost_in_a_crash_is_closed_and_resolved(store_location: str):
    """The entity's recovery was committed, the incident_closed event was in the batch the crash lost:
    the next start closes the stray incident and the people told about it hear it is resolved."""
    from clusterwatch.store.writer import Store

    db = store_location
    outbox = Outbox(db)
    now = time.time()
    execute(
        db,
        (
            "INSERT INTO incidents (id, entity, check_name, node, opened, status, message, last_message) "
            "VALUES ('inc1', 'api', 'api', NULL, ?, 'critical', 'connection refused', 'connection refused')",
            (now - 60,),
        ),
    )
    outbox.save_states([("inc1", "api", "critical", now - 50, None, None, None)])  # it was told
    store = Store(store_options(db)).open()
    try:
        assert store.close_stray_incidents(set(), now) == ["inc1"]
        assert store.close_stray_incidents(set(), now) == []
    finally:
        store.close()

    async def restart() -> None:
        alerter = Alerter(options(), outbox)
        await alerter.resume([])
        await alerter.flush()
        await alerter.stop()

    try:
        asyncio.run(restart())
        assert [r["title"][:13] for r in outbox.pending()] == ["[RESOLVED] ap"]
        assert outbox.alert_states() == []
    finally:
        outbox.close()
