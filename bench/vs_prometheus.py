"""clusterwatch beside Prometheus + blackbox_exporter, and the Python floor, on the same loopback targets.

N HTTP targets (default 10,000, `--targets`) on a loopback server of its own (bench/_targets.py), each
probed every 10 s by, in turn:
- clusterwatch: `clusterwatch run`, one `kind: http` check per target (its defaults otherwise: SQLite
  store, web on a loopback port);
- Prometheus + blackbox_exporter (Debian's packages, run here as plain processes with their own config
  and data directories on loopback ports): one scrape job of /probe?module=http_2xx per target,
  scrape_interval 10s, scrape_timeout 5s;
- the Python floor: a paced aiohttp GET loop in a process of its own at the same rate (each target at
  its own offset in the interval, a pooled connector like the monitor's), reading each answer whole and
  doing nothing else with it: what any Python prober pays.
Three repetitions (`--repeats`), the order rotating between them, one contender at a time. For each run:
time from the start until every target was probed once; then, after the warm-up, over the window: CPU
per 1,000 probes (process CPU from /proc: Prometheus and blackbox_exporter together), CPU in % of one
core, RSS (the max over the window, sampled every second) and each process's peak since it started.
Probes counted by each one itself: clusterwatch's `stats:` lines (probes started per second, times the
window), Prometheus's own count of its blackbox scrapes in the window (count_over_time(up)), the floor's
counter read at both ends. Ratios per repetition and their range.
Every process started here is stopped by its PID; every address is 127.0.0.1.
Run: `.venv/bin/python bench/vs_prometheus.py [--targets 10000] [--repeats 3] [--seconds 60]`
(needs Debian's `prometheus` and `prometheus-blackbox-exporter`: `bash scripts/bootstrap.sh bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _targets import targets

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
INTERVAL = 10.0
TIMEOUT = 5.0
STATS_EVERY = 5.0
PROMETHEUS, BLACKBOX = "prometheus", "prometheus-blackbox-exporter"
CONTENDERS = ("clusterwatch", "prometheus", "floor")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat), for how busy the rest of it was."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> float:
    """Seconds until `predicate` held (polled every `every` s); TimeoutError after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if predicate():
                return time.monotonic() - started
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


class Procs:
    """The processes of one run, stopped by their PIDs (TERM, then KILL), last started first."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Its output into NAME.log, unless the caller reads it (stdout=PIPE)."""
        if "stdout" in kwargs:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd=self.tmp, **kwargs)
        else:
            with open(self.tmp / f"{name}.log", "ab") as log:
                proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.tmp, **kwargs
                )
        self.started.append((name, proc))
        return proc

    def log(self, name: str, tail: int = 2000) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def check_alive(self) -> None:
        for name, proc in self.started:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited ({proc.returncode}):\n{self.log(name)}")

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        self.started.clear()


