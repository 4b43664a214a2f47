"""What every probe shares: the context it gets, bounded HTTP, and messages a person can act on."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from clusterwatch.config.schema import CheckBase, Config
from clusterwatch.model import Group, Observation, Status
from clusterwatch.probes.values import loads

_NOT_RUNNING = re.compile(r"connection refused|does not exist|no route|cannot resolve")


def not_running(reason: str) -> bool:
    """Nothing listens there (as opposed to a slow or broken answer)."""
    return bool(_NOT_RUNNING.search(reason))


class Unreachable(Exception):
    """The service could not be reached or did not answer; `str()` says why, in one line."""


@dataclass
class ProbeContext:
    config: Config
    http: aiohttp.ClientSession

    def timeout_for(self, check: CheckBase) -> float:
        return check.timeout if check.timeout is not None else self.config.timeout


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    latency_ms: float

    def json(self) -> Any:
        """The body as JSON with finite numbers only (see `values.loads`), or Unreachable with a readable reason."""
        try:
            return loads(self.body)
        except ValueError as exc:
            snippet = self.body[:60].decode("utf-8", "replace").replace("\n", " ")
            raise Unreachable(f"answer is not JSON ({exc}; starts with {snippet!r})") from None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def new_http_session(limit: int = 200) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, trust_env=False, headers={"User-Agent": "clusterwatch"})


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout: float,
    max_body: int,
    method: str = "GET",
    json_body: Any = None,
    data: str | None = None,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | bool | None = None,
) -> HttpAnswer:
    """One HTTP exchange, bounded in time and size. Raises Unreachable, never hangs."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with session.request(
                method,
                url,
                json=json_body,
                data=data,
                headers=headers,
                ssl=ssl_context if ssl_context is not None else True,
                allow_redirects=True,
            ) as resp:
                body = await _read_bounded(resp, max_body)
                return HttpAnswer(resp.status, dict(resp.headers), body, (time.perf_counter() - started) * 1000)
    except TimeoutError:
        raise Unreachable(f"no answer within {timeout:g}s from {_hostport(url)}") from None
    except aiohttp.ClientConnectorCertificateError as exc:
        raise Unreachable(f"TLS certificate of {_hostport(url)} not trusted: {exc.certificate_error}") from None
    except aiohttp.ClientConnectorError as exc:
        raise Unreachable(describe_os_error(exc.os_error, _hostport(url))) from None
    except aiohttp.ClientResponseError as exc:
        raise Unreachable(f"bad HTTP answer from {_hostport(url)}: {exc.message}") from None
    except aiohttp.ClientPayloadError:
        raise Unreachable(f"answer from {_hostport(url)} broke off mid-body") from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise Unreachable(f"connection to {_hostport(url)} dropped: {exc}") from None
    except aiohttp.ClientError as exc:
        raise Unreachable(f"HTTP error talking to {_hostport(url)}: {exc}") from None


class BodyTooLarge(Unreachable):
    pass


async def _read_bounded(resp: aiohttp.ClientResponse, max_body: int) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > max_body:
        raise BodyTooLarge(f"answer of {declared} bytes is over the {max_body}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > max_body:
            raise BodyTooLarge(f"answer is over the {max_body}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def peer_certificate(host: str, port: int, timeout: float) -> bytes | None:
    """The server's certificate (DER), read whether or not it is trusted: its expiry is what we want."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), 1)
    return der


def _hostport(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].rsplit("@", 1)[-1]


def describe_os_error(exc: OSError | None, where: str) -> str:
    if exc is None:
        return f"cannot connect to {where}"
    code = exc.errno
    if isinstance(exc, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return f"connection refused at {where}"
    if isinstance(exc, TimeoutError) or code == errno.ETIMEDOUT:
        return f"connection to {where} timed out"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"no route to {where} (host down or network unreachable)"
    if code == errno.ENOENT:
        return f"{where} does not exist"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied on {where}"
    if "Name or service not known" in str(exc) or "nodename nor servname" in str(exc) or code in (-2, -3, -5):
        return f"cannot resolve host of {where}"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot connect to {where}: {reason}"


async def tcp_connect(host: str, port: int, timeout: float) -> float:
    """Milliseconds to open (and close) a TCP connection; Unreachable otherwise."""
    started = time.perf_counter()
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        raise Unreachable(f"connection to {where} timed out after {timeout:g}s") from None
    except OSError as exc:
        raise Unreachable(describe_os_error(exc, where)) from None
    latency = (time.perf_counter() - started) * 1000
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1)
    return latency


def down(
    check: CheckBase,
    target: str,
    reason: str,
    hint: str = "",
    group: Group = Group.SERVICES,
    latency_ms: float | None = None,
    status: Status = Status.CRITICAL,
) -> Observation:
    """The one observation of a service that cannot be reached, with the next step to take.

    The hint ("is `ollama serve` running?") is added only where nothing listens: for a
    timeout or an error answer it would send the reader the wrong way.
    """
    message = f"{reason} — {hint}" if hint and not_running(reason) else reason
    return Observation(
        name=check.name,
        kind=_kind(check),
        target=target,
        status=status,
        message=message,
        latency_ms=latency_ms,
        check=check.name,
        group=group,
        node=check.node,
        down=status is not Status.WARNING,
    )


def observation(
    check: CheckBase,
    status: Status,
    message: str,
    *,
    name: str | None = None,
    target: str = "",
    group: Group = Group.SERVICES,
    latency_ms: float | None = None,
    metrics: dict[str, float] | None = None,
    details: dict[str, Any] | None = None,
    node: str | None = None,
) -> Observation:
    return Observation(
        name=name or check.name,
        kind=_kind(check),
        target=target,
        status=status,
        message=message,
        latency_ms=latency_ms,
        metrics=metrics or {},
        details=details or {},
        check=check.name,
        group=group,
        node=node if node is not None else check.node,
    )


def _kind(check: CheckBase) -> str:
    return str(getattr(check, "kind", "unknown"))


def level_status(value: float | None, warning: float | None, critical: float | None, *, below: bool = False) -> Status:
    """ok / warning / critical for a value against limits (`below`: low values are bad)."""
    if value is None:
        return Status.OK
    if below:
        if critical is not None and value <= critical:
            return Status.CRITICAL
        if warning is not None and value <= warning:
            return Status.WARNING
        return Status.OK
    if critical is not None and value >= critical:
        return Status.CRITICAL
    if warning is not None and value >= warning:
        return Status.WARNING
    return Status.OK


def human_bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
