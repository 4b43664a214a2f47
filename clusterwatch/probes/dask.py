"""Dask: the scheduler's port and its HTTP endpoints, and every worker by name.

Uses `/health`, `/json/identity.json`, `/json/counts.json` and `/metrics` rather than a
`distributed.Client`, which would have to match the cluster's Dask version. Two of the
scheduler's pages stand in where its JSON falls short:

- `/json/identity.json` answers 500 whenever a worker's last heartbeat reported tasks it
  finished (their timings are keyed by tuples, which JSON cannot hold): in a busy cluster,
  nearly always. The workers are then read from `/info/main/workers.html`, its table of them.
- with `stuck_after`, `/info/worker/<address>.html` lists the tasks a busy worker is
  processing: a worker whose tasks stay the same, none leaving, for that long is wedged
  (dask/distributed #8537: nothing in Dask brings such a worker back).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import html
import itertools
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from clusterwatch.config.schema import DaskCheck, ExpectedWorker
from clusterwatch.model import Group, Observation, Status, one_line
from clusterwatch.probes.base import (
    HttpAnswer,
    ProbeContext,
    Unreachable,
    down,
    fetch,
    human_bytes,
    observation,
    tcp_connect,
)
from clusterwatch.probes.values import finite, label

HINT = "is `dask scheduler` running?"
_COUNTS = {
    "erred": "tasks_erred",
    "processing": "tasks_processing",
    "waiting": "tasks_waiting",
    "unrunnable": "tasks_unrunnable",
    "memory": "tasks_in_memory",
    "tasks": "tasks_total",
    "clients": "clients",
}
# The samples read from /metrics; every other line of the page is skipped before parsing, so a
# page of megabytes costs a string scan, not seconds of the Prometheus parser on the event loop.
_SAMPLES = (
    "dask_scheduler_workers",
    "dask_scheduler_tasks",
    "dask_scheduler_clients",
    "dask_scheduler_tick_duration_maximum_seconds",
)
_MAX_SAMPLE_LINES, _MAX_LINE = 1000, 1000  # a real scheduler writes a few dozen such lines of under 200 characters
_MAX_TASK_STATES = 20
_MAX_WORKERS = 5000  # entities from one answer: more is an answer built to swamp the monitor
_MAX_HOSTS_SHOWN = 50  # hosts in the details (the busiest first)
# Stuck workers: pages asked per round, at once, and what is remembered of each worker between rounds.
_MAX_PAGES, _PAGES_AT_ONCE = 100, 8
_MAX_KEYS_READ, _MAX_KEYS_KEPT, _MAX_CHECKS = 2000, 256, 200


async def probe(check: DaskCheck, ctx: ProbeContext) -> list[Observation]:
    timeout = ctx.timeout_for(check)
    loop = asyncio.get_running_loop()
    # The runner gives this probe twice its timeout (a connect, then the HTTP endpoints): the pages asked
    # after those (the table of workers, busy workers' pages) get what is left of it, never more.
    deadline = loop.time() + 2 * timeout + 0.5
    host, port = check.scheduler_host_port
    nodes = _nodes_by_host(ctx)
    try:
        port_ms = await tcp_connect(host, port, timeout)
    except Unreachable as exc:
        return [
            down(check, check.scheduler, f"scheduler port: {exc}", _scheduler_hint(check)),
            *_unknown_expected(check, "scheduler unreachable", nodes),
        ]

    base = check.dashboard_url

    async def get(path: str) -> HttpAnswer | Unreachable:
        left = min(timeout, deadline - loop.time())
        if left <= 0.05:
            return Unreachable(f"no time left for {path} within this probe's {2 * timeout:g}s")
        try:
            return await fetch(ctx.http, base + path, timeout=left, max_body=check.max_body)
        except Unreachable as exc:
            return exc

    health, identity, counts, metrics = await asyncio.gather(
        get("/health"), get("/json/identity.json"), get("/json/counts.json"), get("/metrics")
    )

    source = "identity.json"
    if isinstance(identity, HttpAnswer) and identity.status >= 500:
        # Dask's own fault while tasks finish (see the module's docstring): its table of workers says enough.
        table = await get("/info/main/workers.html")
        info = _workers_table(table) if isinstance(table, HttpAnswer) and table.status == 200 else None
        if info is not None:
            source = f"workers.html (identity.json: HTTP {identity.status})"
            identity = table
    else:
        info = None
    if info is None and (isinstance(identity, Unreachable) or identity.status != 200):
        reason = identity if isinstance(identity, Unreachable) else f"HTTP {identity.status}"
        return [
            observation(
                check,
                Status.WARNING,
                f"scheduler port open but its HTTP endpoint {base} failed ({reason}): workers not visible"
                " — start the scheduler with --dashboard-address",
                target=check.scheduler,
                latency_ms=port_ms,
            ),
            *_unknown_expected(check, "scheduler HTTP endpoint unreachable", nodes),
        ]
    if info is None:
        try:
            info = identity.json()
            if not isinstance(info, dict) or not isinstance(info.get("workers", {}), dict):
                raise Unreachable("identity.json has no `workers` mapping")
        except Unreachable as exc:
            return [
                observation(
                    check,
                    Status.CRITICAL,
                    f"unexpected answer from {base}/json/identity.json: {exc}",
                    target=check.scheduler,
                    latency_ms=port_ms,
                ),
                *_unknown_expected(check, "the scheduler's answer is unreadable", nodes),
            ]

    now = info["now"] if "now" in info else _reference_time(identity, info)
    workers = info.get("workers") if isinstance(info.get("workers"), dict) else {}
    every = [(addr, w) for addr, w in workers.items() if isinstance(w, dict)]
    listed = every[:_MAX_WORKERS]
    if check.stuck_after is not None:
        stuck = await _stuck(check, get, listed, now)
    else:
        stuck = {}
        _STREAKS.pop(check.name, None)
    worker_obs = [_worker(check, addr, w, now, nodes, stuck.get(addr)) for addr, w in listed]
    missing = _missing(check, dict(listed), nodes)
    scheduler = _scheduler(check, info, health, counts, metrics, len(every), port_ms)
    scheduler.details["workers_from"] = source
    _per_host(scheduler, listed)
    if len(every) > _MAX_WORKERS:
        scheduler.message += f"; only the first {_MAX_WORKERS} workers are shown one by one"
    return [scheduler, *worker_obs, *missing]


def _scheduler_hint(check: DaskCheck) -> str:
    """Nothing listens: the check's own restart when it has one for the whole cluster (not per worker)."""
    fix = check.fix_hint()
    return f"{HINT} (restart: {fix})" if fix else HINT


