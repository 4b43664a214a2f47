"""Healing side by side with Monit: a race with one rule, one action and one clock.

Both watchers run at once, each watching its own copy of the same small HTTP service on a loopback port:
- the same rule: an HTTP probe every 1 s that fails twice in a row. clusterwatch: `interval: 1s`,
  `retry_interval: 1s`, `fall: 2`. Monit: `set daemon 1`, a `check host` (no process check that could act
  first) with `if failed port P protocol http for 2 cycles then restart`. After every trial the bench
  checks that this rule acted: Monit's log has the port failure and then the restart; clusterwatch's store
  has the failed probes, the hard critical state and the restart. A trial where it did not is invalid.
- the same action, shell-free: `python bench/_heal_service.py start --port P --dir D` as clusterwatch's
  `restart: {command: [...]}` and as Monit's `start`/`restart program`. It forks a keeper that waits on
  the service, so the killed service is reaped at once (no zombie for either watcher to see).
- one clock: CLOCK_MONOTONIC. The bench polls the port every 20 ms from the kill on: down = the first
  failed poll, back = the first answer. The start command stamps the moment it runs (restarted).
  The tools' own log stamps time nothing.
- fair kills: trials interleaved (clusterwatch, Monit, clusterwatch, ...), each after a random delay of
  up to one interval (a random phase of both watchers' cycles; the phase printed is the time since the
  watcher's last probe), and kills of one service further apart than clusterwatch's flapping window, so
  every trial measures a heal. A separate, named trial then kills each service every few seconds: there
  clusterwatch's flapping guard holds restarts back until the service settles, and the bench says so.
Every trial is printed, then min/median/p90/max per tool and the ratios. With 10 trials the medians after the
kill still carry the luck of the phases drawn; "restart, from last probe" (the kill's phase added back) does
not: two intervals of probing, then each watcher's own way from the second failure to its action.
Run: `.venv/bin/python bench/healing_vs_monit.py [--trials 10]` (needs Debian's `monit`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._heal_service import stamps  # noqa: E402
from clusterwatch.config.schema import FlappingOptions  # noqa: E402
from clusterwatch.engine.state import FLAP_WINDOW  # noqa: E402

SERVICE = Path(__file__).resolve().parent / "_heal_service.py"
INTERVAL = 1.0  # both watchers' cycle
FALL = 2  # failed probes in a row before acting, both
POLL = 0.02  # the bench's own polling of the port
SETTLE = 3.0  # after a trial's service is back, before the other service is killed
GIVE_UP = 60.0  # a trial whose service is not back by then is invalid
FLAP_EVERY = 3.0  # the flapping trial: a kill this long after the previous one, while the service serves,
FLAP_SETTLE = 1.0  # ... and this long after it is back (its restart verified, not cut short by the next kill)
FLAP_HELD = 5.0  # ... and a restart later than this after a kill, while clusterwatch says it flaps, was held back


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    """One poll of the bench's own: an HTTP answer on the port (`/poll`, which the service does not stamp)."""
    with socket.socket() as s:
        s.settimeout(0.2)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /poll HTTP/1.0\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False


