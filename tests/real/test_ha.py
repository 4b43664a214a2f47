"""A group of real monitors (processes) on one real PostgreSQL, alerting a real webhook receiver.

The leader dies (kill -9), freezes (SIGSTOP past its lease) or loses the database (halted for a
minute): another monitor takes over within the lease, the restart budget continues where it was
(no attempt twice, none beyond max_attempts, each attempt stamped with its writer's epoch), a frozen
leader that wakes up acts on nothing, and every alert reaches people exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterwatch.config.loader import load_config
from clusterwatch.daemon import Monitor
from clusterwatch.ha import Change, Lease
from clusterwatch.model import Status
from clusterwatch.store.db import Database, open_database
from clusterwatch.store.lease import LeaseStore
from tests.helpers import Proc, free_port, port_open, wait_until
from tests.pg import PostgresServer, fresh_database, running_server
from tests.real.daemon import Daemon, kill_pidfile
from tests.real.receivers import WebhookReceiver

LEASE = 4.0  # seconds: short, so that every takeover here is quick; the bounds below are generous
TAKEOVER_SLACK = 5.0  # a takeover may take the lease plus this (a renewal every lease/4, a busy machine)
FAILOVER = "leads the monitors now"

# What the restart action runs: counts its calls in a file, fails (exit 1) before call FIRST_GOOD, and
# from then on really starts the service (an HTTP server on the port, detached, its PID in the
# pidfile) after DELAY seconds (a service that is slow to come up).
SERVICE_SCRIPT = """\
import subprocess, sys, time
count, port, pidfile, first_good, delay = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
with open(count, "a") as f:
    f.write(f"{time.time()}\\n")
with open(count) as f:
    calls = len(f.read().splitlines())
if calls < first_good:
    print(f"call {calls}: the service would not start")
    sys.exit(1)
time.sleep(delay)
proc = subprocess.Popen(
    [sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1"],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    start_new_session=True, cwd="/",
)
with open(pidfile, "a") as f:
    f.write(f"{proc.pid}\\n")
print(f"call {calls}: started the service, pid {proc.pid}")
"""


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own: one test halts it, and nobody else should feel that."""
    with running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg: PostgresServer) -> Iterator[str]:
    with fresh_database(pg, "ha_") as url:
        yield url


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    server = receiver.serve()
    receiver.json = f"json://127.0.0.1:{server.port}/alerts"  # type: ignore[attr-defined]
    yield receiver
    server.stop()


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Monitors (Daemon), services (Proc) and pidfiles (Path) a test started: stopped by PID, always."""
    started: list[Any] = []
    yield started
    # The monitors first: a service stopped under a running monitor would only make noise.
    for thing in sorted(reversed(started), key=lambda t: not isinstance(t, Daemon)):
        with contextlib.suppress(Exception):
            if isinstance(thing, Path):
                kill_pidfile(thing)
            else:
                thing.stop()


# --- helpers ----------------------------------------------------------------------------------------


class Shared:
    """The shared store, read the way a person would with psql."""

    def __init__(self, url: str) -> None:
        self.db: Database = open_database(url, pool=2, name="ha-test")

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(zip(r.keys(), r, strict=True)) for r in self.db.rows(sql, args)]

    def lease(self) -> dict[str, Any] | None:
        rows = self.rows("SELECT *, extract(epoch from clock_timestamp())::float8 AS now FROM ha_lease")
        return rows[0] if rows and rows[0]["holder"] else None

    def members(self) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM ha_members ORDER BY node")

    def actions(self) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM actions ORDER BY id")

    def elections(self) -> list[dict[str, Any]]:
        """leader_elected events, oldest first, with their epoch."""
        rows = self.rows("SELECT * FROM events WHERE kind = 'leader_elected' ORDER BY ts")
        for row in rows:
            row["epoch"] = json.loads(row["details"])["epoch"]
        return rows

    def entity(self, name: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT * FROM entities WHERE name = ?", name)
        return rows[0] if rows else None

    def stop(self) -> None:
        self.db.close()


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def monitor(tmp: Path, name: str, url: str, hook: WebhookReceiver, checks: list[dict[str, Any]]) -> Daemon:
    (tmp / name).mkdir()
    return Daemon(
        tmp / name,
        {
            "store": {"url": url, "path": str(tmp / name / "local.db")},  # path: its local outbox, if any
            "ha": {"enabled": True, "lease": f"{LEASE:g}s", "node_name": name},
            "interval": "500ms",
            "alerts": {"channels": {"hook": hook.json}, "group_wait": "0s"},  # type: ignore[attr-defined]
            "checks": checks,
        },
    )


def restartable(
    tmp: Path, name: str, port: int, *, first_good: int = 1, delay: float = 0.0, **policy: Any
) -> dict[str, Any]:
    """A TCP check whose restart action is SERVICE_SCRIPT (calls counted in tmp/NAME.restarts)."""
    script = tmp / "service.py"
    script.write_text(SERVICE_SCRIPT)
    command = [sys.executable, str(script), str(tmp / f"{name}.restarts"), str(port), str(tmp / f"{name}.pid")]
    restart = {
        "command": [*command, str(first_good), str(delay)],
        "max_attempts": 4,
        "window": "10m",
        "stable_for": "10m",
        "backoff": "3s",
        "timeout": "15s",
        "verify_timeout": "15s",
        **policy,
    }
    return {"name": name, "kind": "tcp", "port": port, "timeout": "1s", "restart": restart}


def http_service(tmp: Path, port: int) -> Proc:
    proc = Proc([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], tmp / f"svc-{port}.log")
    wait_until(lambda: port_open(port), timeout=30, what=f"the service on {port}")
    return proc


def notices(hook: WebhookReceiver) -> list[str]:
    """Every notification's title as people read it; a grouped message counts as each of its parts."""
    out: list[str] = []
    with hook.lock:
        hits = list(hook.hits)
    for hit in hits:
        body = hit.body if isinstance(hit.body, dict) else {}
        title, message = str(body.get("title", "")), str(body.get("message", ""))
        parts = [line[3:] for line in message.splitlines() if line.startswith("== ")]
        out.extend(parts if (" problems: " in title or " recovered: " in title) and parts else [title])
    return out


