"""`clusterwatch install systemd|cron`: the unit and the cron line, printed (or written with --write)."""

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


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return f"wrote {path}"
