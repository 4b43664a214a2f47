"""Ollama beyond "it answers": a server that answers but cannot generate, a model partly on CPU,
tokens/s against the model's own baseline, and the generation's figures in the monitor's /metrics.

Against the Ollama double (tests/doubles/ollama.py), which answers Ollama's real shapes; the
/metrics test runs a real `clusterwatch run`.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clusterwatch.model import Group, Status
from clusterwatch.probes import ollama as ollama_probe
from tests.conftest import observe
from tests.doubles.ollama import OllamaDouble
from tests.helpers import ServerThread, wait_until
from tests.real.daemon import Daemon


@pytest.fixture
def ollama():
    ollama_probe.forget_baselines()  # a port may come back in a later test: no baseline from before
    double = OllamaDouble()
    with ServerThread(double.app()) as server:
        double.url = server.url  # type: ignore[attr-defined]
        yield double
    ollama_probe.forget_baselines()


def config(url: str, generate: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    check: dict[str, Any] = {"name": "ollama", "kind": "ollama", "url": url, "timeout": "2s", **extra}
    if generate is not None:
        check["generate"] = {"model": "llama3.2", "timeout": "2s", **generate}
    return {"checks": [check]}


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


# --- answers but cannot generate ---------------------------------------------------------------


def test_generation_that_hangs_while_version_answers_is_critical_and_down(tmp_path: Path, ollama):
    ollama.generate_mode = "hang"
    started = time.monotonic()
    obs = observe(tmp_path, config(ollama.url, generate={"timeout": "1s"}))
    assert time.monotonic() - started < 15  # bounded by the generation's own timeout, not the hang
    assert get(ollama.url + "/") == "Ollama is running"  # what a look at the server says meanwhile
    assert obs["ollama"].status is Status.OK and obs["ollama"].message.startswith("Ollama 0.6.2")
    gen = obs["ollama/generate"]
    assert gen.status is Status.CRITICAL and gen.down and gen.group is Group.MODELS
    assert gen.message.startswith("Ollama answers /api/version but cannot generate with llama3.2: no answer within 1s")
    assert gen.message.endswith(
        "restart Ollama (a hung one may need kill -9); it was not loaded, and loading a large model may take "
        "longer than 1s"
    )
    assert gen.details["model"] == "llama3.2"
    ollama.load()  # in memory already: no load to wait for, a hang it is
    gen = observe(tmp_path, config(ollama.url, generate={"timeout": "1s"}))["ollama/generate"]
    assert gen.status is Status.CRITICAL and gen.down
    assert gen.message.endswith("restart Ollama (a hung one may need kill -9)"), gen.message


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("500", "HTTP 500 on /api/generate (llama runner process has terminated: signal: killed)"),
        ("drop", "llama3.2: "),  # whatever aiohttp calls a connection closed before the answer
        ("not_done", "the generation did not finish (done is false)"),
        ("garbage", "/api/generate answer is not JSON"),
        ("huge", "over the 8388608-byte limit"),
    ],
)
def test_a_broken_generation_is_critical_and_down(tmp_path: Path, ollama, mode: str, expected: str):
    ollama.generate_mode = mode
    obs = observe(tmp_path, config(ollama.url, generate={}))
    assert obs["ollama"].status is Status.OK
    gen = obs["ollama/generate"]
    assert gen.status is Status.CRITICAL and gen.down, gen.message
    assert gen.message.startswith("Ollama answers /api/version but cannot generate with llama3.2"), gen.message
    assert expected in gen.message, gen.message


def test_an_overloaded_generation_is_a_warning_not_down(tmp_path: Path, ollama):
    ollama.generate_mode = "503"
    gen = observe(tmp_path, config(ollama.url, generate={}))["ollama/generate"]
    assert gen.status is Status.WARNING and not gen.down
    assert gen.message.startswith("queue full (HTTP 503 on /api/generate)")


def test_a_missing_model_is_critical_but_no_restart_would_help(tmp_path: Path, ollama):
    gen = observe(tmp_path, config(ollama.url, generate={"model": "mistral:7b"}))["ollama/generate"]
    assert gen.status is Status.CRITICAL and not gen.down
    assert gen.message == "model mistral:7b not found — run `ollama pull mistral:7b`"


# --- partly on CPU --------------------------------------------------------------------------------


def test_a_model_partly_on_cpu_is_a_warning_with_the_split(tmp_path: Path, ollama):
    loaded = ollama.load(gpu_share=0.62)
    assert loaded["size_vram"] < loaded["size"]
    obs = observe(tmp_path, config(ollama.url, expect_models=["llama3.2"]))
    model = obs["ollama/llama3.2"]
    assert model.status is Status.WARNING and not model.down
    assert "62% on GPU, 38% on CPU" in model.message
    assert "runs partly on CPU, slower than on the GPU alone" in model.message
    assert model.metrics["gpu_percent"] == pytest.approx(62, abs=0.01)
    assert model.details["model"] == "llama3.2:latest"
    assert obs["ollama"].status is Status.OK  # said once, on the model's own entity


def test_a_loaded_model_without_an_entity_is_told_on_the_server(tmp_path: Path, ollama):
    ollama.load(gpu_share=0.62)
    server = observe(tmp_path, config(ollama.url))["ollama"]
    assert server.status is Status.WARNING and not server.down
    assert "llama3.2:latest is 62% on GPU, 38% on CPU — slower than on the GPU alone" in server.message


@pytest.mark.parametrize(
    ("share", "expect_gpu", "status", "said"),
    [
        (1.0, False, Status.OK, "100% on GPU"),
        (0.999, False, Status.WARNING, "99% on GPU, 1% on CPU"),  # never rounded up to "100% on GPU"
        (0.001, False, Status.WARNING, "1% on GPU, 99% on CPU"),
        (0.0, False, Status.OK, "(0 B in VRAM: 100% on CPU)"),  # a machine without a GPU: how it runs
        (0.0, True, Status.WARNING, "runs on CPU though a GPU is expected; does Ollama see the GPU"),
    ],
)
def test_where_a_loaded_model_runs(tmp_path: Path, ollama, share: float, expect_gpu: bool, status: Status, said: str):
    ollama.load(gpu_share=share)
    model = observe(tmp_path, config(ollama.url, expect_models=["llama3.2"], expect_gpu=expect_gpu))["ollama/llama3.2"]
    assert model.status is status and said in model.message, model.message


@pytest.mark.parametrize(
    "entry",
    [
        {"size": "big", "size_vram": 1},
        {"size": 0, "size_vram": 0},
        {"size": 10, "size_vram": -3},
        {"size": 10},  # an older server without size_vram: no guess either way
        {"size": 1e308, "size_vram": 1e308},
        {"size": None, "size_vram": [1, 2]},
    ],
)
def test_sizes_that_make_no_sense_are_no_placement(tmp_path: Path, ollama, entry: dict[str, Any]):
    ollama.loaded = [{"name": "llama3.2:latest", "model": "llama3.2:latest", **entry}]
    obs = observe(tmp_path, config(ollama.url, expect_models=["llama3.2"]))
    assert obs["ollama"].status is Status.OK
    model = obs["ollama/llama3.2"]
    if entry.get("size") == 1e308:
        assert model.status is Status.OK and "100% on GPU" in model.message
    else:
        assert model.status is Status.OK and "on GPU" not in model.message and "gpu_percent" not in model.metrics


# --- what a generation measures ------------------------------------------------------------------


def test_a_generation_reports_tokens_per_second_load_time_and_first_token(tmp_path: Path, ollama):
    ollama.load_seconds, ollama.prompt_seconds, ollama.tokens_per_second = 0.6, 0.05, 40.0
    obs = observe(tmp_path, config(ollama.url, generate={}))
    gen = obs["ollama/generate"]
    assert "generate:llama3.2:8" in ollama.requests
    assert gen.status is Status.OK and not gen.down
    assert gen.metrics["tokens_per_second"] == pytest.approx(40.0, rel=1e-3)
    assert gen.metrics["eval_count"] == 8
    assert gen.metrics["load_duration_seconds"] == pytest.approx(0.6)
    assert gen.metrics["time_to_first_token_seconds"] == pytest.approx(0.65)
    assert gen.metrics["generate_seconds"] >= 0.6 + 0.05 + 0.2  # the double takes the time it claims
    assert "tokens_per_second_baseline" not in gen.metrics  # no baseline from one generation
    assert gen.message.startswith("llama3.2 answered in ")
    assert ": 8 tokens at 40.0 tokens/s, first token after 0.65s (loading the model took 0.60s)" in gen.message


def test_one_token_has_no_rate(tmp_path: Path, ollama):
    """Ollama starts eval_duration at the first token: with one, the "rate" would be noise."""
    gen = observe(tmp_path, config(ollama.url, generate={"num_predict": 1}))["ollama/generate"]
    assert "generate:llama3.2:1" in ollama.requests
    assert gen.status is Status.OK and "tokens_per_second" not in gen.metrics
    assert "time_to_first_token_seconds" in gen.metrics and "tokens/s" not in gen.message


def test_a_first_token_with_durations_ollama_left_out_as_zero(tmp_path: Path, ollama):
    """Ollama omits a zero duration (`omitempty`): absent is 0 when the answer has its total."""
    ollama.generate_override = {"load_duration": None}
    gen = observe(tmp_path, config(ollama.url, generate={}))["ollama/generate"]
    assert "time_to_first_token_seconds" not in gen.metrics  # present but unusable: unknown, not 0
    assert gen.details["ignored"] == ["load_duration"]


def observe_generation(tmp_path: Path, ollama: OllamaDouble, tps: float, **generate: Any):
    """One round, as the monitor runs one: a fresh probe call and a fresh HTTP session each time."""
    ollama.tokens_per_second = tps
    return observe(tmp_path, config(ollama.url, generate=generate))["ollama/generate"]


def test_tokens_per_second_falling_against_its_own_baseline_is_a_warning(tmp_path: Path, ollama):
    for tps in (100.0, 90.0, 110.0):  # the baseline: a median of 100
        gen = observe_generation(tmp_path, ollama, tps)
        assert gen.status is Status.OK, gen.message
    assert "tokens_per_second_baseline" not in gen.metrics  # judged against the ones before it: two so far
    ollama.load(gpu_share=0.62)  # why it fell, as /api/ps tells it
    slow = observe_generation(tmp_path, ollama, 40.0)
    assert slow.status is Status.WARNING and not slow.down
    assert slow.message.endswith(
        ": 8 tokens at 40.0 tokens/s, first token after 0.04s — below 50% of its recent median of 100.0 tokens/s "
        "(last 3 good generations); llama3.2:latest is 62% on GPU, 38% on CPU"
    ), slow.message
    assert slow.metrics["tokens_per_second"] == pytest.approx(40.0, rel=1e-3)
    assert slow.metrics["tokens_per_second_baseline"] == pytest.approx(100.0, rel=1e-3)
    # a slow generation is not "good": it does not drag the baseline down, so the drop stays told
    again = observe_generation(tmp_path, ollama, 40.0)
    assert again.status is Status.WARNING and "(last 3 good generations)" in again.message
    assert again.metrics["tokens_per_second_baseline"] == pytest.approx(100.0, rel=1e-3)
    back = observe_generation(tmp_path, ollama, 95.0)
    assert back.status is Status.OK and "median" not in back.message, back.message


def test_the_drop_fraction_is_the_configs(tmp_path: Path, ollama):
    for _ in range(3):
        assert observe_generation(tmp_path, ollama, 100.0, tokens_drop_warning=0.3).status is Status.OK
    assert observe_generation(tmp_path, ollama, 40.0, tokens_drop_warning=0.3).status is Status.OK
    assert observe_generation(tmp_path, ollama, 25.0, tokens_drop_warning=0.3).status is Status.WARNING


def test_a_rebuilt_model_starts_a_baseline_of_its_own(tmp_path: Path, ollama):
    for _ in range(3):
        observe_generation(tmp_path, ollama, 100.0)
    ollama.models[0]["digest"] = "0badc0ffee00"  # pulled again: other weights, maybe rightly slower
    gen = observe_generation(tmp_path, ollama, 30.0)
    assert gen.status is Status.OK and "tokens_per_second_baseline" not in gen.metrics


@pytest.mark.parametrize(
    "override",
    [
        {"eval_duration": math.nan},
        {"eval_duration": math.inf},
        {"eval_duration": "fast"},
        {"eval_duration": -5},
        {"eval_duration": 0},
        {"eval_duration": 10**30},  # longer than the request took: not believable
        {"eval_count": 10**30, "eval_duration": 1},  # 1e39 tokens/s
        {"eval_count": "eight"},
        {"eval_count": -8},
        {"total_duration": [1], "load_duration": {"a": 1}, "prompt_eval_duration": True},
    ],
)
def test_garbage_figures_stay_observations_and_never_a_baseline(tmp_path: Path, ollama, override: dict[str, Any]):
    for _ in range(3):
        observe_generation(tmp_path, ollama, 100.0)
    ollama.generate_override = override
    gen = observe_generation(tmp_path, ollama, 100.0)
    assert gen.status is Status.OK, gen.message  # the model did answer, done
    assert "tokens_per_second" not in gen.metrics or gen.metrics["tokens_per_second"] == pytest.approx(100, rel=1e-3)
    assert all(math.isfinite(v) for v in gen.metrics.values())
    ollama.generate_override = {}
    assert observe_generation(tmp_path, ollama, 100.0).metrics["tokens_per_second_baseline"] == pytest.approx(100)


def test_numbers_json_cannot_hold_are_no_figures(tmp_path: Path, ollama):
    ollama.generate_raw = (
        b'{"model":"llama3.2","response":"1 2","done":true,"total_duration":1e400,'
        b'"load_duration":NaN,"eval_count":99999999999999999999999,"eval_duration":-Infinity}'
    )
    gen = observe_generation(tmp_path, ollama, 100.0)
    assert gen.status is Status.OK and gen.message.startswith("llama3.2 answered in ")
    assert set(gen.metrics) == {"generate_seconds", "eval_count"}  # a huge count is a figure, with no rate
    assert gen.details["ignored"] == ["total_duration", "load_duration", "eval_duration"]


# --- /metrics of a running monitor ---------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(get(url + "/metrics")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, metric: str, **labels: str) -> float | None:
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == metric and wanted <= set(ls)]
    return found[0] if found else None


def entity(d: Daemon, name: str) -> dict[str, Any]:
    return json.loads(get(f"{d.url}/api/v1/checks/{name}"))


def test_the_monitors_metrics_are_ollamas_per_model(tmp_path: Path, ollama):
    """A real `clusterwatch run`: its /metrics carries the generation's figures with a `model` label,
    and the baseline lives in the running monitor across its rounds."""
    ollama.load(gpu_share=0.62)
    d = Daemon(
        tmp_path,
        {
            "interval": "300ms",
            "checks": [
                {
                    "name": "ollama",
                    "kind": "ollama",
                    "url": ollama.url,
                    "timeout": "2s",
                    "expect_models": ["llama3.2"],
                    "generate": {"model": "llama3.2", "timeout": "2s"},
                }
            ],
        },
    )
    d.start()
    try:
        samples = wait_until(
            lambda: (
                (s := scrape(d.url))
                and value(s, "clusterwatch_ollama_tokens_per_second_baseline", model="llama3.2") is not None
                and s
            ),
            timeout=60,
            what=f"three good generations in /metrics\n{d.log()[-3000:]}",
        )
        generate = {"name": "ollama/generate", "model": "llama3.2"}
        assert value(samples, "clusterwatch_ollama_tokens_per_second", **generate) == pytest.approx(100, rel=1e-3)
        assert value(samples, "clusterwatch_ollama_time_to_first_token_seconds", **generate) == pytest.approx(0.04)
        assert value(samples, "clusterwatch_ollama_load_seconds", **generate) == pytest.approx(0.02)
        assert value(samples, "clusterwatch_ollama_generate_seconds", **generate) >= 0.12
        split = value(samples, "clusterwatch_ollama_model_gpu_percent", name="ollama/llama3.2", model="llama3.2:latest")
        assert split == pytest.approx(62, abs=0.01)
        assert value(samples, "clusterwatch_check_status", name="ollama/llama3.2") == 1  # partly on CPU

        ollama.tokens_per_second = 30.0  # it falls, in the running monitor
        wait_until(
            lambda: value(scrape(d.url), "clusterwatch_check_status", name="ollama/generate") == 1,
            timeout=60,
            what="the drop as a warning",
        )
        said = entity(d, "ollama/generate")["message"]
        assert "at 30.0 tokens/s" in said and "below 50% of its recent median of 100.0 tokens/s" in said, said

        ollama.generate_mode = "hang"  # and then it cannot generate at all, while /api/version answers
        wait_until(
            lambda: value(scrape(d.url), "clusterwatch_check_status", name="ollama/generate") == 2,
            timeout=60,
            what="the hang as critical",
        )
        hung = entity(d, "ollama/generate")
        assert hung["message"].startswith("Ollama answers /api/version but cannot generate with llama3.2")
        assert entity(d, "ollama")["status"] == "ok"
    finally:
        d.stop()


def test_the_hint_is_this_checks_own_restart(tmp_path: Path):
    """Nothing answers on Ollama's port: the hint is what this check's restart would do, not a guess."""
    from tests.helpers import free_port

    port = free_port()  # nothing listens there
    plain = {"name": "ollama", "kind": "ollama", "url": f"http://127.0.0.1:{port}"}
    with_restart = {**plain, "restart": {"systemd": "ollama"}}
    assert "restart: `systemctl restart ollama`" in observe(tmp_path, {"checks": [with_restart]})["ollama"].message
    assert "systemctl" not in observe(tmp_path, {"checks": [plain]})["ollama"].message