def told(hook: WebhookReceiver, prefix: str) -> list[str]:
    return [t for t in notices(hook) if t.startswith(prefix)]


def failovers(hook: WebhookReceiver) -> list[str]:
    return [t for t in notices(hook) if FAILOVER in t]


def leader(shared: Shared, daemons: dict[str, Daemon]) -> tuple[str, dict[str, Any]]:
    lease = wait_until(shared.lease, timeout=60, what="a lease holder")
    assert lease["node"] in daemons, lease
    return lease["node"], lease


def kill_9(d: Daemon) -> None:
    """kill -9 of the monitor alone, as an OOM kill would: what it started lives on."""
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.popen.wait(10)
    d.proc.stop()


def takeovers(d: Daemon) -> int:
    """How often this monitor began to lead (its engine's log line for each takeover)."""
    return len(re.findall(r"engine: \S+ leads the group of monitors \(epoch \d+\)$", d.log(), re.MULTILINE))


def logs(daemons: dict[str, Daemon]) -> str:
    return "\n".join(f"--- {name}\n{d.log()[-2500:]}" for name, d in daemons.items())


def wait(
    predicate: Callable[[], Any],
    what: str,
    *,
    timeout: float,
    daemons: dict[str, Daemon],
    hook: WebhookReceiver | None = None,
    interval: float = 0.1,
) -> Any:
    """wait_until, and on a timeout what the monitors logged and what people were told by then."""
    try:
        return wait_until(predicate, timeout=timeout, interval=interval, what=what)
    except AssertionError as exc:
        told_so_far = f"\nnotifications: {notices(hook)}" if hook is not None else ""
        raise AssertionError(f"{exc}{told_so_far}\n{logs(daemons)}") from None


# --- the tests --------------------------------------------------------------------------------------


