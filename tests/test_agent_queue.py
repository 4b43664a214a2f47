"""The agent's local queue: one order across rounds and events, bounded by rows and age, acknowledged
by seq, never reusing a seq, and nothing committed lost to a kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clusterwatch.agent import protocol
from clusterwatch.agent.queue import AgentQueue
from tests.helpers import ROOT, wait_until


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def round_body(at: float, check: str = "svc", message: str = "ok") -> dict:
    return {
        "at": at,
        "check": check,
        "observations": [{"name": check, "kind": "http", "status": "ok", "message": message}],
    }


def event_body(at: float, kind: str = "remediation_started", check: str | None = "svc") -> dict:
    return {"at": at, "kind": kind, "check": check, "entity": check, "message": "restarting", "details": {}}


@pytest.fixture
def queue(tmp_path: Path) -> AgentQueue:
    q = AgentQueue(str(tmp_path / "queue.db"))
    q.open()
    yield q
    q.close()


def test_rounds_and_events_share_one_order_and_read_back_as_the_protocol_says(queue: AgentQueue) -> None:
    t = time.time()
    seqs = [
        queue.put_round(t, "svc", round_body(t)),
        queue.put_event(t + 1, "svc", event_body(t + 1)),
        queue.put_round(t + 2, "svc", round_body(t + 2)),
    ]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    batch = queue.batch(max_rounds=100, max_events=100)
    assert [r.seq for r in batch.rounds] == [seqs[0], seqs[2]]
    assert [e.seq for e in batch.events] == [seqs[1]]
    assert batch.last == seqs[2]
    push = protocol.Push(
        node="phone-1",
        sent_at=t + 3,
        rounds=[protocol.Round(seq=r.seq, **r.body) for r in batch.rounds],
        events=[protocol.AgentEvent(seq=e.seq, **e.body) for e in batch.events],
    )
    assert push.rounds[1].observations[0].status == "ok"


def test_a_batch_is_one_contiguous_range_within_every_limit(queue: AgentQueue) -> None:
    t = time.time()
    for i in range(10):
        queue.put_round(t + i, "svc", round_body(t + i))
    queue.put_event(t + 10, "svc", event_body(t + 10))
    queue.put_event(t + 11, "svc", event_body(t + 11))
    queue.put_round(t + 12, "svc", round_body(t + 12))

    by_rounds = queue.batch(max_rounds=4, max_events=10)
    assert len(by_rounds.rounds) == 4 and not by_rounds.events
    by_events = queue.batch(max_rounds=100, max_events=1)
    assert len(by_events.rounds) == 10 and len(by_events.events) == 1  # stops before the second event
    assert by_events.last == by_events.events[0].seq
    size = len(str(round_body(t)).encode())
    by_bytes = queue.batch(max_rounds=100, max_events=100, max_bytes=3 * size)
    assert 1 <= len(by_bytes.rounds) <= 3
    tiny = queue.batch(max_rounds=100, max_events=100, max_bytes=1)
    assert len(tiny.rounds) == 1  # at least one row, whatever its size: the queue never sticks


def test_ack_drops_exactly_what_the_monitor_filed(queue: AgentQueue) -> None:
    t = time.time()
    seqs = [queue.put_round(t + i, "svc", round_body(t + i)) for i in range(5)]
    assert queue.ack(seqs[2]) == 3
    assert len(queue) == 2 and queue.rounds == 2
    assert [r.seq for r in queue.batch(max_rounds=100, max_events=100).rounds] == seqs[3:]
    assert queue.ack(seqs[2]) == 0  # an answer that came twice changes nothing


def test_a_seq_is_never_given_again_after_an_ack_and_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "queue.db")
    q = AgentQueue(path)
    q.open()
    last = max(q.put_round(time.time(), "svc", round_body(time.time())) for i in range(3))
    q.ack(last)
    assert len(q) == 0
    q.close()
    again = AgentQueue(path)
    again.open()
    assert again.put_round(time.time(), "svc", round_body(time.time())) > last
    assert again.last_issued() == last + 1
    again.close()


def test_full_queue_drops_the_oldest_rounds_first_and_counts_them(tmp_path: Path) -> None:
    q = AgentQueue(str(tmp_path / "queue.db"), max_rows=5)
    q.open()
    t = time.time()
    q.put_event(t, "svc", event_body(t))
    for i in range(1, 8):
        q.put_round(t + i, "svc", round_body(t + i, message=f"r{i}"))
    assert len(q) == 5
    batch = q.batch(max_rounds=100, max_events=100)
    assert len(batch.events) == 1, "an event outlives rounds"
    assert [r.body["observations"][0]["message"] for r in batch.rounds] == ["r4", "r5", "r6", "r7"]
    dropped = q.take_dropped()
    assert (dropped.rounds, dropped.events) == (3, 0)
    assert (dropped.oldest, dropped.newest) == (t + 1, t + 3)
    assert not q.take_dropped(), "counted once"
    q.close()


def test_with_nothing_but_events_the_oldest_events_go(tmp_path: Path) -> None:
    q = AgentQueue(str(tmp_path / "queue.db"), max_rows=3)
    q.open()
    t = time.time()
    seqs = [q.put_event(t + i, "svc", event_body(t + i)) for i in range(5)]
    assert [e.seq for e in q.batch(max_rounds=10, max_events=10).events] == seqs[2:]
    assert q.take_dropped().events == 2
    q.close()


def test_rounds_older_than_max_age_are_dropped_events_are_kept(tmp_path: Path) -> None:
    clock = Clock()
    q = AgentQueue(str(tmp_path / "queue.db"), max_age=3600.0, clock=clock)
    q.open()
    t = clock.now
    q.put_round(t, "svc", round_body(t))
    q.put_event(t, "svc", event_body(t))
    clock.now += 1800
    q.put_round(clock.now, "svc", round_body(clock.now))
    clock.now += 1900  # the first round is 3700 s old now; the sweep runs at most once a minute
    q.put_round(clock.now, "svc", round_body(clock.now))
    batch = q.batch(max_rounds=10, max_events=10)
    assert [r.at for r in batch.rounds] == [t + 1800, t + 3700]
    assert len(batch.events) == 1
    assert q.take_dropped().rounds == 1
    q.close()


def test_a_reopened_queue_keeps_its_bounds_and_counts(tmp_path: Path) -> None:
    path = str(tmp_path / "queue.db")
    q = AgentQueue(path, max_rows=100)
    q.open()
    for _ in range(10):
        q.put_round(time.time(), "svc", round_body(time.time()))
    q.close()
    smaller = AgentQueue(path, max_rows=4)
    smaller.open()
    assert len(smaller) == 4 and smaller.rounds == 4
    assert smaller.take_dropped().rounds == 6
    smaller.close()


def test_rows_of_checks_no_longer_configured_are_dropped(queue: AgentQueue) -> None:
    t = time.time()
    queue.put_round(t, "svc", round_body(t))
    queue.put_round(t, "gone", round_body(t, check="gone"))
    queue.put_event(t, "gone", event_body(t, check="gone"))
    queue.put_event(t, None, event_body(t, kind="healing_taken", check=None))
    assert queue.drop_checks({"svc", "phone-1"}) == 2
    batch = queue.batch(max_rounds=10, max_events=10)
    assert [r.body["check"] for r in batch.rounds] == ["svc"]
    assert [e.body["kind"] for e in batch.events] == ["healing_taken"]
    assert queue.rounds == 1


def test_renumbering_moves_every_row_past_what_the_monitor_filed_in_order(queue: AgentQueue) -> None:
    t = time.time()
    for i in range(3):
        queue.put_round(t + i, "svc", round_body(t + i, message=f"r{i}"))
    queue.renumber_after(5000)
    batch = queue.batch(max_rounds=10, max_events=10)
    assert [r.seq for r in batch.rounds] == [5001, 5002, 5003]
    assert [r.body["observations"][0]["message"] for r in batch.rounds] == ["r0", "r1", "r2"]
    assert queue.put_round(t + 5, "svc", round_body(t + 5)) == 5004


def test_renumbering_an_empty_new_queue_starts_it_past_the_mark(queue: AgentQueue) -> None:
    queue.renumber_after(77)
    assert queue.put_round(time.time(), "svc", round_body(time.time())) == 78


def test_cached_values_survive_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "queue.db")
    q = AgentQueue(path)
    q.open()
    assert q.get("config") is None
    q.put("config", {"version": "a", "checks": [1, 2]})
    q.put("config", {"version": "b"})
    q.close()
    again = AgentQueue(path)
    again.open()
    assert again.get("config") == {"version": "b"}
    again.close()


def test_nothing_queued_is_lost_to_kill_9(tmp_path: Path) -> None:
    """A writer killed in the middle of its inserts: every insert it returned from is there after."""
    path = tmp_path / "queue.db"
    progress = tmp_path / "progress"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from clusterwatch.agent.queue import AgentQueue
        q = AgentQueue({str(path)!r})
        q.open()
        while True:
            now = time.time()
            seq = q.put_round(now, "svc", {{"at": now, "check": "svc", "observations": []}})
            with open({str(progress)!r}, "w") as f:
                f.write(str(seq))
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        wait_until(lambda: progress.exists() and int(progress.read_text() or 0) >= 200, 60, what="200 inserts")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    confirmed = int(progress.read_text() or 0)
    with sqlite3.connect(path) as db:
        seqs = [r[0] for r in db.execute("SELECT seq FROM queue ORDER BY seq")]
    assert seqs[:confirmed] == list(range(1, confirmed + 1)), "every confirmed insert is there, in order"
    q = AgentQueue(str(path))
    q.open()
    assert len(q) == len(seqs)
    assert q.put_round(time.time(), "svc", round_body(time.time())) > seqs[-1]
    q.close()


def test_a_queue_that_cannot_hold_anything_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        AgentQueue(str(tmp_path / "q.db"), max_rows=0)