def become_subreaper() -> None:
    """Orphans of this bench's tree (each keeper, once its start command has returned) come to the bench,
    which reaps them; not to PID 1, which reaps late on some hosts."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def kill(pid: int | None, sig: int = signal.SIGKILL) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class Trial:
    tool: str
    number: int
    phase: float | None  # seconds since the watcher's last probe, at the kill
    down: float | None  # the bench's first failed poll, after the kill
    restarted: float | None  # the start command's own stamp, after the kill
    back: float | None  # the bench's first answered poll: the time to recover
    starts: int  # start commands run between the kill and back
    cycles: int | None  # whole intervals from the watcher's last answered probe to the restart (FALL: no delay)
    invalid: str | None = None  # why this trial does not count
    note: str = ""  # the watcher's own record, when the restart came later than FALL cycles

    def line(self) -> str:
        def f(value: float | None) -> str:
            return f"{value:.2f}" if value is not None else "-"

        own = self.back - self.restarted if self.back is not None and self.restarted is not None else None
        verdict = f"INVALID: {self.invalid}" if self.invalid else "yes"
        cycles = str(self.cycles) if self.cycles is not None else "-"
        return (
            f"  {self.number:3d}  {self.tool:12s} {f(self.phase):>7} {f(self.down):>7} {f(self.restarted):>8} "
            f"{f(self.back):>7} {f(own):>12} {self.starts:>7} {cycles:>6}  {verdict}"
            + (f"\n{'':23}{self.note}" if self.note else "")
        )


HEADER = (
    f"  {'#':>3}  {'tool':12s} {'phase':>7} {'down':>7} {'restart':>8} {'back':>7} {'start->back':>12} "
    f"{'starts':>7} {'cycles':>6}  rule acted\n"
    "  phase: s from the watcher's last probe to the kill; down, restart, back: s after the kill, on the bench's\n"
    f"  clock (back = time to recover); cycles: whole cycles from the last answered probe to the restart ({FALL}: the\n"
    "  restart came right after the second failed probe; more: the watcher took longer from its rule to its action)"
)


@dataclass
class Side:
    """One watcher and its own copy of the service."""

    tool: str
    tmp: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None  # the watcher's log, read from where it was at the kill
    log_at: int = 0
    last_kill: float = float("-inf")
    keepers: set[int] = field(default_factory=set)
    acted: Callable[[float], str | None] = lambda wall: None  # why the rule did not act, from the kill on
    why_late: Callable[[float], str] = lambda wall: ""  # the watcher's own account of a late restart

    @property
    def dir(self) -> Path:
        return self.tmp / f"{self.tool}-service"

    @property
    def start_argv(self) -> list[str]:
        return [sys.executable, str(SERVICE), "start", "--port", str(self.port), "--dir", str(self.dir)]

    def start_service(self) -> None:
        self.dir.mkdir(exist_ok=True)
        subprocess.run(self.start_argv, check=True)
        wait_for(lambda: answers(self.port), 10, self)

    def reap(self) -> None:
        """The keepers that went: reaped by the bench, their subreaper."""
        for pid in list(self.keepers):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    self.keepers.discard(pid)
            except ChildProcessError:  # not ours (no subreaper here): PID 1 reaps it
                self.keepers.discard(pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in {pid_in(self.dir / "service.pid"), pid_in(self.dir / "keeper.pid")}:
            if pid is not None and self.ours(pid):
                kill(pid)
                self.keepers.add(pid)
        for pid in self.keepers:  # gone but not reaped yet: still ours
            kill(pid)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not (self.reap() or self.keepers), 5)

    def ours(self, pid: int) -> bool:
        """This side's service or keeper (a pid from a file may since belong to something else)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(SERVICE).encode() in argv and str(self.dir).encode() in argv


def wait_for(predicate: Callable[[], object], timeout: float, side: Side | None = None) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        if side is not None:
            side.reap()
        time.sleep(POLL)
    raise TimeoutError


def sleep_until(moment: float, sides: list[Side]) -> None:
    while (left := moment - time.monotonic()) > 0:
        for side in sides:
            side.reap()
        time.sleep(min(left, 0.05))


def kill_service(side: Side) -> tuple[float, float]:
    """SIGKILL the service, its keeper noted for reaping: (monotonic, wall) of the kill."""
    pid, keeper = pid_in(side.dir / "service.pid"), pid_in(side.dir / "keeper.pid")
    if keeper is not None:
        side.keepers.add(keeper)
    side.log_at = side.log.stat().st_size if side.log is not None and side.log.exists() else 0
    wall, killed = time.time(), time.monotonic()
    kill(pid)
    side.last_kill = killed
    return killed, wall


def follow(side: Side, killed: float, limit: float) -> tuple[float | None, float | None]:
    """Poll every 20 ms from the kill: the first failed poll, and the first answer after it."""
    down = back = None
    tick = killed
    while time.monotonic() - killed < limit:
        ok = answers(side.port)
        now = time.monotonic()
        if not ok and down is None:
            down = now
        elif ok and down is not None:
            back = now
            break
        side.reap()
        tick += POLL
        time.sleep(max(0.0, tick - time.monotonic()))
    return down, back


def phase_at(side: Side, killed: float) -> float | None:
    before = [p for p in stamps(side.dir / "probes") if p <= killed]
    return killed - before[-1] if before else None


