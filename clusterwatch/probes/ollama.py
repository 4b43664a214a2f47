"""Ollama: the server, each expected model, what is loaded in VRAM, and (opt-in) a real generation."""

from __future__ import annotations

import asyncio
from typing import Any

from clusterwatch.config.schema import OllamaCheck
from clusterwatch.model import Group, Observation, Status
from clusterwatch.probes.base import HttpAnswer, ProbeContext, Unreachable, down, fetch, human_bytes, observation
from clusterwatch.probes.values import finite, label

HINT = "is `ollama serve` running?"
_MAX_MODELS = 1000  # a real server lists a few dozen


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
        server_version = label(version.json().get("version", "?"), 40)
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
        loaded = _loaded(ps)
    except Unreachable as exc:
        return [down(check, base, str(exc), HINT)]

    vram = _sum(_bytes(m, "size_vram") for m in loaded)
    ram = _sum(max(0.0, _bytes(m, "size") - _bytes(m, "size_vram")) for m in loaded)
    metrics = {
        "models_available": len(available),
        "models_loaded": len(loaded),
        "vram_bytes": vram,
        "loaded_ram_bytes": ram,
    }
    names = [_name(m) for m in available]
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
            details={"version": server_version, "models": names[:50], "loaded": [_name(m) for m in loaded[:20]]},
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
    return [m for m in models[:_MAX_MODELS] if isinstance(m, dict)] if isinstance(models, list) else []


def _loaded(ps: HttpAnswer | BaseException) -> list[dict[str, Any]]:
    """What is in memory: a nicety, so an /api/ps that fails or answers garbage is "none known", not down."""
    if not isinstance(ps, HttpAnswer) or ps.status != 200:
        return []
    try:
        return _models(ps.json())
    except Unreachable:
        return []


def _name(model: dict[str, Any]) -> str:
    return label(model.get("name") or model.get("model"), 200)


def _bytes(model: dict[str, Any], key: str) -> float:
    """A size Ollama reported, in bytes; 0 when it is missing, not a number, or not finite."""
    value = finite(model.get(key))
    return value if value is not None and value > 0 else 0.0


def _sum(values: Any) -> float:
    """A total that stays finite however large the sizes an answer claims."""
    return finite(sum(values)) or 0.0


def _model(
    check: OllamaCheck, base: str, wanted: str, available: list[dict[str, Any]], loaded: list[dict[str, Any]]
) -> Observation:
    name = f"{check.name}/{wanted}"
    found = next((m for m in available if model_matches(wanted, _name(m))), None)
    if not found:
        return observation(
            check,
            Status.CRITICAL,
            f"model {wanted} is not pulled — run `ollama pull {wanted}`",
            name=name,
            target=base,
            group=Group.MODELS,
        )
    model_name = _name(found)
    in_memory = next((m for m in loaded if _name(m) == model_name), None)
    raw = found.get("details") if isinstance(found.get("details"), dict) else {}
    details = {k: label(raw[k], 40) for k in ("family", "parameter_size", "quantization_level") if raw.get(k)}
    size = _bytes(found, "size")
    metrics = {"size_bytes": size, "loaded": 1.0 if in_memory else 0.0}
    text = f"{model_name} present ({human_bytes(size)}"
    if details.get("parameter_size"):
        text += f", {details['parameter_size']}"
    if details.get("quantization_level"):
        text += f", {details['quantization_level']}"
    text += ")"
    if in_memory:
        vram = _bytes(in_memory, "size_vram")
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
        nanoseconds = finite(data.get(key))
        if nanoseconds is not None:
            metrics[f"{key}_seconds"] = nanoseconds / 1e9
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
