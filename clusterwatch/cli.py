"""Commands only: parse, call, print."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

import yaml

from clusterwatch import __version__
from clusterwatch.config.loader import ConfigError, LoadedConfig, load_config
from clusterwatch.model import Group, Status

EXIT_CONFIG = 3  # "unknown" in the Nagios convention: a broken config is not a healthy cluster
ONLY = {
    "services": {Group.SERVICES},
    "workers": {Group.WORKERS, Group.NODES},  # Cluster AI's "workers" were its SSH nodes
    "nodes": {Group.NODES},
    "models": {Group.MODELS},
    "system": {Group.SYSTEM},
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (default: $CLUSTERWATCH_CONFIG, "
        "./clusterwatch.yaml, /etc/clusterwatch/clusterwatch.yaml, else built-in defaults)",
    )
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log lines on stderr")

    parser = argparse.ArgumentParser(
        prog="clusterwatch", parents=[common], description="Keeps an AI cluster healthy without a person watching."
    )
    parser.add_argument("--version", action="version", version=f"clusterwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        parents=[common],
        help="check everything once and exit 0/1/2/3",
        description="Run every probe once. Exit 0 ok, 1 warning, 2 critical, 3 unknown or configuration error.",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output (always valid JSON)")
    check.add_argument("--only", metavar="WHAT", help="comma-separated: " + ", ".join(ONLY))
    check.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="bound for the whole run (default 30)"
    )

    run = sub.add_parser(
        "run",
        parents=[common],
        help="monitor continuously, heal, keep history",
        description="Run every check at its interval; restart what fails (within limits); "
        "keep history. SIGHUP or a changed config file reloads; SIGTERM stops.",
    )
    run.add_argument("--once", action="store_true", help="one round of everything, then exit (for cron)")
    run.add_argument("--log-format", choices=["text", "json"], default="text")

    heal = sub.add_parser("heal", parents=[common], help="the healer's restart budgets")
    heal_sub = heal.add_subparsers(dest="heal_command", required=True, metavar="ACTION")
    reset = heal_sub.add_parser("reset", parents=[common], help="give an exhausted restart budget back")
    reset.add_argument("name", help="check name or restart target")

    alerts = sub.add_parser("alerts", parents=[common], help="test the alert channels, or see their delivery")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    test = alerts_sub.add_parser("test", parents=[common], help="send a test message to each channel")
    test.add_argument("--channel", metavar="NAME", help="only this channel")
    alerts_sub.add_parser("status", parents=[common], help="per channel: waiting, delivered, given up, last error")

    silence = sub.add_parser("silence", parents=[common], help="hold back notifications (events are still kept)")
    silence_sub = silence.add_subparsers(dest="silence_command", required=True, metavar="ACTION")
    add = silence_sub.add_parser("add", parents=[common], help="silence what matches, for a while")
    add.add_argument(
        "--match",
        action="append",
        required=True,
        metavar="KEY=GLOB",
        help="check, entity, kind, node or severity; repeat to narrow (e.g. --match node=gpu-*)",
    )
    add.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="e.g. 30m, 2h")
    add.add_argument("--reason", required=True)
    silence_sub.add_parser("list", parents=[common], help="the silences in force")
    remove = silence_sub.add_parser("rm", parents=[common], help="end a silence now")
    remove.add_argument("id")

    report = sub.add_parser("report", parents=[common], help="uptime, incidents, MTTR, restarts over a period")
    report.add_argument("--since", default="7d", metavar="DURATION", help="the period, back from now (default 7d)")
    report.add_argument("--json", action="store_true", help="machine-readable")
    report.add_argument("--html", metavar="FILE", help="write an HTML report to FILE")

    demo = sub.add_parser("demo", parents=[common], help="a real local Dask cluster, watched and healed")
    demo.add_argument("--web-port", type=int, metavar="PORT", help="dashboard port (default 9877, else a free one)")

    install = sub.add_parser("install", parents=[common], help="print (or --write) a systemd unit or a cron line")
    install.add_argument("what", choices=["systemd", "cron"])
    install.add_argument("--write", action="store_true", help="write it to /etc instead of printing it")

    config = sub.add_parser("config", parents=[common], help="validate or show the configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_sub.add_parser("validate", parents=[common], help="check the config file and exit 0 or 3")
    config_sub.add_parser("show", parents=[common], help="print the effective config, secrets redacted")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "check":
        return cmd_check(args)
    if args.command == "config":
        return cmd_config(args)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "heal":
        return cmd_heal(args)
    if args.command == "install":
        return cmd_install(args)
    if args.command == "alerts":
        return cmd_alerts(args)
    if args.command == "report":
        return cmd_report(args)
    if args.command == "demo":
        from clusterwatch import demo

        return demo.run(args.web_port)
    if args.command == "silence":
        return cmd_silence(args)
    return 2


def _load(args: argparse.Namespace) -> LoadedConfig | None:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"clusterwatch: configuration error\n{exc}", file=sys.stderr)
        return None


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
                    "problems": [str(p) for p in exc.problems],
                    "checks": [],
                }
            )
        print(f"clusterwatch: configuration error\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    for note in loaded.notes:
        logging.getLogger("clusterwatch.config").info("%s", note)
    result = asyncio.run(run_once(loaded.config, only=only, timeout=args.timeout, redactor=loaded.redactor))
    if args.json:
        print_json(to_json(result, loaded.source))
    else:
        print_table(result, loaded.source)
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
    data: dict[str, Any] = loaded.redactor.data(config.model_dump(mode="json", exclude_none=True))
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
        return asyncio.run(monitor.once()).exit_code
    return asyncio.run(monitor.run())


def cmd_heal(args: argparse.Namespace) -> int:
    from clusterwatch.store.sqlite import Store

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    store = Store(loaded.config.store).open()
    try:
        store.command("heal_reset", args.name)
        store.flush()
    finally:
        store.close()
    print(f"asked the running monitor to reset the restart budget of {args.name}")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from clusterwatch import install

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


def cmd_alerts(args: argparse.Namespace) -> int:
    from clusterwatch.alerting.channels import Channels
    from clusterwatch.alerting.outbox import Outbox

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    urls = {**loaded.alert_channels(), **loaded.config.alerts.channels}
    if args.alerts_command == "status":
        outbox = Outbox(loaded.config.store.path)
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
                line += f"; last error: {loaded.redactor.text(row['last_error'])}"
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
    channels = Channels(urls, loaded.redactor)
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

    from clusterwatch.alerting.outbox import Outbox
    from clusterwatch.alerting.routing import Silence
    from clusterwatch.config.durations import parse_duration
    from clusterwatch.config.schema import MATCH_KEYS

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    outbox = Outbox(loaded.config.store.path)
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

    from clusterwatch import report
    from clusterwatch.config.durations import parse_duration

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        print(f"clusterwatch: --since: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    path = os.path.expanduser(loaded.config.store.path)
    if not os.path.exists(path):
        print(f"clusterwatch: no history yet at {path} (run `clusterwatch run` first)", file=sys.stderr)
        return 1
    data = report.build(path, since)
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(report.to_html(data))
        print(f"wrote {args.html}")
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    elif not args.html:
        report.print_text(data)
    return 0
