"""What goes wrong with a GPU that a load figure hides: XIDs over a window, a GPU lost or gone from the list,
ECC errors and retired memory, slowed clocks, and who is on each GPU. Against the fake NVML of
test_node_gpu (pynvml's own names, constants, errors and structures), through the node check's own
round where the message and status are the point, and through the survey where its parts are."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import pydantic
import pynvml
import pytest

from clusterwatch.config.schema import NodeCheck
from clusterwatch.model import Observation, Status
from clusterwatch.probes import blocking, gpu
from tests.conftest import observe
from tests.helpers import wait_until
from tests.test_node_gpu import FakeGpu, FakeNVML, GiB

REAL_SURVEY = gpu.survey
ROOT = Path(__file__).resolve().parent.parent
UNC, COR = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
VOLATILE, AGGREGATE = pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC
NO_LIMITS = {k: {"warning": None, "critical": None} for k in ("cpu", "memory", "disk", "load")}


class Clock:
    """The watch's wall clock, moved by the test: a window is crossed without waiting for it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def two_gpus() -> tuple[FakeGpu, FakeGpu]:
    return (
        FakeGpu(name="NVIDIA A100-SXM4-80GB", uuid="GPU-aaaa", pci="00000000:07:00.0"),
        FakeGpu(name="NVIDIA A100-SXM4-80GB", uuid="GPU-bbbb", pci="00000000:0F:00.0"),
    )


