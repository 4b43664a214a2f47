"""Ollama: the server, each expected model, what is loaded in VRAM, and (opt-in) a real generation."""

from __future__ import annotations

import asyncio
from typing import Any

from clusterwatch.config.schema import OllamaCheck
from clusterwatch.model import Group, Observation, Status
from clusterwatch.probes.base import HttpAnswer, ProbeContext, Unreachable, down, fetch, human_bytes, observation

HINT = "is `ollama serve` running?"


def model_matches(wanted: str, name: str) -> bool:
    """`llama3.2` is `llama3.2:latest`; a tag given (`llama3.2:1b`) must match exactly."""
    if ":" in wanted:
        return name == wanted
    return name == wanted or name == f"{wanted}:latest"


async def probe(check: OllamaCheck, ctx: ProbeContext) -> list[Observation]:
    timeout = ctx.timeout_for(check)
    base = check.url.rstrip("/")
    try:
        version = await fetch(ctx.http, f"{base}/api/version", timeout=timeout, max_body=check.max_body)
        problem = _http_problem(version)
        if problem:
            return [down(check, base, problem[1], status=problem[0], latency_ms=version.latency_ms)]
        server_version = version.json().get("version", "?")
        tags, ps = await asyncio.gather(
            fetch(ctx.http, f"{base}/api/tags", timeout=timeout, max_body=check.max_body),
            fetch(ctx.http, f"{base}/api/ps", timeout=timeout, max_body=check.max_body),
            return_exceptions=True,
        )
        if isinstance(tags, BaseException):
            raise tags if isinstance(tags, Unreachable) else Unreachable(str(tags))
        problem = _http_problem(tags, "/api/tags")
        if problem:
            return [down(check, base, problem[1], status=problem[0], latency_ms=version.latency_ms)]
        available = _models(tags.json())
        loaded = _models(ps.json()) if isinstance(ps, HttpAnswer) and ps.status == 200 else []
    except Unreachable as exc:
        return [down(check, base, str(exc), HINT)]
    except AttributeError:
        return [down(check, base, "unexpected answer shape from Ollama (not an Ollama server?)")]

    vram = sum(float(m.get("size_vram") or 0) for m in loaded)
    ram = sum(max(0.0, float(m.get("size") or 0) - float(m.get("size_vram") or 0)) for m in loaded)
    metrics = {
        "models_available": len(available),
        "models_loaded": len(loaded),
        "vram_bytes": vram,
        "loaded_ram_bytes": ram,
    }
    names = [str(m.get("name") or m.get("model")) for m in available]
    message = f"Ollama {server_version}: {len(available)} model(s), {len(loaded)} loaded"
    if loaded:
        message += f" ({human_bytes(vram)} VRAM)"
    observed = [
        observation(
            check,
            Status.OK,
            message,
            target=base,
            latency_ms=version.latency_ms,
            metrics=metrics,
            details={"version": server_version, "models": names[:50], "loaded": [m.get("name") for m in loaded][:20]},
        )
    ]
    for wanted in check.expect_models:
        observed.append(_model(check, base, wanted, available, loaded))
    if check.generate:
        observed.append(await _generate(check, ctx, base))
    return observed


def _http_problem(answer: HttpAnswer, path: str = "/api/version") -> tuple[Status, str] | None:
    if answer.status == 503:
        return (
            Status.WARNING,
            f"queue full (HTTP 503 on {path}) — Ollama is overloaded; raise OLLAMA_MAX_QUEUE or add capacity",
        )
    if answer.status >= 500:
        return Status.CRITICAL, f"HTTP {answer.status} on {path} — restart Ollama"
    if answer.status != 200:
        return Status.CRITICAL, f"HTTP {answer.status} on {path} (not an Ollama server?)"
    try:
        if not isinstance(answer.json(), dict):
            raise Unreachable("not a JSON object")
    except Unreachable as exc:
        return Status.CRITICAL, f"unexpected answer on {path}: {exc}"
    return None


