"""High availability: several monitors on one PostgreSQL store; all probe, one (the lease holder) acts.

The lease is renewed every lease/4. A leader that has not renewed within lease/2 (timed from when
its last successful renewal was *sent*, on the monotonic clock, which keeps counting while the
process is stopped) stops acting before anyone else may take over at `lease`. Every action and
every alert claim is also fenced by the database (store/lease.py), so even a leader that was frozen
and wakes up thinking it leads cannot restart or send anything.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clusterwatch.store.db import Database, Result, Tx
from clusterwatch.store.lease import Held, LeaseStore

log = logging.getLogger("clusterwatch.ha")


@dataclass(frozen=True)
class Change:
    """What a renewal found: `became` (leads now, with this epoch) or `lost` (led, no longer), and why."""

    became: int | None = None
    lost: str | None = None


class Lease:
    """The leader lease as this monitor holds it; also the fence handed to the store's writers."""

    def __init__(
        self,
        store: LeaseStore,
        node: str,
        lease: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.node = node
        self.member = f"{node}/{uuid.uuid4().hex[:8]}"  # one per process: a restarted monitor is a new holder
        self.lease = lease
        self.clock = clock
        self.started = time.time()
        self.epoch: int | None = None  # set while this monitor holds the lease
        self.held: Held | None = None
        self._renewed_sent: float | None = None  # monotonic time the last successful renewal was sent
        self.last_error: str | None = None
        self.answered: float | None = None  # monotonic time the store last answered a renewal (any answer)
        # A follower tries again when the holder's lease runs out, not a whole lease/4 later: failover
        # is bounded by `lease` itself.
        self.next_try: float | None = None

    @property
    def every(self) -> float:
        return self.lease / 4

    @property
    def leading(self) -> bool:
        """Holds the lease and renewed it less than lease/2 ago: may act."""
        return (
            self.epoch is not None
            and self._renewed_sent is not None
            and self.clock() - self._renewed_sent < self.lease / 2
        )

    def renew(self) -> Change:
        """One renewal (blocking: run it in a thread). Never raises for a database that is away.

        Judged by the epoch this monitor holds by its own record (None once it stood down), read when
        the answer is in, not by the clock at the start: a renewal after a lapse (a takeover that took a
        while to resume from the store) that finds the same epoch is the same leadership, not a second
        election; one that finds another holder, or comes too late, is a loss that must be reported."""
        sent = self.clock()
        try:
            held = self.store.take(self.member, self.node, self.lease)
        except Exception as exc:  # the database is away or refused: not leading once lease/2 has passed
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.epoch is not None and not self.leading:
                self.epoch = None
                return Change(lost=f"could not renew the lease for {self.lease / 2:g}s ({self.last_error})")
            return Change()
        self.last_error = None
        self.answered = self.clock()
        had = self.epoch  # expired() may have cleared it while this renewal was on its way
        if held is None:
            try:
                self.next_try = self.clock() + self.store.left()
            except Exception:
                self.next_try = None
            self.epoch, self.held = None, None
            return Change(lost="another monitor holds the lease") if had is not None else Change()
        if self.clock() - sent >= self.lease / 2:  # the answer came too late to count on
            self.epoch = None
            return Change(lost="the lease renewal took longer than lease/2") if had is not None else Change()
        self.held, self._renewed_sent = held, sent
        if held.epoch != had:
            self.epoch = held.epoch
            return Change(became=held.epoch)
        return Change()

    def expired(self) -> Change:
        """Between renewals: a leader whose renewals stopped succeeding stands down by the clock alone."""
        if self.epoch is not None and not self.leading:
            self.epoch = None
            return Change(lost=f"no lease renewal for {self.lease / 2:g}s")
        return Change()

    def release(self) -> None:
        """On a clean stop: the next leader need not wait for the lease to run out."""
        if self.epoch is not None:
            self.epoch = None
            try:
                self.store.release(self.member)
            except Exception as exc:
                log.warning("could not hand the lease on (%s); it runs out in %gs", exc, self.lease)

    def seen(self) -> None:
        self.store.seen(self.member, self.node, self.started, self.epoch if self.leading else None)

    # --- the fence (store writers call these) -------------------------------------------------------

    def check(self, tx: Tx) -> None:
        self.store.check(tx, self.member, self.epoch if self.leading else None)

    def run(self, db: Database, statements: Sequence[tuple[str, Any]]) -> list[Result]:
        return self.store.run(db, statements, self.member, self.epoch if self.leading else None)