@pytest.fixture
def node_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One round of a real node check whose NVML is `fake`, its watch kept between rounds."""
    watch = gpu.Watch(clock=Clock())
    monkeypatch.setattr(gpu, "WATCH", watch)

    def run(fake: FakeNVML, **check: Any) -> dict[str, Observation]:
        monkeypatch.setattr(gpu, "survey", functools.partial(REAL_SURVEY, fake, watch=watch))
        config = {"name": "system", "kind": "node", "cpu_sample": "50ms", "disks": ["/"], "thresholds": NO_LIMITS}
        return observe(tmp_path, {"checks": [config | check]})

    run.watch = watch  # type: ignore[attr-defined]
    return run


# --- XIDs -----------------------------------------------------------------------------------------------


def test_xids_are_counted_over_the_window_from_nvml_events():
    card = FakeGpu()
    fake, clock = FakeNVML(card), Clock()
    watch = gpu.Watch(clock=clock)
    assert fake.xid(card, 13) == 0  # before anyone watches: NVML delivers it to no event set

    [first] = gpu.survey(fake, xid_window=3600, watch=watch).gpus
    assert first.metrics["xid_count"] == 0 and "xid_last" not in first.metrics and not first.findings
    assert first.details["xid"]["watched_s"] == 0

    assert fake.xid(card, 13) == 1 and fake.xid(card, 13) == 1  # now registered: each reaches the set
    clock.now += 60
    [second] = gpu.survey(fake, xid_window=3600, watch=watch).gpus
    assert second.metrics["xid_count"] == 2 and second.metrics["xid_last"] == 13
    assert second.findings == [
        (Status.WARNING, "2 XID errors in the 60s watched so far: 13 (graphics engine exception) ×2")
    ]

    clock.now += 3600  # the two fall out of the window
    fake.xid(card, 79)
    fake.xid(card, 31)
    clock.now += 10
    [third] = gpu.survey(fake, xid_window=3600, watch=watch).gpus
    assert third.metrics["xid_count"] == 2 and third.metrics["xid_last"] == 31  # the last one is not the worst
    assert third.details["xid"]["codes"] == {79: 1, 31: 1}
    assert third.findings == [
        (
            Status.CRITICAL,
            "2 XID errors in the last 60m: 31 (GPU memory page fault), 79 (fallen off the bus); last 31",
        )
    ]

    clock.now += 3601
    [fourth] = gpu.survey(fake, xid_window=3600, watch=watch).gpus
    assert fourth.metrics["xid_count"] == 0 and not fourth.findings
    assert fake.init_calls == 1 and len(fake.sets) == 1  # one NVML session and one event set, all run long


@pytest.mark.parametrize("code", sorted(gpu.CRITICAL_XIDS))
def test_each_gpu_failure_xid_is_critical(code: int):
    card = FakeGpu()
    fake = FakeNVML(card)
    watch = gpu.Watch(clock=Clock())
    gpu.survey(fake, watch=watch)
    fake.xid(card, code)
    [reading] = gpu.survey(fake, watch=watch).gpus
    assert reading.findings[0][0] is Status.CRITICAL and f"{code} ({gpu.CRITICAL_XIDS[code]})" in reading.findings[0][1]


def test_an_xid_burst_is_a_critical_gpu_in_the_node_check(node_round):
    card = FakeGpu(compute=[])
    fake = FakeNVML(card)
    first = node_round(fake, xid_window="10m")["system/gpu0"]
    assert first.status is Status.OK and first.message == "NVIDIA H100 80GB HBM3: utilisation 87%, memory 75%, 65°C"
    assert first.details["xid"]["window_s"] == 600
    for code in (13, 48, 13):
        fake.xid(card, code)
    node_round.watch.clock.now += 30
    card_now = node_round(fake, xid_window="10m")["system/gpu0"]
    assert card_now.status is Status.CRITICAL
    assert card_now.message == (
        "NVIDIA H100 80GB HBM3: 3 XID errors in the 30s watched so far: "
        "13 (graphics engine exception) ×2, 48 (double-bit ECC error); last 13 (critical)"
    )  # as for any check of a node: when something is wrong, the message says only what is
    assert card_now.metrics["xid_count"] == 3 and card_now.metrics["xid_last"] == 13


def test_xids_not_supported_leave_the_rest_of_the_gpu_read():
    card = FakeGpu(unsupported={"nvmlDeviceRegisterEvents"})
    fake = FakeNVML(card)
    watch = gpu.Watch()
    [reading] = gpu.survey(fake, watch=watch).gpus
    assert "xid_count" not in reading.metrics
    assert reading.details["xid"] == {"watched": False, "why": "XID events not watched: Not Supported"}
    assert reading.metrics["temperature_celsius"] == 65 and not reading.findings


# --- a GPU lost, or gone from the list ------------------------------------------------------------------


def test_a_gpu_gone_from_the_device_list_is_critical_and_named(node_round):
    a, b = two_gpus()
    fake = FakeNVML(a, b)
    before = node_round(fake)
    assert before["system/gpu0"].details["uuid"] == "GPU-aaaa" and before["system/gpu1"].details["uuid"] == "GPU-bbbb"
    fake.gpus.remove(a)  # NVML now lists one GPU: B, at index 0
    after = node_round(fake)
    gone = after["system/gpu0"]
    assert gone.status is Status.CRITICAL
    assert gone.message == (
        "NVIDIA A100-SXM4-80GB: GPU 0 (GPU-aaaa, PCI 00000000:07:00.0), seen earlier in this run, "
        "is no longer listed by NVML (1 GPU now) (critical)"
    )
    stays = after["system/gpu1"]  # B keeps its name although NVML now calls it GPU 0
    assert stays.status is Status.OK and stays.details["uuid"] == "GPU-bbbb" and stays.details["index"] == 0
    assert fake.init_calls == 1
    again = node_round(fake)  # a GPU went missing: this round enumerated afresh, and it is still gone
    assert fake.init_calls == 2 and again["system/gpu0"].status is Status.CRITICAL
    assert again["system/gpu1"].status is Status.OK


def test_fewer_gpus_than_expected_is_critical(node_round):
    a, b = two_gpus()
    assert node_round(FakeNVML(a, b), expect_gpus=2)["system/gpu"].message == "2 GPUs as expected"
    whole = node_round(FakeNVML(a), expect_gpus=2)["system/gpu"]
    assert whole.status is Status.CRITICAL and whole.message == "expected 2 GPUs, NVML lists 1"
    no_driver = node_round(FakeNVML(a, driver=False), expect_gpus=1)
    assert no_driver["system/gpu"].status is Status.CRITICAL
    assert no_driver["system/gpu"].message == "expected 1 GPU, NVML lists 0: no NVIDIA GPU driver (Driver Not Loaded)"


def test_a_gpu_this_process_may_not_use_is_left_out(node_round):
    a, b = two_gpus()
    b.permitted = False
    obs = node_round(FakeNVML(a, b), expect_gpus=2)
    assert sorted(name for name in obs if "/gpu" in name) == ["system/gpu", "system/gpu0"]
    assert obs["system/gpu"].status is Status.OK  # NVML lists both
    assert obs["system"].details["gpu_not_permitted"] == [1]


def test_expect_gpus_needs_gpus_on():
    with pytest.raises(pydantic.ValidationError, match="expect_gpus needs gpus: true"):
        NodeCheck(name="system", kind="node", gpus=False, expect_gpus=1)


def test_a_gpu_fallen_off_the_bus_is_critical_and_named(node_round):
    a, b = two_gpus()
    fake = FakeNVML(a, b)
    node_round(fake)
    b.lost = True  # XID 79: every call on it now answers NVML_ERROR_GPU_IS_LOST
    fake.xid(b, 79)
    node_round.watch.clock.now += 20
    lost = node_round(fake)["system/gpu1"]
    assert lost.status is Status.CRITICAL
    assert lost.message.startswith(
        "NVIDIA A100-SXM4-80GB: GPU 1 (GPU-bbbb, PCI 00000000:0F:00.0) has fallen off the bus: "
        "NVML says 'GPU is lost'; reset it (nvidia-smi -r) or reboot (critical)"
    )
    assert "1 XID error in the 20s watched so far: 79 (fallen off the bus) (critical)" in lost.message
    assert lost.details["lost"] == "GPU is lost"

    fake.driver = False  # the next round opens NVML afresh, and the driver is gone with the GPU
    after = node_round(fake)
    assert {name: o.status for name, o in after.items() if "/gpu" in name} == {
        "system/gpu0": Status.CRITICAL,
        "system/gpu1": Status.CRITICAL,
    }
    assert "seen earlier in this run, is gone: no NVIDIA GPU driver (Driver Not Loaded)" in after["system/gpu0"].message


def test_a_gpu_lost_before_it_was_ever_read_is_named_by_its_index():
    card = FakeGpu(lost=True)
    [reading] = gpu.survey(FakeNVML(card), watch=gpu.Watch()).gpus
    assert reading.index == 0 and reading.findings == [
        (Status.CRITICAL, "GPU 0 has fallen off the bus: NVML says 'GPU is lost'; reset it (nvidia-smi -r) or reboot")
    ]


def test_a_gpu_that_needs_a_reset_is_critical():
    card = FakeGpu()
    fake = FakeNVML(card)
    watch = gpu.Watch()
    gpu.survey(fake, watch=watch)
    card.reset_required = True
    [reading] = gpu.survey(fake, watch=watch).gpus
    assert reading.findings == [
        (
            Status.CRITICAL,
            "GPU 0 (GPU-1234, PCI 00000000:3B:00.0) needs a reset: NVML says 'GPU requires restart'; "
            "reset it (nvidia-smi -r)",
        )
    ]


def test_a_hung_driver_keeps_the_gpus_seen_as_unknown(node_round, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """NVML that does not answer: the GPUs seen stay, unknown; left out, each would be closed as gone."""
    node_round(FakeNVML(*two_gpus()))
    stuck = threading.Event()
    monkeypatch.setattr(gpu, "survey", lambda **_: stuck.wait(8))
    config = {"name": "system", "kind": "node", "cpu_sample": "50ms", "timeout": "1s", "thresholds": NO_LIMITS}
    try:
        obs = observe(tmp_path, {"checks": [config]})
    finally:
        stuck.set()
        wait_until(lambda: not blocking.nvml.busy(), 15, what="the stuck NVML call to return")
    assert obs["system/gpu"].status is Status.UNKNOWN
    for name in ("system/gpu0", "system/gpu1"):
        assert obs[name].status is Status.UNKNOWN
        assert (
            obs[name].message == "NVIDIA A100-SXM4-80GB: not read: NVML: no answer within 1s (driver hung?) (unknown)"
        )


# --- memory health, clocks ------------------------------------------------------------------------------


def test_volatile_uncorrectable_ecc_is_critical_and_lifetime_ones_a_warning():
    card = FakeGpu(ecc={(UNC, VOLATILE): 2, (UNC, AGGREGATE): 5, (COR, VOLATILE): 40, (COR, AGGREGATE): 900})
    [reading] = gpu.survey(FakeNVML(card), watch=gpu.Watch()).gpus
    assert reading.findings == [(Status.CRITICAL, "2 uncorrectable ECC errors since the driver loaded")]
    assert reading.metrics["ecc_corrected_aggregate"] == 900 and reading.metrics["ecc_uncorrected_aggregate"] == 5
    card.ecc = {(UNC, AGGREGATE): 1}
    [reading] = gpu.survey(FakeNVML(card), watch=gpu.Watch()).gpus
    assert reading.findings == [(Status.WARNING, "1 uncorrectable ECC error in the GPU's lifetime")]


def test_retired_pages_and_remapped_rows():
    old = FakeGpu(
        name="Tesla V100-SXM2-32GB",
        unsupported={"nvmlDeviceGetRemappedRows"},  # before Ampere: pages are retired, rows not remapped
        retired={pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR: [0x1000, 0x2000]},
        retired_pending=True,
    )
    [reading] = gpu.survey(FakeNVML(old), watch=gpu.Watch()).gpus
    assert reading.metrics["retired_pages_dbe"] == 2 and reading.metrics["retired_pages_sbe"] == 0
    assert reading.findings == [(Status.WARNING, "page retirement pending: reset the GPU or reboot to apply it")]

    pending = FakeGpu(remapped_rows=(3, 1, 1, 0))
    [reading] = gpu.survey(FakeNVML(pending), watch=gpu.Watch()).gpus
    assert reading.findings == [(Status.WARNING, "row remapping pending: reset the GPU to apply it")]
    assert reading.metrics["remapped_rows_uncorrectable"] == 1 and reading.metrics["remap_pending"] == 1
    failed = FakeGpu(remapped_rows=(3, 9, 0, 1))
    [reading] = gpu.survey(FakeNVML(failed), watch=gpu.Watch()).gpus
    assert reading.findings == [(Status.CRITICAL, "row remapping failed: the GPU needs service")]


def test_thermal_slowdown_is_a_warning_and_the_power_cap_a_note(node_round):
    hot = FakeGpu(
        clocks_event_reasons=pynvml.nvmlClocksEventReasonHwThermalSlowdown | pynvml.nvmlClocksEventReasonHwSlowdown
    )
    obs = node_round(FakeNVML(hot))["system/gpu0"]
    assert obs.status is Status.WARNING
    assert obs.message == "NVIDIA H100 80GB HBM3: clocks slowed: hardware thermal slowdown (warning)"
    assert obs.details["clocks_held_by"] == ["hardware thermal slowdown"]

    capped = FakeGpu(clocks_event_reasons=pynvml.nvmlClocksEventReasonSwPowerCap)
    obs = node_round(FakeNVML(capped))["system/gpu0"]
    assert obs.status is Status.OK
    assert obs.message == ("NVIDIA H100 80GB HBM3: utilisation 87%, memory 75%, 65°C; clocks held at the power cap")


def test_older_drivers_answer_throttle_reasons_instead():
    card = FakeGpu(
        clocks_event_reasons=pynvml.nvmlClocksThrottleReasonSwThermalSlowdown,
        unsupported={"nvmlDeviceGetCurrentClocksEventReasons"},
    )
    [reading] = gpu.survey(FakeNVML(card), watch=gpu.Watch()).gpus
    assert reading.findings == [(Status.WARNING, "clocks slowed: software thermal slowdown")]
    assert "clocks_event_reasons" not in reading.details.get("not_read", {})


def test_a_consumer_gpu_answers_not_supported_and_the_probe_still_reads_it():
    every_optional = {
        name
        for name in dir(FakeNVML)
        if name.startswith("nvmlDevice")
        and name not in ("nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetUUID", "nvmlDeviceGetName")
    }
    card = FakeGpu(name="NVIDIA GeForce RTX 3060", uuid="GPU-3060", unsupported=every_optional)
    [reading] = gpu.survey(FakeNVML(card), watch=gpu.Watch()).gpus
    assert reading.name == "NVIDIA GeForce RTX 3060" and reading.metrics == {} and reading.findings == []
    assert reading.processes is None and reading.details["xid"]["watched"] is False
    assert set(reading.details["not_read"]) >= {"ecc", "remapped_rows", "clocks_event_reasons", "compute_processes"}


# --- who is on the GPU ----------------------------------------------------------------------------------


def test_the_processes_on_a_gpu_are_named(node_round, tmp_path: Path):
    """A real process called `ollama` holding 12 GiB: its name is read from the system, not guessed."""
    binary = tmp_path / "ollama"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    ollama = subprocess.Popen([str(binary), "60"])
    hidden = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # a PID no process here can have
    try:
        card = FakeGpu(
            compute=[(hidden, 1 * GiB), (ollama.pid, 12 * GiB)],
            graphics=[(ollama.pid, 12 * GiB), (hidden - 1, None)],
        )
        obs = node_round(FakeNVML(card))["system/gpu0"]
    finally:
        ollama.kill()
        ollama.wait(10)
    assert obs.status is Status.OK
    assert obs.message == (
        f"NVIDIA H100 80GB HBM3: utilisation 87%, memory 75%, 65°C; on GPU: ollama 12.0 GB, pid {hidden} 1.0 GB"
    )
    assert obs.details["processes"] == [
        {"pid": ollama.pid, "name": "ollama", "memory_bytes": 12 * GiB, "kind": "compute"},
        {"pid": hidden, "name": None, "memory_bytes": 1 * GiB, "kind": "compute"},
        {"pid": hidden - 1, "name": None, "memory_bytes": None, "kind": "graphics"},
    ]
    assert obs.metrics["processes"] == 3


def test_many_processes_are_summed_up_in_the_message(node_round):
    hidden = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    card = FakeGpu(compute=[(hidden + i, (i + 1) * GiB) for i in range(5)])
    obs = node_round(FakeNVML(card))["system/gpu0"]
    assert obs.message.endswith(
        f"on GPU: pid {hidden + 4} 5.0 GB, pid {hidden + 3} 4.0 GB, pid {hidden + 2} 3.0 GB and 2 more"
    )


# --- by hand on a real GPU machine ----------------------------------------------------------------------


def test_the_by_hand_script_prints_the_whole_observation():
    """bench/gpu_probe_once.py, for a run on a machine with a GPU: here (none) it says "not present"."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_probe_once.py"), "--expect-gpus", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["nvidia_ml_py"] == metadata.version("nvidia-ml-py")
    [round_] = report["rounds"]
    [whole] = round_["observations"]
    assert whole["name"] == "system/gpu" and whole["status"] == "critical"
    assert whole["message"].startswith("expected 1 GPU, NVML lists 0: no NVIDIA GPU driver")
    assert report["survey"]["present"] is False
