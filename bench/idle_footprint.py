"""The idle monitor: `clusterwatch run` on its default config with nothing running, beside the tools a
user would otherwise leave running on a node: Debian's `prometheus-node-exporter` (scraped by this
bench every 10 s, as a Prometheus would) and Monit (`set daemon 10` and a system check).

All three run at once; after a warm-up (one default interval, so the monitor has done its first round),
RSS is sampled every second for the window and CPU is read from /proc at its ends. The monitor gets
the built-in defaults for real (no config file, no $CLUSTERWATCH_CONFIG, an empty working directory).
As root it runs in a private mount and network namespace: its default state directory
(/var/lib/clusterwatch) is a temporary one there, and nothing listens on the ports its five default
checks look at, nor is its web port (127.0.0.1:9877) taken. Otherwise its state goes under a temporary
$XDG_STATE_HOME, and whatever listens here is probed.

Goal (issue 13): the idle monitor under 40 MB RSS; printed, not asserted. For scale, the RSS of a bare
python and of one that only imported the libraries the monitor is built on.
Every process started here is stopped by its PID; every address is 127.0.0.1.
Run: `.venv/bin/python bench/idle_footprint.py [--seconds 60] [--warmup 35]`
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NODE_EXPORTER = "prometheus-node-exporter"
STACK = "asyncio, aiohttp, aiohttp.web, pydantic, yaml, psutil, sqlite3"  # what the monitor cannot do without
GOAL_MB = 40.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of one process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def import_rss(modules: str | None) -> float:
    """RSS (MB) of a fresh python that imported `modules` (and built one pydantic model) and nothing else."""
    model = "from pydantic import BaseModel\nclass M(BaseModel):\n    a: int = 1\n"
    code = f"import {modules}\n{model}" if modules else ""
    code += "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')) / 1024)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return round(float(done.stdout.strip()), 1)


class Procs:
    """Every process this bench starts, stopped by its PID (TERM, then KILL), last started first."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
        self.started.append(proc)
        return proc

    def log(self, name: str, tail: int = 2000) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


def namespaces_work() -> bool:
    """Root, unshare and ip: the monitor can have a mount and network namespace of its own."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    done = subprocess.run(
        ["unshare", "--mount", "--net", "sh", "-c", "ip link set lo up"], capture_output=True, check=False
    )
    return done.returncode == 0


def start_monitor(procs: Procs, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`clusterwatch run` with no config at all; its PID is the monitor's own (the shell execs it)."""
    work, home, state = tmp / "cwd", tmp / "home", tmp / "state"
    for d in (work, home, state):
        d.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CLUSTERWATCH_CONFIG", "XDG_STATE_HOME")}
    env["HOME"] = str(home)
    run = [sys.executable, "-m", "clusterwatch", "run"]
    if namespaces_work():
        (tmp / "etc").mkdir()
        script = (
            'ip link set lo up && mkdir -p /var/lib/clusterwatch && mount --bind "$1" /var/lib/clusterwatch && '
            '{ [ ! -d /etc/clusterwatch ] || mount --bind "$2" /etc/clusterwatch; } && shift 2 && exec "$@"'
        )
        argv = ["unshare", "--mount", "--net", "sh", "-c", script, "sh", str(state), str(tmp / "etc"), *run]
        where = "own mount+network namespace: state dir a temporary one, nothing listening"
    else:
        env["XDG_STATE_HOME"] = str(state)
        argv = run
        where = "this host's network (whatever listens here is probed); state under a temporary $XDG_STATE_HOME"
    proc = procs.start("clusterwatch", argv, cwd=work, env=env)
    return proc, where


