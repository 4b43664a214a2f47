"""Several "machines" on one host: network namespaces, each with one veth link to a bridge on the host.

Everything here is made by the test that uses it and removed again by name, whatever happened: the
processes left in each namespace (a worker an agent started detached, say) are killed by PID first,
read from `ip netns pids`, so a namespace's removal never leaves a process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


class NetnsUnavailable(RuntimeError):
    """This machine does not let the test make network namespaces (not root, or no CAP_NET_ADMIN)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def probe_netns(name: str) -> None:
    """Raise NetnsUnavailable (with the reason) unless a namespace can be made and removed here."""
    try:
        res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"`ip netns add` cannot run here: {exc}") from None
    if res.returncode != 0:
        raise NetnsUnavailable(f"`ip netns add` is not permitted here: {res.stderr.strip() or res.returncode}")
    ip("netns", "del", name, check=False)


def pids_in(ns: str) -> list[int]:
    """The processes whose network namespace is `ns` (the kernel's answer, not a guess by name)."""
    res = ip("netns", "pids", ns, check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass
class Namespace:
    name: str
    addr: str  # its address on the bridge
    veth_host: str  # the link's end on the bridge
    veth_ns: str  # the link's end inside


@dataclass
class Net:
    """A bridge `bridge` with `host_ip`/24 on the host, and one namespace per address in `nodes`."""

    bridge: str
    host_ip: str
    nodes: dict[str, Namespace] = field(default_factory=dict)

    def add(self, name: str, addr: str, veth_host: str, veth_ns: str) -> Namespace:
        ns = Namespace(name, addr, veth_host, veth_ns)
        self.nodes[name] = ns
        return ns

    # --- up and down --------------------------------------------------------------------------------

    def up(self) -> Net:
        """The bridge, then each namespace and its link; what a crashed run left under these names goes first."""
        self.down()
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for ns in self.nodes.values():
            ip("netns", "add", ns.name)
            ip("link", "add", ns.veth_host, "type", "veth", "peer", "name", ns.veth_ns)
            ip("link", "set", ns.veth_host, "master", self.bridge)
            ip("link", "set", ns.veth_host, "up")
            ip("link", "set", ns.veth_ns, "netns", ns.name)
            ip("-n", ns.name, "addr", "add", f"{ns.addr}/24", "dev", ns.veth_ns)
            ip("-n", ns.name, "link", "set", ns.veth_ns, "up")
            ip("-n", ns.name, "link", "set", "lo", "up")
        return self

    def down(self) -> None:
        """Every process left in the namespaces killed by PID, then the namespaces, links and bridge removed."""
        for ns in self.nodes.values():
            self.kill_all(ns.name)
            ip("netns", "del", ns.name, check=False)
            ip("link", "del", ns.veth_host, check=False)
        ip("link", "del", self.bridge, check=False)

    @staticmethod
    def kill_all(ns: str, timeout: float = 5.0) -> list[int]:
        """SIGKILL each process in `ns` (by PID) and wait until the namespace holds none; returns the PIDs."""
        killed: list[int] = []
        deadline = time.monotonic() + timeout
        while (pids := [p for p in pids_in(ns) if p != os.getpid()]) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.1)
        return killed

    # --- the link -------------------------------------------------------------------------------------

    def link(self, name: str, up: bool) -> None:
        """The namespace's only link up or down (from inside: its route to the bridge goes with it)."""
        ns = self.nodes[name]
        ip("-n", ns.name, "link", "set", "dev", ns.veth_ns, "up" if up else "down")

    def link_is_up(self, name: str) -> bool:
        ns = self.nodes[name]
        fields = ip("-n", ns.name, "-br", "link", "show", "dev", ns.veth_ns).stdout.split()
        return len(fields) > 1 and fields[1] == "UP"

    # --- looking inside -----------------------------------------------------------------------------

    def http_get(self, name: str, url: str, timeout: float = 2.0) -> tuple[int, str] | None:
        """GET `url` from inside namespace `name` (its own 127.0.0.1): (status, body), or None if unanswered."""
        code = (
            "import sys, urllib.request\n"
            "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
            "try:\n"
            f"    r = opener.open(sys.argv[1], timeout={timeout})\n"
            "    print(r.status); sys.stdout.write(r.read(2000).decode(errors='replace'))\n"
            "except Exception as e:\n"
            "    print(0); print(type(e).__name__, e)\n"
        )
        try:
            res = subprocess.run(
                ["ip", "netns", "exec", self.nodes[name].name, sys.executable, "-c", code, url],
                capture_output=True,
                text=True,
                timeout=timeout + 10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        status, _, body = res.stdout.partition("\n")
        if not status.strip().isdigit() or int(status) == 0:
            return None
        return int(status), body

    def processes(self, name: str, *needles: str) -> list[int]:
        """The PIDs in namespace `name` whose command line holds every one of `needles`."""
        found = []
        for pid in pids_in(self.nodes[name].name):
            argv = " ".join(cmdline(pid))
            if argv and all(n in argv for n in needles):
                found.append(pid)
        return found