def trial(side: Side, number: int, others: list[Side], spacing: float) -> Trial:
    """One kill, at a random phase, no sooner than `spacing` after this service's previous kill."""
    wait_for(lambda: answers(side.port), 30, side)
    sleep_until(max(time.monotonic(), side.last_kill + spacing) + random.uniform(0, INTERVAL), others)
    starts_before = len(stamps(side.dir / "starts"))
    killed, wall = kill_service(side)
    down, back = follow(side, killed, GIVE_UP)
    phase = phase_at(side, killed)
    starts = stamps(side.dir / "starts")[starts_before:]
    restarted = starts[0] - killed if starts else None
    result = Trial(
        side.tool,
        number,
        phase,
        down - killed if down is not None else None,
        restarted,
        back - killed if back is not None else None,
        len(starts),
        int((restarted + phase) / INTERVAL) if restarted is not None and phase is not None else None,
    )
    if back is None:
        result.invalid = f"not back within {GIVE_UP:g} s"
    elif not starts:
        result.invalid = "no start command ran"
    else:
        result.invalid = side.acted(wall)
        if result.invalid is None and result.cycles is not None and result.cycles < FALL:
            result.invalid = f"restarted before {FALL} probes could fail"
        if result.cycles is not None and result.cycles > FALL:
            result.note = side.why_late(wall)
    print(result.line(), flush=True)
    return result


# --- the two watchers ---------------------------------------------------------------------------------------


