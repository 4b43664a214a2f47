"""/metrics: each check's status (0 ok, 1 warning, 2 critical, 3 unknown) and latency, incidents,
restarts, alerts, and the cluster facts the probes read, under the names the field expects."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from clusterwatch.web.view import MonitorView as Monitor

# prometheus_client (with the HTTP and WSGI servers it imports, about a megabyte of RSS) is imported at
# the first scrape, in the functions below: a monitor nobody scrapes never loads it.

# (observation kind, metric key) -> (metric name, help); labels: the entity's name and node, and those
# _DETAIL_LABELS names, taken from the observation's details
_FACTS: dict[tuple[str, str], tuple[str, str]] = {
    ("node", "cpu_percent"): ("clusterwatch_node_cpu_percent", "CPU busy, percent"),
    ("node", "memory_percent"): ("clusterwatch_node_memory_percent", "memory used, percent"),
    ("node", "load1"): ("clusterwatch_node_load1", "load average over 1 minute"),
    ("node", "disk_percent"): ("clusterwatch_node_disk_percent", "disk used, percent"),
    ("ssh", "cpu_percent"): ("clusterwatch_node_cpu_percent", "CPU busy, percent"),
    ("ssh", "memory_percent"): ("clusterwatch_node_memory_percent", "memory used, percent"),
    ("ssh", "disk_percent"): ("clusterwatch_node_disk_percent", "disk used, percent"),
    ("ssh", "load1"): ("clusterwatch_node_load1", "load average over 1 minute"),
    ("ssh", "battery_percent"): ("clusterwatch_node_battery_percent", "battery charge (Termux), percent"),
    # a node whose agent pushes: the same report as over SSH
    ("agent", "cpu_percent"): ("clusterwatch_node_cpu_percent", "CPU busy, percent"),
    ("agent", "memory_percent"): ("clusterwatch_node_memory_percent", "memory used, percent"),
    ("agent", "disk_percent"): ("clusterwatch_node_disk_percent", "disk used, percent"),
    ("agent", "load1"): ("clusterwatch_node_load1", "load average over 1 minute"),
    ("agent", "battery_percent"): ("clusterwatch_node_battery_percent", "battery charge (Termux), percent"),
    ("gpu", "utilization_percent"): ("clusterwatch_gpu_utilization_percent", "GPU utilisation, percent"),
    ("gpu", "memory_used_bytes"): ("clusterwatch_gpu_memory_used_bytes", "GPU memory used"),
    ("gpu", "memory_percent"): ("clusterwatch_gpu_memory_percent", "GPU memory used, percent"),
    ("gpu", "temperature_celsius"): ("clusterwatch_gpu_temperature_celsius", "GPU temperature"),
    ("gpu", "power_watts"): ("clusterwatch_gpu_power_watts", "GPU power draw"),
    ("node", "memory_used_bytes"): ("clusterwatch_node_memory_used_bytes", "memory used"),
    ("ollama", "models_loaded"): ("clusterwatch_ollama_models_loaded", "models loaded in memory"),
    ("ollama", "models_available"): ("clusterwatch_ollama_models_available", "models pulled"),
    ("ollama", "vram_bytes"): ("clusterwatch_ollama_vram_bytes", "VRAM used by loaded models"),
    # Ollama has no /metrics of its own (ollama/ollama #3144): these are its generation probe's and /api/ps's
    ("ollama", "gpu_percent"): (
        "clusterwatch_ollama_model_gpu_percent",
        "share of a loaded model in VRAM, percent (the rest runs on CPU)",
    ),
    ("ollama", "tokens_per_second"): (
        "clusterwatch_ollama_tokens_per_second",
        "generation speed of the probe's last generation (eval_count / eval_duration)",
    ),
    ("ollama", "tokens_per_second_baseline"): (
        "clusterwatch_ollama_tokens_per_second_baseline",
        "median tokens/s of the model's recent good generations (this monitor's memory)",
    ),
    ("ollama", "time_to_first_token_seconds"): (
        "clusterwatch_ollama_time_to_first_token_seconds",
        "load_duration + prompt_eval_duration of the probe's last generation",
    ),
    ("ollama", "load_duration_seconds"): (
        "clusterwatch_ollama_load_seconds",
        "time Ollama took to get the model ready for the probe's last generation",
    ),
    ("ollama", "generate_seconds"): (
        "clusterwatch_ollama_generate_seconds",
        "wall-clock time of the probe's last generation request",
    ),
    ("dask", "memory_percent"): ("clusterwatch_dask_worker_memory_percent", "worker memory, percent of its limit"),
    ("dask", "heartbeat_age_seconds"): (
        "clusterwatch_dask_worker_heartbeat_age_seconds",
        "seconds since the worker's last heartbeat",
    ),
    ("dask", "tasks_erred"): ("clusterwatch_dask_tasks_erred", "erred tasks on the scheduler"),
    ("docker", "restart_count"): ("clusterwatch_container_restarts", "container restart count"),
}
# metric name -> labels read from the observation's details: one series per model, whatever entity measured it
_DETAIL_LABELS: dict[str, tuple[str, ...]] = {
    name: ("model",)
    for name in (
        "clusterwatch_ollama_model_gpu_percent",
        "clusterwatch_ollama_tokens_per_second",
        "clusterwatch_ollama_tokens_per_second_baseline",
        "clusterwatch_ollama_time_to_first_token_seconds",
        "clusterwatch_ollama_load_seconds",
        "clusterwatch_ollama_generate_seconds",
    )
}
_STATUS_CODE = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


class Collector:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []  # built at each scrape: no fixed set of series

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.monitor
        status = GaugeMetricFamily(
            "clusterwatch_check_status",
            "0 ok, 1 warning, 2 critical, 3 unknown",
            labels=["name", "check", "kind", "node"],
        )
        latency = GaugeMetricFamily(
            "clusterwatch_check_latency_seconds", "latency of the last probe", labels=["name", "check", "kind", "node"]
        )
        flapping = GaugeMetricFamily("clusterwatch_check_flapping", "1 while flapping", labels=["name"])
        facts: dict[str, GaugeMetricFamily] = {}
        workers = Counter[str]()
        for state in list(m.entities.values()):  # one copy (atomic): the loop may change the dict meanwhile
            last = state.last
            if last is None:
                continue
            kind = m.kinds.get(state.name, last.kind)
            labels = [state.name, state.check, kind, state.node or ""]
            status.add_metric(labels, _STATUS_CODE[last.status.value])
            if last.latency_ms is not None:
                latency.add_metric(labels, last.latency_ms / 1000)
            if state.flapping:  # one series per flapping check, not one per check
                flapping.add_metric([state.name], 1.0)
            if kind == "dask" and state.name != state.check:
                workers[str(last.details.get("status", "gone") if last.details else "gone")] += 1
            category = "gpu" if kind == "node" and "/gpu" in state.name else kind
            for key, value in (last.metrics or {}).items():
                base = key.split(":", 1)[0]
                fact = _FACTS.get((category, base))
                if fact is None or not isinstance(value, int | float):
                    continue
                extra = _DETAIL_LABELS.get(fact[0], ())
                family = facts.get(fact[0])
                if family is None:
                    family = facts[fact[0]] = GaugeMetricFamily(fact[0], fact[1], labels=["name", "node", *extra])
                details = last.details or {}
                values = [_label_value(details.get(key)) for key in extra]
                family.add_metric([state.name, state.node or "", *values], float(value))
        yield status
        yield latency
        yield flapping
        yield from facts.values()
        dask = GaugeMetricFamily("clusterwatch_dask_workers", "Dask workers by state", labels=["state"])
        for worker_state, count in sorted(workers.items()):
            dask.add_metric([worker_state], count)
        yield dask
        incidents = GaugeMetricFamily("clusterwatch_open_incidents", "incidents not yet resolved")
        incidents.add_metric([], sum(1 for e in m.entities.values() if e.incident))
        yield incidents
        yield from self._counters()
        yield from self._uptime()
        yield from self._store()
        yield from self._group()
        lag = GaugeMetricFamily("clusterwatch_scheduling_lag_seconds", "how late checks start", labels=["quantile"])
        p50, p99 = m.lag_percentiles()
        lag.add_metric(["0.5"], p50)
        lag.add_metric(["0.99"], p99)
        yield lag
        probes = CounterMetricFamily("clusterwatch_probes", "probes started")
        probes.add_metric([], m.probes_started)
        yield probes

    def _counters(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        restarts = CounterMetricFamily(
            "clusterwatch_restarts", "the healer's actions by outcome", labels=["check", "action", "outcome"]
        )
        for row in self.monitor.web.counts.get("restarts", []):
            restarts.add_metric([row["check_name"], row["action"], row["outcome"]], row["n"])
        yield restarts
        alerts = CounterMetricFamily(
            "clusterwatch_alerts", "notifications by channel and outcome", labels=["channel", "outcome"]
        )
        for row in self.monitor.web.counts.get("alerts", []):
            alerts.add_metric([row["channel"], row["outcome"]], row["n"])
        yield alerts

    def _uptime(self) -> Iterator[Metric]:
        """Time-based uptime (seconds ok / seconds known) from the web's cache, one series per window."""
        from prometheus_client.core import GaugeMetricFamily

        uptime = GaugeMetricFamily(
            "clusterwatch_uptime_ratio",
            "share of the known time an entity was ok, over the window (unknown time, e.g. the monitor "
            "down, is left out)",
            labels=["name", "window"],
        )
        for name, windows in self.monitor.web.history.uptime.items():
            for window, percent in windows.items():
                if percent is not None:
                    uptime.add_metric([name, window], percent / 100.0)
        yield uptime

    def _store(self) -> Iterator[Metric]:
        """History keeping: what waits for the writer, and what was lost on the way."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        health = self.monitor.store_health()
        depth = GaugeMetricFamily("clusterwatch_store_queue_depth", "writes waiting for the store's writer")
        depth.add_metric([], health["queue_depth"])
        yield depth
        written = CounterMetricFamily("clusterwatch_store_writes", "writes committed to the store")
        written.add_metric([], health["written"])
        yield written
        failures = CounterMetricFamily(
            "clusterwatch_store_failures", "store transactions that failed and were rolled back (then retried)"
        )
        failures.add_metric([], health["failures"])
        yield failures
        dropped = CounterMetricFamily(
            "clusterwatch_store_dropped",
            "writes lost: queue_full (the writer was too far behind), failed (failed alone after retries)",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], health["dropped"])
        dropped.add_metric(["failed"], health["failed_items"])
        yield dropped
        age = GaugeMetricFamily("clusterwatch_store_last_commit_age_seconds", "seconds since the store last committed")
        age.add_metric([], health["last_commit_age_s"])
        yield age

    def _group(self) -> Iterator[Metric]:
        """A group of monitors, from the web's last read of the shared store (never read here: this may
        run on the event loop). Left out while that read is stale: better no answer than an old one."""
        from prometheus_client.core import GaugeMetricFamily

        if not self.monitor.ha_enabled:
            return
        group = self.monitor.web.group.fresh()
        if group is None:
            return
        leading = GaugeMetricFamily("clusterwatch_ha_leading", "1 while this monitor leads the group (and may act)")
        leading.add_metric([], 1.0 if (group.get("self") or {}).get("leading") else 0.0)
        yield leading
        leaders = leader_gauge(group)
        leader = GaugeMetricFamily(
            "clusterwatch_ha_leader",
            "1 for the node holding a current leader lease, 0 for the other members seen recently",
            labels=["node"],
        )
        for node, value in sorted(leaders.items()):
            leader.add_metric([node], value)
        yield leader
        lease = group.get("lease")
        if lease is not None:
            epoch = GaugeMetricFamily(
                "clusterwatch_ha_epoch", "the leader lease's epoch (up at every change of leader)"
            )
            epoch.add_metric([], float(lease.get("epoch") or 0))
            yield epoch


def _label_value(value: object) -> str:
    """A label from what a service reported: text, bounded; nothing reported is the empty label."""
    return "" if value is None else str(value)[:200]


def current_leader(group: dict[str, Any]) -> str | None:
    """The node holding a lease that has not run out (on the database's clock, when it was read)."""
    lease = group.get("lease")
    if not lease or not lease.get("holder") or lease.get("expires_at") is None or lease.get("now") is None:
        return None
    return str(lease["node"]) if lease["expires_at"] > lease["now"] else None


def recent_members(group: dict[str, Any]) -> list[dict[str, Any]]:
    """Members seen within two leases: one that stopped renewing for that long is gone (a killed
    monitor's row stays listed in the store for a day)."""
    lease = group.get("lease") or {}
    now, lease_s = lease.get("now"), float((group.get("self") or {}).get("lease_s") or 15.0)
    if now is None:
        return list(group.get("members") or [])
    return [
        m for m in group.get("members") or [] if m.get("last_seen") is not None and now - m["last_seen"] <= 2 * lease_s
    ]


def leader_gauge(group: dict[str, Any]) -> dict[str, float]:
    """node -> 1 for the current leader, 0 for every other node seen recently (a node name, not a member:
    a monitor restarted on its node is the same node)."""
    out = {str(m["node"]): 0.0 for m in recent_members(group)}
    leader = current_leader(group)
    if leader is not None:
        out[leader] = 1.0
    return out


def render(monitor: Monitor) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(monitor))  # type: ignore[arg-type]
    return generate_latest(registry)


def counts(history: Any) -> dict[str, list[dict[str, Any]]]:
    """The counters' rows (the store's reads; blocking, run in a thread by the server)."""
    return dict(history.counts())
