"""Remote nodes over SSH against a real sshd: good, wrong host key, bad auth, closed port, gone."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import pytest

from clusterwatch.config.loader import load_config
from clusterwatch.config.schema import Node
from clusterwatch.model import Group, Status
from clusterwatch.probes.ssh import judge, parse_report
from tests.conftest import observe
from tests.helpers import closed_port, wait_until
from tests.real.dask_cluster import DaskCluster
from tests.real.sshd import SSHServer, keygen


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = SSHServer(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def test_good_node(tmp_path: Path, sshd: SSHServer):
    obs = observe(tmp_path, {"nodes": [sshd.node()]})["box"]
    assert not obs.down and obs.status is not Status.UNKNOWN, obs.message  # reached; a busy CPU may be critical
    assert obs.group is Group.NODES and obs.kind == "ssh"
    assert 0 <= obs.metrics["cpu_percent"] <= 100
    assert obs.metrics["memory_percent"] > 0 and obs.metrics["disk_percent"] > 0
    assert "load1" in obs.metrics and obs.latency_ms is not None


def test_dask_worker_process_is_seen(tmp_path: Path, sshd: SSHServer):
    node = {**sshd.node(), "expect_dask_worker": True}
    absent = observe(tmp_path, {"nodes": [node]})["box"]
    assert absent.status is Status.CRITICAL and "no dask worker process" in absent.message
    cluster = DaskCluster(tmp_path / "dask")
    try:
        cluster.start_scheduler()
        cluster.start_worker("w1")
        present = observe(tmp_path, {"nodes": [node]})["box"]
    finally:
        cluster.stop()
    assert present.metrics["dask_worker_running"] == 1
    assert "no dask worker process" not in present.message


def test_wrong_host_key_is_refused(tmp_path: Path, sshd: SSHServer):
    other = keygen(tmp_path / "impostor")
    mismatch = sshd.known_hosts("mismatch", key=other)
    obs = observe(tmp_path, {"nodes": [sshd.node(known_hosts=str(mismatch))]})["box"]
    assert obs.status is Status.CRITICAL
    assert obs.message.startswith(f"SSH HOST KEY MISMATCH for 127.0.0.1:{sshd.port} — refusing to connect")


def test_unknown_host_key_is_refused(tmp_path: Path, sshd: SSHServer):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    obs = observe(tmp_path, {"nodes": [sshd.node(known_hosts=str(empty))]})["box"]
    assert obs.status is Status.CRITICAL
    assert obs.message.startswith(f"SSH host key of 127.0.0.1:{sshd.port} is not in {empty} — refusing to connect")


def test_insecure_opt_out_is_logged_loudly(tmp_path: Path, sshd: SSHServer, caplog):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    node = sshd.node(known_hosts=str(empty), insecure_ignore_host_key=True)
    node["name"] = "trusting-box"
    with caplog.at_level(logging.WARNING, logger="clusterwatch.ssh"):
        obs = observe(tmp_path, {"nodes": [node]})["trusting-box"]
    assert not obs.down and obs.status is not Status.UNKNOWN, obs.message  # reached; a busy CPU may be critical
    assert "SSH HOST KEY CHECKING IS OFF for node trusting-box" in caplog.text


def test_bad_auth(tmp_path: Path, sshd: SSHServer):
    stranger = keygen(tmp_path / "stranger")
    obs = observe(tmp_path, {"nodes": [sshd.node(key=str(stranger))]})["box"]
    assert obs.status is Status.CRITICAL
    assert obs.message.startswith(f"SSH authentication failed for {sshd.user}@127.0.0.1:{sshd.port} with {stranger}")


def test_closed_port(tmp_path: Path, sshd: SSHServer):
    port = closed_port()
    obs = observe(tmp_path, {"nodes": [sshd.node(port=port)]})["box"]
    assert obs.status is Status.CRITICAL
    assert (
        obs.message
        == f"SSH connection refused at 127.0.0.1:{port} — is sshd running? (Termux: run `sshd`; it listens on 8022)"
    )


def test_termux_battery_and_thresholds_from_report():
    config = load_config(None, env={}, cwd="/nonexistent").config
    phone = Node(name="phone-1", host="127.0.0.3", ssh={"user": "u0_a123", "port": 8022})
    report = parse_report(
        "nproc=8\nstat1=cpu 100 0 100 800 0 0 0 0\nstat2=cpu 150 0 150 900 0 0 0 0\n"
        "MemTotal=4000000\nMemAvailable=1000000\ndf=/ 1000 500 500\n"
        "df=/data/data/com.termux/files/home 1000 990 10\ndask_worker=1\n"
        'battery={"health":"GOOD","percentage":18,"plugged":"UNPLUGGED","status":"DISCHARGING"}\n'
        "end=1\n"
    )
    obs = judge(phone, config, report, "127.0.0.3:8022", 10.0)
    assert phone.is_termux
    assert obs.metrics["cpu_percent"] == 50.0 and obs.metrics["memory_percent"] == 75.0
    assert obs.metrics["battery_percent"] == 18
    # Home disk at 99% > Cluster AI's worker limit of 95: critical; battery at 18%: warning.
    assert obs.status is Status.CRITICAL
    assert obs.message == "disk /data/data/com.termux/files/home 99%; battery 18%"


NS, BRIDGE, HOST_IP, NODE_IP = "cwnode1", "cwbr1", "198.18.7.1", "198.18.7.11"


def ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=10)


@pytest.fixture
def namespace_node():
    """A separate host: a network namespace on a bridge, torn down by the test itself (and what a run killed
    in the middle left under these names, first)."""
    for leftover in (("netns", "del", NS), ("link", "del", "cwv1h"), ("link", "del", BRIDGE)):
        ip(*leftover, check=False)
    ip("link", "add", BRIDGE, "type", "bridge")
    try:
        ip("addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        ip("netns", "add", NS)
        ip("link", "add", "cwv1h", "type", "veth", "peer", "name", "cwv1n")
        ip("link", "set", "cwv1h", "master", BRIDGE)
        ip("link", "set", "cwv1h", "up")
        ip("link", "set", "cwv1n", "netns", NS)
        ip("-n", NS, "addr", "add", f"{NODE_IP}/24", "dev", "cwv1n")
        ip("-n", NS, "link", "set", "cwv1n", "up")
        ip("-n", NS, "link", "set", "lo", "up")
        yield NS
    finally:
        ip("netns", "del", NS, check=False)
        ip("link", "del", "cwv1h", check=False)
        ip("link", "del", BRIDGE, check=False)


def test_node_in_a_namespace_that_goes_away(tmp_path: Path, namespace_node: str):
    server = SSHServer(tmp_path / "ns-sshd", listen=NODE_IP, port=22, netns=namespace_node)
    try:
        node = server.node("ns-node")
        config = {"nodes": [node]}
        up = wait_until(
            lambda: not (o := observe(tmp_path, config)["ns-node"]).down and o,  # reached (a busy CPU may be critical)
            timeout=60,
            what="the namespaced sshd",
        )
        assert up.metrics["cpu_percent"] >= 0
    finally:
        server.stop()
    # The node vanishes: its namespace (and its end of the link) are removed. The bridge stays,
    # so packets to it go nowhere but this bridge.
    ip("netns", "del", namespace_node)
    wait_until(
        lambda: subprocess.run(["ip", "link", "show", "cwv1h"], capture_output=True).returncode != 0,
        timeout=30,
        what="the kernel to remove the namespace and its link",
    )
    started = time.monotonic()
    gone = observe(tmp_path, config)["ns-node"]
    assert time.monotonic() - started < 30, "an unreachable node is told within its connect timeout, not hung on"
    assert gone.status is Status.CRITICAL
    assert gone.message.startswith((f"SSH to {NODE_IP}:22 timed out", f"SSH: no route to {NODE_IP}:22")), gone.message