def start_clusterwatch(side: Side, flapping: FlappingOptions) -> None:
    db, log = side.tmp / "cw.db", side.tmp / "cw.log"
    config = {
        "interval": f"{INTERVAL:g}s",
        "retry_interval": f"{INTERVAL:g}s",  # the second probe one cycle later, as Monit's `for 2 cycles`
        "fall": FALL,
        "rise": 1,
        "flapping": flapping.model_dump(mode="json"),
        "store": {"path": str(db)},
        "web": {"enabled": False},
        "checks": [
            {
                "name": "svc",
                "kind": "http",
                "url": f"http://127.0.0.1:{side.port}/",
                "restart": {"command": side.start_argv, "max_attempts": 100, "verify_timeout": "10s"},
            }
        ],
    }
    (side.tmp / "cw.yaml").write_text(yaml.safe_dump(config))
    with open(log, "wb") as out:
        side.proc = subprocess.Popen(
            [sys.executable, "-m", "clusterwatch", "run", "-c", str(side.tmp / "cw.yaml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=side.tmp,
        )

    def acted(wall: float) -> str | None:
        """The store says: FALL failed probes after the kill, the hard critical state, then the restart."""

        def rows() -> tuple[int, float | None, float | None, int]:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                action = conn.execute(
                    "SELECT MIN(started) FROM actions WHERE entity = 'svc' AND started > ?", (wall,)
                ).fetchone()[0]
                critical = conn.execute(
                    "SELECT MIN(ts) FROM events WHERE entity = 'svc' AND kind = 'state_change' AND new = 'critical'"
                    " AND ts > ? AND ts <= ?",
                    (wall, action if action is not None else wall + GIVE_UP),
                ).fetchone()[0]
                # the probes that made it hard critical (the healer's own look just before acting is not one)
                failed = conn.execute(
                    "SELECT COUNT(*) FROM observations WHERE entity = 'svc' AND status != 'ok' AND ts > ? AND ts <= ?",
                    (wall, critical if critical is not None else wall),
                ).fetchone()[0]
                flapping = conn.execute(
                    "SELECT COUNT(*) FROM events WHERE entity = 'svc' AND kind = 'flapping_started' AND ts > ?", (wall,)
                ).fetchone()[0]
            finally:
                conn.close()
            return failed, critical, action, flapping

        with contextlib.suppress(TimeoutError):  # the store's writer batches: give it a moment
            wait_for(lambda: None not in rows()[1:3], 10, side)
        failed, critical, action, flapping = rows()
        if flapping:
            return "the flapping guard was on"
        if action is None:
            return "no restart in clusterwatch's store"
        if critical is None:
            return "no hard critical state before the restart"
        if failed != FALL:
            return f"{failed} failed probes before the restart, not {FALL}"
        return None

    def why_late(wall: float) -> str:
        """Where the time went, by clusterwatch's own stamps (its wall clock; a diagnosis, not a timing)."""
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            critical = conn.execute(
                "SELECT MIN(ts) FROM events WHERE entity = 'svc' AND kind = 'state_change' AND new = 'critical'"
                " AND ts > ?",
                (wall,),
            ).fetchone()[0]
            attempt = conn.execute(
                "SELECT MIN(started) FROM actions WHERE entity = 'svc' AND started > ?", (wall,)
            ).fetchone()[0]
        finally:
            conn.close()
        if critical is None or attempt is None:
            return ""
        return (
            f"(clusterwatch's own stamps: hard critical +{critical - wall:.2f} s, attempt recorded "
            f"+{attempt - wall:.2f} s: the rest is its way from the attempt to the command's exec)"
        )

    side.acted = acted
    side.why_late = why_late
    side.log = log


def start_monit(side: Side) -> None:
    log = side.tmp / "monit.log"
    program = " ".join(side.start_argv)
    if any(ch.isspace() for part in side.start_argv for ch in part):
        raise SystemExit(f"Monit splits its program on spaces: {program!r}")
    control = side.tmp / "monitrc"
    control.write_text(f"""\
set daemon {INTERVAL:g}
set logfile {log}
set pidfile {side.tmp / "monit.pid"}
set statefile {side.tmp / "monit.state"}
set idfile {side.tmp / "monit.id"}
check host svc with address 127.0.0.1
  start program = "{program}" with timeout 10 seconds
  restart program = "{program}" with timeout 10 seconds
  if failed port {side.port} protocol http for {FALL} cycles then restart
""")
    control.chmod(0o600)
    side.proc = subprocess.Popen(
        ["monit", "-c", str(control), "-I"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=side.tmp
    )
    side.log = log
    failed = re.compile(rf"^\[[^]]+\] (\w+)\s*: 'svc' failed protocol test \[HTTP\] at \[127\.0\.0\.1\]:{side.port}\b")
    restart = re.compile(r"^\[[^]]+\] \w+\s*: 'svc' restart: '")

    def acted(wall: float) -> str | None:
        """Monit's log says: the port rule failed (logged once, when `for N cycles` is met), then it restarted.
        Its stamps are whole seconds: how many cycles it took is seen on the bench's clock (`Trial.cycles`)."""

        def lines() -> list[str]:
            with open(log, "rb") as f:
                f.seek(side.log_at)
                return f.read().decode("utf-8", "replace").splitlines()

        with contextlib.suppress(TimeoutError):
            wait_for(lambda: any(restart.match(line) for line in lines()), 10, side)
        seen = lines()
        at = next((i for i, line in enumerate(seen) if restart.match(line)), None)
        if at is None:
            return "no restart in Monit's log"
        if not any(failed.match(line) for line in seen[:at]):
            return "Monit's restart did not follow its port rule's failure"
        return None

    side.acted = acted


# --- the race, and the flapping trial ------------------------------------------------------------------------


def alive(sides: list[Side]) -> None:
    for side in sides:
        if side.proc is not None and side.proc.poll() is not None:
            tail = side.log.read_text()[-3000:] if side.log is not None and side.log.exists() else ""
            raise SystemExit(f"{side.tool} exited ({side.proc.returncode}) during the bench:\n{tail}")


def race(sides: list[Side], trials: int, spacing: float) -> list[Trial]:
    """Interleaved: one trial of each side in turn, each side's kills `spacing` apart."""
    print(HEADER, flush=True)
    results: list[Trial] = []
    for _ in range(trials):
        for side in sides:
            if results:
                sleep_until(time.monotonic() + SETTLE, sides)
            alive(sides)
            results.append(trial(side, len(results) + 1, sides, spacing))
    return results


@dataclass
class FlapKill:
    at: float  # seconds since the flapping trial began
    restarted: float | None  # the start command, after this kill
    back: float | None  # serving again, after this kill


def flapping_trial(
    side: Side, sides: list[Side], spacing: float, kills: int, flapping: Callable[[], bool] | None = None
) -> list[FlapKill]:
    """A kill FLAP_EVERY s (plus a random phase) after the previous one while the service serves, up to
    `kills`. A kill healed only after FLAP_HELD s while the watcher says it sees flapping ends the kills: the
    guard held it back. A slow heal without that (a busy host) is no reason to stop."""
    wait_for(lambda: answers(side.port), 30, side)
    sleep_until(max(time.monotonic(), side.last_kill + spacing) + random.uniform(0, INTERVAL), sides)
    begun = time.monotonic()
    done: list[FlapKill] = []
    while len(done) < kills:
        before = len(stamps(side.dir / "starts"))
        killed, _ = kill_service(side)
        _, back = follow(side, killed, 2 * GIVE_UP)
        starts = stamps(side.dir / "starts")[before:]
        kill = FlapKill(
            killed - begun, starts[0] - killed if starts else None, back - killed if back is not None else None
        )
        done.append(kill)
        late = kill.restarted is None or kill.restarted > FLAP_HELD
        print(
            f"  {side.tool:12s} kill {len(done)} at {kill.at:5.1f} s: "
            + (f"restarted +{kill.restarted:.2f} s" if kill.restarted is not None else "no restart")
            + (f", back +{kill.back:.2f} s" if kill.back is not None else f", not back within {2 * GIVE_UP:g} s")
            + (" (late)" if late else ""),
            flush=True,
        )
        if back is None or (late and flapping is not None and flapping()):
            break
        sleep_until(max(killed + FLAP_EVERY, back + FLAP_SETTLE) + random.uniform(0, INTERVAL), sides)
    return done


def flapping_words(db: Path, since: float) -> list[str]:
    """clusterwatch's own words since the trial began: flapping, and restarts that failed (their times unused)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT message FROM events WHERE entity = 'svc' AND kind IN ('flapping_started', 'flapping_stopped',"
            " 'remediation_failed', 'remediation_exhausted') AND ts > ? ORDER BY ts",
            (since,),
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def flapping(cw: Side, monit: Side, sides: list[Side], spacing: float) -> None:
    print(
        f"\nflapping guard (a separate trial, not in the race): each service killed every {FLAP_EVERY:g}-"
        f"{FLAP_EVERY + INTERVAL:g} s ({FLAP_SETTLE:g} s or more after it is back), until a restart comes later "
        f"than {FLAP_HELD:g} s while clusterwatch says the service flaps",
        flush=True,
    )
    wall = time.time()
    db = cw.tmp / "cw.db"
    ours = flapping_trial(cw, sides, spacing, 15, lambda: any("is flapping" in w for w in flapping_words(db, wall)))
    time.sleep(1.0)  # the store's writer batches
    words = flapping_words(db, wall)
    for said in words:
        print(f"  clusterwatch said: {said}")
    last = ours[-1]
    held = last.restarted is None or last.restarted > FLAP_HELD
    if held and any("is flapping" in w for w in words):
        before = [k.restarted for k in ours[:-1] if k.restarted is not None]
        usual = f"{statistics.median(before):.1f} s" if before else "a heal"
        when = f"not until {last.restarted:.1f} s after it" if last.restarted is not None else "not at all"
        print(
            f"  -> the flapping guard held restarts back: {len(before)} kills restarted after {usual} (median), "
            f"then kill {len(ours)} {when}, once the service had settled"
        )
    else:
        print(f"  -> the flapping guard did NOT hold restarts back in {len(ours)} kills")
    theirs = flapping_trial(monit, sides, spacing, len(ours))
    healed = [k.restarted for k in theirs if k.restarted is not None]
    median = f" after {statistics.median(healed):.1f} s (median)" if healed else ""
    print(
        f"  -> Monit restarted after {len(healed)} of {len(theirs)} kills{median}: no flapping rule is configured "
        "for it (its own would be `if N restarts within M cycles then unmonitor`)"
    )


# --- the tables ------------------------------------------------------------------------------------------------


LAST_PROBE = "restart, from last probe"


def p90(values: list[float]) -> float:
    return values[0] if len(values) == 1 else statistics.quantiles(values, n=10, method="inclusive")[-1]


def summary(results: list[Trial]) -> dict[str, dict[str, list[float]]]:
    tools = list(dict.fromkeys(r.tool for r in results))
    figures: dict[str, dict[str, list[float]]] = {}
    print("\n  tool          valid  seconds after the kill      min  median     p90     max")
    for tool in tools:
        valid = [r for r in results if r.tool == tool and not r.invalid]
        total = sum(r.tool == tool for r in results)
        columns = {
            "restart ran": [r.restarted for r in valid if r.restarted is not None],
            "back (recover)": [r.back for r in valid if r.back is not None],
            "start->back": [r.back - r.restarted for r in valid if r.back is not None and r.restarted is not None],
            # phase-free: FALL intervals of probing, then the watcher's own way to its action
            LAST_PROBE: [r.restarted + r.phase for r in valid if r.restarted is not None and r.phase is not None],
        }
        figures[tool] = columns
        for i, (label, values) in enumerate(columns.items()):
            count = f"{len(valid):2d}/{total:<2d}" if i == 0 else "     "
            shown = (
                f"{min(values):6.2f}  {statistics.median(values):6.2f}  {p90(values):6.2f}  {max(values):6.2f}"
                if values
                else "     -       -       -       -"
            )
            print(f"  {tool if i == 0 else '':12s}  {count}  {label:24s} {shown}")
    return figures


def ratios(figures: dict[str, dict[str, list[float]]]) -> None:
    ours, theirs = figures.get("clusterwatch", {}), figures.get("monit", {})
    for label in ("restart ran", "back (recover)", LAST_PROBE):
        a, b = ours.get(label) or [], theirs.get(label) or []
        if not a or not b:
            print(f"  clusterwatch / Monit, {label}: no valid trials on one side")
            continue
        parts = [
            f"{name} {f(a) / f(b):.2f}x"
            for name, f in (("min", min), ("median", statistics.median), ("p90", p90), ("max", max))
        ]
        print(f"  clusterwatch / Monit, {label}: " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10, help="trials per tool")
    parser.add_argument("--no-flapping", action="store_true", help="skip the flapping trial")
    args = parser.parse_args()
    if not shutil.which("monit"):
        raise SystemExit("monit is not installed (apt-get install monit)")
    become_subreaper()
    guard = FlappingOptions()  # clusterwatch's defaults, written into its config below
    spacing = (FLAP_WINDOW + 5) * INTERVAL  # a window of observations, plus the heal's few
    with tempfile.TemporaryDirectory(prefix="healing-vs-monit-") as name:
        tmp = Path(name)
        cw, monit = Side("clusterwatch", tmp), Side("monit", tmp)
        sides = [cw, monit]
        try:
            for side in sides:
                side.start_service()
            start_clusterwatch(cw, guard)
            start_monit(monit)
            for side in sides:  # both watchers probing before the first kill
                try:
                    wait_for(lambda s=side: len(stamps(s.dir / "probes")) >= 3, 60, side)
                except TimeoutError:
                    alive(sides)
                    tail = side.log.read_text()[-3000:] if side.log is not None and side.log.exists() else ""
                    raise SystemExit(f"{side.tool} did not probe its service within 60 s:\n{tail}") from None
            minutes = (args.trials * spacing + (0 if args.no_flapping else 2 * spacing + 40)) / 60
            print(
                f"healing a killed HTTP service: {args.trials} trials per tool, interleaved, about {minutes:.0f} min\n"
                f"  rule, both: an HTTP probe every {INTERVAL:g} s failing {FALL} times in a row, then the same "
                "start command (no shell)\n"
                f"  (clusterwatch with retry_interval: {INTERVAL:g}s, as Monit's cycles; its default, a tenth of the "
                "interval, would confirm the failure 0.1 s after the first)\n"
                f"  kills of one service {spacing:g} s apart plus a random 0-{INTERVAL:g} s: longer than "
                f"clusterwatch's flapping window ({FLAP_WINDOW} observations, high {guard.high:g} %, "
                f"low {guard.low:g} %)\n"
                f"  times: the bench's own polls every {POLL * 1000:.0f} ms and the start command's stamp, "
                "one monotonic clock",
                flush=True,
            )
            results = race(sides, args.trials, spacing)
            ratios(summary(results))
            if not args.no_flapping:
                flapping(cw, monit, sides, spacing)
        finally:
            for side in sides:
                side.stop()


if __name__ == "__main__":
    main()
