"""A Docker socket that answers garbage, closes mid-answer, stalls or never stops talking: the
probe and the restart action report it in one line, never raise, and read a bounded amount.

The "daemon" is a small unix-socket server in this process, scripted per request path, because a
real dockerd cannot be made to misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from clusterwatch.config.schema import Config
from clusterwatch.heal.actions import perform
from clusterwatch.model import Observation, Status
from clusterwatch.probes.base import ProbeContext
from clusterwatch.probes.docker import probe
from clusterwatch.probes.docker_client import MAX_BODY

Writer = asyncio.StreamWriter
Answer = bytes | Callable[[Writer], Awaitable[None]]

CID = "4f1c2d3e4a5b" * 5 + "abcd"
VERSION = {"Version": "24.0.7", "ApiVersion": "1.43", "MinAPIVersion": "1.12"}
CONTAINERS = [{"Id": CID, "Names": ["/web"], "State": "running", "Status": "Up 2 minutes"}]
INSPECT = {
    "Id": CID,
    "Name": "/web",
    "RestartCount": 0,
    "State": {"Status": "running", "Running": True, "StartedAt": "2024-01-01T00:00:00.000000000Z"},
    "Config": {"Image": "tiny:latest"},
}


def http(status: int, body: bytes, content_type: str = "application/json", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def ok_json(value: object) -> bytes:
    return http(200, json.dumps(value).encode())


HEALTHY: dict[str, Answer] = {
    "/_ping": http(200, b"OK", "text/plain; charset=utf-8"),
    "/version": ok_json(VERSION),
    "/containers/json": ok_json(CONTAINERS),
    f"/containers/{CID}/json": ok_json(INSPECT),
    f"/containers/{CID}/restart": b"HTTP/1.1 204 No Content\r\n\r\n",
}


class FakeDockerSocket:
    """A unix socket that answers each request by its path (API version prefix dropped) from a script;
    unknown paths get a 404."""

    def __init__(self, path: Path, script: dict[str, Answer]) -> None:
        self.path, self.script = path, script
        self.requests: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task] = set()

    def __enter__(self) -> FakeDockerSocket:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_unix_server(self._serve, path=str(self.path)), self._loop
        ).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        self._handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:  # keep-alive: one connection may carry several requests
                head = await reader.readuntil(b"\r\n\r\n")
                path = re.sub(r"^/v[0-9.]+/", "/", head.split(b" ", 2)[1].decode().split("?", 1)[0])
                self.requests.append(path)
                answer = self.script.get(path, http(404, b'{"message": "no such thing"}'))
                if callable(answer):
                    await answer(writer)
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._handlers.discard(asyncio.current_task())  # type: ignore[arg-type]


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "docker.sock"


@pytest.fixture
def loop_errors(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """What asyncio itself complained about (an unclosed session, an exception nobody retrieved)."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    errors: list[logging.LogRecord] = []
    yield errors
    errors.extend(r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR)
    assert not errors, [r.getMessage() for r in errors]


def observe(socket: Path, *, containers: list[str] | None = None, timeout: float = 3.0) -> list[Observation]:
    config = Config.model_validate(
        {"checks": [{"name": "docker", "kind": "docker", "socket": str(socket), "containers": containers or []}]}
    )
    check = config.checks[0]
    check.timeout = timeout
    return asyncio.run(probe(check, ProbeContext(config=config, http=None)))  # type: ignore[arg-type]


def daemon_down(observations: list[Observation]) -> Observation:
    """The probe said, in one line, that Docker is not usable (and said nothing about containers)."""
    [daemon] = observations
    assert daemon.status is Status.CRITICAL
    assert daemon.name == "docker" and daemon.message.startswith("Docker")
    assert "\n" not in daemon.message and len(daemon.message) < 400
    return daemon


async def close_at_once(writer: Writer) -> None:
    writer.transport.abort()


