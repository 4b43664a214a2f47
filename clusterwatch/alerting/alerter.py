"""The alerter: turns events into notifications people can trust.

One notification per incident transition (firing, escalated, resolved; a restart that worked
before anyone was told is reported once), grouped within `group_wait`, inhibited (a dependant
of a down root never opens an incident; a check's critical holds back its warnings), repeated
every `repeat_interval`, held by silences and maintenance windows — and never lost: each one
is committed to the outbox before it is sent, and retried until delivered or `max_age`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import aiohttp

from clusterwatch import redact
from clusterwatch.alerting import messages
from clusterwatch.alerting.channels import Channels, remember_secrets
from clusterwatch.alerting.messages import Incident
from clusterwatch.alerting.routing import Silence, channels_for, held_by
from clusterwatch.config.schema import AlertOptions
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.model import Status
from clusterwatch.store.db import errors as db_errors
from clusterwatch.store.outbox import Message, Outbox

log = logging.getLogger("clusterwatch.alerts")
TICK = 0.5
SILENCE_REFRESH = 2.0
TOLD_OFFLINE_FOR = 600.0  # seconds a notice told from a local outbox may stand for the shared store's
PROBLEMS = {"firing", "escalated", "repeat", "flapping", "monitor"}
TELLS_THE_END = {"resolved", "healed"}  # once one of these is in the outbox, the incident's state goes
SENDERS = 4  # Apprise calls at once (one per channel at most)
T = TypeVar("T")


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until the event is set or the time is up; unlike wait_for on 3.11, never swallows a cancel."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


@dataclass
class Note:
    """A notification waiting for its group to be sent."""

    kind: str
    severity: str
    labels: dict[str, str]
    due: float  # on the monotonic clock: a wall clock set back an hour must not hold an alert an hour
    incident: Incident | None = None
    title: str = ""
    body: str = ""


def due_at(wall: float) -> float:
    """A wall-clock due time (an event's time plus a wait) on the monotonic clock."""
    return time.monotonic() + max(0.0, wall - time.time())


def severity_of(status: Status | None) -> str:
    return "critical" if status is Status.CRITICAL else "warning"


class Alerter:
    def __init__(
        self,
        options: AlertOptions,
        outbox: Outbox,
        *,
        env_channels: dict[str, str] | None = None,
        kind_of: Callable[[str], str] = lambda _: "",
        root_down: Callable[[str, str], str | None] = lambda _check, _entity: None,
        healthy: Callable[[], bool] = lambda: True,
        history_first: Callable[[], object] = lambda: None,
    ) -> None:
        self.outbox = outbox
        self.healthy = healthy
        # Blocks until the state the notifications describe (the incident, the entity) is committed:
        # a crash right after must not leave a firing in the outbox for an incident the store never saw.
        self.history_first = history_first
        # Blocking work in executors of its own: SQLite in one thread, Apprise's sends in a few.
        self._db_executor = ThreadPoolExecutor(1, thread_name_prefix="clusterwatch-outbox")
        self._send_executor = ThreadPoolExecutor(SENDERS, thread_name_prefix="clusterwatch-send")
        self.root_down = root_down
        self.kind_of = kind_of
        self.incidents: dict[str, Incident] = {}
        self.closed: dict[str, Incident] = {}  # recently closed: the healer's verdict may come just after
        self.notes: list[Note] = []
        self.silences: list[Silence] = []
        self._silences_at = 0.0
        self._wake = asyncio.Event()
        self._deliver_wake = asyncio.Event()
        self._expired_logged: set[int] = set()
        self._dropped: list[str] = []  # incidents whose alert state is to be deleted (written in flush)
        self._dirty: dict[str, Incident] = {}  # incidents whose alert state changed (written in flush)
        self._telling: set[str] = set()  # incidents whose firing is being committed to the outbox
        # A group of monitors whose shared store is away: this alerter tells from a local outbox and
        # records what it told; the leader, later, does not tell those transitions again.
        self.offline = False
        self.member = "local"
        self.acting: Callable[[], bool] = lambda: True  # a group of monitors: while this one may send
        self._store_away: Callable[[], Awaitable[bool]] | None = None  # offline: asked before each send
        self._last_told: dict[str, float] = {}  # entity -> when this alerter last told its firing/resolved
        self._elsewhere: dict[str, Any] = {}  # entity -> the latest notice told offline (by any member)
        self._forget_elsewhere: list[tuple[str, float]] = []
        self._elsewhere_at = 0.0
        # Whether the monitor sees an entity healthy now (its own probes): a firing told from a local
        # outbox about an entity that is fine by now gets its resolved notice from here.
        self.entity_ok: Callable[[str], bool] = lambda _entity: False
        self.configure(options, env_channels or {})

    def configure(self, options: AlertOptions, env_channels: dict[str, str]) -> None:
        """Secrets are masked by the current redactor (redact.current()), which a reload replaces."""
        self.options = options
        urls = {**env_channels, **options.channels}  # the config's own channels win
        if not options.channels and env_channels:
            self.options = options.model_copy(update={"channels": urls})
        self.channels = Channels(urls)
        if options.heartbeat is not None:
            remember_secrets(options.heartbeat.url)  # its ping token stays out of "heartbeat failed" lines

    @property
    def enabled(self) -> bool:
        return bool(self.channels.urls)

    def go_offline(self, outbox: Outbox, member: str, store_away: Callable[[], Awaitable[bool]]) -> None:
        """The shared store is away: from now on tell from `outbox` (a local file), record what is
        told, and send only while the shared store still does not answer. A thread of its own for the
        local outbox: the old one may be waiting on the shared store's timeouts."""
        old = self._db_executor
        self._db_executor = ThreadPoolExecutor(1, thread_name_prefix="clusterwatch-outbox")
        old.shutdown(wait=False)
        self.outbox, self.offline, self.member, self._store_away = outbox, True, member, store_away

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_executor, partial(fn, *args, **kwargs))

    # --- events in --------------------------------------------------------------------------------

    async def resume(
        self, open_incidents: list[tuple[str, str, str, str | None, str, Status | None, float, str]]
    ) -> None:
        """After a restart, from stored state: what was told about which incident. An open one not yet
        told fires; one told and closed while the monitor was away gets its resolved notice."""
        told = {row["incident"]: row for row in await self._db(self.outbox.alert_states)}
        now = time.time()
        for incident_id, entity, check, node, kind, status, opened, message in open_incidents:
            row = told.pop(incident_id, None)
            incident = Incident(incident_id, entity, check, node, kind, severity_of(status), opened, message)
            if row is not None:
                incident.notified, incident.repeated = row["notified"], row["repeated"]
                incident.silenced, incident.healed_by = row["silenced"], row["healed_by"]
            self.incidents[incident_id] = incident
            if incident.notified is None:
                self._queue("firing", incident, now + self.options.group_wait)
        closed = {r["id"]: r for r in await self._db(self.outbox.closed_incidents, list(told))}
        for incident_id, row in told.items():
            gone = closed.get(incident_id)
            if row["notified"] is None or gone is None:
                self._dropped.append(incident_id)  # nobody was told, or it is not known: nothing to say
                continue
            incident = Incident(
                incident_id,
                gone["entity"],
                gone["check_name"],
                gone["node"],
                self.kind_of(gone["entity"]),
                row["severity"],
                gone["opened"],
                gone["message"],
                healed_by=row["healed_by"],
                notified=row["notified"],
                closed=gone["closed"],
                closing_message=gone["last_message"] or "",
            )
            self.closed[incident_id] = incident
            self._queue("resolved", incident, now)

    def adopt(self, open_incidents: list[tuple[str, str, str, str | None, str, Status | None, float, str]]) -> None:
        """Level-triggered: incidents the state holds open that this alerter has not heard of (an event
        that fell between two outboxes) fire now; the ones it knows keep what was told about them."""
        now = time.time()
        for incident_id, entity, check, node, kind, status, opened, message in open_incidents:
            if incident_id not in self.incidents:
                incident = Incident(incident_id, entity, check, node, kind, severity_of(status), opened, message)
                self.incidents[incident_id] = incident
                self._queue("firing", incident, now)

    def on_event(self, event: Event) -> None:
        now = event.at
        incident = self.incidents.get(event.incident or "") or self.closed.get(event.incident or "")
        kind = event.kind
        if kind is EventKind.INCIDENT_OPENED and event.incident:
            incident = Incident(
                event.incident,
                event.entity,
                event.check,
                event.node,
                self.kind_of(event.entity),
                severity_of(event.new),
                now,
                event.message,
            )
            self.incidents[event.incident] = incident
            self._queue("firing", incident, now + self.options.group_wait)
        elif kind is EventKind.STATE_CHANGE and incident and event.new not in (None, Status.OK):
            severity = severity_of(event.new)
            if severity != incident.severity:
                incident.severity, incident.message = severity, event.message
                self._drop_pending(incident)
                self._queue("firing", incident, now + self.options.group_wait)
        elif kind is EventKind.REMEDIATION_STARTED and incident:
            incident.attempts.append(f"attempt {event.details.get('attempt')}: {event.message}")
            incident.trying = str(event.details.get("target", "the healer")).split(":", 1)[0]
        elif kind in (EventKind.REMEDIATION_SUCCEEDED, EventKind.REMEDIATION_FAILED) and incident:
            incident.attempts.append(f"  -> {event.message}")
            if kind is EventKind.REMEDIATION_SUCCEEDED:
                incident.healed_by = str(event.details.get("target", "the healer")).split(":", 1)[0]
        elif kind is EventKind.REMEDIATION_EXHAUSTED and incident:
            incident.exhausted = True
            incident.attempts.append(event.message)
            self._queue("escalated", incident, now)
        elif kind is EventKind.INCIDENT_CLOSED and incident and incident.id in self.incidents:
            incident.closed, incident.closing_message = now, event.message
            pending_firing = self._drop_pending(incident)
            del self.incidents[incident.id]
            self.closed[incident.id] = incident
            while len(self.closed) > 1000:
                self.closed.pop(next(iter(self.closed)))
            # The healer's verdict arrives just after the recovery it caused: give it a moment.
            settle = min(2.0, self.options.group_wait)
            # Its stored state goes with the notice that ends it, in one transaction (see _send_group).
            # A firing being written to the outbox right now counts as told: its resolved notice must follow.
            if incident.notified is not None or incident.id in self._telling:
                self._queue("resolved", incident, now + (settle if incident.trying else 0.0))
            elif incident.trying:
                self._queue("healed", incident, now + settle)  # fixed before anyone was told: said once
            else:
                if pending_firing:
                    log.info("%s recovered within group_wait: nothing sent", incident.entity)
                self._dropped.append(incident.id)
        elif kind is EventKind.FLAPPING_STARTED:
            labels = {
                "check": event.check,
                "entity": event.entity,
                "kind": self.kind_of(event.entity),
                "node": event.node or "",
                "severity": "warning",
            }
            self.notes.append(
                Note(
                    "flapping",
                    "warning",
                    labels,
                    due_at(now + self.options.group_wait),
                    title=f"[WARNING] {event.entity} is flapping",
                    body=event.message,
                )
            )
        elif kind is EventKind.LEADER_ELECTED:
            labels = {"check": "clusterwatch", "entity": "clusterwatch", "kind": "monitor", "node": event.node or ""}
            self.notes.append(
                Note(
                    "failover",
                    "info",
                    {**labels, "severity": "info"},
                    due_at(now),
                    title=f"[INFO] clusterwatch: {event.node} leads the monitors now",
                    body=event.message,
                )
            )
        elif kind is EventKind.MONITOR_LAGGING:
            labels = {
                "check": "clusterwatch",
                "entity": "clusterwatch",
                "kind": "monitor",
                "node": "",
                "severity": "warning",
            }
            self.notes.append(
                Note(
                    "monitor",
                    "warning",
                    labels,
                    due_at(now),
                    title="[WARNING] clusterwatch is falling behind",
                    body=event.message,
                )
            )
        self._wake.set()

    def _queue(self, kind: str, incident: Incident, due: float) -> None:
        self.notes.append(Note(kind, incident.severity, incident.labels, due_at(due), incident))
        self._wake.set()

    def _drop_pending(self, incident: Incident) -> bool:
        before = len(self.notes)
        self.notes = [n for n in self.notes if n.incident is not incident or n.kind not in ("firing", "repeat")]
        return len(self.notes) != before

    # --- notes out: group, inhibit, silence, route, commit -------------------------------------------

    async def flush(self, *, everything: bool = False) -> int:
        now = time.time()
        if now - self._silences_at > SILENCE_REFRESH:
            self.silences = await self._db(self.outbox.silences)
            self._silences_at = now
        self._repeats(now)
        sent = 0
        due = any(everything or n.due <= time.monotonic() for n in self.notes)
        if not self.offline and (due or now - self._elsewhere_at > SILENCE_REFRESH):
            rows = await self._db(self.outbox.told_offline, now - TOLD_OFFLINE_FOR)
            self._elsewhere = {r["entity"]: r for r in rows}  # ordered by time: the latest wins
            self._elsewhere_at = now
            self._resolve_elsewhere(now)
        if any(everything or n.due <= time.monotonic() for n in self.notes):
            # As Alertmanager does: once the first of a group is due, everything waiting goes with it.
            due, self.notes = self.notes, []
            try:
                sent = await self._send_group(due, now)
            except BaseException:
                # Nothing reached the outbox: every note waits for the next flush, none is lost.
                self.notes = due + [n for n in self.notes if all(n is not d for d in due)]
                raise
        await self._write_states()
        return sent

    async def _send_group(self, due: list[Note], now: float) -> int:
        critical_checks = {i.check for i in self.incidents.values() if i.severity == "critical"}
        by_channel: dict[tuple[str, str], list[tuple[Note, str, str]]] = defaultdict(list)
        told: list[Note] = []
        done: list[str] = []  # incidents whose last word is in this batch (or held back for good)
        offline: list[tuple[Any, ...]] = []  # what this batch tells, when told from a local outbox
        for note in due:
            if note.incident is not None and note.kind in TELLS_THE_END:
                done.append(note.incident.id)
            if self._told_elsewhere(note):
                if note.kind == "firing":
                    told.append(note)  # counts as told: its resolved notice will follow
                continue
            if (
                note.severity == "warning"
                and note.labels["check"] in critical_checks
                and note.kind != "monitor"
                and (note.incident is None or note.incident.severity == "warning")
            ):
                continue  # inhibited: the same check is critical
            reason = held_by(self.silences, self.options.maintenance, note.labels, now)
            root = self.root_down(note.labels["check"], note.labels["entity"]) if note.incident else None
            if root is not None and note.kind == "firing":
                reason = f"inhibited: {root} is down"
            if reason is not None:
                if note.incident is not None and note.kind == "firing" and note.incident.id in self.incidents:
                    if note.incident.silenced is None:
                        log.info("notification for %s held back: %s", note.labels["entity"], reason)
                    note.incident.silenced = now
                    note.due = time.monotonic() + SILENCE_REFRESH  # sent when the silence ends, if still firing
                    self.notes.append(note)
                    self._dirty[note.incident.id] = note.incident
                continue
            title, body = self._text(note)
            family = "problems" if note.kind in PROBLEMS else note.kind if note.kind == "failover" else "recoveries"
            # A failover is news to whoever hears of critical trouble: a monitor of the group went away.
            route_as = "critical" if note.kind == "failover" else note.severity
            for channel in channels_for(self.options, note.labels, route_as):
                by_channel[(channel, family)].append((note, title, body))
            if note.incident is not None and note.kind in ("firing", "escalated", "repeat"):
                told.append(note)
            if note.incident is not None and note.kind in ("firing", "resolved"):
                self._last_told[note.incident.entity] = now
            if self.offline and note.incident is not None and note.kind in ("firing", "resolved"):
                incident = note.incident
                offline.append(
                    (
                        incident.entity,
                        incident.id,
                        note.kind,
                        incident.severity,
                        now,
                        self.member,
                        incident.check,
                        incident.node,
                    )
                )
        batch = []
        for (channel, _family), parts in by_channel.items():
            title, body = messages.grouped(
                [("resolved" if n.kind in TELLS_THE_END else n.severity, t, b) for n, t, b in parts]
            )
            if all(n.kind in ("resolved", "healed") for n, _, _ in parts):
                severity = "resolved"
            elif all(n.severity == "info" for n, _, _ in parts):
                severity = "info"
            else:
                severity = "critical" if any(n.severity == "critical" for n, _, _ in parts) else "warning"
            incidents = [n.incident.id for n, _, _ in parts if n.incident is not None]
            batch.append(
                Message(
                    channel,
                    parts[0][0].kind if len(parts) == 1 else "group",
                    severity,
                    redact.text(title),
                    redact.text(body),
                    incidents,
                )
            )
        rows = []
        for note in told:
            incident = note.incident
            assert incident is not None
            if incident.id in self.incidents:
                repeated = now if note.kind == "repeat" else incident.repeated
                rows.append(
                    (
                        incident.id,
                        incident.entity,
                        incident.severity,
                        incident.notified or now,
                        repeated,
                        incident.silenced,
                        incident.healed_by,
                    )
                )
        if batch or rows or done:
            # The notifications and what they tell, in one transaction: durable before any send.
            self._telling = {row[0] for row in rows}
            try:
                if rows and not self.offline:
                    await self._db(self.history_first)
                await self._db(self.outbox.add, batch, told=rows, done=done, offline=offline)
            finally:
                self._telling = set()
            self._deliver_wake.set()
        for note in told:  # only once the outbox holds them: a failed write tells nobody anything
            incident = note.incident
            assert incident is not None
            incident.notified = incident.notified or now
            if note.kind == "repeat":
                incident.repeated = now
            self._dirty.pop(incident.id, None)
        return len(batch)

    def _resolve_elsewhere(self, now: float) -> None:
        """People were told from a local outbox that something failed; this monitor sees it healthy
        (it recovered while the shared store was away, or the monitor that told it was cut off from it):
        they hear that it is fine, once, instead of a CRITICAL that never clears."""
        open_entities = {i.entity for i in self.incidents.values()}
        # An incident of this monitor's own that ends now (healed before its firing went out) tells it.
        ending = {n.incident.entity for n in self.notes if n.incident is not None and n.kind in TELLS_THE_END}
        for entity, record in list(self._elsewhere.items()):
            if record["kind"] != "firing" or entity in open_entities or entity in ending or not self.entity_ok(entity):
                continue
            del self._elsewhere[entity]
            self._forget_elsewhere.append((entity, record["at"]))
            incident = Incident(
                record["incident"] or f"told-offline:{entity}",
                entity,
                record["check_name"] or entity,
                record["node"],
                self.kind_of(entity),
                record["severity"],
                record["at"],
                "",
                notified=record["at"],
                closed=now,
                closing_message=f"healthy as seen by this monitor; the alert was sent by {record['member']} while "
                "the shared store was away",
            )
            self.closed[incident.id] = incident
            self._queue("resolved", incident, now)

    def _told_elsewhere(self, note: Note) -> bool:
        """Was this transition told from a monitor's local outbox while the shared store was away? A
        firing if that monitor's latest word on the entity was a firing of this severity; a resolved
        notice if its latest word was a resolution that came after this incident opened."""
        incident = note.incident
        if self.offline or incident is None or note.kind not in ("firing", "resolved", "healed"):
            return False
        record = self._elsewhere.get(incident.entity)
        if record is None:
            return False
        if note.kind == "healed":  # fixed before this monitor told it: its notice is the end of what was told
            del self._elsewhere[incident.entity]
            self._forget_elsewhere.append((incident.entity, record["at"]))
            return False
        if record["at"] <= self._last_told.get(incident.entity, 0.0):
            del self._elsewhere[incident.entity]  # this alerter has told of the entity since: it stands for nothing
            self._forget_elsewhere.append((incident.entity, record["at"]))
            return False
        same = record["kind"] == note.kind and (
            record["severity"] == incident.severity if note.kind == "firing" else record["at"] >= incident.opened
        )
        # Used or stale: either way it stands for nothing after this notice.
        del self._elsewhere[incident.entity]
        self._forget_elsewhere.append((incident.entity, record["at"]))
        if same:
            log.info(
                "%s: the %s notice was sent by %s while the shared store was away: not sent again",
                incident.entity,
                note.kind,
                record["member"],
            )
        return same

    async def _write_states(self) -> None:
        """What was told about each incident, for a restart to resume (written off the event loop)."""
        forget, self._forget_elsewhere = self._forget_elsewhere, []
        for entity, until in forget:
            await self._db(self.outbox.forget_told_offline, entity, until)
        if self._dirty or self._dropped:
            dirty, dropped = list(self._dirty.values()), self._dropped
            self._dirty, self._dropped = {}, []
            rows = [
                (i.id, i.entity, i.severity, i.notified, i.repeated, i.silenced, i.healed_by)
                for i in dirty
                if i.id in self.incidents
            ]
            try:
                await self._db(self.outbox.save_states, rows, dropped)
            except BaseException:
                # Kept for the next flush: a failed write loses nothing.
                self._dirty = {i.id: i for i in dirty} | self._dirty
                self._dropped = dropped + self._dropped
                raise

    def _repeats(self, now: float) -> None:
        waiting = {id(n.incident) for n in self.notes if n.incident is not None}
        for incident in self.incidents.values():
            last = incident.repeated or incident.notified
            if (
                incident.severity == "critical"
                and last is not None
                and id(incident) not in waiting
                and now - last >= self.options.repeat_interval
            ):
                self._queue("repeat", incident, now)

    def _text(self, note: Note) -> tuple[str, str]:
        incident, dashboard = note.incident, self.options.dashboard_url
        if incident is None:
            return note.title, note.body
        if note.kind == "resolved":
            return messages.resolved(incident, dashboard)
        if note.kind == "healed":
            return messages.healed(incident, dashboard)
        if note.kind == "escalated":
            return messages.escalated(incident, dashboard)
        return messages.firing(incident, dashboard, repeat=note.kind == "repeat")

    # --- delivery ----------------------------------------------------------------------------------

    async def deliver(self) -> int:
        """Each channel in order: its oldest undelivered notification first; a failure waits its turn."""
        for row in await self._db(self.outbox.expire, self.options.max_age):
            if row["id"] not in self._expired_logged:
                self._expired_logged.add(row["id"])
                log.error(
                    "alert to %s given up after %s undelivered: %s (last error: %s)",
                    row["channel"],
                    messages.format_duration(self.options.max_age),
                    row["title"],
                    row["last_error"],
                )
        rows = await self._db(self.outbox.pending)
        queues: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            queues[row["channel"]].append(row)
        results = await asyncio.gather(*(self._deliver_channel(c, q) for c, q in queues.items()))
        return sum(results)

    async def _deliver_channel(self, channel: str, rows: list[Any]) -> int:
        sent = 0
        for row in rows:
            if row["next_attempt"] > time.time():
                break  # order is kept: nothing overtakes a notification waiting to be retried
            # Claimed before it is sent (fenced in a group: a stale leader's claim is refused), and
            # asked once more just before the send: a leader frozen after its claim sends nothing.
            if not self.acting() or not await self._db(self.outbox.claim, row["id"]):
                break
            if not self.acting() or (self._store_away is not None and not await self._store_away()):
                break
            ok, error = await asyncio.get_running_loop().run_in_executor(
                self._send_executor, partial(self.channels.send, channel, row["title"], row["body"], row["severity"])
            )
            if ok:
                await self._db(self.outbox.delivered, row["id"])
                sent += 1
                continue
            delay = await self._db(self.outbox.failed, row["id"], row["attempts"], error)
            log.warning(
                "alert to %s not delivered (try %d), next try in %s: %s",
                channel,
                row["attempts"] + 1,
                messages.format_duration(delay),
                error,
            )
            break
        return sent

    # --- life cycle ----------------------------------------------------------------------------------

    def loops(
        self, session: aiohttp.ClientSession, *, heartbeat: bool = True
    ) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The alerter's background work, for the monitor to run and supervise. In a group of monitors
        every member pings the heartbeat (not only the one that alerts): `heartbeat=False` there."""
        loops = [("alert-flush", self._flush_loop()), ("alert-delivery", self._deliver_loop())]
        if heartbeat and self.options.heartbeat is not None:
            loops.append(("heartbeat", heartbeat_loop(lambda: self.options, self.healthy, session)))
        return loops

    async def _flush_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.flush()
            except db_errors() as exc:  # the store is away or refused: the notes wait in memory
                log.error("alert flush: the store did not take the notifications (%s); will retry", exc)
            except Exception:
                log.exception("alert flush failed; will retry")
            next_due = min((n.due for n in self.notes), default=time.monotonic() + TICK * 4)
            await _wait(self._wake, max(0.0, min(next_due - time.monotonic(), TICK * 4)))

    async def _deliver_loop(self) -> None:
        while True:
            self._deliver_wake.clear()
            try:
                await self.deliver()
            except db_errors() as exc:
                log.error("alert delivery: the store did not answer (%s); will retry", exc)
            except Exception:
                log.exception("alert delivery failed; will retry")
            await _wait(self._deliver_wake, TICK)

    async def stop(self, *, drain: bool = False) -> None:
        """The loops are stopped by their owner; this writes what is left."""
        try:
            if drain:  # --once: send what is due now; the rest waits in the outbox for the next run
                await self.flush(everything=True)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.deliver(), 30)
            else:
                await self._write_states()
        finally:
            self._send_executor.shutdown(wait=False)
            # Off the event loop: a job still running there may be waiting on a store that hangs.
            await asyncio.to_thread(self._db_executor.shutdown, True)


async def heartbeat_loop(
    options: Callable[[], AlertOptions], healthy: Callable[[], bool], session: aiohttp.ClientSession
) -> None:
    """The dead man's switch: as long as these pings arrive, a monitor is alive and healthy."""
    while True:
        beat = options().heartbeat
        if beat is None:  # reloaded away
            await asyncio.sleep(60)
            continue
        if not healthy():
            log.warning("heartbeat held back: the monitor is not healthy")
            await asyncio.sleep(beat.every)
            continue
        try:
            async with asyncio.timeout(beat.timeout), session.get(beat.url) as resp:
                if resp.status >= 400:
                    log.warning("heartbeat ping answered HTTP %d", resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("heartbeat ping failed: %s", redact.text(str(exc) or type(exc).__name__))
        await asyncio.sleep(beat.every)