def test_three_monitors_one_leads_and_a_follower_continues_the_budget_after_kill_9(
    tmp_path: Path, pg_url: str, hook: WebhookReceiver, cleanup: list[Any]
):
    port = free_port()
    counter, pidfile = tmp_path / "api.restarts", tmp_path / "api.pid"
    cleanup.append(pidfile)
    # Down from the start; the first two restarts fail, the third really starts it.
    check = restartable(tmp_path, "api", port, first_good=3)
    daemons = {n: monitor(tmp_path, n, pg_url, hook, [check]) for n in ("monitor-a", "monitor-b", "monitor-c")}
    shared = Shared(pg_url)
    cleanup.extend([*daemons.values(), shared])
    for d in daemons.values():
        d.start()

    # Exactly one leads: the lease's holder; every member has its row; nobody else says it leads.
    def one_leader() -> Any:
        lease, members = shared.lease(), shared.members()
        if lease is None or len(members) != 3:
            return None
        leading = [m for m in members if m["leads"]]
        return len(leading) == 1 and leading[0]["member"] == lease["holder"] and (lease, members)

    lease, members = wait(one_leader, "three members, one leading", timeout=60, daemons=daemons)
    first = lease["node"]
    assert {m["node"] for m in members} == set(daemons)
    assert all(m["epoch"] is None for m in members if not m["leads"])

    # The leader spends two attempts (both fail); kill -9 it in the backoff before the third.
    def two_failed() -> Any:
        done = [a for a in shared.actions() if a["outcome"] == "failed"]
        return lines(counter) == 2 and len(done) == 2 and done

    wait(two_failed, "two failed restarts", timeout=60, daemons=daemons)
    killed_at = time.time()
    kill_9(daemons[first])
    assert lines(counter) == 2, "the third attempt started before the leader was killed: the test proves nothing"
    assert not port_open(port)

    # A follower takes over within the lease (plus slack): measured from the kill to the new holder.
    def new_holder() -> Any:
        lease = shared.lease()
        return lease is not None and lease["node"] != first and lease

    second = wait(new_holder, "a new leader", timeout=LEASE + 30, daemons=daemons, interval=0.05)
    seen_after = time.time() - killed_at
    took_over = second["acquired_at"] - killed_at
    elected = wait(
        lambda: [e for e in shared.elections() if e["epoch"] == second["epoch"]],
        "the new leader's leader_elected event",
        timeout=30,
        daemons=daemons,
    )[0]
    announced = elected["ts"] - killed_at
    print(f"\ntakeover after kill -9: lease taken {took_over:.2f}s, seen {seen_after:.2f}s, announced {announced:.2f}s")
    assert second["epoch"] == lease["epoch"] + 1
    assert took_over <= LEASE + TAKEOVER_SLACK, f"takeover took {took_over:.1f}s"
    assert announced <= LEASE + TAKEOVER_SLACK, f"the new leader announced itself {announced:.1f}s after the kill"

    # It continues the same budget: the third attempt heals the service.
    wait(
        lambda: (e := shared.entity("api")) is not None and e["hard"] == "ok" and port_open(port),
        "api healed by the new leader",
        timeout=60,
        daemons=daemons,
    )
    wait(lambda: told(hook, "[RESOLVED] api on"), "the resolved alert", timeout=60, daemons=daemons, hook=hook)
    time.sleep(3)  # whatever a monitor would wrongly do next (a restart, a second notice), it does now

    assert lines(counter) == 3, "restarted more than once after the takeover"
    actions = shared.actions()
    assert [a["attempt"] for a in actions] == [1, 2, 3], actions
    assert len(actions) <= check["restart"]["max_attempts"]
    assert [a["outcome"] for a in actions] == ["failed", "failed", "succeeded"]
    elections = [(e["node"], e["epoch"]) for e in shared.elections()]
    assert elections == [(first, lease["epoch"]), (second["node"], second["epoch"])], elections
    epochs = dict(elections)
    assert [(a["monitor"], a["epoch"]) for a in actions] == [
        (first, lease["epoch"]),
        (first, lease["epoch"]),
        (second["node"], second["epoch"]),
    ]
    assert all(a["epoch"] == epochs[a["monitor"]] for a in actions)

    # People heard of it once each: the firing, the resolved notice, and one failover per election.
    assert len(told(hook, "[CRITICAL] api on")) == 1, notices(hook)
    assert len(told(hook, "[RESOLVED] api on")) == 1, notices(hook)
    assert failovers(hook) == [
        f"[INFO] clusterwatch: {first} {FAILOVER}",
        f"[INFO] clusterwatch: {second['node']} {FAILOVER}",
    ], notices(hook)
    assert not [t for t, n in Counter(notices(hook)).items() if n > 1], notices(hook)
    assert "was cut short" not in daemons[second["node"]].log()  # killed between attempts: nothing in flight
    # One takeover each: the new leader did not stand down and take over again while it resumed.
    assert {n: takeovers(d) for n, d in daemons.items()} == {n: int(n in (first, second["node"])) for n in daemons}


