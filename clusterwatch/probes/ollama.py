"""Ollama: the server, each expected model, what is loaded in VRAM, and (opt-in) a real generation.

Ollama has no /metrics of its own (ollama/ollama #3144), so the generation probe's figures (tokens/s,
load time, time to first token) are observation metrics that the monitor's /metrics exports per model.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import OrderedDict, deque
from typing import Any

from clusterwatch.config.schema import GenerateProbe, OllamaCheck
from clusterwatch.model import Group, Observation, Status
from clusterwatch.probes.base import HttpAnswer, ProbeContext, Unreachable, down, fetch, human_bytes, observation
from clusterwatch.probes.values import finite, label

HINT = "is `ollama serve` running?"
RESTART_HINT = "restart Ollama (a hung one may need kill -9)"
_MAX_MODELS = 1000  # a real server lists a few dozen
_MAX_RATE = 1e6  # tokens/s beyond this is no measurement (the fastest hardware does thousands)
_SLACK_S = 1.0  # Ollama's own durations fit inside our wall clock; this much (and 10%) more is let pass


def _restart_hint(check: OllamaCheck) -> str:
    """This check's own restart when it has one: a hung Ollama needs its stop to kill, not to ask."""
    fix = check.fix_hint()
    return f"restart it: {fix} (a hung one may need kill -9)" if fix else RESTART_HINT


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
        fix = check.fix_hint()
        return [down(check, base, str(exc), f"{HINT} (restart: {fix})" if fix else HINT)]

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
    # A loaded model with an entity of its own is judged there; the others' placement is told here.
    own = {_name(m) for m in available if any(model_matches(w, _name(m)) for w in check.expect_models)}
    on_cpu = [
        f"{_name(m)} is {placement(share)}"
        for m in loaded
        if _name(m) not in own and (share := gpu_share(m)) is not None and _offload_problem(check, share)
    ]
    status = Status.OK
    if on_cpu:
        status = Status.WARNING
        message += f"; {'; '.join(on_cpu[:5])} — slower than on the GPU alone"
    observed = [
        observation(
            check,
            status,
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
        observed.append(await _generate(check, ctx, base, available, loaded))
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


def gpu_share(loaded: dict[str, Any]) -> float | None:
    """The share (0..1) of a loaded model that /api/ps says is in VRAM (`size_vram` of `size`);
    None when either is missing or not a usable number: no guess either way."""
    size, vram = finite(loaded.get("size")), finite(loaded.get("size_vram"))
    if size is None or vram is None or size <= 0 or vram < 0:
        return None
    return min(1.0, vram / size)


def placement(share: float) -> str:
    """62% on GPU, 38% on CPU: a partial split never rounds to 100% or 0%, which would hide it."""
    if share >= 1.0:
        return "100% on GPU"
    if share <= 0.0:
        return "100% on CPU"
    gpu = min(99, max(1, round(share * 100)))
    return f"{gpu}% on GPU, {100 - gpu}% on CPU"


def _offload_problem(check: OllamaCheck, share: float) -> bool:
    """Partly on CPU is always worth a warning (the model did not fit: ollama/ollama #3930, #8594);
    wholly on CPU only where a GPU is expected: on a machine without one it is simply how it runs."""
    return 0.0 < share < 1.0 or (share <= 0.0 and check.expect_gpu)


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
            details={"model": wanted},
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
    status = Status.OK
    if in_memory:
        vram = _bytes(in_memory, "size_vram")
        metrics["vram_bytes"] = vram
        text += f", loaded ({human_bytes(vram)} in VRAM"
        share = gpu_share(in_memory)
        if share is not None:
            metrics["gpu_percent"] = share * 100
            text += f": {placement(share)}"
        text += ")"
        if share is not None and _offload_problem(check, share):
            status = Status.WARNING
            if share > 0.0:
                text += " — runs partly on CPU, slower than on the GPU alone; free VRAM or use a smaller model"
            else:
                text += (
                    " — runs on CPU though a GPU is expected; does Ollama see the GPU (driver, CUDA_VISIBLE_DEVICES)?"
                )
    else:
        text += ", not loaded (loads on first request)"
    return observation(
        check,
        status,
        text,
        name=name,
        target=base,
        group=Group.MODELS,
        metrics=metrics,
        details={
            "model": model_name,
            **{k: details.get(k) for k in ("family", "parameter_size", "quantization_level")},
        },
    )


# The tokens/s baseline: the last good rates per (check, server, model, tokens asked, model digest), in
# this process's memory. The probe is a function called afresh each round, so the rings live here and
# survive it (and config reloads); they do not survive a restart of the monitor: after one, the first
# BASELINE_MIN good generations rebuild the baseline, and no drop is judged until then. The store keeps
# the rates as metrics history, but probes do not read the store; a rebuilt model (new digest) or a
# changed num_predict starts a baseline of its own, as its speed may rightly differ. A slow generation
# is not added: a lasting drop stays a warning until the speed comes back, not until it is the norm.
BASELINE_SIZE = 20
BASELINE_MIN = 3
_BASELINES_KEPT = 256  # models across every check of this process; the least recently used go first
_baselines: OrderedDict[tuple[str, str, str, int, str], deque[float]] = OrderedDict()


def baseline_ring(key: tuple[str, str, str, int, str]) -> deque[float]:
    ring = _baselines.get(key)
    if ring is None:
        ring = _baselines[key] = deque(maxlen=BASELINE_SIZE)
        while len(_baselines) > _BASELINES_KEPT:
            _baselines.popitem(last=False)
    else:
        _baselines.move_to_end(key)
    return ring


def forget_baselines() -> None:
    """Drop every remembered rate (tests; a fresh process starts like this)."""
    _baselines.clear()


async def _generate(
    check: OllamaCheck, ctx: ProbeContext, base: str, available: list[dict[str, Any]], loaded: list[dict[str, Any]]
) -> Observation:
    """One real generation. Only asked after /api/version answered: a generation that then fails
    or hangs is "answers but cannot generate" (ollama/ollama #1378, #3552, #10119), critical and
    `down`, so a restart may act; an overloaded queue (503) stays a warning."""
    spec = check.generate
    assert spec is not None
    name = f"{check.name}/generate"

    def seen(status: Status, message: str, *, broken: bool = False, answer: HttpAnswer | None = None) -> Observation:
        obs = observation(
            check,
            status,
            message,
            name=name,
            target=base,
            group=Group.MODELS,
            latency_ms=answer.latency_ms if answer else None,
            details={"model": spec.model},
        )
        obs.down = broken
        return obs

    cannot = f"Ollama answers /api/version but cannot generate with {spec.model}"
    body = {
        "model": spec.model,
        "prompt": spec.prompt,
        "stream": False,
        "options": {"num_predict": spec.num_predict, "temperature": 0},
    }
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
        text = f"{cannot}: {exc} — {_restart_hint(check)}"
        if str(exc).startswith("no answer") and not any(model_matches(spec.model, _name(m)) for m in loaded):
            # a hang and a long first load look alike from here: say which one it may be
            text += f"; it was not loaded, and loading a large model may take longer than {spec.timeout:g}s"
        return seen(Status.CRITICAL, text, broken=True)
    if answer.status == 404:
        return seen(Status.CRITICAL, f"model {spec.model} not found — run `ollama pull {spec.model}`", answer=answer)
    if answer.status == 503:
        problem = _http_problem(answer, "/api/generate")
        assert problem is not None
        return seen(problem[0], problem[1], answer=answer)
    if answer.status != 200:
        said = _error_text(answer)
        text = f"{cannot}: HTTP {answer.status} on /api/generate{f' ({said})' if said else ''}"
        if answer.status >= 500:
            return seen(Status.CRITICAL, f"{text} — {_restart_hint(check)}", broken=True, answer=answer)
        return seen(Status.CRITICAL, text, answer=answer)  # a request it refuses: a restart would not help
    try:
        data = answer.json()
    except Unreachable as exc:
        return seen(Status.CRITICAL, f"{cannot}: /api/generate {exc}", broken=True, answer=answer)
    if not isinstance(data, dict):
        return seen(Status.CRITICAL, f"{cannot}: /api/generate answered no JSON object", broken=True, answer=answer)
    if not data.get("done"):
        return seen(
            Status.CRITICAL, f"{cannot}: the generation did not finish (done is false)", broken=True, answer=answer
        )
    return _generated(check, spec, name, base, answer, data, available, loaded)


def _error_text(answer: HttpAnswer) -> str:
    """Ollama's own `{"error": "..."}` (e.g. "llama runner process has terminated"), when it sent one."""
    try:
        data = answer.json()
    except Unreachable:
        return ""
    return label(data.get("error"), 160) if isinstance(data, dict) and data.get("error") else ""


def _generated(
    check: OllamaCheck,
    spec: GenerateProbe,
    name: str,
    base: str,
    answer: HttpAnswer,
    data: dict[str, Any],
    available: list[dict[str, Any]],
    loaded: list[dict[str, Any]],
) -> Observation:
    """A finished generation, measured.

    tokens/s is eval_count / eval_duration, as `ollama run --verbose` reports it ("eval rate"), and
    only from 2 tokens up: Ollama starts eval_duration at the first token, so one token has no rate.
    Time to first token is Ollama's own account, load_duration + prompt_eval_duration: from when it
    took the request (waiting for the model, loading it, a free slot) to the first token. It leaves out
    the network and HTTP, which `generate_seconds` (our wall clock for the whole answer) includes;
    timing a streamed first chunk would add those milliseconds at the cost of a second reader of
    Ollama's protocol. A figure that is not a number, negative, or longer than the wall clock we
    measured is left out (listed in details.ignored): garbage stays an observation, never a baseline.
    """
    wall = answer.latency_ms / 1000
    seconds, ignored = _durations(data, wall)
    metrics: dict[str, float] = {"generate_seconds": wall}
    metrics.update({f"{key}_seconds": value for key, value in seconds.items() if value is not None})
    count = finite(data.get("eval_count"))
    if count is not None and count >= 0:
        metrics["eval_count"] = count
    rate = None
    eval_s = seconds.get("eval_duration")
    if count is not None and count >= 2 and eval_s:
        rate = count / eval_s
        if not 0 < rate <= _MAX_RATE:
            rate = None
            ignored.append("eval_count/eval_duration")
    if rate is not None:
        metrics["tokens_per_second"] = rate
    ttft = _first_token(data, seconds)
    if ttft is not None:
        metrics["time_to_first_token_seconds"] = ttft

    status, notes = Status.OK, []
    if wall >= spec.latency_warning:
        status = Status.WARNING
        notes.append(f"slower than {spec.latency_warning:g}s")
    digest = next((label(m.get("digest"), 80) for m in available if model_matches(spec.model, _name(m))), "")
    ring = baseline_ring((check.name, base, spec.model, spec.num_predict, digest))
    median = statistics.median(ring) if len(ring) >= BASELINE_MIN else None
    if median is not None:
        metrics["tokens_per_second_baseline"] = median
    if rate is not None and median is not None and rate < spec.tokens_drop_warning * median:
        status = Status.WARNING
        note = (
            f"below {spec.tokens_drop_warning:.0%} of its recent median of {median:.1f} tokens/s "
            f"(last {len(ring)} good generations)"
        )
        in_memory = next((m for m in loaded if model_matches(spec.model, _name(m))), None)
        share = gpu_share(in_memory) if in_memory else None
        if share is not None and share < 1.0:
            note += f"; {_name(in_memory or {})} is {placement(share)}"
        notes.append(note)
    elif rate is not None:
        ring.append(rate)  # a good generation: the baseline is what this model does when it is well

    message = f"{spec.model} answered in {wall:.2f}s"
    if rate is not None:
        message += f": {count:.0f} tokens at {rate:.1f} tokens/s"
    if ttft is not None:
        message += f", first token after {ttft:.2f}s"
        load = seconds.get("load_duration")
        if load is not None and load >= 0.5:
            message += f" (loading the model took {load:.2f}s)"
    if notes:
        message += " — " + "; ".join(notes)
    details: dict[str, Any] = {"model": spec.model}
    if ignored:
        details["ignored"] = ignored
    return observation(
        check,
        status,
        message,
        name=name,
        target=base,
        group=Group.MODELS,
        latency_ms=answer.latency_ms,
        metrics=metrics,
        details=details,
    )


_DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


def _durations(data: dict[str, Any], wall: float) -> tuple[dict[str, float | None], list[str]]:
    """Ollama's durations (nanoseconds) in seconds: None where absent, `ignored` where unusable."""
    out: dict[str, float | None] = {}
    ignored: list[str] = []
    bound = wall * 1.1 + _SLACK_S
    for key in _DURATIONS:
        if key not in data:
            out[key] = None
            continue
        nanoseconds = finite(data.get(key))
        if nanoseconds is None or nanoseconds < 0 or nanoseconds / 1e9 > bound:
            out[key] = None
            ignored.append(key)
        else:
            out[key] = nanoseconds / 1e9
    return out, ignored


def _first_token(data: dict[str, Any], seconds: dict[str, float | None]) -> float | None:
    """load_duration + prompt_eval_duration. Ollama leaves a zero duration out of its answer
    (`omitempty`), so an absent one is 0, but only in an answer that has a usable total_duration;
    a present but unusable one makes the sum unknown."""
    if seconds.get("total_duration") is None:
        return None
    parts = []
    for key in ("load_duration", "prompt_eval_duration"):
        value = seconds.get(key)
        if value is None and key in data:
            return None
        parts.append(value or 0.0)
    return sum(parts)