class Sampler(threading.Thread):
    """The summed RSS of some processes every second: its max over the window."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True, name="sampler")
        self.pids = pids
        self.max_kb = 0
        self.samples = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            with contextlib.suppress(OSError, ValueError):
                self.max_kb = max(self.max_kb, sum(status_kb(pid, "VmRSS") for pid in self.pids))
                self.samples += 1


# --- the contenders ----------------------------------------------------------------------------------------


class Contender:
    """One tool under test: started, asked how many targets it has probed and how many probes it made."""

    name = ""

    def __init__(self, urls: list[str], tmp: Path) -> None:
        self.urls, self.tmp = urls, tmp
        self.procs = Procs(tmp)
        self.pids: list[int] = []

    def start(self) -> None:
        raise NotImplementedError

    def probed_once(self) -> bool:
        """Every target probed at least once."""
        raise NotImplementedError

    def mark(self) -> None:
        """The start or the end of the window: remember what counting needs."""

    def probes(self, t0_wall: float, t1_wall: float) -> tuple[float, str]:
        """Probes made in the window, and a note on how they were counted."""
        raise NotImplementedError

    def ok_share(self) -> float:
        """The share of probes that found their target answering 200 (nan when not known)."""
        return float("nan")

    def extra(self) -> str:
        return ""


class Clusterwatch(Contender):
    name = "clusterwatch"

    def start(self) -> None:
        self.port = free_port()
        config = {
            "interval": f"{INTERVAL:g}s",
            "timeout": f"{TIMEOUT:g}s",
            "store": {"path": str(self.tmp / "state.db")},
            "web": {"listen": f"127.0.0.1:{self.port}"},
            "checks": [{"name": f"t{i}", "kind": "http", "url": url} for i, url in enumerate(self.urls)],
        }
        (self.tmp / "clusterwatch.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        env = {**os.environ, "CLUSTERWATCH_STATS_EVERY": f"{STATS_EVERY:g}"}
        env.pop("CLUSTERWATCH_CONFIG", None)
        argv = [sys.executable, "-m", "clusterwatch", "run", "--log-format", "json", "-c", "clusterwatch.yaml"]
        self.pids = [self.procs.start("clusterwatch", argv, env=env).pid]

    def _health(self) -> dict[str, Any]:
        try:
            return dict(get_json(f"http://127.0.0.1:{self.port}/healthz", 5))
        except urllib.error.HTTPError as exc:  # degraded (503) still counts its entities
            return dict(json.load(exc))

    def probed_once(self) -> bool:
        return int(self._health().get("entities", 0)) >= len(self.urls)

    def _stats(self) -> list[dict[str, Any]]:
        lines = []
        for line in (self.tmp / "clusterwatch.log").read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if str(record.get("message", "")).startswith("stats:"):
                        lines.append(record)
        return lines

    def probes(self, t0_wall: float, t1_wall: float) -> tuple[float, str]:
        inside = [s for s in self._stats() if t0_wall + STATS_EVERY <= s["ts"] <= t1_wall + 1]
        self.window_stats = inside
        if not inside:
            return float("nan"), "no stats: lines in the window"
        rate = statistics.fmean(s["probes_per_s"] for s in inside)
        with contextlib.suppress(OSError, ValueError, KeyError):  # read after the window: its CPU is not counted
            self.summary = get_json(f"http://127.0.0.1:{self.port}/api/v1/status", 60)["summary"]
        return rate * (t1_wall - t0_wall), f"mean of {len(inside)} stats: lines x window"

    def extra(self) -> str:
        stats = getattr(self, "window_stats", [])
        if not stats:
            return ""
        p99 = max(s.get("lag_p99_ms", float("nan")) for s in stats)
        shown = {k: v for k, v in getattr(self, "summary", {}).items() if v}
        return f"scheduling lag p99 (worst {STATS_EVERY:g} s) {p99:.0f} ms; checks by status at the end {shown}"

    def ok_share(self) -> float:
        """Its checks ok at the end of the window (its stats: lines do not count failures)."""
        summary = getattr(self, "summary", None)
        return summary.get("ok", 0) / len(self.urls) if summary else float("nan")


class Prometheus(Contender):
    name = "prometheus"

    def start(self) -> None:
        prometheus, blackbox = shutil.which(PROMETHEUS), shutil.which(BLACKBOX)
        assert prometheus and blackbox
        self.bb_port, self.port = free_port(), free_port()
        (self.tmp / "blackbox.yml").write_text(
            yaml.safe_dump(
                {
                    "modules": {
                        "http_2xx": {
                            "prober": "http",
                            "timeout": f"{TIMEOUT:g}s",
                            "http": {"preferred_ip_protocol": "ip4"},
                        }
                    }
                }
            )
        )
        config = {
            "global": {"scrape_interval": f"{INTERVAL:g}s", "scrape_timeout": f"{TIMEOUT:g}s"},
            "scrape_configs": [
                {
                    "job_name": "blackbox",
                    "metrics_path": "/probe",
                    "params": {"module": ["http_2xx"]},
                    "static_configs": [{"targets": self.urls}],
                    "relabel_configs": [
                        {"source_labels": ["__address__"], "target_label": "__param_target"},
                        {"source_labels": ["__param_target"], "target_label": "instance"},
                        {"target_label": "__address__", "replacement": f"127.0.0.1:{self.bb_port}"},
                    ],
                }
            ],
        }
        (self.tmp / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        bb = self.procs.start(
            "blackbox",
            [blackbox, "--config.file=blackbox.yml", f"--web.listen-address=127.0.0.1:{self.bb_port}"],
        )
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{self.bb_port}/metrics", timeout=2), 30, BLACKBOX)
        (self.tmp / "data").mkdir()
        prom = self.procs.start(
            "prometheus",
            [
                prometheus,
                "--config.file=prometheus.yml",
                "--storage.tsdb.path=data",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
        )
        self.pids = [prom.pid, bb.pid]

    def query(self, promql: str, at: float | None = None) -> float:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at else {})}
        answer = get_json(f"http://127.0.0.1:{self.port}/api/v1/query?{urllib.parse.urlencode(params)}", 30)
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def probed_once(self) -> bool:
        return self.query('count(up{job="blackbox"})') >= len(self.urls)

    def probes(self, t0_wall: float, t1_wall: float) -> tuple[float, str]:
        window = f"{round((t1_wall - t0_wall) * 1000)}ms"  # PromQL durations are whole units
        time.sleep(1.0)  # the last scrapes of the window appended
        self.scrapes = self.query(f'sum(count_over_time(up{{job="blackbox"}}[{window}]))', t1_wall)
        self.successes = self.query(f"sum(sum_over_time(probe_success[{window}]))", t1_wall)
        return self.scrapes, "its own count of blackbox scrapes in the window"

    def extra(self) -> str:
        return f"probe_success in the window: {getattr(self, 'successes', float('nan')):.0f}"

    def ok_share(self) -> float:
        scrapes = getattr(self, "scrapes", 0.0)
        return getattr(self, "successes", 0.0) / scrapes if scrapes else float("nan")


class Floor(Contender):
    name = "floor"

    def start(self) -> None:
        (self.tmp / "floor.json").write_text(json.dumps({"urls": self.urls, "interval": INTERVAL}))
        argv = [sys.executable, str(THIS), "--floor-worker", str(self.tmp / "floor.json")]
        with open(self.tmp / "floor.log", "ab") as log:
            proc = self.procs.start("floor", argv, stdout=subprocess.PIPE, stderr=log)
        self.proc = proc
        self.pids = [proc.pid]
        self.lines: list[str] = []
        self.got_line = threading.Condition()

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                with self.got_line:
                    self.lines.append(raw.decode().strip())
                    self.got_line.notify_all()

        threading.Thread(target=read, daemon=True, name="floor-reader").start()

    def probed_once(self) -> bool:
        return any(line.startswith("all ") for line in self.lines)

    def mark(self) -> None:
        """The worker's counter, read by a signal: it answers with a line."""
        with self.got_line:
            before = len(self.lines)
            os.kill(self.proc.pid, signal.SIGUSR1)
            self.got_line.wait_for(lambda: any(x.startswith("mark ") for x in self.lines[before:]), timeout=30)

    def probes(self, t0_wall: float, t1_wall: float) -> tuple[float, str]:
        marks = [line.split() for line in self.lines if line.startswith("mark ")]
        first, last = marks[-2], marks[-1]
        self.answered = int(last[1]) - int(first[1])
        self.failed = self.answered - (int(last[2]) - int(first[2]))
        return float(self.answered), "its own counter of answered GETs"

    def extra(self) -> str:
        return f"failed GETs in the window: {getattr(self, 'failed', '?')}"

    def ok_share(self) -> float:
        answered = getattr(self, "answered", 0)
        return 1 - self.failed / answered if answered else float("nan")