def test_a_frozen_leader_wakes_up_and_acts_on_nothing(
    tmp_path: Path, pg_url: str, hook: WebhookReceiver, cleanup: list[Any]
):
    port = free_port()
    counter, pidfile = tmp_path / "api.restarts", tmp_path / "api.pid"
    cleanup.append(pidfile)
    service = http_service(tmp_path, port)
    cleanup.append(service)
    # The restarted service takes 8 s to come up: the old leader wakes while it is still down.
    check = restartable(tmp_path, "api", port, delay=8.0)
    daemons = {n: monitor(tmp_path, n, pg_url, hook, [check]) for n in ("monitor-a", "monitor-b")}
    shared = Shared(pg_url)
    cleanup.extend([*daemons.values(), shared])
    for d in daemons.values():
        d.start()
    first, lease = leader(shared, daemons)
    wait(
        lambda: (e := shared.entity("api")) is not None and e["hard"] == "ok" and len(shared.members()) == 2,
        "api healthy, both members seen",
        timeout=60,
        daemons=daemons,
    )
    old = daemons[first]
    assert old.proc is not None
    assert "api ok -> critical" not in old.log()

    # Freeze the leader for well past its lease; the service dies meanwhile.
    stopped_at = time.time()
    os.kill(old.proc.pid, signal.SIGSTOP)
    try:
        service.signal(signal.SIGKILL)
        second = wait(
            lambda: (held := shared.lease()) is not None and held["node"] != first and held,
            "another monitor taking over",
            timeout=LEASE + 30,
            daemons=daemons,
        )
        wait(lambda: lines(counter) == 1, "the new leader restarting api", timeout=60, daemons=daemons)
        time.sleep(max(0.0, stopped_at + 10.0 - time.time()))  # frozen at least 10 s (lease 4 s)
    finally:
        os.kill(old.proc.pid, signal.SIGCONT)
    woke_at = time.time()
    assert second["epoch"] == lease["epoch"] + 1
    assert not port_open(port), "the service was back before the old leader woke: the test proves nothing"

    # It wakes believing it leads, sees api down (a reason to restart it), and stands down instead.
    wait(lambda: "stood down as the leader" in old.log(), "the stand-down", timeout=30, daemons=daemons)
    wait(lambda: "api ok -> critical" in old.log(), "the woken leader seeing api down", timeout=30, daemons=daemons)
    wait(lambda: port_open(port), "api back", timeout=60, daemons=daemons)
    wait(lambda: told(hook, "[RESOLVED] api on"), "the resolved alert", timeout=60, daemons=daemons, hook=hook)
    time.sleep(3)  # the woken monitor's probes, healer and alerter have run several rounds by now

    assert lines(counter) == 1, "restarted twice: the woken leader acted on its old epoch"
    assert (held := shared.lease()) is not None and held["node"] == second["node"] and held["epoch"] == second["epoch"]
    actions = shared.actions()
    after = [a for a in actions if a["started"] >= stopped_at]
    assert [(a["attempt"], a["outcome"]) for a in after] == [(1, "succeeded")], actions
    assert all(a["epoch"] == second["epoch"] and a["monitor"] == second["node"] for a in after), actions
    assert not [a for a in actions if a["monitor"] == first], actions
    [member] = [m for m in shared.members() if m["node"] == first]
    assert not member["leads"] and member["epoch"] is None, member
    elections = [(e["node"], e["epoch"]) for e in shared.elections()]
    assert elections == [(first, lease["epoch"]), (second["node"], second["epoch"])], elections
    assert len(told(hook, "[CRITICAL] api on")) == 1, notices(hook)
    assert len(told(hook, "[RESOLVED] api on")) == 1, notices(hook)
    assert failovers(hook) == [
        f"[INFO] clusterwatch: {first} {FAILOVER}",
        f"[INFO] clusterwatch: {second['node']} {FAILOVER}",
    ], notices(hook)
    assert not [t for t, n in Counter(notices(hook)).items() if n > 1], notices(hook)
    assert {n: takeovers(d) for n, d in daemons.items()} == {first: 1, second["node"]: 1}
    print(f"\nfrozen {woke_at - stopped_at:.1f}s; new leader {second['node']} epoch {second['epoch']}")


