"""Node agents, both ends: a monitor taking pushes from 500 simulated agents, and one real agent's footprint.

Part A (monitor ingest): one real `clusterwatch run` (SQLite store, web on 127.0.0.1) with 500 nodes
`agent: true`, each with 19 HTTP checks `node: <that node>` (never probed by the monitor: their agents
run them). 500 agents are enrolled in the store before it starts and simulated from worker processes of
this bench: each pushes 20 observations (its node's round and one round per check) every 10 s, phases
spread over the interval, and holds a long poll open as the real agent does. `--spread` sends each
check's round at its own moment instead, batched per second like the real agent (up to ten pushes per
agent per interval). Measured over the window: accepted observations/s, push latency (client side),
the monitor's scheduling lag (its `stats:` lines), its CPU and RSS. Goal (issue 10): lag p99 < 200 ms.

Part B (agent footprint): the real `clusterwatch agent run` pushing to a real monitor (one node, an
HTTP check on a local Dask worker's /health, a TCP and an HTTP check on its scheduler, the node's own
report; interval 10 s), beside Debian's `prometheus-node-exporter` scraped by this bench every 10 s.
RSS (max over the window, at the end, and the process's peak since it started) and CPU in % of one
core, side by side. Goals (issue 10): agent RSS < 40 MB, CPU < 0.5 % of a core.

Every process started here is stopped by its PID, on errors and Ctrl-C too; every address is 127.0.0.1.
Run: `.venv/bin/python bench/agent_footprint.py [--quick] [--part a|b|both] [--spread]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
BIN = Path(sys.executable).parent
INTERVAL = 10.0
NODE_EXPORTER = "prometheus-node-exporter"


# --- small tools ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); nan for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def get_json(url: str, timeout: float = 5.0, token: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.load(resp)


def healthz(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The monitor's /healthz, degraded (503) or not."""
    try:
        return dict(get_json(url + "/healthz", timeout))
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        return dict(json.load(exc))


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if value := predicate():
                return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


class Procs:
    """Every process this bench starts, stopped by its PID (TERM, then KILL) in reverse order."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
            )
        self.started.append((name, proc))
        return proc

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            with contextlib.suppress(Exception):
                self.stop(proc)


class Sampler(threading.Thread):
    """RSS of some processes every second (max and last), and their CPU seconds at marks."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True, name="sampler")
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.rss_max: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.rss_last: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.samples = 0
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def cpu(self) -> dict[str, float]:
        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                out[name] = times.user + times.system
        return out

    def peak(self) -> dict[str, float]:
        """The kernel's peak RSS since each process started (VmHWM), MB: start-up included."""
        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out[name] = int(line.split()[1]) / 1024
        return out

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            with self.lock:
                for name, proc in self.procs.items():
                    with contextlib.suppress(psutil.Error):
                        rss = proc.memory_info().rss / 2**20
                        self.rss_last[name] = rss
                        self.rss_max[name] = max(self.rss_max[name], rss)
                self.samples += 1


# --- the simulated agents (a worker process of this bench) ----------------------------------------------------


def _observation(node: str, check: str, rng: random.Random) -> dict[str, Any]:
    if check == node:  # the node's own report, the way an agent's node round reads
        cpu, mem = round(rng.uniform(2, 30), 1), round(rng.uniform(20, 60), 1)
        return {
            "name": node,
            "kind": "node",
            "target": node,
            "status": "ok",
            "message": f"cpu {cpu}%, memory {mem}%, load 0.4, disk / 41%",
            "metrics": {"cpu_percent": cpu, "memory_percent": mem, "load1": 0.4, "disk_percent": 41.0},
            "group": "nodes",
        }
    latency = round(rng.uniform(0.5, 5), 2)
    return {
        "name": check,
        "kind": "http",
        "target": "http://127.0.0.1:8788/health",
        "status": "ok",
        "message": f"HTTP 200 in {latency} ms",
        "latency_ms": latency,
        "metrics": {"latency_ms": latency},
    }