# --- the floor's worker (a process of its own) ----------------------------------------------------------------


async def _floor(urls: list[str], interval: float) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    n = len(urls)
    answered = ok = first_pass = 0
    seen = bytearray(n)
    running: set[asyncio.Task[None]] = set()
    stop = asyncio.Event()
    started = loop.time()
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"mark {answered} {ok}", flush=True))
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    connector = aiohttp.TCPConnector(limit=200, limit_per_host=0)  # as the monitor's own session
    async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": "floor"}) as session:

        async def get(i: int) -> None:
            nonlocal answered, ok, first_pass
            good = False
            try:
                async with asyncio.timeout(TIMEOUT), session.get(urls[i]) as resp:
                    await resp.read()
                    good = resp.status == 200
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            answered += 1
            ok += good
            if not seen[i]:
                seen[i] = 1
                first_pass += 1
                if first_pass == n:
                    print(f"all {loop.time() - started:.2f}", flush=True)

        step, k = interval / n, 0
        while not stop.is_set():
            delay = started + k * step - loop.time()
            if delay > 0:  # at least 5 ms: what is due by then goes out together, as a scheduler would send it
                await asyncio.sleep(max(delay, 0.005))
                continue
            now = loop.time()
            while started + k * step <= now:  # everything due by now, each target at its own offset
                task = asyncio.create_task(get(k % n))
                running.add(task)
                task.add_done_callback(running.discard)
                k += 1
        for task in list(running):
            task.cancel()


