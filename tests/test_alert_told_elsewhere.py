"""What a monitor told people from its local outbox while the shared store was away, and what the
leader tells after: one end to each story, even when the leader heals it before its own firing goes out."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from clusterwatch.alerting.alerter import Alerter
from clusterwatch.config.schema import AlertOptions
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.model import Status
from clusterwatch.store.outbox import Outbox

HOOK = "json://127.0.0.1:9/a"  # never sent to: the test reads the outbox


def test_healed_before_its_firing_went_out_is_the_one_end_of_what_was_told_offline(tmp_path: Path):
    outbox = Outbox(str(tmp_path / "state.db"), member="monitor-b")
    told_at = time.time() - 50
    outbox.take_over([("api", "offline-1", "firing", "critical", told_at, "monitor-a", "api", None)])

    async def scenario() -> None:
        alerter = Alerter(AlertOptions(channels={"hook": HOOK}, group_wait=0), outbox, kind_of=lambda _e: "tcp")
        alerter.entity_ok = lambda _entity: True
        await alerter.resume([])
        now = time.time()
        # The leader's own view after the store came back: down, restarted, healthy, all before a flush.
        alerter.on_event(
            Event(EventKind.INCIDENT_OPENED, "api", "api", now, "refused", new=Status.CRITICAL, incident="i1")
        )
        alerter.on_event(
            Event(
                EventKind.REMEDIATION_STARTED,
                "api",
                "api",
                now,
                "restarting",
                incident="i1",
                details={"target": "command:start-api", "attempt": 1},
            )
        )
        alerter.on_event(
            Event(EventKind.INCIDENT_CLOSED, "api", "api", now + 0.8, "recovered", new=Status.OK, incident="i1")
        )
        await alerter.flush(everything=True)
        await alerter.flush(everything=True)  # a later look at what was told offline must not add a second end

    asyncio.run(scenario())
    titles = [row["title"] for row in outbox.pending()]
    ends = []  # each resolution people read, a grouped message counting as each of its parts
    for title in titles:
        grouped = re.match(r"\[RESOLVED\] \d+ recovered: (.*)", title)
        ends += grouped.group(1).split(", ") if grouped else [title] if title.startswith("[RESOLVED] ") else []
    assert len(ends) == 1 and ends[0].startswith(("api", "[RESOLVED] api")), titles
    assert not [t for t in titles if t.startswith("[CRITICAL] api")], titles  # people were told already
    assert not outbox.told_offline(0)  # used up: no resolved notice for it later either
    outbox.close()
