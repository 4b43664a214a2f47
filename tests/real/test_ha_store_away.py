"""Whether the shared store is away, as a leader cut off from it judges before each notice it tells
from its local outbox: a real monitor (in-process) on a real PostgreSQL, alerting a real webhook.

What went wrong (test_ha_partition.py, 1 run in 7): the cut-off leader's stale "[CRITICAL] api"
left its local outbox 0.1 s after the network came back, because the one ping it asked just before
failed just after ("server closed the connection unexpectedly": a connect waiting on the cut link
is dropped when the link comes back; or the ping waited on the pool, or behind renewals hanging in
the cut, past its 1 s). Here the ask fails that way on purpose while PostgreSQL answers: the notice
must stay in the local outbox. And when PostgreSQL really answers nobody, it must go out.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from clusterwatch.config.loader import load_config
from clusterwatch.daemon import Monitor
from clusterwatch.model import Status
from tests.helpers import free_port
from tests.pg import PostgresServer, fresh_database, running_server
from tests.real.receivers import WebhookReceiver

LEASE = 4.0
BROKEN = "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally"


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own: one test makes it answer nobody."""
    with running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg: PostgresServer) -> Iterator[str]:
    with fresh_database(pg, "away_") as url:
        yield url


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    server = receiver.serve()
    receiver.json = f"json://127.0.0.1:{server.port}/alerts"  # type: ignore[attr-defined]
    yield receiver
    server.stop()


def heard(hook: WebhookReceiver, prefix: str) -> list[str]:
    with hook.lock:
        return [t for t in hook.titles() if t.startswith(prefix)]


async def until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Polls without blocking the monitor's event loop; raises with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class CutOff:
    """A monitor that led, then stood down because its renewals failed: it tells from its local
    outbox. Every verdict of `_store_away` (True: the store is away, the notice goes out) is kept."""

    def __init__(self, tmp_path: Path, pg_url: str, hook: WebhookReceiver) -> None:
        path = tmp_path / "clusterwatch.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "store": {"url": pg_url, "path": str(tmp_path / "local.db")},
                    "ha": {"enabled": True, "lease": f"{LEASE:g}s", "node_name": "monitor-a"},
                    "alerts": {"channels": {"hook": hook.json}, "group_wait": "1s"},  # type: ignore[attr-defined]
                    "checks": [{"name": "api", "kind": "tcp", "port": free_port(), "timeout": "1s"}],
                }
            )
        )
        self.monitor = Monitor(load_config(str(path), env={}, cwd=tmp_path), str(path))
        self.hook = hook
        self.verdicts: list[bool] = []
        self.left: list[dict[str, Any]] = []

    async def start(self) -> None:
        """Leads (the first member of a fresh group), says so, then loses its store as a cut would."""
        monitor = self.monitor
        await monitor.start()
        assert monitor.acting() and monitor.lease is not None and monitor.alerter is not None
        await until(lambda: heard(self.hook, "[INFO] clusterwatch: monitor-a"), "the leader's announcement")
        # The cut, as the monitor sees it: renewals fail, the lease's clock runs out. (The lease loop
        # does not run here: nothing but `_store_away` decides whether the store is back.)
        monitor.lease.last_error = f"OperationalError: {BROKEN}"
        monitor.lease.epoch = None
        await monitor._stand_down("could not renew the lease for 2s")
        assert monitor._offline is not None, "the cut-off leader did not go on from its local outbox"
        alerter = monitor.alerter
        assert alerter is not None and alerter.offline
        judge: Callable[[], Awaitable[bool]] = alerter._store_away  # type: ignore[assignment]

        async def judged() -> bool:
            verdict = await judge()
            self.verdicts.append(verdict)
            return verdict

        alerter._store_away = judged

    async def api_fails(self) -> None:
        """Its probes see api down (the port is closed): an incident, a firing for the local outbox."""
        monitor = self.monitor
        item = monitor.plan.items["api"]
        for _ in range(2):
            monitor.pipeline.handle(item, await monitor.pipeline.probe(item))
        assert monitor.states.entities["api"].hard is Status.CRITICAL

    async def close(self) -> None:
        """What the local outbox still holds (undelivered) is kept in `left`; then the monitor stops."""
        if self.monitor._offline is not None:
            self.left = [dict(r) for r in await asyncio.to_thread(self.monitor._offline.pending)]
        await self.monitor.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_a_first_ping_broken_by_the_cut_leaves_the_stale_notice_in_the_local_outbox(
    tmp_path: Path, pg_url: str, hook: WebhookReceiver
):
    """The first ask after the cut fails as a connect dropped by the link's return does, a moment
    after it was asked; PostgreSQL answers all the while. An ask that fails at once is no judgement:
    asked again on a new connection, the store answers, and the notice is held."""
    cut = CutOff(tmp_path, pg_url, hook)
    pings: list[float] = []

    async def scenario() -> None:
        try:
            await cut.start()
            store = cut.monitor.lease.store  # type: ignore[union-attr]
            real_ping = store.ping

            def ping(*args: Any, **kwargs: Any) -> None:
                pings.append(time.monotonic())
                if len(pings) == 1:
                    time.sleep(0.3)  # in flight when the link comes back
                    raise psycopg.OperationalError(f"connection failed: connection to server failed: {BROKEN}")
                real_ping(*args, **kwargs)

            store.ping = ping  # type: ignore[method-assign]
            await cut.api_fails()
            await until(
                lambda: len(cut.verdicts) >= 2 or heard(hook, "[CRITICAL] api on"),
                "two sends from the local outbox judged (or the notice sent)",
            )
        finally:
            await cut.close()

    run(scenario)
    assert pings, "the store was never asked"
    assert not heard(hook, "[CRITICAL] api on"), f"the stale notice reached people: {hook.titles()}"
    assert cut.verdicts and not any(cut.verdicts), f"judged away while PostgreSQL answered: {cut.verdicts}"
    assert [r for r in cut.left if r["title"].startswith("[CRITICAL] api on")], "the notice left the local outbox"


