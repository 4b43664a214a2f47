"""Node agents as the store knows them: one token each, kept only as its SHA-256, revocable.

A token is 32 random bytes: a fast hash is enough (nothing to guess from it), and a lookup by its
hash needs no comparison loop. `enroll` shows the token once; nobody can read it back later.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from clusterwatch.store.db import Database, open_database, run_all
from clusterwatch.store.schema import migrate


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass
class AgentRow:
    name: str
    created: float
    revoked: float | None
    last_seen: float | None
    last_addr: str | None
    acked: int


class AgentRegistry:
    def __init__(self, location: str) -> None:
        self.location = location
        self._db: Database | None = None

    def open(self) -> AgentRegistry:
        if self._db is None:
            self._db = open_database(self.location, pool=2, name="clusterwatch-agents")
            migrate(self._db)
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> Database:
        assert self._db is not None, "agent registry not open"
        return self._db

    def enroll(self, name: str, now: float | None = None) -> str:
        """A new token for `name` (an earlier one stops working): returned once, stored hashed."""
        token = secrets.token_urlsafe(32)
        run_all(
            self.db,
            [
                (
                    "INSERT INTO agents (name, token_hash, created) VALUES (?,?,?) ON CONFLICT (name) DO UPDATE SET "
                    "token_hash = excluded.token_hash, created = excluded.created, revoked = NULL",
                    (name, token_hash(token), time.time() if now is None else now),
                )
            ],
        )
        return token

    def revoke(self, name: str, now: float | None = None) -> bool:
        result = run_all(
            self.db,
            [
                (
                    "UPDATE agents SET revoked = ? WHERE name = ? AND revoked IS NULL",
                    (time.time() if now is None else now, name),
                )
            ],
        )[0]
        return result.rowcount > 0

    def holder(self, token: str) -> AgentRow | None:
        """The agent this token stands for (revoked or not: the caller says which it was), or None."""
        rows = self.db.rows(
            "SELECT name, created, revoked, last_seen, last_addr, acked FROM agents WHERE token_hash = ?",
            (token_hash(token),),
        )
        return AgentRow(*rows[0]) if rows else None

    def all(self) -> list[AgentRow]:
        rows = self.db.rows("SELECT name, created, revoked, last_seen, last_addr, acked FROM agents ORDER BY name")
        return [AgentRow(*r) for r in rows]
