"""A TCP port that must accept connections."""

from __future__ import annotations

from clusterwatch.config.schema import TcpCheck
from clusterwatch.model import Observation, Status
from clusterwatch.probes.base import ProbeContext, Unreachable, down, observation, tcp_connect


async def probe(check: TcpCheck, ctx: ProbeContext) -> list[Observation]:
    target = f"{check.host}:{check.port}"
    try:
        latency = await tcp_connect(check.host, check.port, ctx.timeout_for(check))
    except Unreachable as exc:
        return [down(check, target, str(exc), _hint(check))]
    status = Status.OK
    message = f"port open ({latency:.0f} ms)"
    if check.latency_warning is not None and latency / 1000 >= check.latency_warning:
        status, message = Status.WARNING, f"port open but slow: {latency:.0f} ms"
    return [observation(check, status, message, target=target, latency_ms=latency)]


def _hint(check: TcpCheck) -> str:
    """Nothing answers: this check's own restart when it has one."""
    fix = check.fix_hint()
    return f"is the service running? (restart: {fix})" if fix else "is the service running?"
