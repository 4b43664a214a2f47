"""SSH to nodes with asyncssh: key auth, host keys checked, one place for the options."""

from __future__ import annotations

import logging
import shlex
from typing import Any

from clusterwatch.config.schema import Config, Node

log = logging.getLogger("clusterwatch.ssh")
_warned_insecure: set[str] = set()


def asyncssh_module() -> Any:
    import asyncssh  # slow to import; only configs with nodes pay for it

    return asyncssh


def connect_options(node: Node, defaults: Any) -> dict[str, Any]:
    """asyncssh options from the node's ssh block over the top-level `ssh:` defaults."""
    set_fields = node.ssh.model_fields_set
    ssh = {name: getattr(node.ssh if name in set_fields else defaults, name) for name in type(node.ssh).model_fields}
    options: dict[str, Any] = {
        "port": ssh["port"],
        "connect_timeout": ssh["connect_timeout"],
        "login_timeout": ssh["connect_timeout"],
    }
    if ssh["user"]:
        options["username"] = ssh["user"]
    if ssh["key"]:
        options["client_keys"] = [ssh["key"]]
        options["agent_path"] = None
        if ssh["passphrase"]:
            options["passphrase"] = ssh["passphrase"]
    if ssh["insecure_ignore_host_key"]:
        if node.name not in _warned_insecure:
            _warned_insecure.add(node.name)
            log.warning(
                "SSH HOST KEY CHECKING IS OFF for node %s (%s): `insecure_ignore_host_key: true` "
                "lets anyone on the network impersonate it",
                node.name,
                node.host,
            )
        options["known_hosts"] = None
    elif ssh["known_hosts"]:
        options["known_hosts"] = ssh["known_hosts"]
    return options


async def run_remote(
    node: Node, config: Config, argv: list[str], timeout: float, background: bool = False
) -> tuple[int | None, str]:
    """Run an argv on a node. Each argument is quoted: the remote shell never sees raw config text."""
    asyncssh = asyncssh_module()
    command = shlex.join(argv)
    if background:
        command = f"nohup {command} >/dev/null 2>&1 </dev/null &"
    async with asyncssh.connect(node.host, **connect_options(node, config.ssh)) as conn:
        result = await conn.run(command, check=False, timeout=timeout)
    output = f"{result.stdout or ''}{result.stderr or ''}"
    return result.exit_status, str(output)[-2000:]
