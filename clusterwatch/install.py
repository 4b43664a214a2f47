"""`clusterwatch install systemd|cron`: the unit and the cron line, printed (or written with --write).
`clusterwatch install agent systemd|termux-boot|cron`: the same for a node's agent."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

UNIT_PATH = Path("/etc/systemd/system/clusterwatch.service")
CRON_PATH = Path("/etc/cron.d/clusterwatch")


def executable() -> str:
    found = shutil.which("clusterwatch")
    if found:
        return os.path.abspath(found)
    return f"{sys.executable} -m clusterwatch"


def systemd_unit(
    config: str | None = None, state_dir: str = "/var/lib/clusterwatch", log_dir: str = "/var/log/clusterwatch"
) -> str:
    command = executable() + " run" + (f" -c {shlex.quote(config)}" if config else "")
    return f"""\
[Unit]
Description=clusterwatch: keeps the AI cluster (Docker, Dask, Ollama, Open WebUI, nodes) healthy
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={command}
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=5
WatchdogSec=30
TimeoutStopSec=10
KillMode=mixed
StateDirectory=clusterwatch
LogsDirectory=clusterwatch
ConfigurationDirectory=clusterwatch
Environment=PYTHONUNBUFFERED=1
# Hardening: the state and log directories are the only places it writes.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={state_dir} {log_dir}
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""


def cron_line(config: str | None = None, log_file: str = "/var/log/cluster_health.log") -> str:
    command = executable() + " check" + (f" -c {shlex.quote(config)}" if config else "")
    return (
        "# clusterwatch: the seed guide's check every 5 minutes (exit 0 ok, 1 warning, 2 critical, 3 unknown)\n"
        "SHELL=/bin/sh\n"
        f"*/5 * * * * root {command} >> {log_file} 2>&1\n"
    )


AGENT_UNIT_PATH = Path("/etc/systemd/system/clusterwatch-agent.service")
AGENT_CRON_PATH = Path("/etc/cron.d/clusterwatch-agent")


def termux_boot_path() -> Path:
    """Termux:Boot runs every executable in ~/.termux/boot/ when the phone has booted."""
    return Path(os.path.expanduser("~/.termux/boot/clusterwatch-agent"))


def agent_argv(server: str, name: str, token_file: str, ca_file: str | None, state_dir: str | None) -> list[str]:
    argv = ["agent", "run", "--server", server, "--name", name, "--token-file", os.path.abspath(token_file)]
    if ca_file:
        argv += ["--ca-file", os.path.abspath(ca_file)]
    if state_dir:
        argv += ["--state-dir", os.path.abspath(state_dir)]
    return argv


def loopback_url(url: str) -> bool:
    import urllib.parse

    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _command(argv: list[str]) -> str:
    return executable() + " " + shlex.join(argv)


def agent_unit(argv: list[str]) -> str:
    return f"""\
[Unit]
Description=clusterwatch agent: runs this node's checks and pushes them to the monitor
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={_command(argv)}
Restart=always
RestartSec=5
TimeoutStopSec=10
KillMode=process
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=multi-user.target
"""


def agent_termux_boot(argv: list[str]) -> str:
    # A phone sleeps: the wake lock keeps the agent running with the screen off. The loop restarts it
    # if it ever exits (Termux has no service manager of its own by default).
    return f"""\
#!/data/data/com.termux/files/usr/bin/sh
# clusterwatch agent, started by Termux:Boot when the phone has booted
termux-wake-lock
while true; do
  {_command(argv)} >> "$HOME/clusterwatch-agent.log" 2>&1
  sleep 10
done &
"""


def agent_cron(argv: list[str]) -> str:
    # flock: the line runs every minute; only one agent ever runs (a dead one is started again).
    user = os.environ.get("USER") or "root"
    return (
        "# clusterwatch agent: started at boot, and again within a minute if it ever stops\n"
        "SHELL=/bin/sh\n"
        f"* * * * * {user} flock -n /tmp/clusterwatch-agent.lock {_command(argv)} >> /tmp/clusterwatch-agent.log 2>&1\n"
    )


def agent_next_step(how: str) -> str:
    return {
        "systemd": "then: systemctl daemon-reload && systemctl enable --now clusterwatch-agent",
        "termux-boot": "then: install the Termux:Boot app and open it once; the agent starts at every boot",
        "cron": "cron starts it within a minute",
    }[how]


def write(path: Path, text: str, *, executable: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if executable:
        path.chmod(0o700)
    return f"wrote {path}"