def _restart_it(check: DaskCheck, worker: str) -> str:
    """How to restart one worker: the check's own restart for it, else in words."""
    fix = check.fix_hint(worker)
    return f"restart it: {fix}" if fix else "restart it"


def _nodes_by_host(ctx: ProbeContext) -> dict[str, str]:
    """Configured nodes by their host, so a worker's entity knows its node (a restart acts there)."""
    return {n.host: n.name for n in ctx.config.nodes if n.host}


def _host_of(address: str, w: dict[str, Any]) -> str:
    return label(w.get("host") or address.split("://", 1)[-1].rsplit(":", 1)[0], 200)


def _reference_time(answer: HttpAnswer, info: dict[str, Any]) -> float:
    """The scheduler's "now", so a clock skew between machines can't fake a hung worker.

    The HTTP Date header has one-second resolution; the freshest heartbeat refines it.
    """
    candidates = [time.time()]
    date = answer.headers.get("Date")
    if date:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            candidates = [email.utils.parsedate_to_datetime(date).timestamp() + 0.5]
    workers = info.get("workers") if isinstance(info.get("workers"), dict) else {}
    seen = [finite(w.get("last_seen")) for w in itertools.islice(workers.values(), _MAX_WORKERS) if isinstance(w, dict)]
    return max([*candidates, *(s for s in seen if s is not None)])


