"""A group of two real monitors when the network, not a process, fails: the leader cut off from
everything (a network namespace whose one link goes down), and PostgreSQL itself away.

Each scenario runs once (a module fixture) and records what happened; the tests judge it. The cut-off
leader stops acting within lease/2, the other monitor takes over and heals what broke meanwhile,
once, and the cut-off one, back on the network, acts on nothing with its old epoch. With PostgreSQL
away, the last leader keeps alerting from its local outbox, hands what it told to the shared store
when PostgreSQL is back, and nothing is done while nobody can hold the lease.

Two tests are expected failures: they describe what people should be told, and clusterwatch does
not do it yet (see each one's reason).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from clusterwatch.store.db import Database, open_database
from tests.helpers import Proc, ServerThread, free_port, port_open, wait_until
from tests.pg import PostgresServer
from tests.real.daemon import Daemon, kill_pidfile
from tests.real.receivers import Hit, WebhookReceiver

LEASE = 4.0  # seconds: short, so that every stand-down and takeover here is quick
TICK_SLACK = 1.5  # the lease loop looks at its clock every 0.25 s; a busy machine logs a little late
TAKEOVER_SLACK = 5.0  # a takeover may take the lease plus this (a renewal every lease/4, a busy machine)
# Names and addresses of this module's own (test_ssh.py's namespace is on 198.18.7.0/24).
SUBNET = "198.18.42"
HOST_IP, NODE_IP = f"{SUBNET}.1", f"{SUBNET}.11"
NS, BRIDGE, VETH_HOST, VETH_NS = "cwpart-a", "cwpartbr", "cwpartvh", "cwpartvn"

# The restart action: counts its calls in a file, each with the network namespace it ran in (the
# host's, where monitor-b runs, or monitor-a's), and starts the service again (detached, PID in a file).
SERVICE_SCRIPT = """\
import os, subprocess, sys, time
count, host, port, pidfile = sys.argv[1:5]
with open(count, "a") as f:
    f.write(f"{time.time()} {os.readlink('/proc/self/ns/net')}\\n")
proc = subprocess.Popen(
    [sys.executable, "-m", "http.server", port, "--bind", host],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    start_new_session=True, cwd="/",
)
with open(pidfile, "a") as f:
    f.write(f"{proc.pid}\\n")
print(f"started the service, pid {proc.pid}")
"""


# --- the network --------------------------------------------------------------------------------------


def ip(*args: str, check: bool = True) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")


def remove_namespace() -> None:
    """monitor-a's namespace and its link, by name (deleting the namespace takes its end of the pair)."""
    ip("netns", "del", NS, check=False)
    ip("link", "del", VETH_HOST, check=False)