def test_postgresql_halted_for_a_minute_under_two_monitors(
    tmp_path: Path, pg: PostgresServer, pg_url: str, hook: WebhookReceiver, cleanup: list[Any]
):
    api_port, web_port = free_port(), free_port()
    counter, pidfile = tmp_path / "api.restarts", tmp_path / "api.pid"
    cleanup.append(pidfile)
    api = http_service(tmp_path, api_port)  # fails during the outage; healed once the store is back
    web = http_service(tmp_path, web_port)  # fails during the outage and stays down beyond it
    cleanup.extend([api, web])
    checks = [restartable(tmp_path, "api", api_port), {"name": "web", "kind": "tcp", "port": web_port}]
    daemons = {n: monitor(tmp_path, n, pg_url, hook, checks) for n in ("monitor-a", "monitor-b")}
    shared = Shared(pg_url)
    cleanup.extend([*daemons.values(), shared])
    for d in daemons.values():
        d.start()
    first, _ = leader(shared, daemons)
    wait(
        lambda: all((e := shared.entity(n)) is not None and e["hard"] == "ok" for n in ("api", "web")),
        "both services healthy",
        timeout=60,
        daemons=daemons,
    )
    wait(lambda: len(failovers(hook)) == 1, "the first leader's announcement", timeout=30, daemons=daemons, hook=hook)

    pg.halt()
    halted_at = time.monotonic()
    try:
        time.sleep(3)
        api.signal(signal.SIGKILL)
        web.signal(signal.SIGKILL)
        wait(
            lambda: "stood down as the leader" in daemons[first].log(),
            "the leader standing down without its store",
            timeout=30,
            daemons=daemons,
        )
        time.sleep(max(0.0, halted_at + 60.0 - time.monotonic()))
        assert lines(counter) == 0, "restarted while the store was away: no lease, no attempt"
    finally:
        before = {n: takeovers(d) for n, d in daemons.items()}  # nobody can take over before it is back
        returned_at = time.time()
        pg.start_again()

    # Back: one monitor leads again, heals api once, and the firing for web reaches people.
    wait(lambda: lines(counter) == 1 and port_open(api_port), "api healed", timeout=90, daemons=daemons)
    wait(lambda: told(hook, "[CRITICAL] web on"), "the firing for web", timeout=60, daemons=daemons, hook=hook)
    web = http_service(tmp_path, web_port)
    cleanup.append(web)
    wait(
        lambda: told(hook, "[RESOLVED] web on") and told(hook, "[RESOLVED] api on"),
        "both resolved",
        timeout=60,
        daemons=daemons,
        hook=hook,
    )

    # Settled: nothing stuck, nothing doubled, one leader.
    def settled() -> Any:
        lease, members = shared.lease(), shared.members()
        leading = [m for m in members if m["leads"]]
        return (
            lease is not None
            and lease["expires_at"] > lease["now"]
            and len(leading) == 1
            and leading[0]["member"] == lease["holder"]
            and not shared.rows("SELECT id FROM actions WHERE outcome = 'running'")
            and all((e := shared.entity(n)) is not None and e["hard"] == "ok" for n in ("api", "web"))
            and lease
        )

    lease = wait(settled, "the group settled", timeout=60, daemons=daemons)
    time.sleep(3)
    assert lines(counter) == 1, "api restarted twice"
    actions = shared.actions()
    assert [(a["attempt"], a["outcome"]) for a in actions] == [(1, "succeeded")], actions
    assert actions[0]["epoch"] == lease["epoch"] and actions[0]["monitor"] == lease["node"]
    assert not shared.rows("SELECT entity FROM incidents WHERE closed IS NULL GROUP BY entity HAVING COUNT(*) > 1")
    assert not shared.rows("SELECT id FROM incidents WHERE closed IS NULL")
    for name in ("api", "web"):
        assert len(told(hook, f"[CRITICAL] {name} on")) == 1, notices(hook)
        assert len(told(hook, f"[RESOLVED] {name} on")) == 1, notices(hook)
    assert not [t for t, n in Counter(notices(hook)).items() if n > 1 and FAILOVER not in t], notices(hook)
    # One election once the store is back (the last leader again, same epoch, or another, the next one),
    # and one announcement per election.
    elections = shared.elections()
    assert len([e for e in elections if e["ts"] >= returned_at]) <= 1, elections
    assert sum(takeovers(d) - before[n] for n, d in daemons.items()) == 1, logs(daemons)
    assert len({e["epoch"] for e in elections}) == len(elections), elections
    assert failovers(hook) == [f"[INFO] clusterwatch: {e['node']} {FAILOVER}" for e in elections], (
        notices(hook),
        elections,
    )


