"""A real OpenSSH server on 127.0.0.1 (or inside a network namespace), with its own keys."""

from __future__ import annotations

import getpass
import os
import subprocess
from pathlib import Path

from tests.helpers import Proc, free_port, port_open, wait_until


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class SSHServer:
    def __init__(
        self, workdir: Path, *, listen: str = "127.0.0.1", port: int | None = None, netns: str | None = None
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.listen, self.port = listen, port or free_port()
        self.user = getpass.getuser()
        self.host_key = keygen(self.dir / "host_ed25519")
        self.client_key = keygen(self.dir / "client")
        (self.dir / "authorized_keys").write_text((self.dir / "client.pub").read_text())
        (self.dir / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress {listen}
HostKey {self.host_key}
PidFile {self.dir / "sshd.pid"}
AuthorizedKeysFile {self.dir / "authorized_keys"}
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
""")
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = Proc(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.dir / "sshd_config")], self.dir / "sshd.log", netns=netns
        )
        if netns is None:
            wait_until(lambda: port_open(self.port, listen), timeout=15, what=f"sshd ({self.proc.tail()})")

    def known_hosts(self, name: str = "known_hosts", key: Path | None = None) -> Path:
        """A known_hosts file trusting this server's key (or another key, to fake a mismatch)."""
        public = (key or self.host_key).with_suffix(".pub") if key else Path(f"{self.host_key}.pub")
        kind, blob = public.read_text().split()[:2]
        host = self.listen if self.port == 22 else f"[{self.listen}]:{self.port}"
        path = self.dir / name
        path.write_text(f"{host} {kind} {blob}\n")
        return path

    def node(self, name: str = "box", **ssh: object) -> dict:
        return {
            "name": name,
            "host": self.listen,
            "expect_dask_worker": False,
            "ssh": {
                "user": self.user,
                "port": self.port,
                "key": str(self.client_key),
                "known_hosts": str(self.known_hosts()),
                "connect_timeout": "3s",
                **ssh,
            },
        }

    def stop(self) -> None:
        self.proc.stop()
        if os.path.exists(self.dir / "sshd.pid"):
            os.unlink(self.dir / "sshd.pid")