def _worker(
    check: DaskCheck, address: str, w: dict[str, Any], now: float, nodes: dict[str, str], stuck: _Judged | None
) -> Observation:
    name = label(w.get("name", address))
    m = w.get("metrics") if isinstance(w.get("metrics"), dict) else {}
    metrics: dict[str, float] = {}
    problems: list[tuple[Status, str]] = []
    details: dict[str, Any] = {"host": _text(w.get("host")), "nanny": _text(w.get("nanny"))}

    last_seen = finite(w.get("last_seen"))
    if last_seen is not None:
        age = max(0.0, now - last_seen)
        metrics["heartbeat_age_seconds"] = round(age, 2)
        if age >= check.heartbeat_critical:
            problems.append(
                (
                    Status.CRITICAL,
                    f"no heartbeat for {age:.0f}s — hung (stopped, deadlocked or swapping)? {_restart_it(check, name)}",
                )
            )
        elif age >= check.heartbeat_warning:
            problems.append((Status.WARNING, f"heartbeat {age:.1f}s late"))

    state = label(w.get("status", "running"), 40)
    if state == "paused":
        problems.append((Status.WARNING, "paused by Dask: memory above its pause threshold"))
    elif state not in ("running", "init"):
        problems.append((Status.WARNING, f"worker status is {state!r}"))

    memory, limit = finite(m.get("memory")), finite(w.get("memory_limit"))
    if memory is not None:
        metrics["memory_bytes"] = memory
    if limit is not None and limit > 0:
        metrics["memory_limit_bytes"] = limit
        percent = None if memory is None else finite(100.0 * (memory / limit))
        if percent is not None:
            metrics["memory_percent"] = round(percent, 1)
            if percent >= check.memory_critical:
                problems.append((Status.CRITICAL, f"memory {percent:.0f}% of its {human_bytes(limit)} limit"))
            elif percent >= check.memory_warning:
                problems.append((Status.WARNING, f"memory {percent:.0f}% of its {human_bytes(limit)} limit"))
    for key, metric in (
        ("cpu", "cpu_percent"),
        ("num_fds", "open_fds"),
        ("event_loop_interval", "event_loop_interval_seconds"),
    ):
        value = finite(m.get(key))
        if value is not None:
            metrics[metric] = value
    threads = finite(w.get("nthreads"))
    if threads is not None:
        metrics["threads"] = threads
    tasks = m.get("task_counts")
    if isinstance(tasks, dict):
        for state_name, count in list(tasks.items())[:_MAX_TASK_STATES]:
            if finite(count) is not None:
                metrics[f"tasks_{label(state_name, 40)}"] = finite(count)  # type: ignore[assignment]
    processing = finite(w.get("processing"))  # from the scheduler's table of workers, when that is the source
    if processing is not None:
        metrics["tasks_processing"] = processing
    if stuck is not None:
        metrics["no_progress_seconds"] = round(stuck.seconds, 1)
        details["processing_sample"] = list(stuck.sample)
        if stuck.stuck:
            problems.append(
                (
                    Status.WARNING,
                    f"stuck: {stuck.executing} task(s) executing and none finished for {stuck.seconds:.0f}s"
                    f" (task prefix {', '.join(stuck.prefixes) or '?'}) while its heartbeat is fine — nothing in"
                    f" Dask brings a wedged worker back; {_restart_it(check, name)}",
                )
            )

    status = Status.worst([s for s, _ in problems]) if problems else Status.OK
    if problems:
        message = "; ".join(text for _, text in sorted(problems, key=lambda p: -p[0].severity))
    else:
        mem = f", memory {metrics['memory_percent']:.0f}%" if "memory_percent" in metrics else ""
        message = f"running, {'?' if threads is None else f'{threads:.0f}'} thread(s){mem}"
    return observation(
        check,
        status,
        message,
        name=f"{check.name}/{name}",
        target=label(address, 200),
        group=Group.WORKERS,
        metrics=metrics,
        details={**details, "status": state, "node_known": _host_of(address, w) in nodes},
        node=nodes.get(_host_of(address, w)),
    )


