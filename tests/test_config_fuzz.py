"""Property: whatever a config file holds, loading it gives a config or a ConfigError, in bounded time and memory.

Random YAML trees (NaN, infinities, huge integers, odd strings, `${ENV}` references, the real
field names and check kinds, so they reach deep into the schema) are written to a file, sometimes
cut short, sometimes with a hostile snippet added, and loaded as the CLI loads them. Cluster AI's
`.env`, `nodes_list.conf` and `cluster.yaml` get random bytes. A loaded config must be one the
monitor can run: every number in it finite, every duration more than zero where zero would stop
it. The examples are derandomized (the same every run) and have no per-example deadline, so a
busy machine does not fail the suite; each example's time is bounded generously instead.
"""

from __future__ import annotations

import math
import resource
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from clusterwatch.config import clusterai
from clusterwatch.config.files import FileProblem
from clusterwatch.config.loader import ConfigError, LoadedConfig, load_config
from clusterwatch.config.schema import CHECK_KINDS, Config

SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
PER_EXAMPLE = 10.0  # seconds; a load takes milliseconds
MAX_RSS_GROWTH = 512 * 1024  # KiB over the whole test; an alias bomb would take gigabytes
ENV = {"SET": "30s", "TOKEN": "tok-123456", "HOME": "/nonexistent-home"}


# --- what the schema knows, so random trees use its words --------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    """Every model named anywhere in an annotation (`list[Check] | None` and so on)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _literals(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for arg in typing.get_args(annotation) for v in _literals(arg)]


def _all_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [Config]
    while todo:
        model = todo.pop()
        if model not in found:
            found.append(model)
            todo.extend(m for info in model.model_fields.values() for m in _models(info.annotation))
    return found


FIELD_NAMES = sorted(
    {info.alias or name for model in _all_models() for name, info in model.model_fields.items()} | {"<<"}
)
NAMES = ["a", "b", "gpu-box", "ollama", "local", "dask", "w1"]
ODD_STRINGS = [
    "",
    " ",
    "0",
    "0s",
    "0ms",
    "-5s",
    "1e999",
    "nan",
    "inf",
    "-inf",
    "9" * 400,
    "9" * 60 + "s",
    "1m30s",
    "500ms",
    "30s",
    "3651d",
    "1MiB",
    "2048GiB",
    "${SET}",
    "${TOKEN}",
    "${UNSET}",
    "${UNSET:-10s}",
    "http://127.0.0.1:1/",
    "http://127.0.0.1:99999/",
    "http://[::1",
    "https://user:pass@127.0.0.1:8443/x?access_token=abc",
    "tcp://127.0.0.1:8786",
    "tcp://host:",
    "tcp://host:x",
    "json://127.0.0.1:9/alerts",
    "mailtos://u:p@127.0.0.1:587?to=a@b",
    "not a url",
    "127.0.0.1:9877",
    "0.0.0.0:9877",
    "::1:x",
    "~",
    "~nobody/x",
    "/dev/zero",
    "/nonexistent/file",
    "a\x00b",
    "\u202eevil",
    "²",
    "١٢",
    "warning",
    "critical",
    "mon",
    "25:00",
    "01:00",
    "gpu-*",
    *CHECK_KINDS,
    *NAMES,
]


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each as often as its weight (`one_of` merges a strategy given twice)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 65535, 65536, 10**400, -(10**30), 2**63 + 1, 1e308, 5e-324, -0.0, 0.0001]),
)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)  # no lone surrogates: not writable
scalars = st.one_of(st.none(), st.booleans(), numbers, text, st.sampled_from(ODD_STRINGS))
keys = st.one_of(st.sampled_from(FIELD_NAMES), text)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=25,
)

durations = st.one_of(
    st.sampled_from(["500ms", "30s", "1m30s", "10m", "1h", "0", "0s", "-1s", "1e999", "3651d", "9" * 60 + "s"]),
    numbers,
)
_strategies: dict[Any, st.SearchStrategy[Any]] = {}


