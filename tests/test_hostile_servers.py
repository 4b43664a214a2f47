"""Each HTTP-speaking probe against a real server on loopback that answers in the worst ways.

Whatever the answer (NaN and infinities, JSON 50,000 levels deep, wrong shapes, bytes that are
not UTF-8, a body that never ends, one that drips a byte at a time), the probe gives
observations with a sensible status, one line of text and finite figures, within its timeout,
and the round still makes valid JSON and a table.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import socketserver
import threading
import time
from pathlib import Path

import pytest

from clusterwatch.engine.once import Round
from clusterwatch.model import Observation, Status
from clusterwatch.output import print_json, print_table, to_json
from tests.conftest import observe
from tests.doubles.hostile import CASES, HostileService
from tests.helpers import ServerThread

TIMEOUT = 1.0  # each check's own timeout: a drip or a stall must end about then
MAX_BODY = 256 * 1024  # an endless body is cut here (the defaults, 1-8 MiB, only take longer)
BOUND = 15.0  # seconds a whole round may take here, generous for a busy 2-core machine

OK, WARNING, CRITICAL = Status.OK, Status.WARNING, Status.CRITICAL
# The main observation's status, and words its message must contain.
EXPECTED: dict[tuple[str, str], tuple[Status, str]] = {
    ("dask", "nan"): (OK, "2 worker(s)"),
    ("dask", "deep"): (CRITICAL, "nested too deeply"),
    ("dask", "shapes"): (CRITICAL, "/health did not say ok"),
    ("dask", "garbage"): (CRITICAL, "not JSON"),
    ("dask", "endless"): (WARNING, "limit"),  # the port answers, its HTTP endpoint does not: Dask's own wording
    ("dask", "drip"): (WARNING, f"no answer within {TIMEOUT:g}s"),
    ("ollama", "nan"): (OK, "Ollama 0.6.2: 2 model(s), 1 loaded"),
    ("ollama", "deep"): (CRITICAL, "nested too deeply"),
    ("ollama", "shapes"): (OK, "2 model(s), 0 loaded"),
    ("ollama", "garbage"): (CRITICAL, "not JSON"),
    ("ollama", "endless"): (CRITICAL, "limit"),
    ("ollama", "drip"): (CRITICAL, f"no answer within {TIMEOUT:g}s"),
    ("openwebui", "nan"): (OK, "healthy"),
    ("openwebui", "deep"): (CRITICAL, "nested too deeply"),
    ("openwebui", "shapes"): (CRITICAL, "/health said {'status': 'true'}"),
    ("openwebui", "garbage"): (CRITICAL, "not JSON"),
    ("openwebui", "endless"): (CRITICAL, "limit"),
    ("openwebui", "drip"): (CRITICAL, f"no answer within {TIMEOUT:g}s"),
    ("http", "nan"): (CRITICAL, "JSON field a.b is None, expected 1"),
    ("http", "deep"): (CRITICAL, "nested too deeply"),
    ("http", "shapes"): (CRITICAL, "JSON field a.b is missing"),
    ("http", "garbage"): (CRITICAL, "not JSON"),
    ("http", "endless"): (CRITICAL, "limit"),
    ("http", "drip"): (CRITICAL, f"no answer within {TIMEOUT:g}s"),
}


def check_for(kind: str, url: str) -> dict:
    port = url.rsplit(":", 1)[1]
    common = {"name": kind, "kind": kind, "timeout": f"{TIMEOUT}s", "max_body": MAX_BODY}
    if kind == "dask":  # the hostile server is also the "scheduler port": it accepts connections
        return {**common, "scheduler": f"tcp://127.0.0.1:{port}", "dashboard": url, "min_workers": 0}
    if kind == "ollama":
        return {**common, "url": url, "expect_models": ["llama3.2"]}
    if kind == "openwebui":
        return {**common, "url": url}
    return {**common, "url": f"{url}/status", "expect_json": {"a.b": 1}}


def assert_sound(observations: list[Observation]) -> None:
    """What holds for any answer: one short line, finite figures, no probe bug, valid JSON and a table."""
    assert observations
    for obs in observations:
        assert "\n" not in obs.message and len(obs.message) <= 1000, obs.message[:200]
        assert not obs.message.startswith("probe bug"), obs.message
        assert all(math.isfinite(v) for v in obs.metrics.values()), obs.metrics
        assert obs.latency_ms is None or math.isfinite(obs.latency_ms)
    result = Round(observations, time.time(), 0.1)
    out = io.StringIO()
    print_json(to_json(result, "hostile.yaml"), out)
    data = json.loads(out.getvalue(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON output"))
    assert len(data["checks"]) == len(observations)
    table = io.StringIO()
    print_table(result, "hostile.yaml", table)
    assert "Services" in table.getvalue()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["dask", "ollama", "openwebui", "http"])
def test_hostile_answer_is_an_observation(tmp_path: Path, kind: str, case: str):
    service = HostileService(kind, case)
    with ServerThread(service.app()) as server:
        started = time.monotonic()
        seen = observe(tmp_path, {"checks": [check_for(kind, server.url)]}, timeout=BOUND)
        elapsed = time.monotonic() - started
    assert service.requests, "the probe never asked"
    assert elapsed < BOUND
    assert_sound(list(seen.values()))
    status, words = EXPECTED[(kind, case)]
    main = seen[kind]
    assert main.status is status, main.message
    assert words in main.message


def test_nan_figures_are_dropped_not_reported(tmp_path: Path):
    """Dask's NaN and infinite samples are absent, the finite ones kept; workers are still seen by name."""
    with ServerThread(HostileService("dask", "nan").app()) as server:
        seen = observe(tmp_path, {"checks": [check_for("dask", server.url)]}, timeout=BOUND)
    scheduler = seen["dask"]
    assert "clients" not in scheduler.metrics and "workers_idle" not in scheduler.metrics
    assert "tasks_erred" not in scheduler.metrics and "tick_duration_maximum_seconds" not in scheduler.metrics
    assert "total_threads" not in scheduler.metrics and "total_memory" not in scheduler.metrics
    assert "tasks_no-worker" not in scheduler.metrics  # two samples of 1e308: their sum is no figure
    nan_worker, inf_worker = seen["dask/nan-worker"], seen["dask/inf-worker"]
    assert nan_worker.status is OK and nan_worker.message == "running, ? thread(s)"
    assert nan_worker.metrics == {}
    assert inf_worker.metrics["memory_percent"] == 100.0 and inf_worker.status is CRITICAL  # 1e308 of 1e308