def floor_worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    asyncio.run(_floor(spec["urls"], float(spec["interval"])))


# --- one run, and the whole bench ---------------------------------------------------------------------------


def run_one(
    kind: type[Contender], urls: list[str], args: argparse.Namespace, tmp: Path, target_pid: int
) -> dict[str, Any]:
    contender = kind(urls, tmp)
    started = time.monotonic()
    try:
        contender.start()
        try:
            first = wait_for(contender.probed_once, args.first_timeout, f"{kind.name}: every target probed once")
        except TimeoutError:
            contender.procs.check_alive()
            raise
        warm_until = max(started + args.warmup, time.monotonic() + 2.0)
        time.sleep(max(0.0, warm_until - time.monotonic()))
        contender.procs.check_alive()
        sampler = Sampler(contender.pids)
        sampler.start()
        contender.mark()
        cpu0, server0, busy0 = (
            sum(cpu_seconds(p) for p in contender.pids),
            cpu_seconds(target_pid),
            machine_busy_seconds(),
        )
        t0, t0_wall = time.monotonic(), time.time()
        time.sleep(args.seconds)
        cpu1, server1, busy1 = (
            sum(cpu_seconds(p) for p in contender.pids),
            cpu_seconds(target_pid),
            machine_busy_seconds(),
        )
        t1, t1_wall = time.monotonic(), time.time()
        contender.mark()
        sampler.stopped.set()
        sampler.join(5)
        peak_kb = sum(status_kb(pid, "VmHWM") for pid in contender.pids)
        contender.procs.check_alive()
        probes, counted = contender.probes(t0_wall, t1_wall)
        window = t1 - t0
        cpu = cpu1 - cpu0
        return {
            "contender": kind.name,
            "first_probe_of_every_target_s": round(first, 1),
            "window_s": round(window, 1),
            "probes": round(probes),
            "probes_per_s": round(probes / window, 1),
            "expected_per_s": round(len(urls) / INTERVAL, 1),
            "counted": counted,
            "cpu_s": round(cpu, 2),
            "cpu_pct": round(100 * cpu / window, 1),
            "cpu_s_per_1000_probes": round(1000 * cpu / probes, 3) if probes else float("nan"),
            "rss_max_mb": round(sampler.max_kb / 1024, 1),
            "rss_peak_since_start_mb": round(peak_kb / 1024, 1),
            "rss_samples": sampler.samples,
            "ok_pct": round(100 * contender.ok_share(), 1),
            "target_server_cpu_pct": round(100 * (server1 - server0) / window, 1),
            "rest_of_machine_cpu_pct": round(100 * (busy1 - busy0 - cpu - (server1 - server0)) / window, 1),
            "note": contender.extra(),
        }
    finally:
        contender.procs.stop_all()


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def show_run(r: dict[str, Any]) -> str:
    failing = r["ok_pct"] < 99  # an overloaded prober's CPU per probe is not that of one that probes
    return (
        f"    {r['contender']:<13} first probe of every target after {r['first_probe_of_every_target_s']:>5} s | "
        f"{r['probes_per_s']:>7} probes/s (expected {r['expected_per_s']}), {r['ok_pct']} % ok | "
        f"CPU {r['cpu_pct']:>5} % of a core, {r['cpu_s_per_1000_probes']:.3f} CPU-s per 1,000 probes | "
        f"RSS max {r['rss_max_mb']} MB (peak since start {r['rss_peak_since_start_mb']} MB)\n"
        f"                  {r['note']} | meanwhile the target server {r['target_server_cpu_pct']} % "
        f"and the rest of the machine {r['rest_of_machine_cpu_pct']} % of a core"
        + (
            "\n                  ** probes failing: this prober is overloaded here, its figures do not compare **"
            if failing
            else ""
        )
    )