def add_namespace() -> None:
    """monitor-a's machine: a network namespace whose only link (a veth pair) ends on the bridge."""
    ip("netns", "add", NS)
    ip("link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
    ip("link", "set", VETH_HOST, "master", BRIDGE)
    ip("link", "set", VETH_HOST, "up")
    ip("link", "set", VETH_NS, "netns", NS)
    ip("-n", NS, "addr", "add", f"{NODE_IP}/24", "dev", VETH_NS)
    ip("-n", NS, "link", "set", VETH_NS, "up")
    ip("-n", NS, "link", "set", "lo", "up")


@pytest.fixture(scope="module")
def bridge() -> Iterator[str]:
    """A bridge on the host with HOST_IP: the far side of monitor-a's link, where PostgreSQL listens too.
    Whatever a crashed run left under these names goes first."""
    remove_namespace()
    ip("link", "del", BRIDGE, check=False)
    try:
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        yield BRIDGE
    finally:
        remove_namespace()
        ip("link", "del", BRIDGE, check=False)


@pytest.fixture(scope="module")
def pg(bridge: str) -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own (one scenario halts it), on 127.0.0.1 and on the bridge."""
    server = PostgresServer(listen_addresses=f"127.0.0.1,{HOST_IP}")
    try:
        server.start()
        hba = server.data / "pg_hba.conf"  # initdb's -A trust covers loopback only
        hba.write_text(hba.read_text() + f"host all all {SUBNET}.0/24 trust\n")
        with server.connect_admin() as conn:
            conn.execute("SELECT pg_reload_conf()")
        yield server
    finally:
        server.stop()


# --- helpers ----------------------------------------------------------------------------------------


class Stack:
    """What a scenario started: stopped by PID (monitors first: a service stopped under one only makes
    noise), pidfiles' processes killed, servers stopped, whatever happened."""

    def __init__(self) -> None:
        self.things: list[Any] = []

    def add(self, thing: Any) -> Any:
        self.things.append(thing)
        return thing

    def close(self) -> None:
        things, self.things = self.things, []  # once: a stopped receiver's loop would not answer again
        for thing in sorted(reversed(things), key=lambda t: not isinstance(t, Daemon)):
            with contextlib.suppress(Exception):
                if isinstance(thing, Path):
                    kill_pidfile(thing)
                else:
                    thing.stop()


class Receiver(ServerThread):
    """A ServerThread on a given address (the bridge's, for a monitor in the namespace to reach)."""

    def __init__(self, app: web.Application, host: str) -> None:
        super().__init__(app)
        self.host = host

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def webhook(host: str, stack: Stack) -> tuple[WebhookReceiver, str]:
    """A real webhook receiver on host; the json:// channel URL that reaches it."""
    receiver = WebhookReceiver()
    server = stack.add(Receiver(receiver.app(), host).start())
    return receiver, f"json://{host}:{server.port}/alerts"


class Shared:
    """The shared store, read the way a person would with psql."""

    def __init__(self, url: str) -> None:
        self.db: Database = open_database(url, pool=2, name="partition-test")

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(zip(r.keys(), r, strict=True)) for r in self.db.rows(sql, args)]

    def lease(self) -> dict[str, Any] | None:
        rows = self.rows("SELECT * FROM ha_lease")
        return rows[0] if rows and rows[0]["holder"] else None

    def members(self) -> dict[str, dict[str, Any]]:
        return {m["node"]: m for m in self.rows("SELECT * FROM ha_members ORDER BY node")}

    def actions(self) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM actions ORDER BY id")

    def elections(self) -> list[tuple[str, int]]:
        rows = self.rows("SELECT * FROM events WHERE kind = 'leader_elected' ORDER BY ts")
        return [(r["node"], json.loads(r["details"])["epoch"]) for r in rows]

    def entity(self, name: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT * FROM entities WHERE name = ?", name)
        return rows[0] if rows else None

    def undelivered(self) -> list[dict[str, Any]]:
        return self.rows("SELECT id, title FROM outbox WHERE delivered IS NULL AND expired IS NULL")

    def dump(self) -> str:
        """What the store holds about the lease, incidents, actions and alerts: for a failure's message."""
        out = []
        for table in ("ha_lease", "entities", "incidents", "actions", "alert_state", "told_offline", "outbox"):
            with contextlib.suppress(Exception):
                rows = self.rows(f"SELECT * FROM {table}")
                out.append(
                    f"{table}:\n  " + "\n  ".join(str({k: v for k, v in r.items() if k != "body"}) for r in rows)
                )
        return "\n".join(out)

    def stop(self) -> None:
        self.db.close()


def local_outbox(d: Daemon) -> list[dict[str, Any]]:
    """The monitor's local outbox (its store.path, SQLite), read-only; [] before it exists."""
    path = d.tmp / "local.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT id, created, title, delivered, expired FROM outbox")]
    except sqlite3.OperationalError:
        return []  # not migrated yet
    finally:
        conn.close()


def monitor(tmp: Path, name: str, url: str, channel: str, checks: list[dict[str, Any]]) -> Daemon:
    (tmp / name).mkdir()
    return Daemon(
        tmp / name,
        {
            "store": {"url": url, "path": str(tmp / name / "local.db")},  # path: its local outbox
            "ha": {"enabled": True, "lease": f"{LEASE:g}s", "node_name": name},
            # No routes: every channel, critical only (a failover notice is routed as critical).
            "alerts": {"channels": {"hook": channel}, "group_wait": "1s"},
            "checks": checks,
        },
    )


