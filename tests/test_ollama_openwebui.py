"""Ollama and Open WebUI through doubles that answer their real shapes, including misbehaviour."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clusterwatch.model import Group, Status
from tests.conftest import observe
from tests.doubles.ollama import OllamaDouble
from tests.doubles.openwebui import OpenWebUIDouble
from tests.helpers import ServerThread, closed_port


@pytest.fixture
def ollama():
    double = OllamaDouble()
    with ServerThread(double.app()) as server:
        double.url = server.url  # type: ignore[attr-defined]
        yield double


@pytest.fixture
def webui():
    double = OpenWebUIDouble()
    with ServerThread(double.app()) as server:
        double.url = server.url  # type: ignore[attr-defined]
        yield double


def ollama_config(url: str, **extra) -> dict:
    return {"checks": [{"name": "ollama", "kind": "ollama", "url": url, "timeout": "2s", **extra}]}


def test_ollama_healthy_with_expected_model_loaded(tmp_path: Path, ollama):
    ollama.loaded = [  # all of it in VRAM (size_vram == size): below that it runs partly on CPU, a warning
        {
            **ollama.models[0],
            "size": 1_900_000_000,
            "size_vram": 1_900_000_000,
            "expires_at": "2026-11-27T10:05:00Z",
            "context_length": 4096,
        }
    ]
    obs = observe(tmp_path, ollama_config(ollama.url, expect_models=["llama3.2"]))
    server, model = obs["ollama"], obs["ollama/llama3.2"]
    assert server.status is Status.OK and server.message.startswith("Ollama 0.6.2: 1 model(s), 1 loaded")
    assert server.metrics["vram_bytes"] == 1_900_000_000 and server.metrics["models_loaded"] == 1
    assert model.status is Status.OK and model.group is Group.MODELS
    assert "llama3.2:latest present" in model.message and "loaded" in model.message


def test_ollama_missing_model_is_critical_by_name(tmp_path: Path, ollama):
    obs = observe(tmp_path, ollama_config(ollama.url, expect_models=["llama3.2", "mistral:7b"]))
    assert obs["ollama/llama3.2"].status is Status.OK
    assert obs["ollama/llama3.2"].message.endswith("not loaded (loads on first request)")
    missing = obs["ollama/mistral:7b"]
    assert missing.status is Status.CRITICAL
    assert missing.message == "model mistral:7b is not pulled — run `ollama pull mistral:7b`"


def test_ollama_queue_full_is_a_warning(tmp_path: Path, ollama):
    ollama.mode = "503"
    obs = observe(tmp_path, ollama_config(ollama.url))
    assert obs["ollama"].status is Status.WARNING
    assert obs["ollama"].message.startswith("queue full (HTTP 503 on /api/version)")


def test_ollama_500_is_critical(tmp_path: Path, ollama):
    ollama.mode = "500"
    assert observe(tmp_path, ollama_config(ollama.url))["ollama"].status is Status.CRITICAL


def test_ollama_garbage_json(tmp_path: Path, ollama):
    ollama.mode = "garbage"
    obs = observe(tmp_path, ollama_config(ollama.url))["ollama"]
    assert obs.status is Status.CRITICAL and "not JSON" in obs.message


def test_ollama_50mb_body_is_an_observation(tmp_path: Path, ollama):
    ollama.mode = "huge"
    obs = observe(tmp_path, ollama_config(ollama.url))["ollama"]
    assert obs.status is Status.CRITICAL and "over the 8388608-byte limit" in obs.message


def test_ollama_answer_that_never_comes(tmp_path: Path, ollama):
    ollama.mode = "hang"
    started = time.monotonic()
    obs = observe(tmp_path, ollama_config(ollama.url))["ollama"]
    assert time.monotonic() - started < 5
    assert obs.status is Status.CRITICAL and obs.message.startswith("no answer within 2s")


def test_ollama_down_says_what_to_do(tmp_path: Path):
    port = closed_port()
    obs = observe(tmp_path, ollama_config(f"http://127.0.0.1:{port}"))["ollama"]
    assert obs.status is Status.CRITICAL
    assert obs.message == f"connection refused at 127.0.0.1:{port} — is `ollama serve` running?"


def test_ollama_generation_probe_is_opt_in_and_asks_for_a_few_tokens(tmp_path: Path, ollama):
    observe(tmp_path, ollama_config(ollama.url))
    assert not any(r.startswith("generate") for r in ollama.requests)
    obs = observe(tmp_path, ollama_config(ollama.url, generate={"model": "llama3.2", "latency_warning": "5s"}))
    assert "generate:llama3.2:8" in ollama.requests  # one token has no tokens/s (see GenerateProbe)
    gen = obs["ollama/generate"]
    assert gen.status is Status.OK and gen.metrics["total_duration_seconds"] == pytest.approx(0.12)
    ollama.generate_delay = 0.6
    slow = observe(tmp_path, ollama_config(ollama.url, generate={"model": "llama3.2", "latency_warning": "500ms"}))
    assert slow["ollama/generate"].status is Status.WARNING
    missing = observe(tmp_path, ollama_config(ollama.url, generate={"model": "nope"}))["ollama/generate"]
    assert missing.status is Status.CRITICAL and "model nope not found" in missing.message


def webui_config(url: str) -> dict:
    return {"checks": [{"name": "webui", "kind": "openwebui", "url": url, "timeout": "2s"}]}


def test_openwebui_healthy(tmp_path: Path, webui):
    obs = observe(tmp_path, webui_config(webui.url))["webui"]
    assert obs.status is Status.OK and obs.message == "Open WebUI 0.6.5: healthy, database ok"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("false", "/health said {'status': False}, not {\"status\": true}"),
        ("500", "HTTP 500 on /health — Open WebUI needs a restart"),
        ("garbage", "/health: answer is not JSON"),
        ("huge", "/health: answer of 52428800 bytes is over the 1048576-byte limit"),
        ("hang", "/health: no answer within 2s"),
    ],
)
def test_openwebui_failures_are_critical(tmp_path: Path, webui, mode: str, expected: str):
    webui.mode = mode
    obs = observe(tmp_path, webui_config(webui.url))["webui"]
    assert obs.status is Status.CRITICAL
    assert obs.message.startswith(expected), obs.message


def test_openwebui_database_failure(tmp_path: Path, webui):
    webui.db_ok = False
    obs = observe(tmp_path, webui_config(webui.url))["webui"]
    assert obs.status is Status.CRITICAL and obs.message == "database check failed (HTTP 500 on /health/db)"