async def half_body_then_close(writer: Writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    writer.write(b'[{"Id": "' + b"a" * 900)
    await writer.drain()
    writer.transport.abort()


async def chunk_then_close(writer: Writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"10\r\n" + b'[{"Id": "abcdef"' + b"\r\n")
    await writer.drain()
    writer.transport.abort()


async def endless_body(writer: Writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"1\r\n[\r\n")
    piece = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    while True:
        writer.write(piece)
        await writer.drain()


async def drip(writer: Writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):
        writer.write(b" ")
        await writer.drain()
        await asyncio.sleep(0.2)


async def silence(writer: Writer) -> None:
    await asyncio.sleep(3600)


ON_LIST = "/containers/json"
ON_INSPECT = f"/containers/{CID}/json"

BROKEN = {
    "garbage instead of HTTP": ({"/_ping": b"\x00\xffthis is not HTTP at all\r\n\r\n"}, "not HTTP"),
    "closed before answering": ({"/_ping": close_at_once}, "closed the connection on /_ping without answering"),
    "closed mid-body": ({ON_LIST: half_body_then_close}, "answer to /containers/json broke off mid-body"),
    "chunked, closed mid-chunk": ({ON_LIST: chunk_then_close}, "answer to /containers/json broke off mid-body"),
    "truncated JSON": ({ON_LIST: http(200, b'[{"Id": "abc", "Names": ["/w')}, "/containers/json with invalid JSON"),
    "JSON nested without end": ({ON_LIST: http(200, b"[" * 200_000)}, "invalid JSON (nested too deeply)"),
    "bytes that are not UTF-8": ({ON_LIST: http(200, b'["\xff\xfe"]')}, "invalid JSON"),
    "a list that is an object": ({ON_LIST: ok_json({"containers": []})}, "/containers/json with something that is not"),
    "a list of numbers": ({ON_LIST: ok_json([1, 2, 3])}, "/containers/json with something that is not"),
    "an empty answer": ({ON_LIST: http(200, b"")}, "/containers/json with something that is not"),
    "a container without an Id": ({ON_LIST: ok_json([{"Names": ["/web"]}])}, "something that is not the Engine API"),
    "an Id that is a path": ({ON_LIST: ok_json([{"Id": "../../x", "Names": ["/web"]}])}, "without a usable Id"),
    "version of the wrong shape": ({"/version": ok_json(["1.43"])}, "/version with something that is not"),
    "HTTP 500 in text": (
        {ON_LIST: http(500, b"boom\nand more", "text/plain")},
        "/containers/json answered HTTP 500: boom and more",
    ),
    "HTTP 500, JSON without message": ({ON_LIST: http(500, b'{"error": 1}')}, "something that is not the Engine API"),
    "HTTP 500, body not JSON": ({ON_LIST: http(500, b"<html>")}, "/containers/json with invalid JSON"),
    "an unknown content type": ({ON_LIST: http(200, b"[]", "text/html")}, "something that is not the Engine API"),
    "a header line of 64 kB": ({"/_ping": http(200, b"OK", "text/plain", "X-A: " + "a" * 65536 + "\r\n")}, "not HTTP"),
    "a declared 100 GB answer": (
        {ON_LIST: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n["},
        "answer to /containers/json is 100000000000 bytes",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_answer_is_one_line_not_a_crash(case: str, socket_path: Path, loop_errors: list) -> None:
    answers, expected = BROKEN[case]
    with FakeDockerSocket(socket_path, {**HEALTHY, **answers}):
        daemon = daemon_down(observe(socket_path, containers=["web"]))
    assert expected in daemon.message, daemon.message


def test_the_scripted_daemon_is_healthy_when_nothing_is_broken(socket_path: Path, loop_errors: list) -> None:
    """The cases above fail because of what they break, not because the script is wrong."""
    with FakeDockerSocket(socket_path, HEALTHY) as fake:
        observations = {o.name: o for o in observe(socket_path, containers=["web"])}
    assert observations["docker"].status is Status.OK, observations["docker"].message
    assert observations["docker"].message == "Docker 24.0.7: 1 running, 0 stopped"
    assert observations["docker/web"].status is Status.OK and observations["docker/web"].target == "web"
    assert fake.requests[:2] == ["/_ping", "/version"] and ON_INSPECT in fake.requests


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (http(200, b"\x00garbage"), f"Docker answered /containers/{CID[:12]}/json with invalid JSON"),
        (ok_json([INSPECT]), f"Docker answered /containers/{CID[:12]}/json with something not an object"),
        (http(500, b'{"message": "lock"}'), f"Docker /containers/{CID[:12]}/json answered HTTP 500: lock"),
        (silence, f"Docker did not answer /containers/{CID[:12]}/json within 1s"),
    ],
    ids=["garbage", "a list", "HTTP 500", "silence"],
)
def test_a_container_docker_cannot_describe_is_unknown_not_gone(
    answer: Answer, expected: str, socket_path: Path, loop_errors: list
) -> None:
    """One bad inspect answer says nothing about the daemon or the other containers."""
    with FakeDockerSocket(socket_path, {**HEALTHY, ON_INSPECT: answer}):
        observations = {o.name: o for o in observe(socket_path, containers=["web"], timeout=1.0)}
    assert observations["docker"].status is Status.OK
    web = observations["docker/web"]
    assert web.status is Status.UNKNOWN and web.message.startswith(expected) and web.target == "web"


def test_inspect_fields_of_the_wrong_type_read_as_absent(socket_path: Path, loop_errors: list) -> None:
    hostile = {
        "Id": CID,
        "Name": ["/web"],
        "RestartCount": float("nan"),
        "State": {
            "Status": "running\n\x1b[31mred",
            "Running": True,
            "ExitCode": 1e300,
            "OOMKilled": "yes",
            "StartedAt": "0" * 5000,
            "Health": {"Status": "unhealthy", "FailingStreak": "3", "Log": [None, {"Output": ["x"]}]},
        },
        "Config": "tiny",
    }
    body = json.dumps(hostile).encode()  # RestartCount: NaN, as Python writes it
    with FakeDockerSocket(socket_path, {**HEALTHY, ON_INSPECT: http(200, body)}):
        observations = {o.name: o for o in observe(socket_path, containers=["web"])}
    web = observations["docker/web"]
    assert web.status is Status.CRITICAL
    assert web.message.startswith("unhealthy (None failed health checks) — Docker does not restart")
    assert web.metrics == {"restart_count": 0, "running": 1.0}
    assert web.details["oom_killed"] is False and web.details["image"] is None


def test_a_container_removed_between_list_and_inspect_is_left_to_the_next_round(
    socket_path: Path, loop_errors: list
) -> None:
    with FakeDockerSocket(socket_path, {**HEALTHY, ON_INSPECT: http(404, b'{"message": "No such container"}')}):
        observations = observe(socket_path, containers=["web"])
    assert [o.name for o in observations] == ["docker"] and observations[0].status is Status.OK


def test_a_silent_daemon_is_reported_within_the_timeout(socket_path: Path, loop_errors: list) -> None:
    with FakeDockerSocket(socket_path, {**HEALTHY, "/_ping": silence}):
        started = time.monotonic()
        daemon = daemon_down(observe(socket_path, timeout=1.0))
        took = time.monotonic() - started
    assert daemon.message == "Docker did not answer /_ping within 1s"
    assert took < 10, took  # the deadline is 1 s; the bound is generous for a busy machine


def test_one_deadline_covers_every_call_of_a_round(socket_path: Path, loop_errors: list) -> None:
    """A daemon that answers each call slowly cannot stretch a round past the probe's timeout."""
    with FakeDockerSocket(socket_path, {**HEALTHY, ON_LIST: drip}):
        started = time.monotonic()
        daemon = daemon_down(observe(socket_path, timeout=1.5))
        took = time.monotonic() - started
    assert daemon.message == "Docker did not answer /containers/json within 1.5s"
    assert took < 10, took


def test_an_endless_answer_is_cut_at_the_limit_in_bounded_memory(socket_path: Path, loop_errors: list) -> None:
    with FakeDockerSocket(socket_path, {**HEALTHY, ON_LIST: endless_body}):
        tracemalloc.start()
        try:
            daemon = daemon_down(observe(socket_path, timeout=60))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert daemon.message == f"Docker answer to /containers/json is over {MAX_BODY} bytes"
    assert peak < 2 * MAX_BODY + 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB"


def test_restart_action_against_a_broken_daemon_is_a_failed_outcome(socket_path: Path, loop_errors: list) -> None:
    config = Config.model_validate(
        {
            "checks": [
                {
                    "name": "docker",
                    "kind": "docker",
                    "socket": str(socket_path),
                    "containers": ["web"],
                    "restart": {"docker": "web", "timeout": "5s"},
                }
            ]
        }
    )
    check = config.checks[0]
    assert check.restart is not None
    cases = {
        "garbage": ({ON_LIST: http(200, b"\x00garbage")}, "Docker answered /containers/json with invalid JSON"),
        "refused": (
            {f"/containers/{CID}/restart": http(500, b'{"message": "cannot restart: no space"}')},
            f"Docker /containers/{CID[:12]}/restart answered HTTP 500: cannot restart: no space",
        ),
        "cut": ({f"/containers/{CID}/restart": close_at_once}, "closed the connection on /containers/"),
        "healthy": ({}, "restarted container web through the Engine API"),
    }
    for name, (answers, expected) in cases.items():
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        with FakeDockerSocket(socket_path, {**HEALTHY, **answers}):
            outcome = asyncio.run(perform(check.restart[0], check, config))
        assert outcome.ok is (name == "healthy"), (name, outcome)
        assert expected in outcome.detail and "\n" not in outcome.detail, (name, outcome.detail)
