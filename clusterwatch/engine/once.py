"""One round of every probe, concurrently and bounded: the pipeline `check` runs once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from clusterwatch.config.schema import CheckBase, Config, Node, OllamaCheck
from clusterwatch.model import Group, Observation, Status, one_line
from clusterwatch.probes import GROUPS, probe_for
from clusterwatch.probes.base import ProbeContext, new_http_session
from clusterwatch.probes.ssh import probe_node
from clusterwatch.redact import Redactor

log = logging.getLogger("clusterwatch.engine")


@dataclass
class Round:
    observations: list[Observation]
    started_at: float
    duration_s: float

    @property
    def status(self) -> Status:
        return Status.worst([o.status for o in self.observations])


def budget(item: CheckBase | Node, config: Config) -> float:
    """How long one probe may take before the runner gives up on it (its own timeout plus slack)."""
    base = item.timeout if item.timeout is not None else config.timeout
    if isinstance(item, Node):
        base = max(base, item.ssh.connect_timeout + 3)
    if isinstance(item, OllamaCheck) and item.generate:
        base += item.generate.timeout
    if getattr(item, "kind", "") == "dask":
        base *= 2  # a port connect, then the HTTP endpoints
    return base + 1.0


def _kind(item: CheckBase | Node) -> str:
    return "ssh" if isinstance(item, Node) else str(getattr(item, "kind", ""))


def selected(config: Config, only: Iterable[Group] | None) -> list[CheckBase | Node]:
    """What a round here looks at: not the nodes with an agent, nor their checks (their agents run them,
    where they are, and push to the running monitor)."""
    agents = {n.name for n in config.nodes if n.agent}
    items: list[CheckBase | Node] = [
        *(c for c in config.checks if c.node not in agents),
        *(n for n in config.nodes if not n.agent),
    ]
    if only is None:
        return items
    wanted = set(only)
    return [i for i in items if GROUPS[_kind(i)] & wanted]


async def run_probe(item: CheckBase | Node, ctx: ProbeContext) -> list[Observation]:
    """One probe, never raising: a timeout or a bug in a probe becomes an `unknown` observation."""
    limit = budget(item, ctx.config)
    kind = _kind(item)
    try:
        async with asyncio.timeout(limit):
            if isinstance(item, Node):
                return await probe_node(item, ctx.config)
            return await probe_for(kind)(item, ctx)
    except TimeoutError:
        return [_placeholder(item, Status.CRITICAL, f"no answer within {limit:g}s")]
    except Exception as exc:  # a probe's own bug must not take the round down, nor print a traceback
        return [_probe_bug(item, kind, exc)]


def _probe_bug(item: CheckBase | Node, kind: str, exc: Exception) -> Observation:
    """What a probe that raised says: `unknown` (the service may be fine), one log line, the traceback at debug."""
    try:
        said = str(exc)
    except Exception:  # an exception whose own __str__ fails
        said = ""
    reason = one_line(f"{type(exc).__name__}: {said}" if said else type(exc).__name__, 300)
    log.warning("probe %s (%s) failed: probe bug: %s", item.name, kind, reason)
    log.debug("probe %s (%s) traceback", item.name, kind, exc_info=exc)
    return _placeholder(item, Status.UNKNOWN, f"probe bug: {reason}", down=False)


def _placeholder(item: CheckBase | Node, status: Status, message: str, *, down: bool = True) -> Observation:
    kind = _kind(item)
    group = Group.NODES if kind == "ssh" else Group.SYSTEM if kind == "node" else Group.SERVICES
    target = (
        item.host or ""
        if isinstance(item, Node)
        else str(getattr(item, "url", None) or getattr(item, "scheduler", None) or getattr(item, "socket", None) or "")
    )
    node = item.name if isinstance(item, Node) else item.node
    return Observation(
        name=item.name,
        kind=kind,
        target=target,
        status=status,
        message=message,
        check=item.name,
        group=group,
        node=node,
        down=down,
    )


async def run_once(
    config: Config,
    *,
    only: Iterable[Group] | None = None,
    timeout: float | None = None,
    redactor: Redactor | None = None,
) -> Round:
    """Every selected probe once; the whole round bounded by `timeout` seconds."""
    only_set = set(only) if only is not None else None
    items = selected(config, only_set)
    started_at, started = time.time(), time.perf_counter()
    semaphore = asyncio.Semaphore(config.concurrency)
    async with new_http_session(limit=config.concurrency) as session:
        ctx = ProbeContext(config=config, http=session)

        async def bounded(item: CheckBase | Node) -> list[Observation]:
            async with semaphore:
                return await run_probe(item, ctx)

        tasks = {asyncio.ensure_future(bounded(item)): item for item in items}
        try:
            done, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else (set(), set())
        except asyncio.CancelledError:
            # Ctrl-C: the probes stop before their HTTP session closes (a request still in flight to a
            # hanging server would otherwise hold the session's close until its own timeout).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        observations: list[Observation] = []
        for task, item in tasks.items():
            if task in done:
                observations.extend(task.result())
            else:
                task.cancel()
                observations.append(_placeholder(item, Status.UNKNOWN, f"not finished within --timeout {timeout:g}s"))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    if only_set is not None:
        observations = [o for o in observations if o.group in only_set]
    if redactor is not None:
        for obs in observations:
            obs.message = redactor.text(obs.message)
            obs.target = redactor.text(obs.target)
            obs.details = redactor.data(obs.details)
    return Round(observations, started_at, time.perf_counter() - started)