def healthz_inside(pid: int, in_namespace: bool) -> dict[str, Any]:
    """The monitor's /healthz (from inside its network namespace when it has one)."""
    code = (
        "import json, urllib.request, urllib.error\n"
        "try:\n    r = urllib.request.urlopen('http://127.0.0.1:9877/healthz', timeout=5); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n    print(e.read().decode())\n"
    )
    argv = [sys.executable, "-c", code]
    if in_namespace:
        argv = ["nsenter", "-t", str(pid), "-n", *argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return dict(json.loads(done.stdout))
    except (ValueError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}


def start_monit(procs: Procs, tmp: Path) -> subprocess.Popen[bytes]:
    control = tmp / "monitrc"
    control.write_text(f"""\
set daemon 10
set logfile {tmp / "monit.out"}
set pidfile {tmp / "monit.pid"}
set statefile {tmp / "monit.state"}
set idfile {tmp / "monit.id"}
check system bench_idle
  if loadavg (1min) per core > 4 then alert
  if memory usage > 95% then alert
  if cpu usage > 95% for 10 cycles then alert
""")
    control.chmod(0o600)
    return procs.start("monit", ["monit", "-c", str(control), "-I"], cwd=tmp)


class Sampler(threading.Thread):
    """RSS of each process every second: the max and the last, and the anon/file split of the last."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True, name="sampler")
        self.pids = pids
        self.max_kb = dict.fromkeys(pids, 0)
        self.last: dict[str, dict[str, int]] = {name: {} for name in pids}
        self.samples = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError, ValueError):
                    now = status_kb(pid)
                    self.last[name] = now
                    self.max_kb[name] = max(self.max_kb[name], now.get("VmRSS", 0))
            self.samples += 1


def measure(args: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, Any]:
    exporter_bin = shutil.which(NODE_EXPORTER)
    if not exporter_bin or not shutil.which("monit"):
        raise SystemExit(f"needs Debian's {NODE_EXPORTER} and monit (`bash scripts/bootstrap.sh bench`)")
    monitor, where = start_monitor(procs, tmp)
    in_namespace = where.startswith("own")
    exporter_port = free_port()
    exporter = procs.start(NODE_EXPORTER, [exporter_bin, f"--web.listen-address=127.0.0.1:{exporter_port}"], cwd=tmp)
    monit = start_monit(procs, tmp)
    pids = {"clusterwatch": monitor.pid, "node_exporter": exporter.pid, "monit": monit.pid}
    metrics_url = f"http://127.0.0.1:{exporter_port}/metrics"
    scrapes, failed = 0, 0

    def scrape() -> None:
        nonlocal scrapes, failed
        try:
            with urllib.request.urlopen(metrics_url, timeout=5) as resp:
                resp.read()
            scrapes += 1
        except OSError:
            failed += 1

    warm_end = time.monotonic() + args.warmup
    next_scrape = time.monotonic() + 2.0 if args.scrape_every else float("inf")
    while time.monotonic() < warm_end:  # the exporter is scraped from the start, as a Prometheus would
        time.sleep(max(0.0, min(next_scrape, warm_end) - time.monotonic()))
        if args.scrape_every and time.monotonic() >= next_scrape:
            scrape()
            next_scrape += args.scrape_every
        for name, proc in (("clusterwatch", monitor), (NODE_EXPORTER, exporter), ("monit", monit)):
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited during the warm-up ({proc.returncode}):\n{procs.log(name)}")
    sampler = Sampler(pids)
    sampler.start()
    scrapes = failed = 0
    cpu0, t0 = {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
    end = t0 + args.seconds
    while time.monotonic() < end:
        time.sleep(max(0.0, min(next_scrape, end) - time.monotonic()))
        if args.scrape_every and time.monotonic() >= next_scrape and time.monotonic() < end:
            scrape()
            next_scrape += args.scrape_every
    cpu1, t1 = {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
    sampler.stopped.set()
    sampler.join(5)
    window = t1 - t0
    health = healthz_inside(monitor.pid, in_namespace)
    out: dict[str, Any] = {
        "window_s": round(window, 1),
        "warmup_s": args.warmup,
        "monitor_where": where,
        "monitor_health": {k: health.get(k) for k in ("status", "checks", "entities", "problems", "error")},
        "exporter_scrapes": scrapes,
        "exporter_scrape_failures": failed,
        "rss_samples": sampler.samples,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    for name in pids:
        last = sampler.last[name]
        out[name] = {
            "alive": {"clusterwatch": monitor, "node_exporter": exporter, "monit": monit}[name].poll() is None,
            "rss_max_mb": round(sampler.max_kb[name] / 1024, 1),
            "rss_end_mb": round(last.get("VmRSS", 0) / 1024, 1),
            "rss_peak_since_start_mb": round(last.get("VmHWM", 0) / 1024, 1),
            "rss_anon_end_mb": round(last.get("RssAnon", 0) / 1024, 1),
            "rss_file_end_mb": round(last.get("RssFile", 0) / 1024, 1),
            "cpu_pct": round(100 * (cpu1[name] - cpu0[name]) / window, 3),
        }
    out["python_bare_rss_mb"] = import_rss(None)
    out["python_stack_rss_mb"] = import_rss(STACK)
    out["goal_idle_rss_under_40mb"] = out["clusterwatch"]["rss_max_mb"] < GOAL_MB
    return out


def show(r: dict[str, Any]) -> str:
    names = ("clusterwatch", "node_exporter", "monit")
    heads = ("clusterwatch run", NODE_EXPORTER, "monit")
    width = 30

    def ratio(other: str) -> float:
        return float(r["clusterwatch"]["rss_max_mb"]) / max(0.1, float(r[other]["rss_max_mb"]))

    def row(label: str, cells: list[str]) -> str:
        return f"  {label:<{width}}" + "".join(f"{c:>26}" for c in cells)

    lines = [
        f"idle footprint: {r['window_s']} s measured after a {r['warmup_s']:g} s warm-up, {r['cpus']} cpus, "
        f"load average {r['loadavg']}",
        row("", list(heads)),
        row("RSS max over the window (MB)", [f"{r[n]['rss_max_mb']}" for n in names]),
        row("RSS at the end (MB)", [f"{r[n]['rss_end_mb']}" for n in names]),
        row("  of it anon / file (MB)", [f"{r[n]['rss_anon_end_mb']} / {r[n]['rss_file_end_mb']}" for n in names]),
        row("RSS peak since start (MB)", [f"{r[n]['rss_peak_since_start_mb']}" for n in names]),
        row("CPU (% of one core)", [f"{r[n]['cpu_pct']:.2f}" for n in names]),
        row("alive at the end", [str(r[n]["alive"]) for n in names]),
        row(
            "work",
            [
                "5 default checks / 30 s",
                f"{r['exporter_scrapes']} scrapes ({r['exporter_scrape_failures']} failed)",
                "system check / 10 s",
            ],
        ),
        f"  monitor: {r['monitor_where']}; /healthz {r['monitor_health']}",
        f"  for scale: a bare python {r['python_bare_rss_mb']} MB; a python that only imported {STACK} "
        f"(and built one pydantic model) {r['python_stack_rss_mb']} MB",
        f"  RSS ratios: clusterwatch / node_exporter {ratio('node_exporter'):.1f}x, clusterwatch / monit "
        f"{ratio('monit'):.1f}x",
        f"  goal (issue 13) idle RSS < {GOAL_MB:g} MB: {'met' if r['goal_idle_rss_under_40mb'] else 'NOT met'} "
        f"({r['clusterwatch']['rss_max_mb']} MB)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=35.0, help="before it: the monitor's first round")
    parser.add_argument("--scrape-every", type=float, default=10.0, help="node_exporter scrapes (0: none)")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args()

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    tmp = Path(tempfile.mkdtemp(prefix="idle-footprint-"))
    procs = Procs(tmp)
    try:
        report = measure(args, procs, tmp)
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(show(report), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