class Clock:
    """A monotonic clock the test moves: a lapse without waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_renewal_after_a_lapse_is_the_same_leadership_or_a_reported_loss(pg_url: str):
    """A takeover that resumes from the store for longer than lease/2 (seen right after PostgreSQL came
    back) must not end in a stand-down and a second takeover; a lapsed leader whose renewal finds
    another holder must hear that it lost, or it keeps its alert loops as if it still led."""
    store = LeaseStore(pg_url).open()
    try:
        clock = Clock()
        a = Lease(store, "monitor-a", 2.0, clock=clock)
        assert a.renew() == Change(became=1)
        clock.now += 1.5  # resuming took 1.5 s: past lease/2 here, the database's lease (2 s) still a's
        assert not a.leading
        assert a.renew() == Change()  # the same epoch: the same leadership, no second election
        assert a.leading and a.epoch == 1
        clock.now += 1.5  # a lapses again, and this time its lease runs out in the database too
        b = Lease(store, "monitor-b", 2.0)
        assert wait_until(lambda: b.renew().became, timeout=30, what="b taking the lease a let run out") == 2
        assert a.renew() == Change(lost="another monitor holds the lease")
        assert a.epoch is None and not a.leading
        assert a.renew() == Change() and b.renew() == Change()  # nothing more to say on either side
    finally:
        store.close()


def test_a_takeover_hears_what_its_probes_find_while_it_resumes(tmp_path: Path, pg_url: str):
    """The scheduler keeps probing while a new leader resumes from the store: a transition a probe
    drives in that moment must still be told and stored. (It was not: an incident opened then had no
    firing from this leader, no row in the store, and its recovery told nobody.) In-process, to put
    the probes exactly in that moment; the store is the real PostgreSQL, the port really closed."""
    path = tmp_path / "clusterwatch.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "store": {"url": pg_url, "path": str(tmp_path / "local.db")},
                "ha": {"enabled": True, "lease": f"{LEASE:g}s", "node_name": "monitor-a"},
                "interval": "500ms",
                "checks": [{"name": "api", "kind": "tcp", "port": free_port(), "timeout": "1s"}],
            }
        )
    )
    loaded = load_config(str(path), env={}, cwd=tmp_path)

    async def scenario() -> None:
        monitor = Monitor(loaded, str(path))
        item = monitor.plan.items["api"]

        async def probe_twice() -> None:  # fall 2: hard critical, an incident opens
            for _ in range(2):
                monitor.pipeline.handle(item, await monitor.pipeline.probe(item))

        start_healer = monitor.healer.start

        async def healer_start_then_probes() -> None:  # the last step of resuming, before it is done
            await start_healer()
            await probe_twice()

        monitor.healer.start = healer_start_then_probes  # type: ignore[method-assign]
        try:
            await monitor.start()  # the first member of a fresh group: it takes the lease and resumes
            assert monitor.acting() and monitor.alerter is not None
            await probe_twice()  # what the scheduler runs next
            state = monitor.states.entities["api"]
            assert state.hard is Status.CRITICAL and state.incident
            assert state.incident in monitor.alerter.incidents, "the new leader's alerter never heard of it"
            assert await monitor.blocking(monitor.store.flush, 10.0)
            stored = await monitor.blocking(
                monitor.store.reads.rows, "SELECT id FROM incidents WHERE closed IS NULL", ()
            )
            assert [r[0] for r in stored] == [state.incident], "the incident is not in the store"
        finally:
            await monitor.close()

    asyncio.run(scenario())
