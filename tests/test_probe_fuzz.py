"""Property: whatever a service answers, each probe's parser gives observations, and nothing else, in bounded time.

Random JSON trees (NaN, infinities, huge integers, wrong types, the keys the probes read),
random Prometheus text lines, random bytes and random HTTP statuses are served by a real
server on loopback; the node report an SSH node prints and the readings NVML gives are fed
to their parsers directly. The examples are derandomized (the same every run), so the suite
is repeatable, and there is no per-example deadline, so a busy machine does not fail it.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterwatch.config.schema import Config, DaskCheck, HttpCheck, Node, NodeCheck, OllamaCheck, OpenWebUICheck
from clusterwatch.model import Observation, Status
from clusterwatch.probes import gpu, node, probe_for, ssh
from clusterwatch.probes.base import ProbeContext, new_http_session
from tests.helpers import ServerThread

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PER_EXAMPLE = 10.0  # seconds one probe may take: its timeout is 2 s

# The keys the probes read, so random trees reach past the first isinstance check.
KEYS = [
    "workers",
    "name",
    "host",
    "last_seen",
    "status",
    "metrics",
    "memory",
    "memory_limit",
    "nthreads",
    "task_counts",
    "cpu",
    "num_fds",
    "event_loop_interval",
    "total_threads",
    "total_memory",
    "id",
    "address",
    "erred",
    "processing",
    "unrunnable",
    "clients",
    "version",
    "models",
    "model",
    "size",
    "size_vram",
    "details",
    "parameter_size",
    "quantization_level",
    "family",
    "done",
    "total_duration",
    "a",
    "b",
]
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.sampled_from([10**400, -(10**30), 2**63 + 1, 1e308, -1e308, 5e-324]),
)
leaves = st.one_of(
    st.none(), st.booleans(), numbers, st.text(max_size=30), st.sampled_from(["running", "paused", "ok"])
)
json_trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), children, max_size=6),
    ),
    max_leaves=40,
)


def _dump(tree: Any) -> bytes:
    return json.dumps(tree, allow_nan=True).encode()


bodies = st.one_of(
    json_trees.map(_dump),
    json_trees.map(_dump).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),  # cut off
    st.binary(max_size=300),
    st.sampled_from([b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000, b"NaN", b"-Infinity", b"1" * 5000]),
)
statuses = st.sampled_from([200, 200, 200, 200, 204, 404, 500, 503])

METRIC_NAMES = [
    "dask_scheduler_workers",
    "dask_scheduler_tasks",
    "dask_scheduler_clients",
    "dask_scheduler_tick_duration_maximum_seconds",
    "dask_scheduler_workers_added_total",
    "other_metric",
]
sample_values = st.one_of(
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e308", "1e999", "-0", "abc", "1", "0x10", ""]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
labels = st.one_of(
    st.just(""),
    st.text(max_size=15).map(lambda t: "{state=" + json.dumps(t) + "}"),
    st.text(max_size=15).map(lambda t: "{" + t + "}"),
)
prometheus_lines = st.one_of(
    st.tuples(st.sampled_from(METRIC_NAMES), labels, sample_values).map(lambda t: f"{t[0]}{t[1]} {t[2]}"),
    st.sampled_from(METRIC_NAMES).map(lambda n: f"# TYPE {n} {'gauge' if len(n) % 2 else 'counter'}"),
    st.text(max_size=40),
)
prometheus_pages = st.lists(prometheus_lines, max_size=12).map(lambda lines: "\n".join(lines).encode())


class Answers:
    """What the server says on each path, set by each example before its probe runs."""

    def __init__(self) -> None:
        self.by_path: dict[str, tuple[int, bytes]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        status, body = self.by_path.get(request.path, (404, b"not found"))
        return web.Response(status=status, body=body, content_type="application/json")


@pytest.fixture(scope="module")
def served():
    answers = Answers()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answers.handle)
    with ServerThread(app) as server:
        yield answers, server


def run(check: Any, config: Config | None = None) -> list[Observation]:
    """The probe as the engine calls it, but without the engine's net: an exception fails the property."""

    async def go() -> list[Observation]:
        async with new_http_session() as session:
            return await probe_for(check.kind)(check, ProbeContext(config=config or Config(), http=session))

    started = time.monotonic()
    observed = asyncio.run(go())
    assert time.monotonic() - started < PER_EXAMPLE
    assert_observations(observed)
    return observed


def assert_observations(observed: Any) -> None:
    assert isinstance(observed, list) and observed
    for obs in observed:
        assert isinstance(obs, Observation) and isinstance(obs.status, Status)
        assert "\n" not in obs.message and len(obs.message) <= 1000
        assert all(isinstance(v, int | float) and math.isfinite(v) for v in obs.metrics.values())
        json.dumps(obs.to_dict(), allow_nan=False)


@SETTINGS
@given(
    health=st.one_of(st.just((200, b"ok")), st.tuples(statuses, bodies)),
    identity=st.tuples(statuses, bodies),
    workers=st.dictionaries(st.text(max_size=20), json_trees, max_size=4),
    counts=st.tuples(statuses, bodies),
    metrics=st.tuples(statuses, prometheus_pages),
    wrap=st.booleans(),
)
def test_dask(served, health, identity, workers, counts, metrics, wrap):
    answers, server = served
    if wrap:  # a tree in the right place: {"workers": {ADDR: random}}
        identity = (200, _dump({"workers": workers, "total_threads": 1}))
    answers.by_path = {
        "/health": health,
        "/json/identity.json": identity,
        "/json/counts.json": counts,
        "/metrics": metrics,
    }
    check = DaskCheck(
        name="dask",
        kind="dask",
        scheduler=f"tcp://127.0.0.1:{server.port}",
        dashboard=server.url,
        timeout=2,
        expect_workers=["w1", {"name": "w2", "host": "10.0.0.9"}],
    )
    names = {o.name for o in run(check)}
    assert {"dask", "dask/w1", "dask/w2"} <= names