def start(d: Daemon, netns: str | None = None) -> None:
    """`clusterwatch run`, in a network namespace if given; JSON log lines, for their time to the ms."""
    d.runs += 1
    argv = [sys.executable, "-m", "clusterwatch", "run", "-c", str(d.config_path), "--log-format", "json"]
    d.proc = Proc(argv, d.tmp / f"daemon-{d.runs}.log", env=d.env, netns=netns)


def records(d: Daemon) -> list[dict[str, Any]]:
    """The monitor's log lines (JSON), oldest first; a line that is not JSON (a crash) as its text."""
    out = []
    for line in d.log().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        out.append(rec if isinstance(rec, dict) else {"ts": 0.0, "component": "?", "message": line})
    return out


def said(d: Daemon, pattern: str) -> list[dict[str, Any]]:
    return [r for r in records(d) if re.search(pattern, str(r.get("message", "")))]


def takeovers(d: Daemon) -> int:
    return len([r for r in said(d, r"^\S+ leads the group of monitors \(epoch \d+\)$") if r["component"] == "engine"])


def restartable(tmp: Path, name: str, host: str, port: int, interval: str) -> dict[str, Any]:
    """A TCP check whose restart action is SERVICE_SCRIPT (calls counted in tmp/NAME.restarts)."""
    script = tmp / "service.py"
    script.write_text(SERVICE_SCRIPT)
    command = [sys.executable, str(script), str(tmp / f"{name}.restarts"), host, str(port), str(tmp / f"{name}.pid")]
    restart = {
        "command": command,
        "max_attempts": 3,
        "window": "10m",
        "stable_for": "10m",
        "backoff": "3s",
        "timeout": "15s",
        "verify_timeout": "15s",
    }
    return {
        "name": name,
        "kind": "tcp",
        "host": host,
        "port": port,
        "interval": interval,
        "timeout": "1s",
        "restart": restart,
    }


def service(tmp: Path, host: str, port: int) -> Proc:
    proc = Proc([sys.executable, "-m", "http.server", str(port), "--bind", host], tmp / f"svc-{port}.log")
    wait_until(lambda: port_open(port, host), timeout=30, what=f"the service on {host}:{port}")
    return proc


def restarts(path: Path) -> list[str]:
    """The restart action's calls: one line each, 'time netns'."""
    return path.read_text().splitlines() if path.exists() else []


def titles(hits: list[Hit]) -> list[str]:
    """Each notification's title as people read it; a grouped message counts as each of its parts."""
    out: list[str] = []
    for hit in hits:
        body = hit.body if isinstance(hit.body, dict) else {}
        title, message = str(body.get("title", "")), str(body.get("message", ""))
        parts = [line[3:] for line in message.splitlines() if line.startswith("== ")]
        out.extend(parts if (" problems: " in title or " recovered: " in title) and parts else [title])
    return out


def heard(hook: WebhookReceiver) -> list[Hit]:
    with hook.lock:
        return list(hook.hits)


def told(hook: WebhookReceiver, prefix: str) -> list[str]:
    return [t for t in titles(heard(hook)) if t.startswith(prefix)]


def about(hits: list[Hit], entity: str) -> list[Hit]:
    """The notifications that speak of entity (by title: '[SEVERITY] entity on ...')."""
    return [h for h in hits if any(re.match(rf"\[\w+\] {entity} on ", t) for t in titles([h]))]


@dataclass
class Scene:
    """What a scenario saw, for the tests to judge; `why` explains a failure (logs, store, notices)."""

    daemons: dict[str, Daemon]
    seen: dict[str, Any] = field(default_factory=dict)
    logs: str = ""

    def __getitem__(self, key: str) -> Any:
        return self.seen.get(key)

    def why(self) -> str:
        return self.logs