class SimResult:
    def __init__(self) -> None:
        self.latencies: list[float] = []  # seconds, pushes sent inside the window
        self.observations = 0  # accepted (200), pushes sent inside the window
        self.pushes = 0
        self.statuses: dict[str, int] = {}  # HTTP status, or the client's exception
        self.wrong_ack = 0
        self.late = 0  # a push that started over 1 s after its moment (the previous one took that long)
        self.unfinished = 0
        self.merged = 0  # moments whose rounds went with an earlier moment's push (it was still out)
        self.polls = 0
        self.last_seq: dict[str, int] = {}


async def _agent(spec: dict[str, Any], agent: dict[str, Any], out: SimResult, offset: float) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    name, checks = agent["name"], [agent["name"], *agent["checks"]]
    rng = random.Random(name)
    interval = spec["interval"]
    if spec["spread"]:  # each check at its own moment; healthy rounds go in batches, as the agent sends them
        batch = spec["batch"]
        by_moment: dict[float, list[str]] = {}
        for check in checks:
            moment = agent["phase"] + math.floor(rng.uniform(0, interval) / batch) * batch  # each agent its own grid
            by_moment.setdefault(moment, []).append(check)
        plan = sorted(by_moment.items())
    else:
        plan = [(agent["phase"], checks)]
    start, end = spec["start"] + offset, spec["end"] + offset
    window = (spec["measure_from"] + offset, spec["measure_to"] + offset)
    headers = {"Authorization": f"Bearer {agent['token']}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60)
    seq = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=2), headers=headers, timeout=timeout
    ) as session:

        async def poll() -> None:
            body = json.dumps({"node": name, "results": [], "wait": 20.0})
            await asyncio.sleep(max(0.0, start + agent["phase"] - loop.time()))  # agents do not start in step
            while loop.time() < end:
                try:
                    async with session.post(spec["url"] + "/api/v1/agent/poll", data=body) as resp:
                        await resp.read()
                        out.polls += 1
                        if resp.status != 200:
                            await asyncio.sleep(5)
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(5)

        poller = asyncio.create_task(poll()) if spec["poll"] else None
        try:
            moments = sorted(
                (
                    (start + cycle * interval + moment, due)
                    for cycle in range(int((end - start) / interval) + 1)
                    for moment, due in plan
                    if start + cycle * interval + moment < end
                ),
                key=lambda pair: pair[0],
            )
            i = 0
            while i < len(moments):
                at, due = moments[i]
                await asyncio.sleep(max(0.0, at - loop.time()))
                i += 1
                due = list(due)
                while i < len(moments) and moments[i][0] <= loop.time():  # queued while the last push was out
                    due += moments[i][1]
                    i += 1
                    out.merged += 1
                sent = loop.time()
                if sent - at > 1.0:
                    out.late += 1
                now = time.time()
                rounds = []
                for check in due:
                    seq += 1
                    rounds.append(
                        {"seq": seq, "at": now, "check": check, "observations": [_observation(name, check, rng)]}
                    )
                body = json.dumps({"node": name, "sent_at": now, "rounds": rounds, "config_version": None})
                inside = window[0] <= sent < window[1]
                try:
                    async with session.post(spec["url"] + "/api/v1/agent/push", data=body) as resp:
                        raw = await resp.read()
                        took = loop.time() - sent
                        status = str(resp.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, took = type(exc).__name__, loop.time() - sent
                out.statuses[status] = out.statuses.get(status, 0) + 1
                if status == "200":
                    if json.loads(raw).get("accepted") != seq:
                        out.wrong_ack += 1
                    out.last_seq[name] = seq
                if inside:
                    out.pushes += 1
                    out.latencies.append(took)
                    if status == "200":
                        out.observations += len(rounds)
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller


async def _simulate(spec: dict[str, Any]) -> SimResult:
    out = SimResult()
    loop = asyncio.get_running_loop()
    offset = loop.time() - time.time()  # the spec's wall times on this loop's clock
    tasks = [asyncio.create_task(_agent(spec, agent, out, offset)) for agent in spec["agents"]]
    _, late = await asyncio.wait(tasks, timeout=max(1.0, spec["end"] + 30 - time.time()))
    out.unfinished = len(late)  # agents still waiting on a push 30 s after the end: given up
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    return out


def sim_worker(spec_path: str) -> None:
    """Entry of a worker process: run its share of agents, write what it saw next to its spec."""
    spec = json.loads(Path(spec_path).read_text())
    out = asyncio.run(_simulate(spec))
    Path(spec_path).with_suffix(".out.json").write_text(json.dumps(vars(out)))


# --- Part A: one monitor, 500 simulated agents ------------------------------------------------------------------


def part_a(args: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from clusterwatch.agent import protocol
    from clusterwatch.store.agents import AgentRegistry

    tmp = tmp / "a"
    tmp.mkdir()
    procs.tmp = tmp
    db, web_port, closed = tmp / "state.db", free_port(), free_port()
    names = [f"n{i:03d}" for i in range(args.agents)]
    checks_per_node = args.observations - 1
    config = {
        "interval": f"{INTERVAL:g}s",
        "store": {"path": str(db)},
        "web": {"listen": f"127.0.0.1:{web_port}"},
        "nodes": [{"name": n, "agent": True, "agent_timeout": "600s"} for n in names],
        "checks": [
            {"name": f"{n}-c{j:02d}", "kind": "http", "url": f"http://127.0.0.1:{closed}/health", "node": n}
            for n in names
            for j in range(checks_per_node)
        ],
    }
    (tmp / "c.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    registry = AgentRegistry(str(db)).open()  # enrolled in the store before the monitor starts (as `agent enroll`)
    try:
        tokens = {n: registry.enroll(n) for n in names}
    finally:
        registry.close()
    url = f"http://127.0.0.1:{web_port}"
    print(f"part A: {args.agents} agents x {args.observations} observations every {INTERVAL:g} s", flush=True)
    started = time.monotonic()
    monitor = procs.start(
        "monitor",
        [sys.executable, "-m", "clusterwatch", "run", "--log-format", "json", "-c", str(tmp / "c.yaml")],
        env={"CLUSTERWATCH_STATS_EVERY": "10"},
    )
    try:
        wait_for(lambda: healthz(url, 2), 120, "the monitor's /healthz")
    except TimeoutError:
        print(procs.log("monitor"))
        raise
    ready = time.monotonic() - started

    rng = random.Random(args.seed)
    agents = [
        {
            "name": n,
            "token": tokens[n],
            "checks": [f"{n}-c{j:02d}" for j in range(checks_per_node)],
            "phase": i * INTERVAL / len(names) + rng.uniform(0, 0.01),
        }
        for i, n in enumerate(names)
    ]
    begin = time.time() + 2.0
    measure_from = begin + args.warmup
    measure_to = measure_from + args.seconds_a
    spec = {
        "url": url,
        "interval": INTERVAL,
        "spread": args.spread,
        "batch": args.batch,
        "poll": not args.no_poll,
        "start": begin,
        "end": measure_to + 0.5,
        "measure_from": measure_from,
        "measure_to": measure_to,
    }
    sample = {"node": names[0], "sent_at": time.time(), "config_version": None, "rounds": []}
    sample["rounds"] = [
        {"seq": k + 1, "at": time.time(), "check": c, "observations": [_observation(names[0], c, rng)]}
        for k, c in enumerate([names[0], *agents[0]["checks"]])
    ]
    protocol.Push.model_validate_json(json.dumps(sample))  # what the simulation sends is a valid Push
    workers = []
    for w in range(args.workers):
        path = tmp / f"sim-{w}.json"
        path.write_text(json.dumps({**spec, "agents": agents[w :: args.workers]}))
        workers.append((path, procs.start(f"sim-{w}", [sys.executable, str(THIS), "--sim-worker", str(path)])))
    sims = {f"sim-{w}": proc.pid for w, (_, proc) in enumerate(workers)}
    sampler = Sampler({"monitor": monitor.pid, **sims})
    sampler.start()
    health: list[tuple[float, dict[str, Any]]] = []  # (monotonic time, /healthz), every 5 s in the window
    done = threading.Event()

    def watch_health() -> None:
        while not done.wait(5.0):
            with contextlib.suppress(Exception):
                health.append((time.monotonic(), healthz(url, 10)))

    watcher = threading.Thread(target=watch_health, daemon=True, name="healthz")
    try:
        time.sleep(max(0.0, measure_from - time.time()))
        cpu0, t0 = sampler.cpu(), time.monotonic()
        with sampler.lock:
            sampler.rss_max["monitor"] = 0.0  # the window's own maximum
        watcher.start()
        time.sleep(max(0.0, measure_to - time.time()))
        cpu1, t1 = sampler.cpu(), time.monotonic()
        done.set()
        rss_max, rss_end, peak = sampler.rss_max["monitor"], sampler.rss_last["monitor"], sampler.peak()["monitor"]
        for path, proc in workers:
            proc.wait(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"simulation worker failed: {procs.log(path.stem)}")
        time.sleep(1.0)  # the last pushes' rows committed
    finally:
        done.set()
        sampler.stopped.set()
        procs.stop(monitor, timeout=60)
    health = [(at, h) for at, h in health if at <= t1 + 1]
    if len(health) >= 2:
        written_rate = (health[-1][1]["store"]["written"] - health[0][1]["store"]["written"]) / (
            health[-1][0] - health[0][0]
        )
    else:
        written_rate = float("nan")
    sim_cpu = sum(cpu1.get(name, 0.0) - cpu0.get(name, 0.0) for name in sims)
    results = [json.loads(path.with_suffix(".out.json").read_text()) for path, _ in workers]
    latencies = [x for r in results for x in r["latencies"]]
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    last_seq = {k: v for r in results for k, v in r["last_seq"].items()}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        acked = dict(conn.execute("SELECT name, acked FROM agents").fetchall())
    finally:
        conn.close()
    behind = sum(1 for n, s in last_seq.items() if acked.get(n, 0) != s)
    log_lines = []
    for line in (tmp / "monitor.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                log_lines.append(json.loads(line))
    stats = [s for s in log_lines if str(s.get("message", "")).startswith("stats:")]
    measured = [s for s in stats if measure_from + INTERVAL - 1 <= s["ts"] <= measure_to + 1] or stats[-1:]
    window = measure_to - measure_from  # the simulators' window (pushes sent inside it)
    errors_logged = sum(1 for s in log_lines if s.get("level") in ("ERROR", "CRITICAL", "error", "critical"))
    return {
        "agents": args.agents,
        "observations_per_agent": args.observations,
        "mode": f"spread (per-check moments, healthy rounds batched per {args.batch:g} s)"
        if args.spread
        else "one push per agent per interval",
        "long_poll": not args.no_poll,
        "monitor_ready_s": round(ready, 1),
        "window_s": round(window, 1),
        "expected_obs_per_s": round(args.agents * args.observations / INTERVAL, 1),
        "accepted_obs_per_s": round(sum(r["observations"] for r in results) / window, 1),
        "pushes_per_s": round(sum(r["pushes"] for r in results) / window, 1),
        "push_p50_ms": round(1000 * pct(latencies, 0.5), 1),
        "push_p99_ms": round(1000 * pct(latencies, 0.99), 1),
        "push_max_ms": round(1000 * max(latencies, default=float("nan")), 1),
        "push_statuses": statuses,
        "merged_moments": sum(r["merged"] for r in results),
        "agents_unfinished": sum(r["unfinished"] for r in results),
        "late_pushes": sum(r["late"] for r in results),
        "wrong_acks": sum(r["wrong_ack"] for r in results),
        "agents_acked_behind": behind,
        "polls": sum(r["polls"] for r in results),
        "lag_p50_ms": max((s["lag_p50_ms"] for s in measured), default=float("nan")),
        "lag_p99_ms": max((s["lag_p99_ms"] for s in measured), default=float("nan")),
        "lag_p99_ms_windows": [s["lag_p99_ms"] for s in measured],
        "healthz_lag_p99_ms_max": round(1000 * max((h["lag_p99_s"] for _, h in health), default=float("nan")), 1),
        "healthz_answers": len(health),
        "healthz_degraded": sum(1 for _, h in health if h.get("status") != "ok"),
        "store_queue_max": max((h["store"]["queue_depth"] or 0 for _, h in health), default=0),
        "store_writes_per_s": round(written_rate, 1),
        "monitor_cpu_pct": round(100 * (cpu1["monitor"] - cpu0["monitor"]) / (t1 - t0), 1),
        "simulators_cpu_pct": round(100 * sim_cpu / (t1 - t0), 1),
        "monitor_rss_max_mb": round(rss_max, 1),
        "monitor_rss_end_mb": round(rss_end, 1),
        "monitor_rss_peak_since_start_mb": round(peak, 1),
        "monitor_error_lines": errors_logged,
        "goal_lag_p99_under_200ms": bool(measured) and max(s["lag_p99_ms"] for s in measured) < 200,
    }


# --- Part B: the real agent beside prometheus-node-exporter -------------------------------------------------------


def node_exporter() -> str:
    """Debian's prometheus-node-exporter, installed with apt-get when missing (as root)."""
    found = shutil.which(NODE_EXPORTER)
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit(f"{NODE_EXPORTER} is not installed (as root: apt-get install -y {NODE_EXPORTER})")
    print(f"installing {NODE_EXPORTER} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    if subprocess.run(["apt-get", "install", "-y", NODE_EXPORTER], check=False, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], check=False, **quiet)
        subprocess.run(["apt-get", "install", "-y", NODE_EXPORTER], check=True, **quiet)
    found = shutil.which(NODE_EXPORTER)
    if not found:
        raise SystemExit(f"{NODE_EXPORTER}: installed, but not on PATH")
    return found


def import_rss(module: str | None) -> float:
    """RSS (MB) of a bare interpreter that imported `module` and nothing else: where the agent's floor is."""
    code = (f"import {module}; " if module else "") + (
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')) / 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return round(float(done.stdout.strip()), 1)


def has_dask() -> bool:
    return (BIN / "dask").exists()


def part_b(args: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, Any]:
    exporter_bin = node_exporter()
    tmp = tmp / "b"
    tmp.mkdir()
    procs.tmp = tmp
    db, web_port = tmp / "state.db", free_port()
    node = "bench-node"
    checks: list[dict[str, Any]] = []
    target = "tiny HTTP server"
    if has_dask():
        sched_port, sched_dash, worker_dash = free_port(), free_port(), free_port()
        env = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        dash = lambda port: ["--dashboard-address", f"127.0.0.1:{port}"]  # noqa: E731
        worker = ["--host", "127.0.0.1", *dash(worker_dash), "--no-nanny"]
        procs.start(
            "dask-scheduler",
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(sched_port),
                *dash(sched_dash),
                "--no-show",
            ],
            env=env,
        )
        wait_for(lambda: get_json(f"http://127.0.0.1:{sched_dash}/json/identity.json", 2), 60, "dask scheduler")
        procs.start(
            "dask-worker",
            [str(BIN / "dask"), "worker", f"tcp://127.0.0.1:{sched_port}", "--nthreads", "1", "--name", node, *worker],
            env=env,
        )
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{worker_dash}/health", timeout=2).status == 200,
            60,
            "dask worker /health",
        )
        target = "a local Dask worker"
        checks = [
            {"name": "worker", "kind": "http", "url": f"http://127.0.0.1:{worker_dash}/health", "node": node},
            {"name": "scheduler-port", "kind": "tcp", "host": "127.0.0.1", "port": sched_port, "node": node},
            {"name": "scheduler-health", "kind": "http", "url": f"http://127.0.0.1:{sched_dash}/health", "node": node},
        ]
    else:
        port = free_port()
        procs.start("http-server", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)])
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200, 30, "http")
        checks = [
            {"name": "web", "kind": "http", "url": f"http://127.0.0.1:{port}/", "node": node},
            {"name": "web-port", "kind": "tcp", "host": "127.0.0.1", "port": port, "node": node},
        ]
    config = {
        "interval": f"{INTERVAL:g}s",
        "store": {"path": str(db)},
        "web": {"listen": f"127.0.0.1:{web_port}"},
        "nodes": [{"name": node, "agent": True}],
        "checks": checks,
    }
    (tmp / "c.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    token_file = tmp / "agent.token"
    cli = [sys.executable, "-m", "clusterwatch"]
    state = ["--state-dir", str(tmp / "agent-state")]
    subprocess.run(
        [*cli, "agent", "enroll", node, "-c", str(tmp / "c.yaml"), "--token-file", str(token_file)],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{web_port}"
    print(f"part B: the agent ({len(checks)} checks on {target} + its node) beside {NODE_EXPORTER}", flush=True)
    procs.start("monitor", [*cli, "run", "-c", str(tmp / "c.yaml")])
    wait_for(lambda: healthz(url, 2), 60, "the monitor's /healthz")
    agent = procs.start(
        "agent",
        [*cli, "agent", "run", "--server", url, "--name", node, "--token-file", str(token_file), *state],
    )
    exporter_port = free_port()
    exporter = procs.start("node-exporter", [exporter_bin, f"--web.listen-address=127.0.0.1:{exporter_port}"])
    metrics_url = f"http://127.0.0.1:{exporter_port}/metrics"
    wait_for(lambda: urllib.request.urlopen(metrics_url, timeout=2).status == 200, 30, NODE_EXPORTER)

    def acked() -> int:
        if not db.exists():
            return 0
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT acked FROM agents WHERE name = ?", (node,)).fetchone()
        finally:
            conn.close()
        return int(row[0]) if row and row[0] else 0

    def all_rounds_in() -> bool:
        """Every check and the node have a live observation at the monitor: the agent runs its whole plan."""
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            seen = {r[0] for r in conn.execute("SELECT DISTINCT check_name FROM observations").fetchall()}
        except sqlite3.Error:
            seen = set()
        finally:
            conn.close()
        return {node, *(c["name"] for c in checks)} <= seen

    try:
        wait_for(lambda: acked() > 0, 60, "the agent's first accepted push")
    except TimeoutError:
        print(procs.log("agent"))
        raise
    with contextlib.suppress(TimeoutError):
        wait_for(all_rounds_in, 2 * INTERVAL + 5, "a round of every check", every=1.0)
    sampler = Sampler({"agent": agent.pid, "exporter": exporter.pid})
    sampler.start()
    scrapes, scrape_bytes, scrape_failed = 0, 0, 0
    acked0 = acked()
    cpu0, t0 = sampler.cpu(), time.monotonic()
    end = t0 + args.seconds_b
    next_scrape = t0
    try:
        while time.monotonic() < end:
            time.sleep(max(0.0, min(next_scrape, end) - time.monotonic()))
            if time.monotonic() >= end:
                break
            try:
                with urllib.request.urlopen(metrics_url, timeout=5) as resp:
                    scrape_bytes += len(resp.read())
                scrapes += 1
            except OSError:
                scrape_failed += 1
            next_scrape += INTERVAL
        cpu1, t1 = sampler.cpu(), time.monotonic()
        peak = sampler.peak()
        alive = {"agent": agent.poll() is None, "exporter": exporter.poll() is None}
    finally:
        sampler.stopped.set()
    acked1 = acked()
    window = t1 - t0
    out: dict[str, Any] = {
        "window_s": round(window, 1),
        "checks": [c["name"] for c in checks],
        "target": target,
        "agent_rounds_accepted_in_window": acked1 - acked0,
        "agent_rounds_expected_in_window": round((len(checks) + 1) * window / INTERVAL, 1),
        "exporter_scrapes": scrapes,
        "exporter_scrape_kb": round(scrape_bytes / max(1, scrapes) / 1024, 1),
        "exporter_scrape_failures": scrape_failed,
        "rss_samples": sampler.samples,
    }
    for name in ("agent", "exporter"):
        out[f"{name}_alive"] = alive[name]
        out[f"{name}_rss_max_mb"] = round(sampler.rss_max[name], 1)
        out[f"{name}_rss_end_mb"] = round(sampler.rss_last[name], 1)
        out[f"{name}_rss_peak_since_start_mb"] = round(peak.get(name, float("nan")), 1)
        out[f"{name}_cpu_pct"] = round(100 * (cpu1.get(name, 0.0) - cpu0.get(name, 0.0)) / window, 2)
    out["python_bare_rss_mb"] = import_rss(None)
    out["python_agent_imports_rss_mb"] = import_rss("clusterwatch.agent.runner")
    out["goal_agent_rss_under_40mb"] = out["agent_rss_max_mb"] < 40
    out["goal_agent_cpu_under_0.5pct"] = out["agent_cpu_pct"] < 0.5
    return out


# --- output ----------------------------------------------------------------------------------------------------


def table(title: str, rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title]
    for key, value in rows:
        lines.append(f"  {key.ljust(width)}  {value}")
    return "\n".join(lines)


def show_a(a: dict[str, Any]) -> str:
    return table(
        f"Part A: one monitor, {a['agents']} agents x {a['observations_per_agent']} observations / {INTERVAL:g} s "
        f"({a['mode']}{', long poll held' if a['long_poll'] else ''}), {a['window_s']} s measured, "
        f"{os.cpu_count()} cpus",
        [
            ("monitor ready after", f"{a['monitor_ready_s']} s"),
            ("accepted observations/s", f"{a['accepted_obs_per_s']} (offered {a['expected_obs_per_s']})"),
            ("pushes/s", a["pushes_per_s"]),
            ("push latency (client)", f"p50 {a['push_p50_ms']} ms, p99 {a['push_p99_ms']} ms, max {a['push_max_ms']}"),
            ("push answers (whole run)", a["push_statuses"]),
            (
                "late / merged / wrong acks",
                f"{a['late_pushes']} pushes > 1 s late, {a['merged_moments']} moments merged into an earlier push, "
                f"{a['wrong_acks']} acks != seq, {a['agents_unfinished']} agents given up at the end",
            ),
            ("agents whose ack != last seq", a["agents_acked_behind"]),
            ("scheduling lag (stats:)", f"p50 {a['lag_p50_ms']} ms, p99 {a['lag_p99_ms']} ms (worst 10 s window)"),
            ("  p99 per 10 s window", a["lag_p99_ms_windows"]),
            (
                "/healthz lag_p99 (max)",
                f"{a['healthz_lag_p99_ms_max']} ms, {a['healthz_degraded']} of {a['healthz_answers']} answers degraded",
            ),
            ("store writes/s", f"{a['store_writes_per_s']} (queue max {a['store_queue_max']})"),
            (
                "CPU (% of one core)",
                f"monitor {a['monitor_cpu_pct']} %; the {a['agents']} simulated agents (this bench's own "
                f"workers, same machine) {a['simulators_cpu_pct']} %",
            ),
            (
                "monitor RSS",
                f"max {a['monitor_rss_max_mb']} MB, end {a['monitor_rss_end_mb']} MB, "
                f"peak since start {a['monitor_rss_peak_since_start_mb']} MB",
            ),
            ("monitor error log lines", a["monitor_error_lines"]),
            ("goal lag p99 < 200 ms", "met" if a["goal_lag_p99_under_200ms"] else "NOT met"),
        ],
    )


def show_b(b: dict[str, Any]) -> str:
    rows = [
        ("", f"{'clusterwatch agent':>20}  {NODE_EXPORTER:>26}"),
        ("RSS max (window)", f"{b['agent_rss_max_mb']:>17} MB  {b['exporter_rss_max_mb']:>23} MB"),
        ("RSS at the end", f"{b['agent_rss_end_mb']:>17} MB  {b['exporter_rss_end_mb']:>23} MB"),
        (
            "RSS peak since start",
            f"{b['agent_rss_peak_since_start_mb']:>17} MB  {b['exporter_rss_peak_since_start_mb']:>23} MB",
        ),
        ("CPU (% of one core)", f"{b['agent_cpu_pct']:>18} %  {b['exporter_cpu_pct']:>24} %"),
        (
            "work done",
            f"agent: {b['agent_rounds_accepted_in_window']} rounds accepted "
            f"(expected ~{b['agent_rounds_expected_in_window']}); exporter: {b['exporter_scrapes']} scrapes "
            f"of {b['exporter_scrape_kb']} KB, {b['exporter_scrape_failures']} failed",
        ),
        (
            "for scale",
            f"a bare python: {b['python_bare_rss_mb']} MB; python with the agent's imports only "
            f"(clusterwatch.agent.runner): {b['python_agent_imports_rss_mb']} MB",
        ),
        ("goal agent RSS < 40 MB", "met" if b["goal_agent_rss_under_40mb"] else "NOT met"),
        ("goal agent CPU < 0.5 %", "met" if b["goal_agent_cpu_under_0.5pct"] else "NOT met"),
    ]
    return table(
        f"Part B: the agent ({len(b['checks'])} checks on {b['target']} + its node, every {INTERVAL:g} s) "
        f"beside {NODE_EXPORTER} (scraped every {INTERVAL:g} s), {b['window_s']} s",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Part A 30 s, Part B 20 s")
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--observations", type=int, default=20, help="per agent per interval (node + checks)")
    parser.add_argument("--spread", action="store_true", help="each check's round at its own moment (like the agent)")
    parser.add_argument(
        "--batch", type=float, default=5.0, help="--spread: seconds healthy rounds wait for company (agent: 5)"
    )
    parser.add_argument("--no-poll", action="store_true", help="the simulated agents hold no long poll")
    parser.add_argument("--workers", type=int, default=2, help="processes simulating the agents")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--seconds-a", type=float, default=None, help="Part A's window (default 60, quick 30)")
    parser.add_argument("--seconds-b", type=float, default=None, help="Part B's window (default 60, quick 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, stores)")
    parser.add_argument("--sim-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sim_worker:
        sim_worker(args.sim_worker)
        return
    args.seconds_a = args.seconds_a or (30.0 if args.quick else 60.0)
    args.seconds_b = args.seconds_b or (20.0 if args.quick else 60.0)

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    tmp = Path(tempfile.mkdtemp(prefix="agent-footprint-"))
    procs = Procs(tmp)
    report: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    started = time.monotonic()
    try:
        if args.part in ("a", "both"):
            report["monitor_ingest"] = part_a(args, procs, tmp)
            procs.stop_all()
            print(show_a(report["monitor_ingest"]), flush=True)
        if args.part in ("b", "both"):
            report["agent_footprint"] = part_b(args, procs, tmp)
            procs.stop_all()
            print(show_b(report["agent_footprint"]), flush=True)
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report["ran_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