@SETTINGS
@given(
    version=st.one_of(st.just((200, b'{"version": "0.6.2"}')), st.tuples(statuses, bodies)),
    tags=st.tuples(statuses, bodies),
    ps=st.tuples(statuses, bodies),
    models=st.lists(json_trees, max_size=4),
    generate=st.tuples(statuses, bodies),
    wrap=st.booleans(),
)
def test_ollama(served, version, tags, ps, models, generate, wrap):
    answers, server = served
    if wrap:  # random model entries where Ollama lists them
        tags = (200, _dump({"models": [{"name": "llama3.2:latest", "size": 1}, *models]}))
        ps = (200, _dump({"models": models}))
    answers.by_path = {"/api/version": version, "/api/tags": tags, "/api/ps": ps, "/api/generate": generate}
    check = OllamaCheck(
        name="ollama",
        kind="ollama",
        url=server.url,
        timeout=2,
        expect_models=["llama3.2"],
        generate={"model": "llama3.2", "timeout": 2},
    )
    run(check)


@SETTINGS
@given(
    health=st.one_of(st.just((200, b'{"status": true}')), st.tuples(statuses, bodies)),
    db=st.tuples(statuses, bodies),
    version=st.tuples(statuses, bodies),
)
def test_openwebui(served, health, db, version):
    answers, server = served
    answers.by_path = {"/health": health, "/health/db": db, "/api/version": version}
    run(OpenWebUICheck(name="webui", kind="openwebui", url=server.url, timeout=2))


@SETTINGS
@given(answer=st.tuples(statuses, bodies), wanted=json_trees, path=st.sampled_from(["a", "a.b", "a[0].b", "$.0", ""]))
def test_http(served, answer, wanted, path):
    answers, server = served
    answers.by_path = {"/status": answer}
    check = HttpCheck(
        name="api", kind="http", url=f"{server.url}/status", timeout=2, expect_json={path: wanted}, body_contains="ok"
    )
    run(check)


REPORT_KEYS = ["nproc", "stat1", "stat2", "loadavg", "MemTotal", "MemAvailable", "df", "dask_worker", "battery", "end"]
report_values = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=0).map(str),
    st.sampled_from(["0", "9" * 5000, "²", "١٢", "nan", "inf", "-1", "cpu 1 2 3 4 5 6 7 8", "/ 10 5 5"]),
    json_trees.map(lambda t: json.dumps(t, allow_nan=True)),
    st.lists(st.sampled_from(["cpu", "1", "²", "9" * 30, "x"]), max_size=9).map(" ".join),
)
report_lines = st.one_of(
    st.tuples(st.sampled_from(REPORT_KEYS), report_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=60),
)


@settings(SETTINGS, max_examples=150)
@given(lines=st.lists(report_lines, max_size=15))
def test_ssh_node_report(lines):
    """What an SSH node prints (or a hostile one) is judged into one observation."""
    node_config = Node(name="phone", host="127.0.0.1", ssh={"port": 8022})
    text = "\n".join([*lines, "end=1"])
    started = time.monotonic()
    observed = ssh.judge(node_config, Config(), ssh.parse_report(text), "127.0.0.1:8022", 12.0)
    assert time.monotonic() - started < PER_EXAMPLE
    assert_observations([observed])


nvml_values = st.one_of(numbers, st.none(), st.text(max_size=5), st.binary(max_size=8))


@settings(SETTINGS, max_examples=150)
@given(count=st.sampled_from([0, 1, 2]), values=st.lists(nvml_values, min_size=12, max_size=12), fail=st.booleans())
def test_gpu_readings(count, values, fail):
    """Whatever NVML reads back (a broken driver, odd figures), the node probe's GPU part gives observations."""

    def value(i: int) -> Any:
        if fail and i % 5 == 0:
            raise RuntimeError("NVMLError_Unknown")
        return values[i]

    fake = SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: value(0),
        nvmlDeviceGetUUID=lambda h: value(1),
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=value(2), memory=value(3)),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=value(4), total=value(5)),
        nvmlDeviceGetTemperature=lambda h, kind: value(6),
        nvmlDeviceGetPowerUsage=lambda h: value(7),
    )
    found = gpu.survey(fake)
    check = NodeCheck(name="system", kind="node")
    system = Observation("system", "node", "host", Status.OK, "fine")
    observed = node._gpus(check, Config().thresholds, "host", found, system)
    assert_observations([system, *observed])


@settings(SETTINGS, max_examples=150)
@given(metrics=st.dictionaries(st.text(max_size=10), json_trees, max_size=8), details=json_trees, message=st.text())
def test_observation_always_encodes(metrics, details, message):
    """An observation built from anything holds finite figures and encodes as strict JSON."""
    obs = Observation("x", "http", "t", Status.OK, message, metrics=metrics, details={"answer": details})
    assert_observations([obs])