def _text(value: object) -> str | None:
    """A short string the scheduler reported (a host, an id), or None."""
    return None if value is None else label(value, 200)


def _matches(expected: ExpectedWorker, address: str, w: dict[str, Any]) -> bool:
    if label(w.get("name")) == expected.name:
        return True
    if expected.host:
        host = label(w.get("host") or address.split("://", 1)[-1].rsplit(":", 1)[0])
        return host == expected.host
    return False


def _missing(check: DaskCheck, workers: dict[str, Any], nodes: dict[str, str]) -> list[Observation]:
    out = []
    for expected in check.expect_workers:
        if any(_matches(expected, a, w) for a, w in workers.items() if isinstance(w, dict)):
            continue
        where = f" ({expected.host})" if expected.host and expected.host != expected.name else ""
        fix = check.fix_hint(expected.name)
        out.append(
            observation(
                check,
                Status.CRITICAL,
                f"worker {expected.name}{where} is not connected to the scheduler — "
                + (f"start it: {fix}" if fix else f"start it there with `dask worker {check.scheduler}`"),
                name=f"{check.name}/{expected.name}",
                target=expected.host or expected.name,
                group=Group.WORKERS,
                details={"node_known": expected.host in nodes},
                node=nodes.get(expected.host) if expected.host else None,
            )
        )
    return out


def _unknown_expected(check: DaskCheck, why: str, nodes: dict[str, str]) -> list[Observation]:
    return [
        observation(
            check,
            Status.UNKNOWN,
            f"unknown: {why}",
            name=f"{check.name}/{e.name}",
            target=e.host or e.name,
            group=Group.WORKERS,
            details={"node_known": e.host in nodes},
            node=nodes.get(e.host) if e.host else None,
        )
        for e in check.expect_workers
    ]


def _scheduler(
    check: DaskCheck,
    info: dict[str, Any],
    health: HttpAnswer | Unreachable,
    counts: HttpAnswer | Unreachable,
    metrics_answer: HttpAnswer | Unreachable,
    n_workers: int,
    port_ms: float,
) -> Observation:
    problems: list[tuple[Status, str]] = []
    metrics: dict[str, float] = {"workers": float(n_workers)}
    details: dict[str, Any] = {"id": _text(info.get("id")), "address": _text(info.get("address"))}

    if isinstance(health, Unreachable) or health.status != 200 or health.text.strip() != "ok":
        said = health if isinstance(health, Unreachable) else f"HTTP {health.status} {health.text[:40]!r}"
        problems.append((Status.CRITICAL, f"/health did not say ok ({said})"))

    for key in ("total_threads", "total_memory"):
        value = finite(info.get(key))
        if value is not None:
            metrics[key] = value

    if n_workers < check.min_workers:
        problems.append((Status.CRITICAL, f"{n_workers} worker(s) connected, at least {check.min_workers} needed"))

    if isinstance(counts, HttpAnswer) and counts.status == 200:
        try:
            data = counts.json()
        except Unreachable:
            data = None  # the counts are a nicety: the scheduler's health is /health and identity.json
        if isinstance(data, dict):
            for key, metric in _COUNTS.items():
                value = finite(data.get(key))
                if value is not None:
                    metrics[metric] = value

    families = _parse_metrics(metrics_answer)
    if families is None:
        details["metrics"] = "not available (no prometheus_client in the scheduler's environment)"
    else:
        details["metrics"] = "available"
        for key, value in families.items():
            metrics.setdefault(key, value)

    erred = metrics.get("tasks_erred", 0)
    if erred:
        problems.append((Status.WARNING, f"{erred:.0f} erred task(s)"))
    unrunnable = metrics.get("tasks_unrunnable", 0) or metrics.get("tasks_no-worker", 0)
    if unrunnable:
        problems.append((Status.WARNING, f"{unrunnable:.0f} task(s) no worker can run"))

    status = Status.worst([s for s, _ in problems]) if problems else Status.OK
    summary = (
        f"{n_workers} worker(s) (min {check.min_workers}), {metrics.get('total_threads', 0):.0f} threads,"
        f" {erred:.0f} erred task(s)"
    )
    message = "; ".join(text for _, text in sorted(problems, key=lambda p: -p[0].severity)) if problems else summary
    if problems and n_workers >= check.min_workers:
        message += f" ({n_workers} worker(s))"
    return observation(
        check, status, message, target=check.scheduler, latency_ms=port_ms, metrics=metrics, details=details
    )


