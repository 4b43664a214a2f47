"""Commands only: parse, call, print."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
import traceback
import typing
from collections.abc import Coroutine
from typing import Any, TypeVar

import yaml

from clusterwatch import __version__, redact
from clusterwatch.config.loader import ConfigError, LoadedConfig, load_config
from clusterwatch.model import Group, Status
from clusterwatch.store.db import errors as db_errors
from clusterwatch.store.db import store_location

EXIT_UNKNOWN = 3  # Nagios' "unknown": a usage, config or internal error says nothing about the cluster
EXIT_CONFIG = EXIT_UNKNOWN  # a broken config is not a healthy cluster
T = TypeVar("T")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
ONLY = {
    "services": {Group.SERVICES},
    "workers": {Group.WORKERS, Group.NODES},  # Cluster AI's "workers" were its SSH nodes
    "nodes": {Group.NODES},
    "models": {Group.MODELS},
    "system": {Group.SYSTEM},
}


GLOBAL_HELP = {
    "config": "config file (default: $CLUSTERWATCH_CONFIG, ./clusterwatch.yaml, "
    "/etc/clusterwatch/clusterwatch.yaml, else built-in defaults)",
    "verbose": "more log lines on stderr (-vv: debug); an internal error then shows its traceback",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is exit 3 ("unknown" to Nagios), not 2 ("critical")."""

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_UNKNOWN, f"{self.prog}: error: {redact.text(message)}\n")


def _add_globals(parser: argparse.ArgumentParser, depth: int) -> None:
    """-c and -v on every level of the command line, each level into its own attribute.

    A subcommand's parser fills a namespace of its own and copies it over its parent's, so one
    shared attribute with a default would let `check` reset the `-c FILE` given before it.
    """
    parser.add_argument(
        "-c", "--config", dest=f"config_{depth}", metavar="FILE", default=argparse.SUPPRESS, help=GLOBAL_HELP["config"]
    )
    parser.add_argument(
        "-v",
        "--verbose",
        dest=f"verbose_{depth}",
        action="count",
        default=argparse.SUPPRESS,
        help=GLOBAL_HELP["verbose"],
    )