def soft_wait(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """wait_until that says None instead of raising: the scenario goes on, the test judges."""
    try:
        return wait_until(predicate, timeout=timeout, interval=interval)
    except AssertionError:
        return None


def hard_wait(predicate: Callable[[], Any], what: str, timeout: float, scene: Scene, shared: Shared) -> Any:
    """wait_until for what the scenario cannot go on without; on a timeout, the logs and the store."""
    try:
        return wait_until(predicate, timeout=timeout, what=what)
    except AssertionError as exc:
        logged = "\n".join(f"--- {n}\n{d.log()[-4000:]}" for n, d in scene.daemons.items())
        raise AssertionError(f"{exc}\n{shared.dump()}\n{logged}") from None


def finish(scene: Scene, hook: WebhookReceiver, shared: Shared) -> None:
    """The end of a scenario: everything the tests need to look at, and the story for their messages."""
    hits = heard(hook)
    scene.seen.update(
        hits=hits,
        actions=shared.actions(),
        lease=shared.lease(),
        members=shared.members(),
        elections=shared.elections(),
        takeovers={n: takeovers(d) for n, d in scene.daemons.items()},
    )
    told_lines = "\n".join(f"  {h.at:.3f} {t}" for h in hits for t in titles([h]))
    logged = "\n".join(
        f"--- {n}\n"
        + "\n".join(
            f"{r.get('ts', 0):.3f} {r.get('component')}: {str(r.get('message'))[:240]}"
            for r in records(d)
            if r.get("level") != "debug" and r.get("component") not in ("psycopg.pool", "apprise")
        )
        for n, d in scene.daemons.items()
    )
    scene.logs = f"\nnotifications:\n{told_lines}\n{shared.dump()}\n{logged}"


# --- scenario 1: the leader cut off from the network ------------------------------------------------


@pytest.fixture(scope="module")
def partition(pg: PostgresServer, bridge: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """monitor-a (in the namespace: PostgreSQL, the service and the receiver all over its one link) leads,
    monitor-b (on the host) follows; a's link goes down and the service is killed; a's local outbox
    gets its notice; the link comes back. Everything is stopped and removed by PID and name at the end."""
    tmp = tmp_path_factory.mktemp("partition")
    stack = Stack()
    database = f"part_cut_{os.getpid()}"
    try:
        add_namespace()
        url = pg.create_database(database)
        hook, channel = webhook(HOST_IP, stack)
        port = free_port()
        counter, pidfile = tmp / "api.restarts", tmp / "api.pid"
        stack.add(pidfile)
        api = stack.add(service(tmp, HOST_IP, port))
        check = restartable(tmp, "api", HOST_IP, port, "500ms")
        a = monitor(tmp, "monitor-a", url.replace("@127.0.0.1:", f"@{HOST_IP}:"), channel, [check])
        b = monitor(tmp, "monitor-b", url, channel, [check])
        scene = Scene({"monitor-a": a, "monitor-b": b})
        shared = stack.add(Shared(url))
        stack.add(a)
        stack.add(b)

        start(a, netns=NS)
        first = hard_wait(shared.lease, "monitor-a taking the lease", 60, scene, shared)
        assert first["node"] == "monitor-a", first
        start(b)
        hard_wait(
            lambda: len(shared.members()) == 2 and (e := shared.entity("api")) is not None and e["hard"] == "ok",
            "both members seen, api healthy",
            60,
            scene,
            shared,
        )
        hard_wait(lambda: told(hook, "[INFO] clusterwatch: monitor-a"), "a's announcement", 30, scene, shared)

        # The cut. The service dies at once: only monitor-b can see that (monitor-a sees nothing at
        # all any more), and only monitor-b may restart it.
        ip("link", "set", VETH_HOST, "down")
        cut_at = time.time()
        api.signal(signal.SIGKILL)
        scene.seen.update(first=first, cut_at=cut_at, host_netns=os.readlink("/proc/self/ns/net"))
        down = soft_wait(lambda: said(a, "stood down as the leader"), 30)
        second = soft_wait(
            lambda: (held := shared.lease()) is not None and held["node"] == "monitor-b" and held,
            LEASE + 30,
            interval=0.05,
        )
        healed = soft_wait(lambda: len(restarts(counter)) == 1 and port_open(port, HOST_IP), 60)
        # monitor-a, cut off, tells from its local outbox what it sees (api unreachable); the receiver
        # is out of its reach too, so the notice waits there until the link comes back.
        stale = soft_wait(lambda: [r for r in local_outbox(a) if r["title"].startswith("[CRITICAL] api on")], 60)
        # monitor-b's own last word on api (its heal) reaches people before the link comes back: what
        # arrives after that is judged below, and must not be a notice monitor-b was still sending.
        soft_wait(lambda: told(hook, "[RESOLVED] api on"), 60)
        scene.seen.update(
            stood_down=down[0] if down else None,
            second=second,
            healed=bool(healed),
            stale=stale,
            restarts_in_cut=restarts(counter),
            actions_in_cut=shared.actions(),
        )

        ip("link", "set", VETH_HOST, "up")
        back_at = time.time()
        scene.seen["back_at"] = back_at
        soft_wait(lambda: shared.members()["monitor-a"]["last_seen"] > back_at + 1, 60)
        soft_wait(lambda: said(a, "handed the local outbox"), 30)
        time.sleep(5)  # whatever monitor-a would wrongly do next (a restart, a notice), it does now
        soft_wait(
            lambda: (
                not shared.undelivered()
                and not [r for r in local_outbox(a) if r["delivered"] is None and r["expired"] is None]
            ),
            30,
        )
        scene.seen.update(restarts=restarts(counter), member_a=shared.members().get("monitor-a"))
        finish(scene, hook, shared)
        stack.close()
        yield scene
    finally:
        stack.close()
        remove_namespace()
        with contextlib.suppress(Exception):
            pg.ensure_running()
            pg.drop_database(database)


def test_a_cut_off_leader_stands_down_within_half_its_lease_and_the_other_heals_once(partition: Scene):
    s = partition
    first, second, cut_at = s["first"], s["second"], s["cut_at"]
    assert s["stood_down"] is not None, f"monitor-a never said it stood down{s.why()}"
    stood_down = s["stood_down"]["ts"] - cut_at
    assert second is not None, f"monitor-b did not take the lease{s.why()}"
    took_over = second["acquired_at"] - cut_at
    print(f"\ncut: monitor-a stood down after {stood_down:.2f}s, monitor-b took the lease after {took_over:.2f}s")
    assert stood_down <= LEASE / 2 + TICK_SLACK, f"monitor-a acted for {stood_down:.2f}s after the cut{s.why()}"
    assert took_over <= LEASE + TAKEOVER_SLACK, f"monitor-b took over {took_over:.2f}s after the cut{s.why()}"
    assert second["epoch"] == first["epoch"] + 1, (first, second)

    # Healed once, while the cut lasted, by monitor-b (the action ran in the host's network namespace)
    # with its new epoch; nothing more once monitor-a was back on the network.
    assert s["healed"], f"api was not restarted while monitor-a was cut off{s.why()}"
    assert len(s["restarts"]) == 1, f"{s['restarts']}{s.why()}"
    assert s["restarts"][0].split()[1] == s["host_netns"], f"the restart ran in monitor-a's namespace{s.why()}"
    assert [a["id"] for a in s["actions"]] == [a["id"] for a in s["actions_in_cut"]], f"acted after the cut{s.why()}"
    assert [(a["attempt"], a["outcome"], a["monitor"], a["epoch"]) for a in s["actions"]] == [
        (1, "succeeded", "monitor-b", second["epoch"])
    ], s.why()
    assert all(a["started"] > cut_at for a in s["actions"]), s.why()

    # monitor-a follows: the lease and the epoch stay monitor-b's; a stood down once and took over once.
    lease = s["lease"]
    assert lease is not None and (lease["node"], lease["epoch"]) == ("monitor-b", second["epoch"]), s.why()
    member = s["member_a"]
    assert member is not None and not member["leads"] and member["epoch"] is None, f"{member}{s.why()}"
    assert s["elections"] == [("monitor-a", first["epoch"]), ("monitor-b", second["epoch"])], s.why()
    assert s["takeovers"] == {"monitor-a": 1, "monitor-b": 1}, s.why()
    assert "alerts go out from the local outbox" in s["stood_down"]["message"], s["stood_down"]
    if s["stale"]:  # how long the cut-off monitor's alerter took to tell from its local outbox
        after = s["stale"][0]["created"] - s["stood_down"]["ts"]
        print(f"monitor-a's first notice in its local outbox {after:.1f}s after it stood down")


def test_a_cut_off_leaders_notices_do_not_reach_people_after_the_cut_has_healed(partition: Scene):
    s = partition
    if not s["stale"]:
        pytest.fail(f"monitor-a's local outbox never held a notice about api: the scenario proves nothing{s.why()}")
    hits = s["hits"]
    print(f"\nmonitor-a's local outbox during the cut: {s['stale']}")
    print(f"notifications: {[(round(h.at - s['back_at'], 2), titles([h])) for h in hits]}")
    # api was healthy again (healed by monitor-b) before the link came back, and stayed so: whatever
    # anybody says about it after the link is back is stale, and people must not hear it.
    late = [titles([h]) for h in about(hits, "api") if h.at > s["back_at"]]
    assert not late, f"told after the cut had healed: {late}{s.why()}"


# --- scenario 2: PostgreSQL away --------------------------------------------------------------------


@pytest.fixture(scope="module")
def outage(pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """monitor-a leads, monitor-b follows, both on the host; PostgreSQL is halted; the service dies; the
    CRITICAL goes out from a's local outbox; PostgreSQL comes back, the leader restarts the service."""
    tmp = tmp_path_factory.mktemp("outage")
    stack = Stack()
    database = f"part_away_{os.getpid()}"
    try:
        url = pg.create_database(database)
        hook, channel = webhook("127.0.0.1", stack)
        port = free_port()
        counter, pidfile = tmp / "api.restarts", tmp / "api.pid"
        stack.add(pidfile)
        api = stack.add(service(tmp, "127.0.0.1", port))
        check = restartable(tmp, "api", "127.0.0.1", port, "500ms")
        a = monitor(tmp, "monitor-a", url, channel, [check])
        b = monitor(tmp, "monitor-b", url, channel, [check])
        scene = Scene({"monitor-a": a, "monitor-b": b})
        shared = stack.add(Shared(url))
        stack.add(a)
        stack.add(b)
        start(a)
        first = hard_wait(shared.lease, "monitor-a taking the lease", 60, scene, shared)
        assert first["node"] == "monitor-a", first
        start(b)
        hard_wait(
            lambda: len(shared.members()) == 2 and (e := shared.entity("api")) is not None and e["hard"] == "ok",
            "both members seen, api healthy",
            60,
            scene,
            shared,
        )
        hard_wait(lambda: told(hook, "[INFO] clusterwatch: monitor-a"), "a's announcement", 30, scene, shared)

        pg.halt()
        halted_at = time.time()
        try:
            hard_wait(lambda: said(a, "stood down as the leader"), "a standing down", 30, scene, shared)
            api.signal(signal.SIGKILL)
            killed_at = time.time()
            firing = soft_wait(lambda: [h for h in about(heard(hook), "api") if "[CRITICAL]" in titles([h])[0]], 60)
            scene.seen.update(
                halted_at=halted_at,
                killed_at=killed_at,
                firing=firing,
                restarts_in_outage=restarts(counter),
                stood_down=said(a, "stood down as the leader")[0],
            )
        finally:
            pg.start_again()
        back_at = time.time()
        scene.seen["back_at"] = back_at
        handed = soft_wait(
            lambda: said(a, r"^handed the local outbox to the shared store: [1-9]\d* notice"), LEASE * 3 + 10
        )
        healed = soft_wait(lambda: len(restarts(counter)) == 1 and port_open(port), 60)
        resolved = soft_wait(lambda: told(hook, "[RESOLVED] api on"), 30)
        time.sleep(3)  # a second notice or restart, if any, comes now
        soft_wait(lambda: not shared.undelivered(), 30)
        scene.seen.update(
            handed=handed[0] if handed else None,
            healed=bool(healed),
            resolved=resolved,
            restarts=restarts(counter),
            not_again=[r for d in scene.daemons.values() for r in said(d, r"^api: the firing notice was sent by")],
        )
        finish(scene, hook, shared)
        stack.close()
        yield scene
    finally:
        stack.close()
        with contextlib.suppress(Exception):
            pg.ensure_running()
            pg.drop_database(database)


def test_postgresql_away_the_last_leader_alerts_from_its_local_outbox_and_nothing_acts(outage: Scene):
    s = outage
    assert "alerts go out from the local outbox" in s["stood_down"]["message"], s["stood_down"]
    assert s["firing"], f"the CRITICAL for api did not reach people while PostgreSQL was away{s.why()}"
    firing_at = s["firing"][0].at
    print(f"\naway: the CRITICAL reached people {firing_at - s['killed_at']:.2f}s after the kill")
    assert firing_at < s["back_at"], s.why()
    assert not s["restarts_in_outage"], f"restarted while nobody could hold the lease{s.why()}"

    assert s["handed"] is not None, f"monitor-a never handed its local outbox over{s.why()}"
    handed_after = s["handed"]["ts"] - s["back_at"]
    print(f"the local outbox handed to the shared store {handed_after:.2f}s after PostgreSQL was back")
    assert handed_after <= LEASE * 3 + 10, s.why()

    # Back: api restarted once, by the leader of the moment with its epoch; nothing while it was away.
    assert s["healed"] and len(s["restarts"]) == 1, f"{s['restarts']}{s.why()}"
    lease, actions = s["lease"], s["actions"]
    assert lease is not None, s.why()
    assert [(a["attempt"], a["outcome"]) for a in actions] == [(1, "succeeded")], s.why()
    assert all(not s["halted_at"] <= a["started"] <= s["back_at"] for a in actions), s.why()
    assert all((a["monitor"], a["epoch"]) == (lease["node"], lease["epoch"]) for a in actions), s.why()
    # The firing told from the local outbox is not told again; its recovery is told at most once. Exactly
    # once is what people need, but a probe that lands while the new leader resumes (a race: the leader
    # that resumes with connections PostgreSQL's restart broke takes long enough for one, most runs)
    # loses the incident and with it the RESOLVED: test_a_takeover_slow_to_resume_records_and_tells_what_it_heals
    # shows that deterministically.
    critical = [titles([h]) for h in about(s["hits"], "api") if "[CRITICAL]" in titles([h])[0]]
    resolved = [titles([h]) for h in about(s["hits"], "api") if "[RESOLVED]" in titles([h])[0]]
    print(f"CRITICAL {len(critical)}, RESOLVED {len(resolved)}; not sent again: {len(s['not_again'])}")
    assert len(critical) == 1, f"{critical}{s.why()}"
    assert len(resolved) <= 1, f"{resolved}{s.why()}"
    if resolved:  # then it is the last word people heard of api
        assert "[RESOLVED]" in titles(about(s["hits"], "api")[-1:])[0], s.why()


# --- scenario 3: a takeover slow to resume while a service fails -------------------------------------


@pytest.fixture(scope="module")
def slow_resume(pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """monitor-a leads, monitor-b follows. The store is slow for the new leader: a session of the test
    holds a lock on alert_state (which a resuming alerter reads) while monitor-a stops cleanly (handing
    the lease on at once) and the service dies; monitor-b, resuming, probes it meanwhile; then the lock
    goes and monitor-b leads."""
    import psycopg

    tmp = tmp_path_factory.mktemp("slow")
    stack = Stack()
    database = f"part_slow_{os.getpid()}"
    locker: psycopg.Connection[Any] | None = None
    try:
        url = pg.create_database(database)
        hook, channel = webhook("127.0.0.1", stack)
        port = free_port()
        counter, pidfile = tmp / "api.restarts", tmp / "api.pid"
        stack.add(pidfile)
        api = stack.add(service(tmp, "127.0.0.1", port))
        check = restartable(tmp, "api", "127.0.0.1", port, "250ms")
        a = monitor(tmp, "monitor-a", url, channel, [check])
        b = monitor(tmp, "monitor-b", url, channel, [check])
        scene = Scene({"monitor-a": a, "monitor-b": b})
        shared = stack.add(Shared(url))
        stack.add(a)
        stack.add(b)
        start(a)
        first = hard_wait(shared.lease, "monitor-a taking the lease", 60, scene, shared)
        assert first["node"] == "monitor-a", first
        start(b)
        hard_wait(
            lambda: len(shared.members()) == 2 and (e := shared.entity("api")) is not None and e["hard"] == "ok",
            "both members seen, api healthy",
            60,
            scene,
            shared,
        )
        hard_wait(lambda: told(hook, "[INFO] clusterwatch: monitor-a"), "a's announcement", 30, scene, shared)

        locker = lock = pg.connect_admin(database)
        lock.autocommit = False
        lock.execute("LOCK TABLE alert_state IN ACCESS EXCLUSIVE MODE")  # held until rollback()
        a.stop()
        second = hard_wait(
            lambda: (held := shared.lease()) is not None and held["node"] == "monitor-b" and held,
            "monitor-b taking the lease a handed on",
            30,
            scene,
            shared,
        )
        # monitor-b resumes: it restored the states from the store and its alerter waits for alert_state.
        waiting = "SELECT count(*) FROM pg_locks WHERE relation = 'alert_state'::regclass AND NOT granted"
        blocked = soft_wait(lambda: lock.execute(waiting).fetchone()[0] > 0, 8, interval=0.02)
        api.signal(signal.SIGKILL)
        killed_at = time.time()
        # It sees api fail meanwhile; the lock goes well within the 10 s its sessions wait for one.
        seen = soft_wait(lambda: [r for r in said(b, r"^incident_opened api: ") if r["ts"] > killed_at], 6)
        resuming = bool(blocked) and lock.execute(waiting).fetchone()[0] > 0 and not said(b, "took over")
        lock.rollback()
        released_at = time.time()
        scene.seen.update(second=second, seen=seen, resuming=resuming, released_at=released_at)
        healed = soft_wait(lambda: len(restarts(counter)) == 1 and port_open(port), 60)
        soft_wait(lambda: about(heard(hook), "api"), 15)  # what people hear of it, if anything
        time.sleep(3)  # a second notice, if any, comes now
        soft_wait(lambda: not shared.undelivered(), 30)
        scene.seen.update(
            healed=bool(healed),
            restarts=restarts(counter),
            incidents=shared.rows("SELECT * FROM incidents WHERE entity = 'api'"),
        )
        finish(scene, hook, shared)
        stack.close()
        yield scene
    finally:
        if locker is not None:
            with contextlib.suppress(Exception):
                locker.close()
        stack.close()
        with contextlib.suppress(Exception):
            pg.ensure_running()
            pg.drop_database(database)


def test_a_takeover_slow_to_resume_records_and_tells_what_it_heals(slow_resume: Scene):
    s = slow_resume
    if not (s["seen"] and s["resuming"]):
        pytest.fail(f"monitor-b did not see api fail while it resumed: the scenario proves nothing{s.why()}")
    if not (s["healed"] and len(s["restarts"]) == 1):
        pytest.fail(f"api was not restarted once by monitor-b: {s['restarts']}{s.why()}")
    print(f"\nslow resume: incidents {s['incidents']}; notifications {titles(s['hits'])}")
    assert s["incidents"], f"the failure monitor-b healed left no incident{s.why()}"
    assert about(s["hits"], "api"), f"nobody was told of the failure monitor-b healed{s.why()}"