def _executing(w: dict[str, Any]) -> int:
    """Tasks a worker is running: its own count when it sent one, else the scheduler's count of the tasks
    processing there, of which at most one per thread runs."""
    m = w.get("metrics") if isinstance(w.get("metrics"), dict) else {}
    counts = m.get("task_counts") if isinstance(m.get("task_counts"), dict) else None
    if counts is not None:
        value = finite(counts.get("executing", 0))
    else:
        value, threads = finite(w.get("processing")), finite(w.get("nthreads"))
        if value is not None and threads is not None and threads > 0:
            value = min(value, threads)
    return int(value) if value is not None and value > 0 else 0


def _per_host(scheduler: Observation, listed: list[tuple[str, dict[str, Any]]]) -> None:
    """Workers per host as the scheduler knows them: `dask worker --nworkers N` is N workers on one
    host, while that host's worker dashboard and its /metrics speak for only one of them (#8544)."""
    hosts: dict[str, list[float]] = {}  # host -> [workers, threads, tasks executing]
    for address, w in listed:
        entry = hosts.setdefault(_host_of(address, w), [0, 0, 0])
        entry[0] += 1
        entry[1] += finite(w.get("nthreads")) or 0
        entry[2] += _executing(w)
    if not hosts:
        return
    busiest = sorted(hosts.items(), key=lambda kv: (-kv[1][0], kv[0]))
    scheduler.metrics["hosts"] = len(hosts)
    scheduler.metrics["max_workers_per_host"] = busiest[0][1][0]
    scheduler.details["workers_per_host"] = {
        host: {"workers": n, "threads": threads, "executing": executing}
        for host, (n, threads, executing) in busiest[:_MAX_HOSTS_SHOWN]
    }
    shared = [(host, int(v[0])) for host, v in busiest if v[0] > 1]
    text = f"{len(hosts)} host{'s' if len(hosts) > 1 else ''}"
    if shared:
        text += " (" + ", ".join(f"{n} workers on {host}" for host, n in shared[:3])
        text += f", {len(shared) - 3} more hosts with several)" if len(shared) > 3 else ")"
    scheduler.message = one_line(f"{scheduler.message}; {text}")


@dataclass(slots=True)
class _Streak:
    """One busy worker's run of rounds in which none of its processing tasks left it."""

    since: float  # monotonic: when it began (a task had left, or the worker was first seen busy)
    keys: frozenset[int]  # hashes of the task keys seen processing there since (bounded)
    prefixes: tuple[str, ...]  # task prefixes of its first keys in the scheduler's order: those executing
    sample: tuple[str, ...]  # a few of those keys, for the details


@dataclass(slots=True)
class _Judged:
    seconds: float  # without a task leaving
    executing: int
    stuck: bool
    prefixes: tuple[str, ...]
    sample: tuple[str, ...]


# What is remembered between rounds: per check, per busy worker, one _Streak of bounded size; a worker
# no longer busy is forgotten at the next round, and so is a check no longer watching for this.
_STREAKS: dict[str, dict[str, _Streak]] = {}
_PROCESSING = re.compile(r'<h2 class="subtitle">\s*Processing\s*</h2>')
_TASK_LINK = re.compile(r'href="\.\./task/([^"]*)\.html"')