def plausible(annotation: Any, depth: int) -> st.SearchStrategy[Any]:
    """A value of the annotation's type (a model's mapping, a list, a duration...), often just out of range."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        metadata = " ".join(repr(m) for m in args[1:])
        if "duration" in metadata:
            return durations
        if "size" in metadata:
            return st.one_of(st.sampled_from(["1MiB", "512kB", "2048GiB", "1.5kb", "x"]), numbers)
        return plausible(args[0], depth)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if args and origin is not list and origin is not dict:  # a union
        return st.one_of(*[plausible(arg, depth) for arg in args if arg is not type(None)] or [st.none()])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_dicts(annotation, depth + 1) if depth < 3 else trees
    if origin is list:
        return st.lists(plausible(args[0], depth), max_size=3)
    if origin is dict:
        return st.dictionaries(
            st.one_of(keys, st.sampled_from(_literals(args[0]) or NAMES)), plausible(args[1], depth), max_size=3
        )
    if annotation is bool:
        return st.booleans()
    if annotation is int or annotation is float:
        return numbers
    if annotation is str:
        return st.one_of(text, st.sampled_from(ODD_STRINGS))
    return trees


def model_dicts(model: type[BaseModel], depth: int = 0, max_keys: int = 6) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings shaped like the model: a few of its keys with plausible values, now and then a random value or key.

    With `max_keys=1`, one odd value at most and no stray key.
    """
    if (model, depth, max_keys) not in _strategies:
        optional: dict[str, st.SearchStrategy[Any]] = {}
        for name, info in model.model_fields.items():
            value = plausible(info.annotation, depth)
            if name in ("name", "node") or "depends_on" in name:
                value = st.one_of(st.sampled_from(NAMES), st.lists(st.sampled_from(NAMES), max_size=3), value)
            optional[info.alias or name] = weighted((6, value), (1, scalars), (1, trees))
        stray = st.dictionaries(keys, scalars, max_size=1)
        _strategies[(model, depth, max_keys)] = st.builds(
            lambda d, extra: {**d, **extra},
            st.lists(st.sampled_from(sorted(optional)), max_size=max_keys, unique=True).flatmap(
                lambda chosen: st.fixed_dictionaries({key: optional[key] for key in chosen})
            ),
            weighted((2, st.just({})), (1, stray)) if max_keys > 1 else st.just({}),
        )
    return _strategies[(model, depth, max_keys)]


def checks() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        *[
            st.builds(
                lambda d, name, kind=kind: {"name": name, "kind": kind, **d},
                model_dicts(model, 1),
                st.sampled_from(NAMES),
            )
            for kind, model in CHECK_KINDS.items()
        ]
    )


REQUIRED = {"http": {"url": "http://127.0.0.1:1/"}, "tcp": {"port": 1}}
nearly_valid_checks = st.one_of(
    *[
        st.builds(
            lambda d, name, kind=kind: {"name": name, "kind": kind, **REQUIRED.get(kind, {}), **d},
            model_dicts(model, 1, max_keys=1),
            st.sampled_from(NAMES),
        )
        for kind, model in CHECK_KINDS.items()
    ]
)
with_checks = st.builds(
    lambda base, items: {**base, "checks": items}, model_dicts(Config), st.lists(checks(), max_size=4)
)
nearly_valid = st.builds(  # one odd value at a time, so some load and the loaded config is checked too
    lambda base, items: {**base, "checks": items},
    model_dicts(Config, max_keys=1),
    st.lists(nearly_valid_checks, max_size=4, unique_by=lambda c: repr(c.get("name"))),
)
configs = weighted((4, with_checks), (3, nearly_valid), (1, model_dicts(Config)), (1, trees))
SNIPPETS = [
    "",
    "x: &a [*a]\n",
    "x: &a {<<: *a}\n",
    "<<: {interval: 0}\n",
    "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)),
    "deep: " + "[" * 200 + "]" * 200 + "\n",
    "interval: !!timestamp soon\n",
    "port: !!int " + "9" * 5000 + "\n",
    "? [a, b]\n: c\n",
    "interval: 30s\ninterval: 10s\n",
    "%TAG ! tag:example.org,2000:\n---\n",
    "---\n---\n",
    "\t- tab\n",
]