def _merge_globals(args: argparse.Namespace) -> argparse.Namespace:
    """The last -c on the line wins; -v counts wherever it stands."""
    config, verbose = None, 0
    for depth in range(3):
        config = vars(args).pop(f"config_{depth}", config)
        verbose += vars(args).pop(f"verbose_{depth}", 0)
    args.config, args.verbose = config, verbose
    return args


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="clusterwatch", description="Keeps an AI cluster healthy without a person watching.")
    _add_globals(parser, 0)
    parser.add_argument("--version", action="version", version=f"clusterwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        created = sub.add_parser(name, **kwargs)
        _add_globals(created, 1)
        return created

    def action(group: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        created = group.add_parser(name, **kwargs)
        _add_globals(created, 2)
        return created

    check = command(
        "check",
        help="check everything once and exit 0/1/2/3",
        description="Run every probe once. Exit 0 ok, 1 warning, 2 critical, 3 unknown or configuration error.",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output (always valid JSON)")
    check.add_argument("--only", metavar="WHAT", help="comma-separated: " + ", ".join(ONLY))
    check.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="bound for the whole run (default 30)"
    )

    run = command(
        "run",
        help="monitor continuously, heal, keep history",
        description="Run every check at its interval; restart what fails (within limits); "
        "keep history. SIGHUP or a changed config file reloads; SIGTERM stops.",
    )
    run.add_argument("--once", action="store_true", help="one round of everything, then exit (for cron)")
    run.add_argument("--log-format", choices=["text", "json"], default="text")

    heal = command("heal", help="the healer's restart budgets")
    heal_sub = heal.add_subparsers(dest="heal_command", required=True, metavar="ACTION")
    reset = action(
        heal_sub,
        "reset",
        help="give a restart budget back (exit 3: nothing to reset)",
        description="Give the restart budget back: of every step and entity of a check, or of one target. "
        "Asks the running monitor, and says what it did; exit 3 when nothing was spent.",
    )
    reset.add_argument("name", help="check name (every step and entity) or restart target (that one)")
    reset.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the running monitor to do it (default 10)",
    )
    pause = action(heal_sub, "pause", help="leave a target alone: it was stopped on purpose")
    pause.add_argument("name", help="check name or restart target")
    pause.add_argument("--for", dest="duration", default="1h", metavar="DURATION", help="e.g. 30m, 2h (default 1h)")
    pause.add_argument("--reason", default="", help="shown in the log while the healer leaves it alone")
    resume = action(heal_sub, "resume", help="let the healer restart a paused target again")
    resume.add_argument("name", help="check name or restart target")

    alerts = command("alerts", help="test the alert channels, or see their delivery")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    test = action(alerts_sub, "test", help="send a test message to each channel")
    test.add_argument("--channel", metavar="NAME", help="only this channel")
    action(alerts_sub, "status", help="per channel: waiting, delivered, given up, last error")

    silence = command("silence", help="hold back notifications (events are still kept)")
    silence_sub = silence.add_subparsers(dest="silence_command", required=True, metavar="ACTION")
    add = action(silence_sub, "add", help="silence what matches, for a while")
    add.add_argument(
        "--match",
        action="append",
        required=True,
        metavar="KEY=GLOB",
        help="check, entity, kind, node or severity; repeat to narrow (e.g. --match node=gpu-*)",
    )
    add.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="e.g. 30m, 2h")
    add.add_argument("--reason", required=True)
    action(silence_sub, "list", help="the silences in force")
    remove = action(silence_sub, "rm", help="end a silence now")
    remove.add_argument("id")

    report = command("report", help="uptime, incidents, MTTR, restarts over a period")
    report.add_argument(
        "--since",
        default="7d",
        metavar="WHEN",
        help="the period's start: a duration back from now (7d, 36h) or a local date/time (2026-03-01, "
        "'2026-03-01 14:00'); default 7d",
    )
    report.add_argument(
        "--until", metavar="WHEN", help="the period's end, written the same way (e.g. 1d, 2026-03-08); default now"
    )
    report.add_argument("--json", action="store_true", help="machine-readable")
    report.add_argument("--html", metavar="FILE", help="write an HTML report to FILE")

    demo = command("demo", help="a real local Dask cluster, watched and healed")
    demo.add_argument("--web-port", type=int, metavar="PORT", help="dashboard port (default 9877, else a free one)")

    install = command(
        "install",
        help="print (or --write) a systemd unit or a cron line; `install agent ...` for a node's agent",
        description="`install systemd|cron`: start the monitor at boot. `install agent systemd|termux-boot|cron "
        "--server URL --name NAME --token-file FILE`: start a node's agent at boot (Termux:Boot on Android).",
    )
    install.add_argument("what", choices=["systemd", "cron", "agent"])
    install.add_argument("how", nargs="?", choices=["systemd", "termux-boot", "cron"], help="for `agent`")
    install.add_argument("--write", action="store_true", help="write it in place instead of printing it")
    _agent_options(install, required=False)

    agent = command("agent", help="node agents: enroll, revoke, list; run one on a node")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    enroll = action(agent_sub, "enroll", help="a token for a node's agent: shown once, stored hashed")
    enroll.add_argument("name", help="the node's name (a node with `agent: true` in the config)")
    enroll.add_argument("--token-file", metavar="FILE", help="write the token to FILE (mode 600), not the terminal")
    revoke = action(agent_sub, "revoke", help="the agent's token stops working at once")
    revoke.add_argument("name")
    action(agent_sub, "list", help="enrolled agents: when and from where each was last heard")
    agent_run = action(
        agent_sub,
        "run",
        help="on a node: run its checks (the monitor sends them) and push them to the monitor",
        description="Runs on the node: no config file; it fetches the node's checks from the monitor, probes them "
        "with the monitor's own code, pushes the rounds, restarts what the monitor tells it to, and heals its own "
        "checks while it cannot reach the monitor. Nothing listens on the node.",
    )
    _agent_options(agent_run, required=True)

    store = command("store", help="the store itself: copy it into another")
    store_sub = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    migrate = action(
        store_sub,
        "migrate",
        help="copy history, incidents, actions, budgets, silences and the outbox into a fresh store",
        description="Copy one store into another, ids kept: SQLite to PostgreSQL (to run a group of monitors), "
        "back, or to another SQLite file. Stop the monitor first. Everything is copied but the leader lease, the "
        "group's members and the schema's own bookkeeping. The source is first brought to this version's schema "
        "IN PLACE, as `clusterwatch run` does at start (copy a SQLite file first if an older clusterwatch must "
        "read it again). The target must be empty: a new PostgreSQL database, or a path with no file yet. "
        "Exit 0 when every table's rows were copied and counted again on both sides, 1 when the counts differ "
        "or the copy was refused, 3 when a store cannot be reached or used.",
    )
    migrate.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="STORE",
        help="sqlite:///abs/path, a path, or postgresql://user@host/db (brought to the newest schema first)",
    )
    migrate.add_argument(
        "--to", dest="target", required=True, metavar="STORE", help="the same kinds; a fresh, empty store"
    )
    migrate.add_argument(
        "--batch", type=_positive_int, default=5000, metavar="ROWS", help="rows per transaction (default 5000)"
    )

    config = command("config", help="validate or show the configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    action(config_sub, "validate", help="check the config file and exit 0 or 3")
    action(config_sub, "show", help="print the effective config, secrets redacted")
    return parser


def _agent_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--server", required=required, metavar="URL", help="the monitor: https://HOST:9877 (a group: comma-separated)"
    )
    parser.add_argument("--name", required=required, metavar="NODE", help="this node's name in the monitor's config")
    parser.add_argument("--token-file", required=required, metavar="FILE", help="the token `agent enroll` gave")
    parser.add_argument("--ca-file", metavar="FILE", help="the CA that signed the monitor's certificate (https)")
    parser.add_argument("--state-dir", metavar="DIR", help="its queue and ledger (default ~/.local/state/...)")
    parser.add_argument(
        "--insecure-http", action="store_true", help="allow http:// to another machine (token and commands in clear)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return _merge_globals(build_parser().parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """Exit codes follow Nagios: 0 ok, 1 warning, 2 critical, 3 unknown (a usage, config or internal error)."""
    from clusterwatch import logs

    args = parse_args(argv)
    logs.setup(level=("warning", "info", "debug")[min(args.verbose, 2)])
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("clusterwatch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to print, and Python must not try to flush to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_UNKNOWN
    except (OSError, *db_errors()) as exc:
        return environment_error(args, exc)
    except Exception as exc:
        return internal_error(args, exc)


def environment_error(args: argparse.Namespace, exc: BaseException) -> int:
    """A disk, a permission or a database in the way: the operator's to fix, not a bug."""
    if args.verbose:
        sys.stderr.write(redact.text("".join(traceback.format_exception(exc))))
    what = " ".join(redact.text(str(exc)).split())[:300] or type(exc).__name__
    name = " ".join(p for p in (args.command, _action(args)) if p)
    print(
        f"clusterwatch: `{name}` could not go on: {what} (check the store path, its directory's permissions "
        "and free disk space)",
        file=sys.stderr,
    )
    return EXIT_UNKNOWN


def run_interruptible(work: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with Ctrl-C heard at once: the loop's own SIGINT handler wakes it through its
    wakeup fd whichever thread the signal lands on (Python's handler alone waits for the main thread
    to leave select(), which may be a minute away when a resolver thread took the signal)."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            return await work
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def internal_error(args: argparse.Namespace, exc: BaseException) -> int:
    """One line that says what broke and what to do; with -v the traceback first, masked like every log."""
    if args.verbose:
        sys.stderr.write(redact.text("".join(traceback.format_exception(exc))))
    what = " ".join(redact.text(str(exc)).split())
    if len(what) > 300:
        what = what[:300] + "..."
    advice = (
        "this is a bug in clusterwatch: the traceback is above; please report it"
        if args.verbose
        else "this is a bug in clusterwatch: run the same command with -v to see the traceback, and report it"
    )
    name = " ".join(p for p in (args.command, _action(args)) if p)
    what = f"{type(exc).__name__}: {what}" if what else type(exc).__name__
    print(f"clusterwatch: internal error in `{name}`: {what} ({advice})", file=sys.stderr)
    return EXIT_UNKNOWN


def _action(args: argparse.Namespace) -> str:
    return str(getattr(args, f"{args.command}_command", "") or "")


def _demo(args: argparse.Namespace) -> int:
    from clusterwatch import demo

    return demo.run(args.web_port)


def _load(args: argparse.Namespace) -> LoadedConfig | None:
    """The config, its redactor made the current one; None (after saying why) if it is broken."""
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        print(f"clusterwatch: configuration error\n{redact.text(str(exc))}", file=sys.stderr)
        return None
    redact.install(loaded.redactor)
    return loaded


def cmd_check(args: argparse.Namespace) -> int:
    from clusterwatch.engine.once import run_once
    from clusterwatch.output import print_json, print_table, to_json

    only = None
    if args.only:
        only = set()
        for word in args.only.split(","):
            if word.strip() not in ONLY:
                print(f"clusterwatch: --only {word!r}: choose from {', '.join(ONLY)}", file=sys.stderr)
                return EXIT_CONFIG
            only |= ONLY[word.strip()]
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        if args.json:
            print_json(
                {
                    "status": Status.UNKNOWN.value,
                    "error": "configuration error",
                    "problems": [redact.text(str(p)) for p in exc.problems],
                    "checks": [],
                }
            )
        print(f"clusterwatch: configuration error\n{redact.text(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    redact.install(loaded.redactor)
    for note in loaded.notes:
        logging.getLogger("clusterwatch.config").info("%s", note)
    result = run_interruptible(run_once(loaded.config, only=only, timeout=args.timeout, redactor=loaded.redactor))
    if args.json:
        print_json(to_json(result, loaded.source))
    else:
        print_table(result, loaded.source)
    agents = [n.name for n in loaded.config.nodes if n.agent]
    if agents:  # on stderr: the table (or JSON) stays what it was; a person still learns what was not looked at
        left = sum(1 for c in loaded.config.checks if c.node in agents)
        print(
            f"clusterwatch: not looked at here: {len(agents)} node(s) with an agent ({', '.join(agents[:5])}"
            f"{', ...' if len(agents) > 5 else ''}) and {left} check(s) on them; their agents report to "
            "`clusterwatch run` (see its dashboard or /api/v1/status)",
            file=sys.stderr,
        )
    return result.status.exit_code


def cmd_config(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    config = loaded.config
    if args.config_command == "validate":
        print(f"{loaded.source}: ok ({len(config.checks)} checks, {len(config.nodes)} nodes)")
        for note in loaded.notes:
            print(f"  {note}")
        return 0
    data: dict[str, Any] = config.model_dump(mode="json", exclude_none=True)
    alerts = data.get("alerts") or {}
    from clusterwatch.alerting.channels import privacy_url, privacy_webhook

    if alerts.get("channels"):
        # As Apprise itself shows them: passwords, tokens and webhook paths masked, the rest readable.
        alerts["channels"] = {name: privacy_url(url) for name, url in alerts["channels"].items()}
    if (alerts.get("heartbeat") or {}).get("url"):
        alerts["heartbeat"]["url"] = privacy_webhook(alerts["heartbeat"]["url"])
    data = redact.current().data(data)
    print(f"# effective configuration from {loaded.source} (secrets redacted)")
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from clusterwatch import logs
    from clusterwatch.daemon import Monitor

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    options = loaded.config.logs
    level = "debug" if args.verbose else options.level
    logs.setup(
        level=level,
        fmt=args.log_format,
        log_dir=options.dir,
        max_bytes=options.max_bytes,
        backups=options.backups,
        redactor=loaded.redactor,
    )
    monitor = Monitor(loaded, args.config)
    if args.once:
        return run_interruptible(monitor.once()).exit_code
    return asyncio.run(monitor.run())


def _heal_targets(loaded: LoadedConfig, name: str, ledger: Any) -> dict[str, float] | None:
    """The stored targets `name` stands for, each with its budget's window: by check name every step of
    its restart (a ladder) and every entity's own target it acted on; by target that one. None: unknown."""
    key = loaded.redactor.text  # targets are stored redacted: a secret in a command's argv never reaches the disk
    checks = [c for c in loaded.config.checks if c.restart]
    check = next((c for c in checks if c.name == name), None)
    if check is not None:
        steps = list(check.restart or [])
        targets = {key(step.target): step.window for step in steps}
        for stored in ledger.targets_of(check.name):  # a per-entity restart: one budget per entity
            targets.setdefault(stored, max(step.window for step in steps))
        return targets
    for step in (step for c in checks for step in c.restart or []):
        if key(step.target) == key(name):
            return {key(name): step.window}
    owners = [c for c in checks if c.name in ledger.checks_of(key(name))]
    if owners:  # one entity's own target (`supervisor:dask-worker-w2`), as the ledger knows it
        return {key(name): max(step.window for c in owners for step in c.restart or [])}
    return None


def _at(ts: float, now: float) -> str:
    same_day = time.localtime(ts)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _attempts(n: int) -> str:
    return f"{n} attempt{'' if n == 1 else 's'}"


def _budget_said(state: dict[str, Any], now: float, *, past: bool) -> str:
    """What a budget held before a reset: given up on, or attempts that still count against it."""
    if state["exhausted"] is not None:
        was = "was exhausted" if past else "exhausted"
        return f"{was} since {_at(state['exhausted'], now)} after {_attempts(state['episode'])}"
    return f"{'had' if past else 'with'} {_attempts(state['counting'])} counting"


def _reset(args: argparse.Namespace, loaded: LoadedConfig, ledger: Any, targets: dict[str, float]) -> int:
    """Read what there is to reset first; ask the monitor through the store's command queue (the healer
    owns the budgets, and a running one holds them in memory); then say what was done, or asked."""
    from clusterwatch.store.writer import Store

    now = time.time()
    before = {target: ledger.budget_state(target, window, now) for target, window in targets.items()}
    todo = {t: state for t, state in before.items() if state["exhausted"] is not None or state["counting"]}
    if not todo:
        print(
            f"clusterwatch: nothing to reset: the restart budget of {', '.join(targets)} is untouched "
            "(not exhausted, no attempts counting)",
            file=sys.stderr,
        )
        return EXIT_UNKNOWN
    store = Store(loaded.config.store).open()
    try:
        store.command("heal_reset", args.name)
        store.flush()
    finally:
        store.close()

    def reset_now() -> set[str]:  # counts_from moves on a reset (or when the budget came back by itself)
        return {t for t, s in todo.items() if ledger.budget_state(t, targets[t])["counts_from"] != s["counts_from"]}

    deadline = time.monotonic() + args.wait
    while len(done := reset_now()) < len(todo) and time.monotonic() < deadline:
        time.sleep(0.2)
    taken = ledger.command_taken("heal_reset", args.name)
    for target, state in todo.items():
        if target in done:
            print(f"reset the restart budget of {target} ({_budget_said(state, now, past=True)})")
        elif taken:
            print(
                f"clusterwatch: the monitor took the reset, but the restart budget of {target} is unchanged "
                f"({_budget_said(state, now, past=False)}): see its log",
                file=sys.stderr,
            )
        else:
            print(
                f"asked the monitor to reset the restart budget of {target} ({_budget_said(state, now, past=False)}); "
                f"no monitor took it within {args.wait:g}s: a running one does within seconds, else `clusterwatch run` "
                "does when it starts"
            )
    return 1 if taken and len(done) < len(todo) else 0


def cmd_heal(args: argparse.Namespace) -> int:
    from clusterwatch.config.durations import format_duration, positive_duration
    from clusterwatch.store.healing import HealLedger

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    ledger = HealLedger(store_location(loaded.config.store))
    ledger.open()
    try:
        targets = _heal_targets(loaded, args.name, ledger)
        if targets is None:
            print(f"clusterwatch: no check with a restart action is named {args.name!r}", file=sys.stderr)
            return EXIT_CONFIG
        if args.heal_command == "reset":
            return _reset(args, loaded, ledger, targets)
        if args.heal_command == "pause":
            try:
                seconds = positive_duration(args.duration)
            except ValueError as exc:
                print(f"clusterwatch: --for {args.duration!r}: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            for target in targets:
                ledger.pause(target, time.time() + seconds, args.reason)
            print(f"the healer leaves {args.name} alone for {format_duration(seconds)} (`heal resume` to undo)")
        else:
            for target in targets:
                ledger.pause(target, None)
            print(f"the healer may restart {args.name} again")
    finally:
        ledger.close()
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from clusterwatch import install

    if args.what == "agent":
        return _install_agent(args)
    if args.what == "systemd":
        text, path = install.systemd_unit(args.config), install.UNIT_PATH
    else:
        text, path = install.cron_line(args.config), install.CRON_PATH
    if not args.write:
        print(text, end="")
        return 0
    try:
        print(install.write(path, text))
    except OSError as exc:
        print(
            f"clusterwatch: cannot write {path}: {exc.strerror} (run as root, or without --write and copy it)",
            file=sys.stderr,
        )
        return 1
    if args.what == "systemd":
        print("then: systemctl daemon-reload && systemctl enable --now clusterwatch")
    return 0


def _install_agent(args: argparse.Namespace) -> int:
    from clusterwatch import install

    missing = [f"--{o.replace('_', '-')}" for o in ("server", "name", "token_file") if not getattr(args, o)]
    if args.how is None or missing:
        print(
            "clusterwatch: install agent systemd|termux-boot|cron needs " + ", ".join(missing or ["how"]),
            file=sys.stderr,
        )
        return EXIT_UNKNOWN
    argv = install.agent_argv(args.server, args.name, args.token_file, args.ca_file, args.state_dir)
    if args.insecure_http:
        argv.append("--insecure-http")
    elif any(s.strip().startswith("http://") and not install.loopback_url(s.strip()) for s in args.server.split(",")):
        print(
            "clusterwatch: the agent refuses plain http:// to another machine: use https:// (web.tls), or add "
            "--insecure-http on a network you trust",
            file=sys.stderr,
        )
        return 1
    text, path = {
        "systemd": lambda: (install.agent_unit(argv), install.AGENT_UNIT_PATH),
        "termux-boot": lambda: (install.agent_termux_boot(argv), install.termux_boot_path()),
        "cron": lambda: (install.agent_cron(argv), install.AGENT_CRON_PATH),
    }[args.how]()
    if not args.write:
        print(text, end="")
        return 0
    try:
        print(install.write(path, text, executable=args.how == "termux-boot"))
    except OSError as exc:
        print(f"clusterwatch: cannot write {path}: {exc.strerror} (without --write, copy it by hand)", file=sys.stderr)
        return 1
    print(install.agent_next_step(args.how))
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    if args.agent_command == "run":
        from clusterwatch.agent.runner import main as run_agent

        return run_agent(args)
    from clusterwatch.store.agents import AgentRegistry
    from clusterwatch.store.db import shown, store_location

    loaded = _load(args)
    if loaded is None:
        return EXIT_UNKNOWN
    config = loaded.config
    registry = AgentRegistry(store_location(config.store)).open()
    try:
        if args.agent_command == "enroll":
            return _enroll(args, config, registry, shown(registry.location))
        if args.agent_command == "revoke":
            if registry.revoke(args.name):
                print(f"agent {args.name}: token revoked; its pushes are refused within seconds")
                return 0
            print(f"clusterwatch: no enrolled agent {args.name!r} with a token in force", file=sys.stderr)
            return 1
        rows = registry.all()
        if not rows:
            print("no agents enrolled (`clusterwatch agent enroll NODE`)")
        for row in rows:
            state = f"revoked {_local_time(row.revoked)}" if row.revoked else "active"
            seen = f"last heard {_local_time(row.last_seen)} from {row.last_addr}" if row.last_seen else "never heard"
            print(f"{row.name}\t{state}\tenrolled {_local_time(row.created)}\t{seen}")
        return 0
    finally:
        registry.close()


def _enroll(args: argparse.Namespace, config: Any, registry: Any, where: str) -> int:
    node = next((n for n in config.nodes if n.name == args.name), None)
    if node is None or not node.agent:
        print(
            f"clusterwatch: {args.name!r} is not a node with `agent: true` in the config: add "
            f"`- {{name: {args.name}, agent: true}}` under nodes:, then enroll it",
            file=sys.stderr,
        )
        return 1
    replaced = any(row.name == args.name and row.revoked is None for row in registry.all())
    token = registry.enroll(args.name)
    if replaced:
        print(f"clusterwatch: {args.name} had a token: it stops working now (give the agent the new one)")
    web = config.web
    scheme = "https" if web.tls or web.loopback else "http"  # a node elsewhere needs web.tls first
    host = web.host if not web.loopback else "THIS-MONITOR"
    server = f"{scheme}://{host}:{web.port}"
    if args.token_file:
        path = os.path.expanduser(args.token_file)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        print(f"agent {args.name} enrolled (store {where}); its token is in {path}: copy it to the node")
    else:
        print(f"agent {args.name} enrolled (store {where}). Its token, shown this once:\n\n  {token}\n")
        print("On the node, save it (mode 600) as ~/.clusterwatch-token:")
        print("  umask 077 && cat > ~/.clusterwatch-token   # paste the token, then Ctrl-D")
    print("then run there:")
    ca = " --ca-file ~/monitor-ca.pem" if web.tls else "" if web.loopback else " --insecure-http"
    print(f"  clusterwatch agent run --server {server} --name {args.name} --token-file ~/.clusterwatch-token{ca}")
    if web.loopback:
        print(
            f"(this monitor listens on {web.listen} only: set web.listen to an address the node reaches, with "
            "web.token_file and web.tls, and put that address in --server)"
        )
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from clusterwatch.alerting.channels import Channels
    from clusterwatch.store.outbox import Outbox

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    urls = {**loaded.alert_channels(), **loaded.config.alerts.channels}
    if args.alerts_command == "status":
        outbox = Outbox(store_location(loaded.config.store))
        try:
            rows = {r["channel"]: r for r in outbox.status()}
        finally:
            outbox.close()
        if not urls and not rows:
            print("no alert channels configured (alerts.channels, or Cluster AI's SMTP_* / SLACK_WEBHOOK_URL)")
            return 0
        for name in sorted(set(urls) | set(rows)):
            row = rows.get(name)
            if row is None:
                print(f"{name}: nothing sent yet")
                continue
            line = f"{name}: {row['pending']} waiting, {row['delivered']} delivered, {row['expired']} given up"
            if row["last_error"]:
                line += f"; last error: {redact.text(row['last_error'])}"
            print(line)
        return 0
    if args.channel and args.channel not in urls:
        print(
            f"clusterwatch: no channel named {args.channel!r} (channels: {', '.join(urls) or 'none'})", file=sys.stderr
        )
        return EXIT_CONFIG
    if not urls:
        print("no alert channels configured (alerts.channels, or Cluster AI's SMTP_* / SLACK_WEBHOOK_URL)")
        return EXIT_CONFIG
    channels = Channels(urls)
    failed = 0
    for name in [args.channel] if args.channel else sorted(urls):
        ok, error = channels.send(
            name,
            "[TEST] clusterwatch alert test",
            "This is a test message from clusterwatch: this channel works.",
            "info",
        )
        failed += 0 if ok else 1
        print(f"{name} ({channels.describe(name)}): " + ("delivered" if ok else f"FAILED: {error}"))
    return 1 if failed else 0


def cmd_silence(args: argparse.Namespace) -> int:
    import getpass

    from clusterwatch.alerting.routing import Silence
    from clusterwatch.config.durations import parse_duration
    from clusterwatch.config.schema import MATCH_KEYS
    from clusterwatch.store.outbox import Outbox

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    outbox = Outbox(store_location(loaded.config.store))
    try:
        if args.silence_command == "add":
            matchers = {}
            for item in args.match:
                key, sep, pattern = item.partition("=")
                if not sep or key not in MATCH_KEYS or not pattern:
                    print(
                        f"clusterwatch: --match {item!r}: use KEY=GLOB with KEY one of {', '.join(MATCH_KEYS)}",
                        file=sys.stderr,
                    )
                    return EXIT_CONFIG
                matchers[key] = pattern
            try:
                seconds = parse_duration(args.duration)
            except ValueError as exc:
                print(f"clusterwatch: --for: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            silence = Silence.new(matchers, seconds, args.reason, getpass.getuser())
            outbox.add_silence(silence)
            print(
                f"silence {silence.id} added until {_local_time(silence.ends)}: "
                f"{' '.join(f'{k}={v}' for k, v in matchers.items())} ({args.reason})"
            )
        elif args.silence_command == "list":
            silences = outbox.silences()
            if not silences:
                print("no silences in force")
            for s in silences:
                print(
                    f"{s.id}  until {_local_time(s.ends)}  {' '.join(f'{k}={v}' for k, v in s.matchers.items())}"
                    f"  {s.reason}" + (f"  (by {s.created_by})" if s.created_by else "")
                )
        elif args.silence_command == "rm":
            if not outbox.remove_silence(args.id):
                print(f"clusterwatch: no silence {args.id!r}", file=sys.stderr)
                return 1
            print(f"silence {args.id} removed")
    finally:
        outbox.close()
    return 0


def _local_time(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def cmd_report(args: argparse.Namespace) -> int:
    import json
    import os
    import time

    from clusterwatch import report

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    now = time.time()
    try:
        start = report.parse_when(args.since, now)
    except ValueError as exc:
        print(f"clusterwatch: --since: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        end = now if args.until is None else report.parse_when(args.until, now)
    except ValueError as exc:
        print(f"clusterwatch: --until: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if end <= start:
        print(
            f"clusterwatch: --since ({_local_time(start)}) must be before --until ({_local_time(end)})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    path = store_location(loaded.config.store)
    if not loaded.config.store.url and not os.path.exists(path):
        print(f"clusterwatch: no history yet at {path} (run `clusterwatch run` first)", file=sys.stderr)
        return 1
    data = report.build(path, end - start, end, minutes_kept=loaded.config.store.minute_rollups_max_age)
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(report.to_html(data))
        print(f"wrote {args.html}")
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    elif not args.html:
        report.print_text(data)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from clusterwatch.store.migrate import MigrateError, Refused, copy_store

    try:
        outcome = copy_store(
            args.source, args.target, batch=args.batch, say=lambda line: print(redact.text(line), flush=True)
        )
    except MigrateError as exc:
        print(f"clusterwatch: store migrate: {redact.text(str(exc))}", file=sys.stderr)
        return 1 if isinstance(exc, Refused) else EXIT_UNKNOWN
    if outcome.mismatched:
        for table, (source, target) in outcome.mismatched.items():
            print(
                f"clusterwatch: store migrate: {table}: {source} rows in the source, {target} in the target",
                file=sys.stderr,
            )
        print(
            "clusterwatch: store migrate: the copy does not match its source (was a monitor still writing to it?): "
            "stop the monitor, empty the target and run it again",
            file=sys.stderr,
        )
        return 1
    print(
        f"copied {outcome.rows} rows of {len(outcome.copied)} tables in {outcome.seconds:.1f} s; "
        "counted again on both sides: they match"
    )
    return 0


COMMANDS: dict[str, typing.Callable[[argparse.Namespace], int]] = {
    "check": cmd_check,
    "config": cmd_config,
    "run": cmd_run,
    "heal": cmd_heal,
    "install": cmd_install,
    "alerts": cmd_alerts,
    "report": cmd_report,
    "demo": _demo,
    "silence": cmd_silence,
    "store": cmd_store,
    "agent": cmd_agent,
}