async def _stuck(
    check: DaskCheck, get: Any, listed: list[tuple[str, dict[str, Any]]], now: float
) -> dict[str, _Judged]:
    """Busy workers whose processing tasks stayed the same, none leaving, for `stuck_after`.

    Only workers executing tasks with a fresh heartbeat are asked about (a late heartbeat is its own,
    worse, finding). A task that leaves a worker finished there, or was moved: either way, it moves."""
    assert check.stuck_after is not None
    busy: list[tuple[str, int]] = []
    for address, w in listed:
        last_seen, executing = finite(w.get("last_seen")), _executing(w)
        fresh = last_seen is not None and now - last_seen < check.heartbeat_warning
        if executing and fresh and label(w.get("status", "running"), 40) == "running":
            busy.append((address, executing))
    busy = busy[:_MAX_PAGES]
    gate = asyncio.Semaphore(_PAGES_AT_ONCE)

    async def page(address: str) -> HttpAnswer | Unreachable:
        async with gate:
            answer: HttpAnswer | Unreachable = await get(f"/info/worker/{urllib.parse.quote(address, safe='')}.html")
            return answer

    pages = await asyncio.gather(*(page(address) for address, _ in busy))
    before, after, judged = _STREAKS.pop(check.name, {}), {}, {}
    clock = time.monotonic()
    for (address, executing), answer in zip(busy, pages, strict=True):
        keys, previous = _processing_keys(answer), before.get(address)
        if keys is None:  # no page: nothing new is known, and nothing is judged on old news
            if previous is not None:
                after[address] = previous
            continue
        if not keys:
            continue  # the scheduler has nothing processing there (yet): nothing to wait for
        hashes = [hash(key) for key in keys]
        if previous is None or not previous.keys <= set(hashes):
            prefixes = tuple(dict.fromkeys(task_prefix(key) for key in keys[:executing]))[:3]
            streak = _Streak(
                clock, frozenset(hashes[:_MAX_KEYS_KEPT]), prefixes, tuple(label(k, 120) for k in keys[:3])
            )
        else:
            room = max(0, _MAX_KEYS_KEPT - len(previous.keys))
            new = [h for h in hashes if h not in previous.keys][:room]
            streak = _Streak(previous.since, previous.keys | frozenset(new), previous.prefixes, previous.sample)
        after[address] = streak
        seconds = clock - streak.since
        judged[address] = _Judged(seconds, executing, seconds >= check.stuck_after, streak.prefixes, streak.sample)
    _STREAKS[check.name] = after
    while len(_STREAKS) > _MAX_CHECKS:  # checks renamed by reloads: the oldest go
        del _STREAKS[next(iter(_STREAKS))]
    return judged


def _processing_keys(answer: HttpAnswer | Unreachable) -> list[str] | None:
    """The task keys the scheduler's page of one worker lists as processing there (in its order), or None."""
    if isinstance(answer, Unreachable) or answer.status != 200:
        return None
    text = answer.text
    heading = _PROCESSING.search(text)
    if heading is None:
        return None
    links = itertools.islice(_TASK_LINK.finditer(text, heading.end()), _MAX_KEYS_READ)
    return [urllib.parse.unquote_plus(link.group(1)) for link in links]


_HEX_WORD = re.compile(r"[a-f]+")
_TOKEN = re.compile(r"[a-f0-9]{32}")


def task_prefix(key: str) -> str:
    """A task key's prefix as Dask groups keys (its `key_split`): `('sum-aggregate-3f2c...', 4)` -> `sum-aggregate`."""
    words = key.split("-")
    first = words[0]
    if not first[:1].isalpha():  # a tuple key, written as Python writes it
        first = first.split(",")[0].strip("_'()\"")
    result = first
    for word in words[1:]:
        if word.isalpha() and not (len(word) == 8 and _HEX_WORD.match(word)):
            result += "-" + word
        else:
            break
    if len(result) == 32 and _TOKEN.match(result):
        return "data"
    if result.startswith("<"):
        result = (result.strip("<>").split() or [""])[0].split(".")[-1]
    return label(result or "?", 100)