def test_a_ping_queued_behind_renewals_hanging_in_the_cut_leaves_the_stale_notice_in_the_local_outbox(
    tmp_path: Path, pg_url: str, hook: WebhookReceiver
):
    """The lease's threads are held by a renewal and a member report that hang in the cut (as they
    do until their connect gives up). A ping queued behind them timed out though PostgreSQL answered;
    the store must be asked in a thread of its own, and the notice is held."""
    cut = CutOff(tmp_path, pg_url, hook)
    hanging = threading.Event()

    async def scenario() -> None:
        try:
            await cut.start()
            for _ in range(2):
                cut.monitor._lease_io.submit(hanging.wait, 120)
            await cut.api_fails()
            await until(
                lambda: len(cut.verdicts) >= 2 or heard(hook, "[CRITICAL] api on"),
                "two sends from the local outbox judged (or the notice sent)",
            )
        finally:
            hanging.set()
            await cut.close()

    run(scenario)
    assert not heard(hook, "[CRITICAL] api on"), f"the stale notice reached people: {hook.titles()}"
    assert cut.verdicts and not any(cut.verdicts), f"judged away while PostgreSQL answered: {cut.verdicts}"
    assert [r for r in cut.left if r["title"].startswith("[CRITICAL] api on")], "the notice left the local outbox"


def test_postgresql_that_answers_nobody_lets_the_local_outbox_tell(
    tmp_path: Path, pg: PostgresServer, pg_url: str, hook: WebhookReceiver
):
    """What the local outbox is for: PostgreSQL hangs (its postmaster stopped, so a new connection
    is never answered; the monitor's sessions ended) and the CRITICAL reaches people all the same,
    within a bounded judgement (a new connection left unanswered for a few seconds)."""
    cut = CutOff(tmp_path, pg_url, hook)
    database = pg_url.rsplit("/", 1)[1].split("?")[0]

    async def scenario() -> None:
        admin = pg.connect_admin()
        try:
            await cut.start()
            admin.autocommit = True
            pg.pause()  # new connections hang from here on
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
            await cut.api_fails()
            started = time.monotonic()
            await until(lambda: heard(hook, "[CRITICAL] api on"), "the CRITICAL from the local outbox", 60)
            print(f"\nthe CRITICAL went out {time.monotonic() - started:.1f}s after api failed")
        finally:
            pg.resume()
            admin.close()
            await cut.close()

    run(scenario)
    assert cut.verdicts and cut.verdicts[0] is True, cut.verdicts
    assert len(heard(hook, "[CRITICAL] api on")) == 1, hook.titles()
