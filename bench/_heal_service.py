"""The service that bench/healing_vs_monit.py kills, and the one start command both watchers run.

`python _heal_service.py start --port P --dir D` is the restart action of both sides (the same argv,
no shell). It appends CLOCK_MONOTONIC (the bench's own clock: one clock for every process on the
host) to D/starts, forks a keeper in a session of its own and returns. The keeper forks the service
and waits on it, so a service killed with -9 is reaped at once, as under an init or a service
manager: neither watcher ever sees a zombie. The service answers every GET; a GET of `/` (the
watchers' probes) is stamped into D/probes, which gives the phase of each watcher's cycle at a kill;
the bench's own polls ask for `/poll` and are not stamped. Only the standard library: it starts fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


def stamp(path: Path, value: float) -> None:
    """One line per event, appended whole (O_APPEND): readers never see half a line for long."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{value:.6f}\n".encode())
    finally:
        os.close(fd)


def stamps(path: Path) -> list[float]:
    """What `stamp` wrote so far (a line still being written is left for the next read)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [float(line) for line in text.split("\n")[:-1] if line]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection, as both watchers' probes
    probes: Path

    def do_GET(self) -> None:
        if self.path == "/":
            stamp(self.probes, time.monotonic())
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: stderr is /dev/null anyway."""


def _serve(port: int, directory: Path) -> None:
    _Handler.probes = directory / "probes"
    server = HTTPServer(("127.0.0.1", port), _Handler)  # SO_REUSEADDR: rebinds at once after a kill
    pidfile = directory / "service.pid"
    pidfile.with_suffix(".tmp").write_text(f"{os.getpid()}\n")
    pidfile.with_suffix(".tmp").replace(pidfile)  # written before the first answer: serving means it is there
    server.serve_forever()


def _detach() -> None:
    """Let go of the watcher's pipes and descriptors: the start command's end is the action's end."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 1024)


def start(port: int, directory: Path) -> None:
    """The restart action: stamp, fork the keeper, return 0 at once."""
    stamp(directory / "starts", time.monotonic())
    if os.fork():
        os._exit(0)
    os.setsid()
    _detach()
    service = os.fork()
    if service == 0:
        try:
            _serve(port, directory)
        finally:
            os._exit(1)
    (directory / "keeper.pid").write_text(f"{os.getpid()}\n")
    while True:  # the keeper: reaps its service the moment it dies, then goes
        try:
            os.waitpid(service, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["start"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    start(args.port, args.dir)
    sys.exit(0)


if __name__ == "__main__":
    main()
