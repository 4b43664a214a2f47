"""A real Docker Engine on its own socket, with a busybox image made locally (no registry here)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers import Proc, wait_until

APPLETS = ("sh", "httpd", "sleep", "true", "false", "cat", "echo", "kill", "test", "[", "touch", "rm", "ls")


class DockerEngine:
    def __init__(self) -> None:
        # Short path: the unix socket path must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="cw-docker-"))
        self.socket = str(self.root / "docker.sock")
        self.proc = Proc(
            [
                "dockerd",
                "--storage-driver=vfs",
                "--iptables=false",
                "--bridge=none",
                "--ip-masq=false",
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "dockerd.pid"),
                "-H",
                f"unix://{self.socket}",
            ],
            self.root / "dockerd.log",
        )
        wait_until(lambda: self.docker("version", check=False).returncode == 0, timeout=60, what="dockerd to answer")
        self._make_image()

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", f"unix://{self.socket}", *args], capture_output=True, text=True, check=check, timeout=60
        )

    def _make_image(self) -> None:
        rootfs = self.root / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir(mode=0o1777)
        shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "-H", f"unix://{self.socket}", "import", "-", "tiny:latest"],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
            timeout=60,
        )
        tar.wait(10)

    def run(self, name: str, *args: str, command: tuple[str, ...] = ("sleep", "3600")) -> str:
        return self.docker(
            "run", "-d", "--name", name, "--network", "host", *args, "tiny:latest", *command
        ).stdout.strip()

    def inspect(self, name: str, template: str) -> str:
        return self.docker("inspect", "-f", template, name).stdout.strip()

    def remove_all(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)

    def stop(self) -> None:
        try:
            self.remove_all()
        finally:
            self.proc.stop(timeout=15)
            shutil.rmtree(self.root, ignore_errors=True)
