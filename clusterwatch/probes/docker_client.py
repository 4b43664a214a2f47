"""The Docker Engine API through aiodocker, bounded: one deadline for every call, a cap on every
answer's size, and every failure (refused, silent, garbage, cut short) one readable `Unreachable`.

aiodocker reads each answer whole (`response.json()` over `response.read()`), with no size limit,
and parses it on the event loop; the session it is given here answers with `_BoundedResponse`, which
stops reading at `max_body` bytes and parses a large answer in a thread, with the probes' JSON rules
(`values.loads`: finite numbers only, bounded nesting).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiodocker
import aiohttp

from clusterwatch.model import one_line
from clusterwatch.probes.base import Unreachable, describe_os_error
from clusterwatch.probes.values import loads as parse_json

# Parsing a large answer takes the GIL for a while: in a thread of its own, not the default executor's.
_PARSER = ThreadPoolExecutor(1, thread_name_prefix="clusterwatch-docker-json")

MAX_BODY = 16 * 1024 * 1024  # a container list of several thousand containers with their labels
_PARSE_INLINE = 64 * 1024  # smaller answers parse faster than a thread hop
_SUMMARY_KEYS = ("Id", "Names", "State", "Status")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # a container id is one path segment, nothing more

T = TypeVar("T")


class AnswerTooLarge(Unreachable):
    pass


class InvalidJson(Unreachable):
    pass


class _BoundedResponse(aiohttp.ClientResponse):
    """A response whose body is read only up to `max_body` bytes; beyond that it is abandoned.

    The body goes where aiohttp keeps it (`_body`, which its `text()` reads too); aiohttp is pinned.
    """

    max_body = MAX_BODY

    async def read(self) -> bytes:
        if self._body is None:
            try:
                self._body = await self._read_capped()
            except BaseException:
                self.close()
                raise
        return await super().read()

    async def _read_capped(self) -> bytes:
        declared = self.content_length
        if declared is not None and declared > self.max_body:
            raise AnswerTooLarge(f"{declared} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.content.iter_chunked(65536):
            size += len(chunk)
            if size > self.max_body:
                raise AnswerTooLarge(f"over {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json(self, *, encoding: str | None = None, loads: Any = None, content_type: Any = None) -> Any:
        """The body as JSON (None when empty, as aiohttp has it); InvalidJson with the reason otherwise.

        aiodocker calls this only for a JSON content type; its `loads` and `content_type` are not used.
        """
        body = await self.read()
        if not body.strip():
            return None
        try:
            if len(body) <= _PARSE_INLINE:
                return parse_json(body)
            return await asyncio.get_running_loop().run_in_executor(_PARSER, parse_json, body)
        except ValueError as exc:
            raise InvalidJson(str(exc)) from None


class Engine:
    """The few Engine API calls the probe and the healer make, all within one deadline."""

    def __init__(self, socket: str, timeout: float, *, max_body: int = MAX_BODY) -> None:
        self.socket = socket
        self.timeout = timeout
        self._deadline = 0.0
        response_class = type("_Bounded", (_BoundedResponse,), {"max_body": max_body})
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=socket),
            response_class=response_class,
            headers={"User-Agent": "clusterwatch"},
        )
        # The URL names the socket for aiodocker's URLs only; requests go through the session above.
        self._docker = aiodocker.Docker(url=f"unix://{socket}", session=self._session)

    async def __aenter__(self) -> Engine:
        self._deadline = asyncio.get_running_loop().time() + self.timeout
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._docker.close()
        finally:
            await self._session.close()

    async def ping(self) -> str:
        """`GET /_ping`: "OK" from a daemon that serves. aiodocker 0.27 has no public call for it."""
        answer = await self._call("/_ping", self._docker._query_json("_ping", versioned_api=False))
        return answer if isinstance(answer, str) else ""

    async def version(self) -> dict[str, Any]:
        answer = await self._call("/version", self._docker.version())
        if not isinstance(answer, dict):
            raise Unreachable("Docker answered /version with something that is not the Engine API")
        return answer

    async def containers(self) -> list[dict[str, Any]]:
        """Every container (running or not) as the list's summary: Id, Names, State, Status."""
        listed = await self._call("/containers/json", self._docker.containers.list(all=True))
        summaries = []
        for container in listed:
            summary = {key: container[key] for key in _SUMMARY_KEYS if key in container}
            if not isinstance(summary.get("Id"), str) or not _SAFE_ID.match(summary["Id"]):
                raise Unreachable("Docker answered /containers/json with a container without a usable Id")
            summaries.append(summary)
        return summaries

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        """`GET /containers/ID/json`, or None when the container is gone (removed since the list)."""
        try:
            answer = await self._call(
                f"/containers/{container_id[:12]}/json", self._docker.containers.container(container_id).show()
            )
        except _HttpError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(answer, dict):
            raise Unreachable(f"Docker answered /containers/{container_id[:12]}/json with something not an object")
        return answer

    async def restart(self, container_id: str, stop_timeout: int = 10) -> None:
        """`POST /containers/ID/restart?t=...`: stop (SIGKILL after `stop_timeout` s), then start."""
        await self._call(
            f"/containers/{container_id[:12]}/restart",
            self._docker.containers.container(container_id).restart(t=stop_timeout),
        )

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        """Await one aiodocker call before the deadline; anything a daemon can do wrong becomes Unreachable."""
        try:
            async with asyncio.timeout_at(self._deadline):
                return await call
        except TimeoutError:
            raise Unreachable(f"Docker did not answer {what} within {self.timeout:g}s") from None
        except AnswerTooLarge as exc:
            raise AnswerTooLarge(f"Docker answer to {what} is {exc}") from None
        except InvalidJson as exc:
            raise Unreachable(f"Docker answered {what} with invalid JSON ({exc})") from None
        except aiodocker.DockerError as exc:
            raise self._docker_error(what, exc) from None
        except aiohttp.ClientPayloadError:
            raise Unreachable(f"Docker's answer to {what} broke off mid-body") from None
        except aiohttp.ClientResponseError as exc:
            raise Unreachable(f"Docker answered {what} with something that is not HTTP: {_line(exc.message)}") from None
        except aiohttp.ClientError as exc:
            raise Unreachable(f"Docker socket {self.socket}: {_line(str(exc)) or type(exc).__name__}") from None
        except OSError as exc:
            raise Unreachable(describe_os_error(exc, f"Docker socket {self.socket}")) from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # aiodocker's parse of an error answer
            raise Unreachable(f"Docker answered {what} with invalid JSON") from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError):  # JSON of a shape aiodocker cannot use
            raise Unreachable(f"Docker answered {what} with something that is not the Engine API") from None

    def _docker_error(self, what: str, exc: aiodocker.DockerError) -> Unreachable:
        cause = exc.__context__
        if exc.status != 900:
            return _HttpError(exc.status, f"Docker {what} answered HTTP {exc.status}: {_line(str(exc.message), 200)}")
        where = f"Docker socket {self.socket}"
        if isinstance(cause, aiohttp.ClientConnectorError):
            return Unreachable(describe_os_error(cause.os_error, where))
        if isinstance(cause, aiohttp.ServerDisconnectedError):
            return Unreachable(f"Docker closed the connection on {what} without answering")
        return Unreachable(f"{where}: {_line(str(cause or exc.message))}")


class _HttpError(Unreachable):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _line(text: str, limit: int = 300) -> str:
    """One line, of a length a log line can carry."""
    return one_line(" ".join(text.split()), limit)