def _dump(tree: Any, flow: bool | None, unicode: bool) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(tree, Dumper=dumper, default_flow_style=flow, allow_unicode=unicode, sort_keys=False)


documents = st.builds(
    lambda tree, flow, unicode, snippet: _dump(tree, flow, unicode) + snippet,
    configs,
    st.sampled_from([None, False, True]),
    st.booleans(),
    weighted((4, st.just("")), (1, st.sampled_from(SNIPPETS))),
).flatmap(lambda doc: weighted((4, st.just(doc)), (1, st.integers(0, len(doc)).map(lambda n: doc[:n]))))


# --- the properties ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def rss_baseline() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def load(path: Path, cwd: Path) -> LoadedConfig | ConfigError:
    """The config or its error, as the CLI sees them; any other exception fails the property."""
    started = time.monotonic()
    try:
        outcome: LoadedConfig | ConfigError = load_config(str(path), env=ENV, cwd=cwd)
    except ConfigError as exc:
        outcome = exc
    assert time.monotonic() - started < PER_EXAMPLE
    return outcome


def assert_outcome(outcome: LoadedConfig | ConfigError) -> None:
    if isinstance(outcome, ConfigError):
        assert outcome.problems
        for problem in outcome.problems:
            line = str(problem)
            assert problem.file and line.startswith(problem.file.replace("\0", "\\0"))
            assert "\n" not in line and len(line) < 2000
            assert "Traceback" not in line
        return
    assert isinstance(outcome, LoadedConfig)
    assert_runnable(outcome.config)


def assert_runnable(config: Config) -> None:
    """Every number finite and bounded; every interval and timeout at least 1ms (the scheduler divides by them)."""

    def walk(value: Any, path: str) -> None:
        if path.endswith("expect_json"):  # values compared with a service's answer, kept as written
            return
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif isinstance(value, float | int) and not isinstance(value, bool):
            assert math.isfinite(value) and abs(value) <= 10**12, (path, value)

    walk(config.model_dump(), "")
    for item in [config, *config.checks, *config.nodes]:
        for name in ("interval", "retry_interval", "timeout"):
            value = getattr(item, name, None)
            assert value is None or value >= 0.001, (name, value)
    for check in config.checks:
        if check.restart:
            assert min(min(s.backoff, s.window, s.timeout) for s in check.restart) >= 0.001


@settings(SETTINGS, max_examples=300)
@given(document=documents)
def test_random_yaml_trees(workdir: Path, rss_baseline: int, document: str) -> None:
    path = workdir / "clusterwatch.yaml"
    path.write_text(document, encoding="utf-8")
    assert_outcome(load(path, workdir))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_baseline < MAX_RSS_GROWTH


@settings(SETTINGS, max_examples=150)
@given(tree=nearly_valid, flow=st.sampled_from([None, False, True]))
def test_nearly_valid_configs(workdir: Path, rss_baseline: int, tree: dict[str, Any], flow: bool | None) -> None:
    """One odd value at a time: many of these load, and what loads must be a config the monitor can run."""
    path = workdir / "clusterwatch.yaml"
    path.write_text(_dump(tree, flow, True), encoding="utf-8")
    assert_outcome(load(path, workdir))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_baseline < MAX_RSS_GROWTH