def test_ollama_nan_sizes_are_zero_not_nan(tmp_path: Path):
    with ServerThread(HostileService("ollama", "nan").app()) as server:
        seen = observe(tmp_path, {"checks": [check_for("ollama", server.url)]}, timeout=BOUND)
    main, model = seen["ollama"], seen["ollama/llama3.2"]
    assert main.metrics["vram_bytes"] == 0.0 and "nan" not in main.message.lower()
    assert model.status is OK and model.metrics["size_bytes"] == 0.0 and "nan" not in model.message.lower()


def test_ollama_wrong_shapes_still_name_the_model(tmp_path: Path):
    with ServerThread(HostileService("ollama", "shapes").app()) as server:
        seen = observe(tmp_path, {"checks": [check_for("ollama", server.url)]}, timeout=BOUND)
    model = seen["ollama/llama3.2"]
    assert model.status is OK and model.message.startswith("llama3.2:latest present (0 B)")
    assert seen["ollama"].details["version"] == "{'major': [0, 6]}"


class RawServer(socketserver.ThreadingTCPServer):
    """Answers every connection with fixed bytes, HTTP or not, then closes it: garbage below the body."""

    daemon_threads = True

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        super().__init__(("127.0.0.1", 0), RawHandler)


class RawHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5)
        with contextlib.suppress(OSError):
            self.request.recv(65536)
            self.request.sendall(self.server.payload)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"\xff\xfe\x00garbage\r\n\r\n", "bad HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100_000 + b"\r\n\r\n", "bad HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n{}", "bad HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n", "bad HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nabcde", "broke off"),
        (b"HTTP/1.1 302 Found\r\nLocation: http://[::1\r\nContent-Length: 0\r\n\r\n", "redirect"),
        (b"", "dropped"),
    ],
)
def test_garbage_below_the_body(tmp_path: Path, payload: bytes, words: str):
    """Not HTTP at all, a header of 100 kB, an absurd length, a broken chunk, a broken gzip, a bad redirect."""
    server = RawServer(payload)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        seen = observe(tmp_path, {"checks": [check_for("http", url)]}, timeout=BOUND)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert_sound(list(seen.values()))
    assert seen["http"].status is CRITICAL and words in seen["http"].message
