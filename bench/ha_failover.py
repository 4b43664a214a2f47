"""High availability under fire: three monitors on one PostgreSQL, the leader killed with -9 again and again.

Three `clusterwatch run` processes (monitor-a/b/c) share one PostgreSQL store with `ha.enabled`. A few
loopback services (HTTP and TCP) are killed with -9 at random times: some are restarted by the leader's
`command` restart action, the others come back on their own after a random while. Meanwhile the lease
holder is killed with -9 (`--kills` times, at random moments, half of them right after a service was
killed, so that the leader dies in the middle of a restart or of an alert), and started again once
another monitor has taken over: two or three members at all times.

Measured: failover time (kill -> a new holder in `ha_lease`, timed by the database clock on this host),
double actions, lost and duplicated alerts at a real webhook receiver, and failover notifications
against takeovers; each is defined in the output. Needs root and Debian's PostgreSQL (tests/pg.py).
About 5-6 minutes with the defaults on a 2-core machine.
Run: `.venv/bin/python bench/ha_failover.py [--kills 20 --lease 6s --seed N --keep]`
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
NODES = ("monitor-a", "monitor-b", "monitor-c")


# --- the services: what the restart action runs, and the server it leaves behind ----------------------------


def launch(port: int, state: Path, by: str, delay: float = 0.0) -> None:
    """Serve `port` unless something already does; log who asked (a monitor is this process's parent).

    `delay`: the service takes this long to start (the command returns once it serves), so that a leader
    killed mid-restart is likely."""
    time.sleep(delay)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    entry: dict[str, Any] = {"port": port, "by": by, "ppid": os.getppid()}
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError:
        entry["result"] = "busy"
    else:
        child = subprocess.Popen(
            [sys.executable, str(THIS), "--http-child", str(sock.fileno())],
            pass_fds=(sock.fileno(),),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
        (state / f"svc-{port}.pid").write_text(f"{child.pid}\n")
        with open(state / "service-pids", "a") as f:
            f.write(f"{child.pid}\n")
        entry.update(result="started", pid=child.pid)
    entry["ts"] = time.time()
    with open(state / "launches.log", "a") as f:
        f.write(json.dumps(entry) + "\n")


def http_child(fd: int) -> None:
    """A tiny HTTP server on the listening socket its launcher bound (so the port serves from the start)."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Ok, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=fd)
    server.serve_forever()


# --- what the bench drives ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); nan for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if value := predicate():
                return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


@dataclass
class Outage:
    service: str
    port: int
    killed: float
    why: str  # chaos (random) or leader-kill (killed just before the leader)
    back: float | None = None  # when the port served again (the launcher's log)
    back_by: str | None = None
    leader_kills: list[float] = field(default_factory=list)


@dataclass
class Service:
    name: str
    port: int
    kind: str  # http or tcp
    heals: bool  # restarted by the leader's restart action; otherwise it recovers on its own
    start_delay: float = 0.0  # how long a restart takes to serve again
    last_kill: float = 0.0
    spacing: float = 0.0  # at least this long between two kills (outside the flapping window)
    recover_at: float | None = None  # for the ones that recover on their own


class Monitor:
    """One `clusterwatch run` of the group; killed with -9 and started again by the bench, always by PID."""

    def __init__(self, node: str, config: Path, log: Path) -> None:
        self.node, self.config, self.log = node, config, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        self.started = 0.0

    def start(self) -> None:
        with open(self.log, "ab") as out:
            out.write(f"--- started by the bench at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clusterwatch", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        self.pids.append(self.proc.pid)
        self.started = time.time()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> float:
        assert self.proc is not None
        at = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        return at

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@dataclass
class Tenure:
    epoch: int
    node: str
    holder: str
    acquired: float  # database clock (this host's)
    seen: float  # when the bench first saw it


class LeaseWatch(threading.Thread):
    """Polls `ha_lease` every 50 ms: every epoch, who held it, since when (the database's clock)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="lease-watch")
        self.url = url
        self.tenures: dict[int, Tenure] = {}
        self.current: dict[str, Any] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                row = conn.execute(
                    "SELECT holder, node, epoch, acquired_at, expires_at, "
                    "extract(epoch from clock_timestamp())::float8 FROM ha_lease WHERE name = 'leader'"
                ).fetchone()
            except psycopg.Error:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                self.stop.wait(0.2)
                continue
            if row is not None and row[0] is not None:
                epoch = int(row[2])
                if epoch not in self.tenures:
                    self.tenures[epoch] = Tenure(epoch, row[1], row[0], float(row[3]), time.time())
                self.current = {
                    "holder": row[0],
                    "node": row[1],
                    "epoch": epoch,
                    "acquired": float(row[3]),
                    "expires": float(row[4]),
                    "now": float(row[5]),
                }
            self.stop.wait(0.05)
        if conn is not None:
            conn.close()

    def leader(self) -> dict[str, Any] | None:
        """The holder whose lease has not run out (by the database clock at the last poll)."""
        cur = self.current
        return cur if cur is not None and cur["expires"] > cur["now"] else None


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, url: str, hook_url: str) -> None:
        self.args, self.tmp, self.url = args, tmp, url
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.stop_chaos = threading.Event()
        self.services: list[Service] = []
        for i in range(args.healed):
            delay = args.start_delay * (i % 3) / 2  # 0, half of it, all of it
            self.services.append(Service(f"healed{i}", free_port(), "tcp" if i % 3 == 2 else "http", True, delay))
        for i in range(args.self_recovering):
            self.services.append(Service(f"own{i}", free_port(), "tcp" if i % 2 else "http", False))
        self.outages: list[Outage] = []
        self.leader_kills: list[dict[str, Any]] = []
        self.monitors = [Monitor(node, tmp / f"{node}.yaml", tmp / f"{node}.log") for node in NODES]
        for monitor in self.monitors:
            monitor.config.write_text(json.dumps(self.config(monitor.node, hook_url)))
        self.watch = LeaseWatch(url)

    def config(self, node: str, hook_url: str) -> dict[str, Any]:
        checks = []
        for svc in self.services:
            check: dict[str, Any] = {"name": svc.name, "kind": svc.kind}
            if svc.kind == "http":
                check["url"] = f"http://127.0.0.1:{svc.port}/"
            else:
                check["port"] = svc.port
            if svc.heals:
                check["restart"] = {
                    "command": [
                        *(sys.executable, str(THIS), "--serve", str(svc.port), "--state", str(self.tmp)),
                        *("--delay", f"{svc.start_delay:g}"),
                    ],
                    "max_attempts": 100,
                    "backoff": "1s",
                    "timeout": "10s",
                    "verify_timeout": "10s",
                    "stable_for": "5s",
                }
            checks.append(check)
        return {
            "interval": f"{self.args.interval:g}s",
            "fall": self.args.fall,
            "rise": 1,
            "store": {"url": self.url},
            "ha": {"enabled": True, "lease": f"{self.args.lease:g}s", "node_name": node},
            "web": {"listen": f"127.0.0.1:{free_port()}"},
            "alerts": {"channels": {"hook": hook_url}, "group_wait": f"{self.args.group_wait:g}s"},
            "checks": checks,
        }

    # --- services ------------------------------------------------------------------------------------

    def launch(self, svc: Service) -> None:
        subprocess.run(
            [sys.executable, str(THIS), "--serve", str(svc.port), "--state", str(self.tmp), "--by", "bench"],
            check=True,
        )

    def kill_service(self, svc: Service, why: str) -> Outage | None:
        with self.lock:
            pidfile = self.tmp / f"svc-{svc.port}.pid"
            if not serving(svc.port) or not pidfile.exists():
                return None
            at = time.time()
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
            outage = Outage(svc.name, svc.port, at, why)
            self.outages.append(outage)
            svc.last_kill, svc.spacing = at, self.rng.uniform(*self.args.service_spacing)
            if not svc.heals:
                svc.recover_at = at + self.rng.uniform(*self.args.own_recovery)
            return outage

    def eligible(self, heals: bool | None = None) -> list[Service]:
        now = time.time()
        return [
            s
            for s in self.services
            if (heals is None or s.heals == heals)
            and s.recover_at is None
            and now - s.last_kill >= s.spacing
            and serving(s.port)
        ]

    def chaos(self) -> None:
        """Kill a random service every few seconds; bring the self-recovering ones back when their time comes."""
        next_kill = time.time() + self.rng.uniform(*self.args.service_gap)
        while not self.stop_chaos.is_set():
            now = time.time()
            for svc in self.services:
                if svc.recover_at is not None and now >= svc.recover_at:
                    svc.recover_at = None
                    self.launch(svc)
            if now >= next_kill:
                candidates = self.eligible()
                if candidates:
                    self.kill_service(self.rng.choice(candidates), "chaos")
                next_kill = now + self.rng.uniform(*self.args.service_gap)
            self.stop_chaos.wait(0.1)

    # --- monitors ------------------------------------------------------------------------------------

    def members_joined(self, monitor: Monitor) -> bool:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM ha_members WHERE node = %s AND started >= %s", (monitor.node, monitor.started - 2)
            ).fetchone()
        return bool(row and row[0])

    def monitor_of(self, node: str) -> Monitor:
        return next(m for m in self.monitors if m.node == node)

    def kill_leader(self, index: int) -> None:
        mode = "outage" if index % 2 else "random"
        wait_for(lambda: all(m.alive() for m in self.monitors), 30, "three monitors alive")
        for m in self.monitors:
            wait_for(lambda m=m: self.members_joined(m), 90, f"{m.node} joined the group")
        leader = wait_for(self.watch.leader, 60, "a leader")
        lead_from = self.watch.tenures[leader["epoch"]].seen
        time.sleep(max(0.0, lead_from + self.args.min_lead - time.time()))
        outage = None
        if mode == "outage":
            # A service the leader restarts goes down, and the leader dies while it detects, restarts or tells.
            with contextlib.suppress(TimeoutError):
                victim_service = wait_for(lambda: self.rng.choice(self.eligible(heals=True)), 30, "a service")
                outage = self.kill_service(victim_service, "leader-kill")
        if outage is not None:
            time.sleep(self.rng.uniform(0.3, 3.0))
        else:
            mode = "random"
            time.sleep(self.rng.uniform(*self.args.kill_gap))
        leader = wait_for(self.watch.leader, 60, "a leader")
        victim = self.monitor_of(leader["node"])
        killed = victim.kill9()
        record: dict[str, Any] = {
            "n": index + 1,
            "mode": mode,
            "node": victim.node,
            "epoch": leader["epoch"],
            "killed": killed,
            "lease_left": leader["expires"] - killed,
            "outage": outage.service if outage else None,
        }
        self.leader_kills.append(record)
        try:
            new = wait_for(
                lambda: next((t for e, t in sorted(self.watch.tenures.items()) if e > leader["epoch"]), None),
                self.args.lease * 3 + 30,
                f"a new leader after killing {victim.node}",
                every=0.05,
            )
        except TimeoutError:
            record.update(new_epoch=None, failover=None)
        else:
            record.update(new_epoch=new.epoch, new_node=new.node, failover=new.acquired - killed, after_expiry=None)
            record["after_expiry"] = new.acquired - (killed + record["lease_left"])
        print(
            f"  kill {index + 1:2d}/{self.args.kills} ({mode:6s}): {victim.node} (epoch {leader['epoch']}) "
            + (
                f"-> {record['new_node']} (epoch {record['new_epoch']}) after {record['failover']:.2f} s"
                if record.get("failover") is not None
                else "-> NO NEW LEADER"
            )
            + (f"; {outage.service} killed {killed - outage.killed:.1f} s before" if outage else ""),
            flush=True,
        )
        time.sleep(self.rng.uniform(*self.args.restart_after))
        victim.start()

    # --- the end: everything back, every notice out ---------------------------------------------------

    def settle(self) -> list[str]:
        import psycopg

        notes = []
        self.stop_chaos.set()
        for svc in self.services:
            if not svc.heals and not serving(svc.port):
                svc.recover_at = None
                self.launch(svc)
        for svc in self.services:
            if svc.heals:
                try:
                    wait_for(lambda svc=svc: serving(svc.port), 90, f"{svc.name} restarted by the leader")
                except TimeoutError as exc:
                    notes.append(f"{exc}; the bench restarted it")
                    self.launch(svc)
        quiet_for = self.args.group_wait + 4.0
        quiet_since: float | None = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                open_incidents = conn.execute("SELECT count(*) FROM incidents WHERE closed IS NULL").fetchone()[0]
                pending = conn.execute(
                    "SELECT count(*) FROM outbox WHERE delivered IS NULL AND expired IS NULL"
                ).fetchone()[0]
                not_ok = conn.execute("SELECT count(*) FROM entities WHERE hard IS DISTINCT FROM 'ok'").fetchone()[0]
                running = conn.execute("SELECT count(*) FROM actions WHERE outcome = 'running'").fetchone()[0]
            if open_incidents == pending == not_ok == running == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= quiet_for:
                    return notes
            else:
                quiet_since = None
            time.sleep(0.5)
        notes.append(
            f"not quiet after 180 s: {open_incidents} open incidents, {pending} notifications pending, "
            f"{not_ok} entities not ok, {running} actions running"
        )
        return notes


# --- analysis ----------------------------------------------------------------------------------------------


def part_titles(row: dict[str, Any]) -> list[str]:
    """The titles a notification tells: its own, or each part's in a group."""
    if row["kind"] != "group":
        return [row["title"]]
    return re.findall(r"^== (\[.*)$", row["body"], flags=re.M)


def classify(title: str) -> tuple[str, str | None]:
    """(what the part says, about which entity) from its title."""
    if title.startswith("[INFO] clusterwatch:") and "leads the monitors now" in title:
        return "failover", None
    if "is flapping" in title:
        return "flapping", title.split("] ", 1)[1].split(" is flapping", 1)[0]
    if title.startswith("[WARNING] clusterwatch is falling behind"):
        return "lagging", None
    entity = title.split("] ", 1)[1].removeprefix("(still) ").removeprefix("] ").split(" on ", 1)[0]
    if title.startswith("[RESOLVED]"):
        return ("healed" if " was down " in title else "resolved"), entity
    if "(still)" in title:
        return "repeat", entity
    if "the healer gave up" in title:
        return "escalated", entity
    return "firing", entity


def analyse(bench: Bench, hits: list[Any], notes: list[str], ran_for: float) -> dict[str, Any]:
    import psycopg
    from psycopg.rows import dict_row

    args = bench.args
    with psycopg.connect(bench.url, autocommit=True, row_factory=dict_row) as conn:
        actions = conn.execute("SELECT * FROM actions ORDER BY id").fetchall()
        incidents = conn.execute("SELECT id, entity, opened, closed FROM incidents ORDER BY opened").fetchall()
        outbox = conn.execute("SELECT * FROM outbox ORDER BY id").fetchall()
        elected = conn.execute(
            "SELECT ts, node, details FROM events WHERE kind = 'leader_elected' ORDER BY id"
        ).fetchall()
        flapping = conn.execute("SELECT count(*) AS n FROM events WHERE kind = 'flapping_started'").fetchone()["n"]
        events = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
        alert_state = conn.execute("SELECT * FROM alert_state").fetchall()
    # The store as it was at the end, for a look afterwards (--keep).
    for name, rows in (("actions", actions), ("outbox", outbox), ("events", events), ("alert_state", alert_state)):
        (bench.tmp / f"{name}.json").write_text(json.dumps(rows, default=str))
    end = time.time()
    launches = [json.loads(line) for line in (bench.tmp / "launches.log").read_text().splitlines()]
    node_of_pid = {pid: m.node for m in bench.monitors for pid in m.pids}
    tenures = sorted(bench.watch.tenures.values(), key=lambda t: t.epoch)

    # Outages: from the kill to the first start of the service after it (the launcher's log).
    by_port: dict[int, list[Outage]] = {}
    for outage in bench.outages:
        by_port.setdefault(outage.port, []).append(outage)
    for outages in by_port.values():
        outages.sort(key=lambda o: o.killed)
        for i, outage in enumerate(outages):
            until = outages[i + 1].killed if i + 1 < len(outages) else math.inf
            first = next(
                (
                    entry
                    for entry in launches
                    if entry["port"] == outage.port
                    and entry["result"] == "started"
                    and outage.killed < entry["ts"] < until
                ),
                None,
            )
            if first is not None:
                outage.back = first["ts"]
                outage.back_by = node_of_pid.get(first["ppid"], first["by"])
            outage.leader_kills = [
                k["killed"] for k in bench.leader_kills if outage.killed <= k["killed"] <= (outage.back or end)
            ]

    # Double actions (a): two rows for one target whose lifetimes overlap.
    overlaps = []
    for i, a in enumerate(actions):
        for b in actions[i + 1 :]:
            if (
                a["target"] == b["target"]
                and b["started"] < (a["finished"] or end)
                and a["started"] < (b["finished"] or end)
            ):
                overlaps.append((a, b))
    # Double actions (b): the restart command run by monitors more than once for one outage.
    services = {s.port: s for s in bench.services}
    doubles_by_outage = []
    for outages in by_port.values():
        for i, outage in enumerate(outages):
            if not services[outage.port].heals:
                continue
            until = outages[i + 1].killed if i + 1 < len(outages) else end
            runs = [
                e
                for e in launches
                if e["port"] == outage.port and e["by"] == "monitor" and outage.killed < e["ts"] < until
            ]
            if len(runs) > 1:
                doubles_by_outage.append((outage, runs))
    # Fencing: an action row whose (epoch, monitor) did not hold the lease when it started.
    unfenced = []
    for row in actions:
        tenure = next((t for t in tenures if t.epoch == row["epoch"]), None)
        following = next((t for t in tenures if t.epoch > row["epoch"]), None)
        if (
            tenure is None
            or tenure.node != row["monitor"]
            or row["started"] < tenure.acquired - 0.5
            or (following is not None and row["started"] > following.acquired + 0.5)
        ):
            unfenced.append(row)
    # Attempts a leader kill cut short: marked `interrupted` by the next leader, or finished by it after a look.
    cut_short = [r for r in actions if r["outcome"] == "interrupted" or "monitor stopped" in (r["detail"] or "")]

    # Alerts: every hit matched to its outbox row (by its text), every row split into what it tells.
    def key(title: str, body: str) -> tuple[str, str]:
        return title.strip()[:200], body.strip()[:2000]

    rows_by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in outbox:
        rows_by_key.setdefault(key(row["title"], row["body"]), []).append(row)
    hits_per_row: dict[int, list[float]] = {}
    unmatched = []
    for hit in hits:
        body = hit.body if isinstance(hit.body, dict) else {}
        rows = rows_by_key.get(key(str(body.get("title", "")), str(body.get("message", ""))))
        if not rows:
            unmatched.append(hit)
            continue
        hits_per_row.setdefault(rows[0]["id"], []).append(hit.at)
    entity_of = {i["id"]: i["entity"] for i in incidents}
    told: dict[str, dict[str, list[int]]] = {}  # incident -> kind -> outbox rows that reached the receiver
    failover_rows = []
    for row in outbox:
        if row["id"] not in hits_per_row:
            continue
        ids = list(json.loads(row["incidents"] or "[]"))
        for title in part_titles(row):
            kind, entity = classify(title)
            if kind == "failover":
                failover_rows.append((row, title))
                continue
            incident = next((i for i in ids if entity_of.get(i) == entity), None)
            if incident is None:
                continue
            ids.remove(incident)
            told.setdefault(incident, {}).setdefault(kind, []).append(row["id"])

    def real_down(entity: str, start: float, stop: float) -> float:
        """Seconds the entity's service was really down within [start, stop] (the bench's own kills)."""
        total = 0.0
        for outage in bench.outages:
            if outage.service == entity:
                total += max(0.0, min(stop, outage.back or end) - max(start, outage.killed))
        return total

    must_fire_after = args.group_wait + args.lease  # the brief's threshold
    guaranteed_after = 2 * args.group_wait + 1.25 * args.lease + 2.0  # the design's worst case (see below)
    lost, late_misses, lost_resolved, told_twice = [], [], [], []
    for inc in incidents:
        down = real_down(inc["entity"], inc["opened"], inc["closed"] or end)
        says = told.get(inc["id"], {})
        fired = says.get("firing", []) + says.get("escalated", [])
        if down > must_fire_after and not fired:
            kills = [k for k in bench.leader_kills if inc["opened"] - 1 <= k["killed"] <= (inc["closed"] or end)]
            (lost if down > guaranteed_after else late_misses).append((inc, down, kills))
        if fired and inc["closed"] is not None and not says.get("resolved"):
            lost_resolved.append(inc)
        if len(set(says.get("firing", []))) > 1 or len(set(says.get("resolved", []) + says.get("healed", []))) > 1:
            told_twice.append((inc, says))
    # Outages long enough that a leader had to see them, with no incident at all.
    missed_after = 1.25 * args.lease + args.fall * args.interval + 2.0
    missed = [
        o
        for o in bench.outages
        if (o.back or end) - o.killed > missed_after
        and not any(
            i["entity"] == o.service and i["opened"] <= (o.back or end) and (i["closed"] or end) >= o.killed
            for i in incidents
        )
    ]
    resent = []
    for row_id, ats in hits_per_row.items():
        if len(ats) > 1:
            row = next(r for r in outbox if r["id"] == row_id)
            crash = [k for k in bench.leader_kills if ats[0] - 1 <= k["killed"] <= ats[-1]]
            resent.append((row, ats, crash))
    undelivered = [r for r in outbox if r["delivered"] is None]

    failovers = [k["failover"] for k in bench.leader_kills if k.get("failover") is not None]
    after_expiry = [k["after_expiry"] for k in bench.leader_kills if k.get("after_expiry") is not None]
    no_leader = [k for k in bench.leader_kills if k.get("failover") is None]
    slow = [k for k in bench.leader_kills if k.get("failover") is not None and k["failover"] > args.lease + 5]
    heal_times = [o.back - o.killed for o in bench.outages if services[o.port].heals and o.back is not None]
    heal_with_kill = [o.back - o.killed for o in bench.outages if services[o.port].heals and o.back and o.leader_kills]
    notified_epochs = []
    for _row, title in failover_rows:
        notified_epochs.append(title.split("clusterwatch: ", 1)[1].split(" leads", 1)[0])
    result = {
        "bench": "ha_failover",
        "monitors": len(bench.monitors),
        "lease_s": args.lease,
        "group_wait_s": args.group_wait,
        "interval_s": args.interval,
        "leader_kills": len(bench.leader_kills),
        "failover_s": {
            "p50": round(pct(failovers, 0.5), 3),
            "p99": round(pct(failovers, 0.99), 3),
            "max": round(max(failovers), 3) if failovers else None,
            "bound": args.lease * 1.25,
        },
        "failovers_over_lease_plus_5s": len(slow),
        "kills_without_new_leader": len(no_leader),
        "service_outages": len(bench.outages),
        "heal_s": {"p50": round(pct(heal_times, 0.5), 2), "max": round(max(heal_times), 2) if heal_times else None},
        "actions": len(actions),
        "actions_interrupted": len(cut_short),
        "double_actions": len(overlaps) + sum(len(runs) - 1 for _, runs in doubles_by_outage),
        "actions_outside_their_epoch": len(unfenced),
        "incidents": len(incidents),
        "lost_alerts": len(lost),
        "not_told_within_guaranteed_bound": len(late_misses),
        "lost_resolved": len(lost_resolved),
        "outages_without_incident": len(missed),
        "duplicated_alerts": sum(len(ats) - 1 for _, ats, _ in resent) + len(told_twice),
        "notifications_delivered": len(hits_per_row),
        "webhook_posts": len(hits),
        "unmatched_posts": len(unmatched),
        "undelivered": len(undelivered),
        "takeovers": len(tenures),
        "leader_elected_events": len(elected),
        "failover_notifications": len(failover_rows),
        "flapping_started": flapping,
        "ran_s": round(ran_for),
    }

    # --- the table ---
    print()
    print(
        f"HA failover: {len(bench.monitors)} monitors on one PostgreSQL, lease {args.lease:g} s, "
        f"{len(bench.leader_kills)} leader kills (-9), {len(bench.services)} services "
        f"({args.healed} restarted by the leader, taking "
        f"{'/'.join(f'{s.start_delay:g}' for s in bench.services if s.heals)} s to start; "
        f"{args.self_recovering} recover on their own), "
        f"interval {args.interval:g} s, fall {args.fall}, group_wait {args.group_wait:g} s, seed {args.seed}"
    )
    print(
        f"  Failover is bounded by the lease: the dead leader's lease runs out at most {args.lease:g} s after its "
        f"last renewal, and the others try every lease/4 = {args.lease / 4:g} s, so a new holder within "
        f"{args.lease * 1.25:g} s of the kill (plus a database round trip)."
    )
    rows_out = [
        (
            "failover (kill -> new holder in ha_lease)",
            f"p50 {pct(failovers, 0.5):.2f} s, p99 {pct(failovers, 0.99):.2f} s, max {pct(failovers, 1.0):.2f} s "
            f"(n={len(failovers)}; bound {args.lease * 1.25:g} s)",
        ),
        (
            "  of which after the lease ran out",
            f"p50 {pct(after_expiry, 0.5):.2f} s, max {pct(after_expiry, 1.0):.2f} s "
            f"(bound lease/4 = {args.lease / 4:g} s)",
        ),
        ("failovers over lease + 5 s / kills with no new leader", f"{len(slow)} / {len(no_leader)}"),
        (
            "takeovers / leader_elected events / failover notices",
            f"{len(tenures)} / {len(elected)} / {len(failover_rows)} (the first election included)",
        ),
        (
            "service outages (kill -9) / restarts by the leader",
            f"{len(bench.outages)} / {len(actions)} action rows ({len(cut_short)} cut short by a leader kill)",
        ),
        (
            "healed: kill -> serving again",
            f"p50 {pct(heal_times, 0.5):.2f} s, max {max(heal_times or [math.nan]):.2f} s; with a leader kill in "
            f"the outage: p50 {pct(heal_with_kill, 0.5):.2f} s, max {max(heal_with_kill or [math.nan]):.2f} s "
            f"(n={len(heal_with_kill)})",
        ),
        ("DOUBLE ACTIONS (must be 0)", str(result["double_actions"])),
        ("  overlapping action rows (one target)", str(len(overlaps))),
        ("  outages restarted more than once", str(len(doubles_by_outage))),
        ("actions by a monitor not holding that epoch", str(len(unfenced))),
        ("incidents / notifications delivered / posts", f"{len(incidents)} / {len(hits_per_row)} / {len(hits)}"),
        ("LOST ALERTS (must be 0)", f"{len(lost)} firing, {len(lost_resolved)} resolved"),
        (
            f"  critical > {must_fire_after:g} s, not told (within the {guaranteed_after:g} s worst case)",
            str(len(late_misses)),
        ),
        (f"  outages > {missed_after:g} s with no incident", str(len(missed))),
        ("DUPLICATED ALERTS", f"{result['duplicated_alerts']} ({len(resent)} resent, {len(told_twice)} told twice)"),
        ("undelivered / unmatched posts", f"{len(undelivered)} / {len(unmatched)}"),
        ("flapping started (holds the healer back)", str(flapping)),
    ]
    width = max(len(r[0]) for r in rows_out)
    for name, value in rows_out:
        print(f"  {name:<{width}}  {value}")
    print()
    print("  Definitions:")
    print(
        "   - double action: (a) two rows in `actions` for the same target whose lifetimes [started, finished] "
        "overlap (finished NULL: until the end),\n"
        "     or (b) the restart command run by the monitors more than once for one outage (from the service's "
        "kill -9 to its next kill;\n     a run that found the port already served counts too). The command logs "
        "every run and which monitor (its parent) ran it."
    )
    print(
        f"   - lost alert: an incident whose service was really down (the bench's kill -> serving again) for more "
        f"than group_wait + lease\n     = {must_fire_after:g} s while the incident was open, with no firing at "
        f"the webhook receiver. Counted as LOST beyond the design's worst case\n     2*group_wait + lease*1.25 + 2 s "
        f"= {guaranteed_after:g} s (a leader killed while the firing waited in group_wait; the next one resumes the "
        f"incident\n     and waits group_wait again); between the two it is listed. A closed incident whose firing "
        f"arrived must have its resolved."
    )
    print(
        "   - duplicated alert: one outbox row received more than once (resent: sent, then its sender was killed "
        "before it marked it\n     delivered: at least once by design), or two outbox rows telling the same "
        "incident's firing (or its end): told twice."
    )
    print(
        "   - failover notice: a part titled '[INFO] clusterwatch: <node> leads the monitors now' that reached the "
        "receiver; one per takeover."
    )

    # --- the evidence for anything that went wrong ---
    def ts(value: float | None) -> str:
        if value is None:
            return "-"
        return time.strftime("%H:%M:%S", time.localtime(value)) + f".{int((value % 1) * 1000):03d}"

    for k in slow + no_leader:
        print(f"  SLOW FAILOVER: {k}")
    for a, b in overlaps:
        print("  OVERLAP:")
        for r in (a, b):
            print(
                f"    actions id={r['id']} target={r['target']} started={ts(r['started'])} "
                f"finished={ts(r['finished'])} outcome={r['outcome']} epoch={r['epoch']} monitor={r['monitor']}"
            )
    for outage, runs in doubles_by_outage:
        print(f"  RESTARTED TWICE: {outage.service} killed {ts(outage.killed)} ({outage.why}), back {ts(outage.back)}")
        for run in runs:
            print(f"    command run {ts(run['ts'])} by {node_of_pid.get(run['ppid'], run['ppid'])}: {run['result']}")
        for r in actions:
            if r["check_name"] == outage.service and outage.killed - 1 <= r["started"] <= (outage.back or end) + 15:
                print(
                    f"    actions id={r['id']} started={ts(r['started'])} finished={ts(r['finished'])} "
                    f"outcome={r['outcome']} epoch={r['epoch']} monitor={r['monitor']} detail={r['detail']!r}"
                )
        for k in bench.leader_kills:
            if outage.killed - 10 <= k["killed"] <= (outage.back or end) + 10:
                print(f"    leader kill {ts(k['killed'])}: {k['node']} epoch {k['epoch']} -> {k.get('new_node')}")
    for r in unfenced:
        print(
            f"  OUTSIDE ITS EPOCH: actions id={r['id']} started={ts(r['started'])} epoch={r['epoch']} "
            f"monitor={r['monitor']}"
        )
    for label, found in (("LOST FIRING", lost), ("not told (within the worst case)", late_misses)):
        for inc, down, kills in found:
            print(
                f"  {label}: incident {inc['id']} {inc['entity']} opened {ts(inc['opened'])} "
                f"closed {ts(inc['closed'])}, really down {down:.1f} s; leader kills in it: "
                + (", ".join(f"{ts(k['killed'])} {k['node']}" for k in kills) or "none")
            )
    for inc in lost_resolved:
        print(
            f"  LOST RESOLVED: incident {inc['id']} {inc['entity']} opened {ts(inc['opened'])} closed "
            f"{ts(inc['closed'])}; delivered: {told.get(inc['id'])}"
        )
        for e in events:
            if e["incident"] == inc["id"] or (
                e["kind"] == "leader_elected" and inc["opened"] - 10 <= e["ts"] <= inc["closed"] + 10
            ):
                print(f"    event id={e['id']} {ts(e['ts'])} {e['kind']} {e['entity']} {e['message'][:90]!r}")
        for row in outbox:
            if inc["id"] in (row["incidents"] or ""):
                print(
                    f"    outbox id={row['id']} created {ts(row['created'])} {row['kind']} {row['title'][:60]!r} "
                    f"delivered {ts(row['delivered'])}"
                )
        for k in bench.leader_kills:
            if inc["opened"] - 10 <= k["killed"] <= inc["closed"] + 10:
                print(f"    leader kill {ts(k['killed'])}: {k['node']} epoch {k['epoch']} -> {k.get('new_node')}")
    for outage in missed:
        print(f"  NO INCIDENT: {outage.service} down {ts(outage.killed)} -> {ts(outage.back)}")
    for row, ats, crash in resent:
        why = (
            f"sent, then {', '.join(k['node'] for k in crash)} was killed before marking it delivered"
            if crash
            else "no leader kill near it: unexplained"
        )
        print(
            f"  RESENT x{len(ats)}: outbox id={row['id']} {row['title'][:70]!r} "
            f"at {', '.join(ts(a) for a in ats)} ({why})"
        )
    for inc, says in told_twice:
        print(f"  TOLD TWICE: incident {inc['id']} {inc['entity']}: {says}")
    for row in undelivered:
        print(f"  UNDELIVERED: outbox id={row['id']} {row['title'][:70]!r} last_error={row['last_error']!r}")
    for hit in unmatched:
        print(f"  UNMATCHED POST: {str(hit.body)[:120]}")
    for note in notes:
        print(f"  NOTE: {note}")
    if len(failover_rows) != len(tenures):
        print(f"  failover notices by node: {notified_epochs}; takeovers: {[(t.epoch, t.node) for t in tenures]}")
    print(json.dumps(result))
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--http-child":
        http_child(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        parser = argparse.ArgumentParser()
        parser.add_argument("--serve", type=int, required=True)
        parser.add_argument("--state", type=Path, required=True)
        parser.add_argument("--by", default="monitor")
        parser.add_argument("--delay", type=float, default=0.0)
        a = parser.parse_args()
        launch(a.serve, a.state, a.by, a.delay)
        return

    def duration(text: str) -> float:
        return float(text.removesuffix("s"))

    def span(text: str) -> tuple[float, float]:
        low, high = (float(x) for x in text.split(","))
        return low, high

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kills", type=int, default=20, help="leader kills (-9)")
    parser.add_argument("--lease", type=duration, default=6.0, help="ha.lease in seconds (default 6: a short run)")
    parser.add_argument("--group-wait", type=duration, default=2.0)
    parser.add_argument("--interval", type=duration, default=1.0)
    parser.add_argument("--fall", type=int, default=2)
    parser.add_argument("--healed", type=int, default=3, help="services restarted by the leader")
    parser.add_argument("--self-recovering", type=int, default=2, help="services that come back on their own")
    parser.add_argument(
        "--start-delay", type=duration, default=2.0, help="the slowest restarted service's start (others: 0, half)"
    )
    parser.add_argument("--service-gap", type=span, default=(2.0, 6.0), help="seconds between service kills")
    parser.add_argument(
        "--service-spacing", type=span, default=(22.0, 35.0), help="seconds between two kills of one service"
    )
    parser.add_argument("--own-recovery", type=span, default=(1.0, 20.0), help="a self-recovering service's outage")
    parser.add_argument("--kill-gap", type=span, default=(1.0, 9.0), help="random wait before a leader kill")
    parser.add_argument("--min-lead", type=float, default=3.0, help="a leader leads at least this long before a kill")
    parser.add_argument("--restart-after", type=span, default=(0.5, 2.5), help="a killed monitor starts again after")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)

    sys.path.insert(0, str(ROOT))
    from tests.pg import PostgresServer, unavailable_reason

    if (reason := unavailable_reason()) is not None:
        raise SystemExit(f"ha_failover needs a real PostgreSQL: {reason}")
    from tests.real.receivers import WebhookReceiver

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="cw-ha-bench-"))
    server = PostgresServer()
    receiver = WebhookReceiver()
    hook = None
    bench: Bench | None = None
    try:
        server.start()
        url = server.create_database("ha_bench")
        hook = receiver.serve()
        bench = Bench(args, tmp, url, f"json://127.0.0.1:{hook.port}/alerts")
        print(
            f"ha_failover: PostgreSQL on 127.0.0.1:{server.port}, {len(NODES)} monitors, lease {args.lease:g} s, "
            f"{args.kills} leader kills, seed {args.seed}; work dir {tmp}",
            flush=True,
        )
        for svc in bench.services:
            bench.launch(svc)
        bench.watch.start()
        for monitor in bench.monitors:
            monitor.start()
        wait_for(bench.watch.leader, 120, "the first leader")

        def all_ok() -> bool:
            import psycopg

            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                rows = conn.execute("SELECT hard FROM entities").fetchall()
            return len(rows) == len(bench.services) and all(r[0] == "ok" for r in rows)

        wait_for(all_ok, 120, "every service ok in the store")
        print(f"  group up: {bench.watch.leader()['node']} leads; chaos starts", flush=True)
        chaos = threading.Thread(target=bench.chaos, daemon=True, name="chaos")
        chaos.start()
        for i in range(args.kills):
            bench.kill_leader(i)
        notes = bench.settle()
        chaos.join(10)
        for monitor in bench.monitors:
            monitor.stop()
        bench.watch.stop.set()
        bench.watch.join(5)
        (tmp / "alerts.json").write_text(
            json.dumps([{"at": h.at, "path": h.path, "body": h.body} for h in receiver.hits])
        )
        (tmp / "leader_kills.json").write_text(json.dumps(bench.leader_kills))
        analyse(bench, list(receiver.hits), notes, time.monotonic() - started)
    except BaseException:
        for monitor in bench.monitors if bench else []:
            if monitor.log.exists():
                print(f"--- {monitor.node} (last lines)\n" + "\n".join(monitor.log.read_text().splitlines()[-15:]))
        raise
    finally:
        if bench is not None:
            bench.stop_chaos.set()
            bench.watch.stop.set()
            for monitor in bench.monitors:
                with contextlib.suppress(Exception):
                    monitor.stop()
        pids = tmp / "service-pids"
        for line in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(line), signal.SIGKILL)
        if hook is not None:
            hook.stop()
        server.stop()
        if args.keep:
            print(f"  work dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"  ran for {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
