"""Any HTTP endpoint: status, body, a JSON field, latency, and the TLS certificate's days left."""

from __future__ import annotations

import ssl
import time
from functools import lru_cache
from typing import Any

from clusterwatch.config.schema import HttpCheck
from clusterwatch.model import Observation, Status
from clusterwatch.probes.base import ProbeContext, Unreachable, down, fetch, observation, peer_certificate
from clusterwatch.probes.values import short

_MISSING = object()


async def probe(check: HttpCheck, ctx: ProbeContext) -> list[Observation]:
    timeout = ctx.timeout_for(check)
    https = check.url.lower().startswith("https://")
    try:
        answer = await fetch(
            ctx.http,
            check.url,
            method=check.method,
            headers=check.headers or None,
            data=check.body,
            timeout=timeout,
            max_body=check.max_body,
            ssl_context=_ssl_context(check.tls_verify, check.ca_file) if https else None,
        )
    except Unreachable as exc:
        return [down(check, check.url, str(exc), _hint(check))]

    problems: list[tuple[Status, str]] = []
    expected = check.expect_status
    if expected is None:
        if not 200 <= answer.status < 400:
            problems.append((Status.CRITICAL, f"HTTP {answer.status}"))
    elif answer.status not in expected:
        problems.append((Status.CRITICAL, f"HTTP {answer.status}, expected {', '.join(map(str, expected))}"))
    if check.body_contains is not None and check.body_contains not in answer.text:
        problems.append((Status.CRITICAL, f"body does not contain {check.body_contains!r}"))
    if check.expect_json:
        problems.extend(_json_problems(answer, check.expect_json))

    seconds = answer.latency_ms / 1000
    if check.latency_critical is not None and seconds >= check.latency_critical:
        problems.append(
            (Status.CRITICAL, f"slow: {answer.latency_ms:.0f} ms (critical at {check.latency_critical:g}s)")
        )
    elif check.latency_warning is not None and seconds >= check.latency_warning:
        problems.append((Status.WARNING, f"slow: {answer.latency_ms:.0f} ms (warning at {check.latency_warning:g}s)"))

    metrics: dict[str, float] = {"http_status": answer.status, "body_bytes": len(answer.body)}
    der = await _certificate(check.url, timeout) if https else None
    days = _days_left(der) if der else None
    if days is not None:
        metrics["cert_days_left"] = round(days, 1)
        if days < 0:
            problems.append((Status.CRITICAL, f"TLS certificate expired {-days:.0f} day(s) ago"))
        elif days <= check.cert_days_critical:
            problems.append((Status.CRITICAL, f"TLS certificate expires in {days:.1f} day(s)"))
        elif days <= check.cert_days_warning:
            problems.append((Status.WARNING, f"TLS certificate expires in {days:.0f} day(s)"))

    if problems:
        status = Status.worst([s for s, _ in problems])
        message = "; ".join(t for _, t in sorted(problems, key=lambda p: -p[0].severity))
    else:
        status, message = Status.OK, f"HTTP {answer.status} in {answer.latency_ms:.0f} ms"
        if "cert_days_left" in metrics:
            message += f", certificate valid {metrics['cert_days_left']:.0f} more days"
    return [observation(check, status, message, target=check.url, latency_ms=answer.latency_ms, metrics=metrics)]


def _json_problems(answer: Any, expect: dict[str, Any]) -> list[tuple[Status, str]]:
    try:
        data = answer.json()
    except Unreachable as exc:
        return [(Status.CRITICAL, str(exc))]
    problems = []
    for path, wanted in expect.items():
        got = json_path(data, path)
        if got is _MISSING:
            problems.append((Status.CRITICAL, f"JSON field {path} is missing"))
        elif got != wanted:
            problems.append((Status.CRITICAL, f"JSON field {path} is {short(got)}, expected {short(wanted)}"))
    return problems


def json_path(data: Any, path: str) -> Any:
    """`a.b[0].c` (or `a.b.0.c`) into nested JSON; a missing step gives _MISSING."""
    current = data
    for raw in path.replace("[", ".").replace("]", "").lstrip("$.").split("."):
        if raw == "":
            continue
        if isinstance(current, dict) and raw in current:
            current = current[raw]
        elif isinstance(current, list) and raw.lstrip("-").isdigit() and -len(current) <= int(raw) < len(current):
            current = current[int(raw)]
        else:
            return _MISSING
    return current


@lru_cache(maxsize=64)
def _ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _certificate(url: str, timeout: float) -> bytes | None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return await peer_certificate(parts.hostname or "", parts.port or 443, timeout)


def _days_left(der: bytes) -> float | None:
    """Days until the certificate expires; None for one the library cannot read (its expiry is then unknown)."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        return (cert.not_valid_after_utc.timestamp() - time.time()) / 86400
    except (ValueError, OverflowError):
        return None


def _hint(check: HttpCheck) -> str:
    """Nothing answers: this check's own restart when it has one."""
    fix = check.fix_hint()
    return f"is the service running? (restart: {fix})" if fix else "is the service running?"
