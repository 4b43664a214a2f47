"""Remote nodes (Linux servers and Termux phones) over SSH, host keys checked.

One fixed script gathers everything in one round trip; nothing from the config is ever
put into the remote command.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

from clusterwatch.config.schema import Config, Node, Thresholds
from clusterwatch.model import Group, Observation, Status
from clusterwatch.probes.base import describe_os_error, human_bytes, level_status
from clusterwatch.probes.values import finite, loads
from clusterwatch.sshclient import asyncssh_module, connect_options

# `[d]ask` keeps pgrep from matching the shell that runs this very script.
REMOTE_SCRIPT = r"""
export LC_ALL=C
echo "nproc=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo 2>/dev/null)"
if [ -r /proc/stat ]; then
  echo "stat1=$(head -n1 /proc/stat)"; sleep 0.5; echo "stat2=$(head -n1 /proc/stat)"
fi
[ -r /proc/loadavg ] && echo "loadavg=$(cat /proc/loadavg)"
[ -r /proc/meminfo ] && grep -E '^(MemTotal|MemAvailable):' /proc/meminfo | tr -d ' ' | sed 's/kB$//; s/:/=/'
df -P / "$HOME" 2>/dev/null | awk 'NR>1 {print "df=" $6 " " $2 " " $3 " " $4}'
if command -v pgrep >/dev/null 2>&1; then
  if pgrep -f '[d]ask(-worker| worker)|[d]istributed[.]cli[.]dask_worker' >/dev/null 2>&1
  then echo dask_worker=1; else echo dask_worker=0; fi
fi
if command -v termux-battery-status >/dev/null 2>&1; then
  echo "battery=$(termux-battery-status 2>/dev/null | tr -d '\n')"