ENV_NAMES = [
    b"DISK_WARN_THRESHOLD",
    b"DISK_CRIT_THRESHOLD",
    b"MEM_WARN_THRESHOLD",
    b"MEM_CRIT_THRESHOLD",
    b"CPU_CRIT_THRESHOLD",
    b"CPU_ALERT_THRESHOLD",
    b"WORKER_DISK_CRIT_THRESHOLD",
    b"DOCKER_SERVICES",
    b"OLLAMA_BASE_URL",
    b"DASK_SCHEDULER_ADDRESS",
    b"DASHBOARD_HEALTH_URL",
    b"DASHBOARD_HEALTH_TIMEOUT",
    b"SKIP_WORKERS",
    b"SMTP_PASSWORD",
    b"SLACK_WEBHOOK_URL",
    b"export OTHER",
]
WORDS = [
    b"",
    b"0",
    b"-1",
    b"95",
    b"101",
    b"nan",
    b"inf",
    b"9" * 400,
    b"true",
    b'"quoted value"',
    b"'x'",
    b"3 # comment",
    b"http://127.0.0.1:1",
    b"http://127.0.0.1:99999",
    b"tcp://h:",
    b"frontend backend",
    b"w1",
    b"127.0.0.1",
    b"u0_a123",
    b"22",
    b"8022",
    b"99999",
    b"inactive",
    b"active",
    b"#",
    "joão".encode("latin-1"),
    "joão".encode(),
    "²".encode(),
    b"\xef\xbb\xbf",
    b"\x00",
    b"\x85",
    b"\r",
]
words = st.one_of(st.sampled_from(WORDS), st.binary(max_size=8).map(lambda b: b.replace(b"\n", b"")))
valid_env_lines = st.builds(lambda name, value: name + b"=" + value, st.sampled_from(ENV_NAMES), words)
env_lines = weighted(
    (3, valid_env_lines),
    (1, st.sampled_from([b"", b"# configura\xe7\xe3o", b"  # indented comment", b"  export A='1'  "])),
)
nodes_lines = st.one_of(
    st.lists(words, min_size=4, max_size=7).map(b" ".join),
    st.lists(st.sampled_from(WORDS[14:]), min_size=5, max_size=6).map(b" ".join),
    st.sampled_from([b"", b"# hostname alias ip user port [status]", b"w1 w1 127.0.0.1 u 22"]),
)
workers = st.builds(
    lambda name, host, user, port, status: (
        b"  %s:\n    host: %s\n    user: %s\n    port: %s\n    status: %s\n" % (name, host, user, port, status)
    ),
    *[words] * 5,
)


def files(structured: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Mostly the file's own shape with odd values, sometimes bytes at random."""
    return weighted((6, structured), (1, st.binary(max_size=200)))


env_files = files(st.lists(env_lines, max_size=8).map(b"\n".join))
nodes_lists = files(st.lists(nodes_lines, max_size=6).map(b"\n".join))
cluster_yamls = files(st.lists(workers, max_size=4).map(lambda ws: b"workers:\n" + b"".join(ws)))


@settings(SETTINGS, max_examples=300)
@given(env=env_files, env_local=env_files, nodes_list=nodes_lists, cluster_yaml=cluster_yamls)
def test_cluster_ai_files_of_random_bytes(
    workdir: Path, rss_baseline: int, env: bytes, env_local: bytes, nodes_list: bytes, cluster_yaml: bytes
) -> None:
    for name, data in ((".env", env), (".env.local", env_local), ("nodes", nodes_list), ("cluster.yaml", cluster_yaml)):
        (workdir / name).write_bytes(data)
    for read, paths in (
        (clusterai.read_env_files, [[workdir / ".env", workdir / ".env.local"]]),
        (clusterai.read_nodes_list, [workdir / "nodes"]),
        (clusterai.read_cluster_yaml, [workdir / "cluster.yaml"]),
    ):
        try:
            read(*paths)
        except FileProblem as exc:
            assert "UTF-8" not in exc.message  # Latin-1 is the fallback: any bytes are text
    config = workdir / "clusterwatch.yaml"
    config.write_text(
        "cluster_ai: {env_files: [.env, .env.local], nodes_list: nodes, cluster_yaml: cluster.yaml}\n"
        "checks: [{name: dask, kind: dask}, {name: ollama, kind: ollama}, {name: system, kind: node}]\n"
    )
    assert_outcome(load(config, workdir))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_baseline < MAX_RSS_GROWTH
