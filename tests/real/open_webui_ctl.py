"""Start and stop a real Open WebUI the way a restart action would: `start` detaches it (its PID in a
pidfile), `stop` resumes it (a SIGSTOP'd process acts on no signal but KILL and CONT), asks it to end,
and kills it after a grace period. Shell-free, for `restart: {stop: [...], command: [...]}`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time


def start(pidfile: str, binary: str, port: str, data_dir: str, log: str) -> None:
    env = {
        **os.environ,
        "DATA_DIR": data_dir,
        "WEBUI_AUTH": "False",
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "ENABLE_OLLAMA_API": "False",
        "WEBUI_SECRET_KEY": "test-only",
    }
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [binary, "serve", "--host", "127.0.0.1", "--port", port],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True, cwd=data_dir,
        )
    with open(pidfile, "w") as f:
        f.write(f"{proc.pid}\n")


def stop(pidfile: str, grace: float = 5.0) -> None:
    try:
        with open(pidfile) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1] == "start":
        start(*sys.argv[2:7])
    else:
        stop(sys.argv[2])