fi
echo end=1
"""


async def probe_node(node: Node, config: Config, timeout: float | None = None) -> list[Observation]:
    asyncssh = asyncssh_module()
    options = connect_options(node, config.ssh)
    port = options["port"]
    where = f"{node.host}:{port}"
    user = options.get("username", os.environ.get("USER", "?"))
    budget = timeout or node.timeout or max(config.timeout, options["connect_timeout"] + 3)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(budget):
            async with asyncssh.connect(node.host, **options) as conn:
                latency = (time.perf_counter() - started) * 1000
                exit_status, stdout, stderr = await _run_script(conn)
    except TimeoutError:
        return [
            _down(
                node,
                where,
                f"SSH to {where} timed out after {budget:g}s (host down, firewalled or asleep{{}})".format(
                    " — Termux: `termux-wake-lock`" if node.is_termux else ""
                ),
            )
        ]
    except asyncssh.PermissionDenied:
        key = options.get("client_keys", ["the default keys"])[0]
        return [
            _down(
                node,
                where,
                f"SSH authentication failed for {user}@{where} with {key} — is its public key "
                "in ~/.ssh/authorized_keys on the node?",
            )
        ]
    except asyncssh.HostKeyNotVerifiable as exc:
        return [_down(node, where, _host_key_message(node, options, port, str(exc)))]
    except asyncssh.Error as exc:
        return [_down(node, where, f"SSH to {where} failed: {exc.reason}")]
    except ConnectionRefusedError:
        hint = "is sshd running? (Termux: run `sshd`; it listens on 8022)"
        return [_down(node, where, f"SSH connection refused at {where} — {hint}")]
    except OSError as exc:
        return [_down(node, where, f"SSH: {describe_os_error(exc, where)}")]
    if stdout is None:
        too_much = f"node printed more than {_MAX_OUTPUT} bytes: not our script's report"
        return [_down(node, where, too_much, status=Status.UNKNOWN)]
    if exit_status not in (0, None) or "end=1" not in stdout:
        err = stderr.strip().splitlines()[-1:] or ["no output"]
        return [_down(node, where, f"node script failed (exit {exit_status}): {err[0][:120]}", status=Status.UNKNOWN)]
    return [judge(node, config, parse_report(stdout), where, latency)]


async def _run_script(conn: Any) -> tuple[int | None, str | None, str]:
    """The script's exit status, stdout (None when it is over the limit) and the end of its stderr.

    Bytes, decoded with replacement: a node that prints forever, or prints bytes that are not
    UTF-8, gives an observation, not a memory blow-up or a UnicodeDecodeError.
    """
    process = await conn.create_process(REMOTE_SCRIPT, encoding=None)
    errors = asyncio.ensure_future(_read_upto(process.stderr, 4096, drain=True))
    errors.add_done_callback(lambda task: task.cancelled() or task.exception())  # a stderr error is no report
    try:
        stdout, complete = await _read_upto(process.stdout, _MAX_OUTPUT)
        if not complete:
            return None, None, ""
        stderr, _ = await errors
        await process.wait_closed()
        return process.exit_status, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
    finally:
        errors.cancel()
        process.close()


async def _read_upto(reader: Any, limit: int, *, drain: bool = False) -> tuple[bytes, bool]:
    """Up to `limit` bytes until EOF, and whether EOF came within them (`drain`: read the rest, keep the end)."""
    data = b""
    while chunk := await reader.read(65536):
        data += chunk
        if len(data) > limit:
            if not drain:
                return data[:limit], False
            data = data[-limit:]
    return data, True


def _host_key_message(node: Node, options: dict[str, Any], port: int, reason: str) -> str:
    known = options.get("known_hosts") or os.path.expanduser("~/.ssh/known_hosts")
    listed = False
    try:
        import asyncssh

        hosts = asyncssh.read_known_hosts(known) if os.path.exists(known) else None
        listed = bool(hosts and hosts.match(node.host, "", port)[0])
    except (OSError, ValueError, asyncssh.Error):
        pass
    if listed:
        return (
            f"SSH HOST KEY MISMATCH for {node.host}:{port} — refusing to connect. If the node was reinstalled, "
            f"check its key and update {known}; otherwise someone may be impersonating it"
        )
    return (
        f"SSH host key of {node.host}:{port} is not in {known} — refusing to connect; add it after checking it "
        f"(`ssh-keyscan -p {port} {node.host}`) ({reason})"
    )


def _down(node: Node, where: str, message: str, status: Status = Status.CRITICAL) -> Observation:
    """The node could not be looked at: everything on it is in doubt."""
    return _observation(node, where, status, message, down=True)


def _observation(node: Node, where: str, status: Status, message: str, **extra: Any) -> Observation:
    return Observation(
        name=node.name,
        kind="ssh",
        target=where,
        status=status,
        message=message,
        check=node.name,
        group=Group.NODES,
        node=node.name,
        **extra,
    )


_MAX_OUTPUT = 64 * 1024  # the script prints about 1 kB
_COUNT = re.compile(r"[0-9]{1,18}")  # ASCII digits only ("²".isdigit() is True) and within a float's range
_MAX_REPORT_LINES, _MAX_DF_LINES = 1000, 64


def _count(text: object) -> int | None:
    """A whole number the node printed (kB, jiffies, cores), or None for anything else."""
    return int(text) if isinstance(text, str) and _COUNT.fullmatch(text) else None


def parse_report(text: str) -> dict[str, Any]:
    report: dict[str, Any] = {"df": []}
    for line in text.splitlines()[:_MAX_REPORT_LINES]:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "df":
            if len(report["df"]) < _MAX_DF_LINES:
                report["df"].append(value)
        else:
            report[key] = value.strip()
    return report


def _cpu_percent(first: str, second: str) -> float | None:
    def numbers(line: str) -> list[int]:
        return [n for n in map(_count, line.split()[1:]) if n is not None]

    a, b = numbers(first), numbers(second)
    if len(a) < 4 or len(a) != len(b):
        return None
    idle = (b[3] + (b[4] if len(b) > 4 else 0)) - (a[3] + (a[4] if len(a) > 4 else 0))
    total = sum(b[:8]) - sum(a[:8])
    return round(100.0 * (total - idle) / total, 1) if total > 0 else None


def judge(node: Node, config: Config, report: dict[str, Any], where: str, latency_ms: float) -> Observation:
    limits: Thresholds = node.thresholds or config.node_thresholds
    metrics: dict[str, float] = {}
    graded: list[tuple[Status, str]] = []
    cores = max(1, _count(report.get("nproc")) or 1)
    metrics["cpus"] = cores

    cpu = _cpu_percent(report.get("stat1", ""), report.get("stat2", "")) if "stat1" in report else None
    if cpu is not None:
        metrics["cpu_percent"] = cpu
        graded.append((level_status(cpu, limits.cpu.warning, limits.cpu.critical), f"cpu {cpu:.0f}%"))
    total, avail = _count(report.get("MemTotal")), _count(report.get("MemAvailable"))
    if total and avail is not None:
        percent = 100.0 * (total - avail) / total
        metrics.update(memory_percent=round(percent, 1), memory_total_bytes=total * 1024)
        graded.append(
            (
                level_status(percent, limits.memory.warning, limits.memory.critical),
                f"memory {percent:.0f}% of {human_bytes(total * 1024)}",
            )
        )
    seen_mounts = set()
    for line in report["df"]:
        parts = line.split()
        sizes = [_count(p) for p in parts[1:]]
        if len(parts) != 4 or parts[0] in seen_mounts or None in sizes:
            continue
        seen_mounts.add(parts[0])
        _size, used, free = (n * 1024 for n in sizes)  # type: ignore[operator]
        percent = 100.0 * used / (used + free) if used + free else 0.0
        key = "disk_percent" if parts[0] == "/" else f"disk_percent:{parts[0]}"
        metrics[key] = round(percent, 1)
        graded.append(
            (level_status(percent, limits.disk.warning, limits.disk.critical), f"disk {parts[0]} {percent:.0f}%")
        )
    if report.get("loadavg"):
        load1 = finite(_float(report["loadavg"].split()[:1]))
        if load1 is not None:
            metrics["load1"] = load1
            graded.append((level_status(load1 / cores, limits.load.warning, limits.load.critical), f"load {load1:.2f}"))
    if "dask_worker" in report:
        running = report["dask_worker"] == "1"
        metrics["dask_worker_running"] = 1.0 if running else 0.0
        if node.expect_dask_worker:
            graded.append(
                (Status.OK, "dask worker running")
                if running
                else (Status.CRITICAL, "no dask worker process — start it (`dask worker tcp://SCHEDULER:8786`)")
            )
    if report.get("battery"):
        graded.append(_battery(node, report["battery"], metrics))
    if not graded:
        return _down(node, where, "node answered but reported nothing readable", status=Status.UNKNOWN)
    status = Status.worst([s for s, _ in graded])
    bad = [text for s, text in graded if s is not Status.OK]
    message = "; ".join(bad) if bad else ", ".join(text for _, text in graded)
    return _observation(
        node, where, status, message, latency_ms=latency_ms, metrics=metrics, details={"termux": node.is_termux}
    )


def _float(words: list[str]) -> float | None:
    try:
        return float(words[0]) if words else None
    except ValueError:
        return None


def _battery(node: Node, raw: str, metrics: dict[str, float]) -> tuple[Status, str]:
    try:
        data = loads(raw)
    except ValueError:
        data = None
    percent = finite(data.get("percentage")) if isinstance(data, dict) else None
    if data is None or percent is None:
        return Status.UNKNOWN, "battery unreadable"
    metrics["battery_percent"] = percent
    state = data.get("status")
    charging = isinstance(state, str) and state.upper() in ("CHARGING", "FULL")
    status = level_status(percent, node.battery_warning, node.battery_critical, below=True)
    if charging and status is Status.CRITICAL:
        status = Status.WARNING
    return status, f"battery {percent:.0f}%{' (charging)' if charging else ''}"