def summary(reps: list[dict[str, dict[str, Any]]], n: int) -> str:
    rows: list[tuple[str, list[float]]] = []
    for key, label in (
        ("cpu_s_per_1000_probes", "CPU-s per 1,000 probes"),
        ("cpu_pct", "CPU % of one core"),
        ("rss_max_mb", "RSS max (MB)"),
        ("first_probe_of_every_target_s", "every target probed once (s)"),
        ("ok_pct", "probes ok (%)"),
    ):
        for c in CONTENDERS:
            rows.append((f"{label}: {c}", [float(rep[c][key]) for rep in reps]))
    for key, label in (("cpu_s_per_1000_probes", "CPU per probe"), ("rss_max_mb", "RSS")):
        for a, b in (("clusterwatch", "prometheus"), ("clusterwatch", "floor"), ("prometheus", "floor")):
            rows.append((f"ratio {label} {a} / {b}", [ratio(float(r[a][key]), float(r[b][key])) for r in reps]))
    width = max(len(label) for label, _ in rows)
    lines = [f"summary over {len(reps)} repetitions at {n} targets (each repetition's value; median; range)"]
    for label, values in rows:
        shown = "  ".join(f"{v:8.3f}" for v in values)
        lines.append(
            f"  {label:<{width}}  {shown}   median {statistics.median(values):.3f}, {min(values):.3f}-{max(values):.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=10000, help="loopback HTTP targets")
    parser.add_argument("--ports", type=int, default=50, help="listening ports the targets spread over")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window of each run")
    parser.add_argument("--warmup", type=float, default=20.0, help="from each start (and 2 s after every target)")
    parser.add_argument("--first-timeout", type=float, default=180.0, help="for every target's first probe")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories (logs, configs)")
    parser.add_argument("--floor-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_worker:
        floor_worker(args.floor_worker)
        return
    missing = [name for name in (PROMETHEUS, BLACKBOX) if not shutil.which(name)]
    if missing:
        raise SystemExit(f"needs Debian's {' and '.join(missing)} (`bash scripts/bootstrap.sh bench`)")

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    kinds: dict[str, type[Contender]] = {"clusterwatch": Clusterwatch, "prometheus": Prometheus, "floor": Floor}
    tmp = Path(tempfile.mkdtemp(prefix="vs-prometheus-"))
    reps: list[dict[str, dict[str, Any]]] = []
    began = time.monotonic()
    print(
        f"{args.targets} HTTP targets on {args.ports} loopback ports, every {INTERVAL:g} s (timeout {TIMEOUT:g} s); "
        f"{args.repeats} repetitions, order rotating; window {args.seconds:g} s after a {args.warmup:g} s warm-up; "
        f"{os.cpu_count()} cpus, load average {[round(x, 2) for x in os.getloadavg()]}",
        flush=True,
    )
    try:
        with targets(args.ports) as ports:
            urls = [f"http://127.0.0.1:{ports[i % len(ports)]}/health?i={i}" for i in range(args.targets)]
            server = next(c.pid for c in psutil.Process().children() if "_targets.py" in " ".join(c.cmdline()))
            for rep in range(args.repeats):
                order = CONTENDERS[rep % 3 :] + CONTENDERS[: rep % 3]
                print(f"  repetition {rep + 1} ({', '.join(order)}):", flush=True)
                results: dict[str, dict[str, Any]] = {}
                for name in order:
                    run_tmp = tmp / f"{rep + 1}-{name}"
                    run_tmp.mkdir()
                    results[name] = run_one(kinds[name], urls, args, run_tmp, server)
                    print(show_run(results[name]), flush=True)
                cw, prom, floor = (results[c] for c in CONTENDERS)
                print(
                    f"    ratios: CPU per probe clusterwatch/prometheus "
                    f"{ratio(cw['cpu_s_per_1000_probes'], prom['cpu_s_per_1000_probes']):.2f}x, "
                    f"clusterwatch/floor {ratio(cw['cpu_s_per_1000_probes'], floor['cpu_s_per_1000_probes']):.2f}x, "
                    f"prometheus/floor {ratio(prom['cpu_s_per_1000_probes'], floor['cpu_s_per_1000_probes']):.2f}x; "
                    f"RSS clusterwatch/prometheus {ratio(cw['rss_max_mb'], prom['rss_max_mb']):.2f}x",
                    flush=True,
                )
                reps.append(results)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(summary(reps, args.targets))
    print(f"ran for {time.monotonic() - began:.0f} s")
    if args.json_out:
        args.json_out.write_text(json.dumps({"targets": args.targets, "repetitions": reps}, indent=2) + "\n")


if __name__ == "__main__":
    main()