def _models(data: Any) -> list[dict[str, Any]]:
    models = data.get("models") if isinstance(data, dict) else None
    return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []


def _model(
    check: OllamaCheck, base: str, wanted: str, available: list[dict[str, Any]], loaded: list[dict[str, Any]]
) -> Observation:
    name = f"{check.name}/{wanted}"
    found = next((m for m in available if model_matches(wanted, str(m.get("name") or m.get("model")))), None)
    if not found:
        return observation(
            check,
            Status.CRITICAL,
            f"model {wanted} is not pulled — run `ollama pull {wanted}`",
            name=name,
            target=base,
            group=Group.MODELS,
        )
    model_name = str(found.get("name") or found.get("model"))
    in_memory = next((m for m in loaded if (m.get("name") or m.get("model")) == model_name), None)
    details = found.get("details") if isinstance(found.get("details"), dict) else {}
    size = float(found.get("size") or 0)
    metrics = {"size_bytes": size, "loaded": 1.0 if in_memory else 0.0}
    text = f"{model_name} present ({human_bytes(size)}"
    if details.get("parameter_size"):
        text += f", {details['parameter_size']}"
    if details.get("quantization_level"):
        text += f", {details['quantization_level']}"
    text += ")"
    if in_memory:
        vram = float(in_memory.get("size_vram") or 0)
        metrics["vram_bytes"] = vram
        text += f", loaded ({human_bytes(vram)} in VRAM)"
    else:
        text += ", not loaded (loads on first request)"
    return observation(
        check,
        Status.OK,
        text,
        name=name,
        target=base,
        group=Group.MODELS,
        metrics=metrics,
        details={k: details.get(k) for k in ("family", "parameter_size", "quantization_level")},
    )


async def _generate(check: OllamaCheck, ctx: ProbeContext, base: str) -> Observation:
    spec = check.generate
    assert spec is not None
    name = f"{check.name}/generate"
    body = {"model": spec.model, "prompt": spec.prompt, "stream": False, "options": {"num_predict": 1}}
    try:
        answer = await fetch(
            ctx.http,
            f"{base}/api/generate",
            method="POST",
            json_body=body,
            timeout=spec.timeout,
            max_body=check.max_body,
        )
    except Unreachable as exc:
        return observation(
            check, Status.CRITICAL, f"generation with {spec.model}: {exc}", name=name, target=base, group=Group.MODELS
        )
    if answer.status == 404:
        return observation(
            check,
            Status.CRITICAL,
            f"model {spec.model} not found — run `ollama pull {spec.model}`",
            name=name,
            target=base,
            group=Group.MODELS,
            latency_ms=answer.latency_ms,
        )
    problem = _http_problem(answer, "/api/generate")
    if problem:
        return observation(
            check, problem[0], problem[1], name=name, target=base, group=Group.MODELS, latency_ms=answer.latency_ms
        )
    data = answer.json()
    if not data.get("done"):
        return observation(
            check,
            Status.CRITICAL,
            "generation did not finish (done is false)",
            name=name,
            target=base,
            group=Group.MODELS,
            latency_ms=answer.latency_ms,
        )
    metrics = {"generate_seconds": answer.latency_ms / 1000}
    for key in ("total_duration", "load_duration", "eval_duration", "prompt_eval_duration"):
        if isinstance(data.get(key), int | float):
            metrics[f"{key}_seconds"] = data[key] / 1e9
    seconds = answer.latency_ms / 1000
    status = Status.WARNING if seconds >= spec.latency_warning else Status.OK
    message = f"{spec.model} answered in {seconds:.2f}s"
    if status is Status.WARNING:
        message += f" (slower than {spec.latency_warning:g}s)"
    return observation(
        check,
        status,
        message,
        name=name,
        target=base,
        group=Group.MODELS,
        latency_ms=answer.latency_ms,
        metrics=metrics,
    )