_ROW = re.compile(r"<tr\b[^>]*>(.*?)</tr>", re.S)
_CELL = re.compile(r'<td(?:\s+data-sort="([^"]*)")?\s*>(.*?)</td>', re.S)
_WORKER_LINK = re.compile(r'href="\.\./worker/([^"]*)\.html"')
_PROGRESS_VALUE = re.compile(r'<progress[^>]*\bvalue="([^"]*)"')
_TAGS = re.compile(r"<[^>]*>")


def _workers_table(answer: HttpAnswer) -> dict[str, Any] | None:
    """The workers as `/info/main/workers.html` lists them, in identity.json's shape, or None for another page.

    Columns: worker, name, cores, memory (limit), memory use, occupancy, processing, in-memory, services,
    logs, last seen (seconds ago, as the scheduler's own clock counts them)."""
    text = answer.text
    if "Workers</h2>" not in text:
        return None
    now, workers = time.time(), {}
    for row in _ROW.finditer(text):
        cells = _CELL.findall(row.group(1))
        link = _WORKER_LINK.search(cells[0][1]) if len(cells) >= 11 else None
        if link is None:
            continue
        address = urllib.parse.unquote_plus(link.group(1))
        memory = _PROGRESS_VALUE.search(cells[4][1])
        age = _number(cells[10][0])
        name = html.unescape(_TAGS.sub("", cells[1][1])).strip()
        workers[address] = {
            "name": name or address,
            "host": _host_of(address, {}),
            "nthreads": _number(cells[2][1]),
            "memory_limit": _number(cells[3][0]),
            "metrics": {"memory": _number(memory.group(1))} if memory else {},
            "processing": _number(cells[6][1]),
            "last_seen": None if age is None else now - age,
        }
        if len(workers) > _MAX_WORKERS:
            break
    return {
        "workers": workers,
        "total_threads": sum(w["nthreads"] or 0 for w in workers.values()),
        "total_memory": sum(w["memory_limit"] or 0 for w in workers.values()),
        "now": now,
    }


def _number(text: str) -> float | None:
    try:
        return finite(float(html.unescape(_TAGS.sub("", text)).strip()))
    except ValueError:
        return None


def _parse_metrics(answer: HttpAnswer | Unreachable) -> dict[str, float] | None:
    """Dask's Prometheus text, or None when the endpoint holds no samples (only a comment)."""
    if isinstance(answer, Unreachable) or answer.status != 200:
        return None
    lines = answer.text.splitlines()
    if not any(line.strip() and not line.startswith("#") for line in lines):
        return None
    wanted = [line for line in lines if line.startswith(_SAMPLES) and len(line) <= _MAX_LINE][:_MAX_SAMPLE_LINES]
    from prometheus_client.parser import text_string_to_metric_families  # only once a scheduler answered

    out: dict[str, float] = {}
    unusable: set[str] = set()  # a NaN or infinite part makes the whole figure unknown, not a partial sum
    try:
        for family in text_string_to_metric_families("\n".join(wanted) + "\n"):
            for sample in family.samples:
                if sample.name in ("dask_scheduler_workers", "dask_scheduler_tasks"):
                    what = label(sample.labels.get("state", "unknown"), 40)
                    key = f"{sample.name.removeprefix('dask_scheduler_')}_{what}"
                elif sample.name in (
                    "dask_scheduler_clients",
                    "dask_scheduler_tick_duration_maximum_seconds",
                    "dask_scheduler_workers_added_total",
                    "dask_scheduler_workers_removed_total",
                ):
                    key = sample.name.removeprefix("dask_scheduler_")
                else:
                    continue
                value = finite(sample.value)
                total = None if value is None else finite(out.get(key, 0.0) + value)
                if total is None:
                    unusable.add(key)
                elif key in out or len(out) < 100:
                    out[key] = total
    except Exception:  # whatever the parser makes of a garbled page: no metrics, not a probe error
        return None
    return {key: value for key, value in out.items() if key not in unusable}
