"""The monitor's side of node agents, against a real `clusterwatch run`: the test is the agent.

Tokens come from the real `clusterwatch agent enroll`; pushes go over real HTTP(S) to
/api/v1/agent/push; what was filed is read from the monitor's own SQLite store and its
/api/v1/status. A refused push must leave no trace but a log line with the client's address
(never the token); silence must make the node critical and its checks affected, once; TLS must
verify against the CA the test made. No time is left to luck: every wait has a bound, and the
only deliberate pause waits out the monitor's own per-address rate limit on refusal lines.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import ssl
import stat
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterwatch.agent import protocol
from clusterwatch.agent.hub import AUTH_CACHE, REFUSAL_LOG_EVERY
from tests.helpers import ROOT, Proc, closed_port, free_port, run_cli, wait_until
from tests.real.daemon import Daemon
from tests.real.tlsca import ServerCert, make_server_cert

NODE, OTHER, CHECK = "phone-1", "phone-2", "web-phone-1"
CLIENT = "127.0.0.1"
# The node report is judged on this (busy, shared) test machine: no resource limit may turn it red.
NO_LIMITS = {r: {"warning": None, "critical": None} for r in ("cpu", "memory", "disk")}
TABLES = ("observations", "entities", "events", "incidents", "actions")


# --- the monitor ---------------------------------------------------------------------------------


def monitor_config(check_url: str, *, timeout_1: str | None = "1h", timeout_2: str | None = "1h") -> dict[str, Any]:
    """Two agents' nodes and one http check on phone-1. A long agent_timeout keeps the monitor from
    filing anything of its own (silence) while a test counts rows; the silence test shortens it."""

    def node(name: str, timeout: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "agent": True, "expect_dask_worker": False, "thresholds": NO_LIMITS}
        if timeout is not None:
            out["agent_timeout"] = timeout
        return out

    return {
        "interval": "1s",
        "nodes": [node(NODE, timeout_1), node(OTHER, timeout_2)],
        "checks": [{"name": CHECK, "kind": "http", "url": check_url, "node": NODE, "timeout": "3s"}],
    }


def enroll(d: Daemon, name: str) -> str:
    """`clusterwatch agent enroll NAME --token-file F`: the token is in the file (mode 600), not printed."""
    path = d.tmp / f"{name}.token"
    done = run_cli("agent", "enroll", name, "-c", str(d.config_path), "--token-file", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    assert token not in done.stdout + done.stderr
    return token


@dataclass
class Agent:
    """The test in the role of one node's agent: its token and its own sequence numbers."""

    name: str
    token: str
    tokens_ever: list[str] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.tokens_ever.append(self.token)

    def seq(self) -> int:
        return next(self._seq)

    def renew(self, token: str) -> None:
        self.token = token
        self.tokens_ever.append(token)


@dataclass
class Monitor:
    d: Daemon
    agents: dict[str, Agent]
    scheme: str = "http"
    ctx: ssl.SSLContext | None = None
    fake_tokens: list[str] = field(default_factory=list)
    _refusals: RefusalLog | None = None

    @property
    def refusals(self) -> RefusalLog:
        """One for the monitor's life: it knows when the last line naming the client was seen."""
        if self._refusals is None:
            self._refusals = RefusalLog(self.d)
        return self._refusals

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.d.web_port}"

    def all_tokens(self) -> list[str]:
        return [t for a in self.agents.values() for t in a.tokens_ever] + self.fake_tokens


def wait_up(m: Monitor) -> None:
    wait_until(
        lambda: http("GET", m.url + "/api/v1/status", ctx=m.ctx).status == 200,
        timeout=60,
        interval=0.3,
        what=f"the monitor's API at {m.url}\n{m.d.log()[-3000:]}",
    )


# --- HTTP as an agent speaks it ------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    body: bytes | Iterable[bytes] | None = None,
    token: str | None = None,
    *,
    ctx: ssl.SSLContext | None = None,
    timeout: float = 30.0,
) -> Answer:
    """One request on its own connection. A body given as an iterable goes chunked (no Content-Length)."""
    parts = urllib.parse.urlsplit(url)
    conn: HTTPConnection
    if parts.scheme == "https":
        conn = HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=ctx)
    else:
        conn = HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, parts.path, body=body, headers=headers)
        resp = conn.getresponse()
        return Answer(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def wire(name: str, status: str, message: str, kind: str = "http", **extra: Any) -> protocol.WireObservation:
    return protocol.WireObservation(name=name, kind=kind, target="", status=status, message=message, **extra)


def round_of(agent: Agent, check: str, status: str, message: str, at: float | None = None) -> protocol.Round:
    """One round of `check` (the node's own when it is the node's name) with its one observation."""
    kind = "node" if check in (NODE, OTHER) else "http"
    latency = None if kind == "node" else 12.5
    return protocol.Round(
        seq=agent.seq(),
        at=time.time() if at is None else at,
        check=check,
        observations=[wire(check, status, message, kind, latency_ms=latency)],
    )


def push_of(node: str, rounds: list[protocol.Round]) -> protocol.Push:
    return protocol.Push(node=node, sent_at=time.time(), rounds=rounds)


def send(m: Monitor, push: protocol.Push | bytes | Iterable[bytes], token: str | None) -> Answer:
    body = push.model_dump_json().encode() if isinstance(push, protocol.Push) else push
    return http("POST", m.url + protocol.PUSH_PATH, body, token, ctx=m.ctx)


def accepted(m: Monitor, agent: Agent, push: protocol.Push) -> protocol.PushAnswer:
    answer = send(m, push, agent.token)
    assert answer.status == 200, (answer.status, answer.body, m.d.log()[-2000:])
    return protocol.PushAnswer.model_validate_json(answer.body)


def live_round(m: Monitor, agent: Agent, message: str) -> protocol.PushAnswer:
    """The node and its check both ok: what a healthy agent pushes every interval."""
    rounds = [round_of(agent, agent.name, "ok", f"{message} (node)")]
    if agent.name == NODE:
        rounds.append(round_of(agent, CHECK, "ok", f"{message} (check)"))
    return accepted(m, agent, push_of(agent.name, rounds))


# --- what the monitor shows and keeps ---------------------------------------------------------------


def status_of(m: Monitor) -> dict[str, dict[str, Any]]:
    answer = http("GET", m.url + "/api/v1/status", ctx=m.ctx)
    assert answer.status == 200, answer.body
    return {e["name"]: e for e in answer.json()["checks"]}


def count(d: Daemon, table: str, where: str = "1=1", *args: Any) -> int:
    rows = d.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {where}", *args)
    assert rows, f"table {table} cannot be read (store not migrated?)"
    return int(rows[0]["n"])


def stored(d: Daemon) -> dict[str, int]:
    return {table: count(d, table) for table in TABLES}


def monitor_logs(d: Daemon) -> str:
    """Everything the monitor wrote: its stderr/stdout and its own log files."""
    files = sorted(d.tmp.glob("daemon-*.log")) + sorted((d.tmp / "logs").glob("*"))
    return "\n".join(p.read_text(errors="replace") for p in files if p.is_file())


def assert_no_token_logged(m: Monitor) -> None:
    text = monitor_logs(m.d)
    for token in m.all_tokens():
        assert token not in text, "an agent's token appears in the monitor's log"
        assert token[:12] not in text, "a piece of an agent's token appears in the monitor's log"


def address_lines(d: Daemon) -> list[str]:
    """The monitor's log lines that name the client's address (whatever their wording)."""
    return [line for line in d.log().splitlines() if CLIENT in line and "dashboard at" not in line]


class RefusalLog:
    """The monitor logs at most one line per client address and kind of refusal every REFUSAL_LOG_EVERY
    seconds (a flood of bad tokens is not a flood of lines). To see the line of a refusal it has just
    caused by the same mistake, a test waits until the window since the last line it saw has passed:
    the monitor wrote that line before the test saw it, so the window has surely passed on the
    monitor's (same, monotonic) clock too. The line is written before the answer is sent."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.seen = len(address_lines(d))
        self.last = time.monotonic() if self.seen else float("-inf")

    def _catch_up(self) -> None:
        now = len(address_lines(self.d))
        if now > self.seen:
            self.seen, self.last = now, time.monotonic()

    def window_free(self) -> None:
        self._catch_up()
        left = self.last + REFUSAL_LOG_EVERY + 0.5 - time.monotonic()
        if left > 0:
            time.sleep(left)

    def new_lines(self) -> list[str]:
        before = self.seen
        self._catch_up()
        return address_lines(self.d)[before:]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitor]:
    """One monitor for the pushes and the refusals. Its check's URL is a closed port: the monitor
    must never probe a check on an agent's node itself (it would file rows nobody pushed)."""
    tmp = tmp_path_factory.mktemp("agentapi")
    d = Daemon(tmp, monitor_config(f"http://127.0.0.1:{closed_port()}/health"))
    m = Monitor(d, {name: Agent(name, enroll(d, name)) for name in (NODE, OTHER)})
    d.start()
    try:
        wait_up(m)
        assert m.refusals.seen == 0  # from here on it sees each line naming the client as it comes
        yield m
    finally:
        d.stop()
        assert_no_token_logged(m)


# --- a good push --------------------------------------------------------------------------------------


def test_good_push_is_filed_once_and_shown(api: Monitor) -> None:
    m, d, p1, p2 = api, api.d, api.agents[NODE], api.agents[OTHER]
    before = stored(d)
    push = push_of(
        NODE,
        [
            round_of(p1, NODE, "ok", "cpu 7%, memory 41%, disk / 52%"),
            round_of(p1, CHECK, "warning", "HTTP 200 in 950 ms (slow)"),
        ],
    )
    answer = accepted(m, p1, push)
    assert answer.accepted == max(r.seq for r in push.rounds)
    assert answer.config_version

    shown = status_of(m)
    assert shown[NODE]["status"] == "ok" and shown[NODE]["node"] == NODE, shown.get(NODE)
    assert shown[NODE]["message"].startswith("cpu 7%, memory 41%"), shown[NODE]
    assert shown[CHECK]["status"] == "warning", shown.get(CHECK)
    assert shown[CHECK]["message"] == "HTTP 200 in 950 ms (slow)"
    assert shown[CHECK]["node"] == NODE and shown[CHECK]["latency_ms"] == 12.5

    rows = d.query("SELECT * FROM observations WHERE entity = ? ORDER BY id", CHECK)
    assert [(r["status"], r["message"], r["node"], r["check_name"]) for r in rows] == [
        ("warning", "HTTP 200 in 950 ms (slow)", NODE, CHECK)
    ]
    assert abs(rows[0]["ts"] - push.rounds[1].at) < 5  # the agent's time, corrected by sent_at
    node_rows = d.query("SELECT * FROM observations WHERE entity = ?", NODE)
    assert [(r["status"], r["kind"]) for r in node_rows] == [("ok", "agent")]
    assert stored(d)["observations"] == before["observations"] + 2

    agent_row = d.query("SELECT * FROM agents WHERE name = ?", NODE)[0]
    assert agent_row["acked"] == answer.accepted and agent_row["last_addr"] == CLIENT

    # The answer was lost: the agent sends the same push again. Accepted, filed once.
    again = accepted(m, p1, push)
    assert again.accepted == answer.accepted
    assert count(d, "observations", "entity IN (?, ?)", NODE, CHECK) == 2
    assert stored(d)["observations"] == before["observations"] + 2

    # phone-2's token is good for phone-2's own node (the 403s below are about the node, not the token).
    answer_2 = live_round(m, p2, "phone-2 fine")
    assert answer_2.accepted >= 1 and status_of(m)[OTHER]["status"] == "ok"

    # Each agent is given its own node's part of the config, and only with its own token.
    for agent, checks in ((p1, [CHECK]), (p2, [])):
        got = http("GET", m.url + protocol.CONFIG_PATH, token=agent.token)
        assert got.status == 200, got.body
        config = protocol.AgentConfig.model_validate_json(got.body)
        assert config.node["name"] == agent.name and [c["name"] for c in config.checks] == checks
        assert config.agent_timeout == 3600
    assert http("GET", m.url + protocol.CONFIG_PATH).status == 401
    assert_no_token_logged(m)


# --- refusals ---------------------------------------------------------------------------------------


MARK = "REFUSED-PUSH-MUST-NOT-BE-FILED"


def _good_body(m: Monitor, node: str, check: str, obs_name: str | None = None) -> protocol.Push:
    agent = m.agents[NODE]
    return protocol.Push(
        node=node,
        sent_at=time.time(),
        rounds=[
            protocol.Round(
                seq=agent.seq(),
                at=time.time(),
                check=check,
                observations=[wire(obs_name or check, "critical", f"{MARK} {check}")],
            )
        ],
    )


def _as_dict(push: protocol.Push) -> dict[str, Any]:
    return json.loads(push.model_dump_json())


def _too_big(m: Monitor) -> bytes:
    """A push that would be valid but for its size: over protocol.MAX_BODY by a little."""
    agent, text = m.agents[NODE], f"{MARK} " + "x" * 19_000
    rounds, size = [], 0
    while size <= protocol.MAX_BODY + 4096:
        r = protocol.Round(seq=agent.seq(), at=time.time(), check=CHECK, observations=[wire(CHECK, "critical", text)])
        rounds.append(r)
        size += len(r.model_dump_json())
    body = protocol.Push(node=NODE, sent_at=time.time(), rounds=rounds).model_dump_json().encode()
    assert protocol.MAX_BODY < len(body) < protocol.MAX_BODY + 64 * 1024
    return body


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _nan(m: Monitor) -> bytes:
    data = _as_dict(_good_body(m, NODE, CHECK))
    data["rounds"][0]["observations"][0]["latency_ms"] = float("nan")
    text = json.dumps(data)  # Python writes NaN, as a careless agent would
    assert "NaN" in text
    return text.encode()


def _unknown_key(m: Monitor) -> bytes:
    data = _as_dict(_good_body(m, NODE, CHECK))
    data["rounds"][0]["run_this"] = ["rm", "-rf", "/"]
    return json.dumps(data).encode()


@dataclass
class Refusal:
    status: int
    token: Callable[[Monitor], str | None]
    body: Callable[[Monitor], protocol.Push | bytes | Iterable[bytes]]
    why: str  # what the case is, for the failure message


def _p1(m: Monitor) -> str:
    return m.agents[NODE].token


def _p2(m: Monitor) -> str:
    return m.agents[OTHER].token


def _wrong(m: Monitor) -> str:
    token = secrets.token_urlsafe(32)
    m.fake_tokens.append(token)
    return token


REFUSALS = {
    "no-token": Refusal(401, lambda m: None, lambda m: _good_body(m, NODE, CHECK), "no bearer token"),
    "wrong-token": Refusal(401, _wrong, lambda m: _good_body(m, NODE, CHECK), "a token nobody enrolled"),
    "other-node": Refusal(403, _p2, lambda m: _good_body(m, NODE, CHECK), "phone-2's token pushing for node phone-1"),
    "other-check": Refusal(
        403, _p2, lambda m: _good_body(m, OTHER, CHECK), "phone-2's token, node phone-2, rounds for phone-1's check"
    ),
    "not-its-check": Refusal(
        422, _p1, lambda m: _good_body(m, NODE, CHECK, obs_name=OTHER), "an observation named after another node"
    ),
    "garbage": Refusal(400, _p1, lambda m: b"\x00\x9f\xff" + MARK.encode() + b" \xfe garbage", "garbage bytes"),
    "invalid-json": Refusal(
        400, _p1, lambda m: _good_body(m, NODE, CHECK).model_dump_json().encode()[:-7], "truncated JSON"
    ),
    "nan": Refusal(400, _p1, _nan, "NaN in a number"),
    "unknown-key": Refusal(400, _p1, _unknown_key, "a key the protocol does not have"),
    "too-big": Refusal(413, _p1, _too_big, "a body over MAX_BODY with its Content-Length"),
    "too-big-chunked": Refusal(413, _p1, lambda m: _chunks(_too_big(m)), "a body over MAX_BODY, chunked"),
}


def assert_refused(m: Monitor, case: Refusal) -> Answer:
    """The status, a JSON error without the token, a log line with the client's address and no token,
    and nothing of the push anywhere in the store (checked after a good push made the writer flush)."""
    d = m.d
    before = stored(d)
    names_before = {r["name"] for r in d.query("SELECT name FROM entities")}
    log = m.refusals  # each case is a different refusal: the monitor says each at once (its limit is per kind)
    token = case.token(m)
    answer = send(m, case.body(m), token)

    assert answer.status == case.status, (case.why, answer.status, answer.body[:500])
    assert answer.headers.get("content-type", "").startswith("application/json"), (case.why, answer.headers)
    error = answer.json()["error"]
    assert isinstance(error, str) and error, (case.why, answer.body)
    for secret in m.all_tokens():
        assert secret not in answer.body.decode(errors="replace")
    if case.status == 401:
        assert answer.headers.get("www-authenticate", "").startswith("Bearer")

    lines = log.new_lines()  # asserted last: first everything else about the refusal
    assert_no_token_logged(m)

    # Make the monitor's writer write whatever it may have queued, then look: nothing of the refused push.
    live_round(m, m.agents[NODE], "flush after a refusal")
    after = stored(d)
    assert after["observations"] == before["observations"] + 2, (case.why, before, after)
    names_after = {r["name"] for r in d.query("SELECT name FROM entities")}
    assert names_after == names_before | {NODE, CHECK}, (case.why, names_after - names_before)
    for table in ("observations", "entities", "events", "incidents"):
        column = "last_message" if table == "incidents" else "message"
        assert count(d, table, f"{column} LIKE ?", f"%{MARK}%") == 0, (case.why, table)
    assert after["actions"] == before["actions"], case.why
    assert MARK not in json.dumps(status_of(m)), case.why
    assert any(CLIENT in line for line in lines), (
        f"{case.why} was refused with {case.status} ({error!r}) and nothing was filed, but the monitor "
        f"logged no line with the client's address {CLIENT}"
    )
    return answer


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_refused_push_leaves_no_trace(api: Monitor, case: str) -> None:
    assert_refused(api, REFUSALS[case])


def test_revoked_token_is_refused_within_the_auth_cache(api: Monitor) -> None:
    m, d, p1 = api, api.d, api.agents[NODE]
    live_round(m, p1, "before the revocation")
    done = run_cli("agent", "revoke", NODE, "-c", str(d.config_path))
    assert done.returncode == 0, done.stdout + done.stderr

    # Until the monitor's token cache runs out an empty push (nothing to file) may still pass.
    def refused() -> bool:
        return send(m, push_of(NODE, []), p1.token).status == 401

    wait_until(refused, timeout=AUTH_CACHE + 15, interval=0.3, what="the revoked token refused")

    log = m.refusals
    before = stored(d)
    log.window_free()
    answer = send(m, _good_body(m, NODE, CHECK), p1.token)
    assert answer.status == 401 and "revoked" in answer.json()["error"], answer.body
    lines = log.new_lines()
    assert any(f"from {CLIENT}" in line and "revoked" in line for line in lines), lines
    assert_no_token_logged(m)
    listed = run_cli("agent", "list", "-c", str(d.config_path))
    assert f"{NODE}\trevoked" in listed.stdout, listed.stdout

    # A new enrollment is a new token: the old one stays refused, the new one works again.
    p1.renew(enroll(d, NODE))
    assert send(m, push_of(NODE, []), p1.tokens_ever[-2]).status == 401
    live_round(m, p1, "after a new enrollment")
    assert stored(d)["observations"] == before["observations"] + 2
    assert count(d, "observations", "message LIKE ?", f"%{MARK}%") == 0


def test_no_token_in_the_store(api: Monitor) -> None:
    """The store keeps only each token's hash: the database file's bytes never hold a token."""
    live_round(api, api.agents[NODE], "flush")
    raw = b"".join(p.read_bytes() for p in api.d.tmp.glob("state.db*") if p.is_file())
    assert raw
    for token in api.all_tokens():
        assert token.encode() not in raw


# --- silence --------------------------------------------------------------------------------------


def test_silence_makes_the_node_critical_once_and_back_is_said_once(tmp_path: Path) -> None:
    config = monitor_config(f"http://127.0.0.1:{closed_port()}/health")
    d = Daemon(tmp_path, config)
    m = Monitor(d, {NODE: Agent(NODE, enroll(d, NODE))})
    p1 = m.agents[NODE]
    d.start()
    try:
        wait_up(m)
        # Started with a long agent_timeout, so that a slow start is never taken for a silent agent;
        # heard once, then the timeout goes down to 3 s by a reload, while the agent keeps talking.
        live_round(m, p1, "first words")
        config["nodes"][0]["agent_timeout"] = "3s"
        raw = yaml.safe_load(d.config_path.read_text())
        raw["nodes"] = config["nodes"]
        d.write(raw)
        os.kill(d.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]

        def short_timeout() -> bool:
            live_round(m, p1, "while reloading")  # (a reload that changes a node forgets its state)
            answer = http("GET", m.url + protocol.CONFIG_PATH, token=p1.token)
            reloaded = answer.status == 200 and protocol.AgentConfig.model_validate_json(answer.body).agent_timeout == 3
            return reloaded and status_of(m).get(NODE, {}).get("status") == "ok"

        wait_until(short_timeout, timeout=30, interval=0.3, what="agent_timeout 3s after the reload, the node ok")

        # The last word; then the agent is silent.
        last_sent = time.monotonic()
        last_wall = time.time()
        live_round(m, p1, "last words")

        def silent() -> dict[str, Any] | None:
            shown = status_of(m)
            node, check = shown.get(NODE), shown.get(CHECK)
            if node and check and node["status"] == "critical" and check["status"] == "unknown":
                return shown
            return None

        shown = wait_until(silent, timeout=3 + 40, interval=0.2, what=f"{NODE} critical\n{d.log()[-2000:]}")
        assert time.monotonic() - last_sent > 3, "called silent before agent_timeout"
        node, check = shown[NODE], shown[CHECK]
        assert node["message"].startswith("agent silent for"), node["message"]
        assert f"from {CLIENT}" in node["message"], node["message"]
        assert check["message"] == f"not seen: the agent of {NODE} is silent", check
        # Affected, not failed: said once the check's state has fallen (`fall` intervals).
        wait_until(
            lambda: status_of(m)[CHECK]["affected_by"] == NODE,
            timeout=40,
            interval=0.2,
            what=f"{CHECK} affected by {NODE} (last: {status_of(m)[CHECK]})",
        )

        wait_until(
            lambda: count(d, "incidents", "entity = ?", NODE) >= 1,
            timeout=40,
            interval=0.2,
            what=f"an incident for {NODE}\n{d.log()[-2000:]}",
        )
        assert count(d, "incidents", "entity = ?", NODE) == 1
        assert count(d, "incidents", "entity = ?", CHECK) == 0, "an affected check opened an incident of its own"
        silence_seen = time.time()

        # Back, with what it queued while it was cut off: a critical round of the check from inside the
        # silence (history), and a live round of the node (the check's live round comes later).
        queued_at = (last_wall + silence_seen) / 2
        queued_msg = "QUEUED-WHILE-CUT-OFF HTTP 502"
        back = push_of(
            NODE,
            [
                protocol.Round(
                    seq=p1.seq(), at=queued_at, check=CHECK, observations=[wire(CHECK, "critical", queued_msg)]
                ),
                round_of(p1, NODE, "ok", "cpu 9% (back)"),
            ],
        )
        assert accepted(m, p1, back).accepted == back.rounds[-1].seq
        backs = d.wait_event("agent_back", NODE, timeout=20)
        assert len(backs) == 1
        assert backs[0]["message"].startswith(f"the agent of {NODE} is back after being unreachable from")

        rows = d.query("SELECT * FROM observations WHERE message = ?", queued_msg)
        assert len(rows) == 1 and rows[0]["status"] == "critical" and rows[0]["entity"] == CHECK
        assert abs(rows[0]["ts"] - queued_at) < 2, (rows[0]["ts"], queued_at)
        shown = status_of(m)
        assert shown[CHECK]["status"] != "critical" and queued_msg not in shown[CHECK]["message"], shown[CHECK]
        entity = d.entity(CHECK)
        assert entity is not None and queued_msg not in (entity["message"] or "")
        assert count(d, "events", "message LIKE ?", "%QUEUED-WHILE-CUT-OFF%") == 0
        assert count(d, "incidents", "entity = ?", CHECK) == 0
        assert shown[NODE]["status"] == "ok" and "back after being unreachable" in shown[NODE]["message"]

        # Talking on: said once, the node's one incident closes, the check is ok again.
        def recovered() -> bool:
            live_round(m, p1, "talking again")
            rows = d.query("SELECT closed FROM incidents WHERE entity = ?", NODE)
            return len(rows) == 1 and rows[0]["closed"] is not None and status_of(m)[CHECK]["status"] == "ok"

        wait_until(recovered, timeout=40, interval=0.5, what=f"{NODE}'s incident closed\n{d.log()[-2000:]}")
        assert len(d.events("agent_back", NODE)) == 1
        assert count(d, "incidents", "entity = ?", NODE) == 1
        assert count(d, "incidents", "entity = ?", CHECK) == 0
        assert_no_token_logged(m)
    finally:
        d.stop()


# --- TLS ------------------------------------------------------------------------------------------


def tls_monitor(tmp: Path, check_url: str, timeout_1: str | None) -> tuple[Monitor, ServerCert]:
    certs = make_server_cert(tmp / "tls")
    d = Daemon(tmp, monitor_config(check_url, timeout_1=timeout_1))
    raw = yaml.safe_load(d.config_path.read_text())
    raw["web"]["tls"] = {"cert": str(certs.cert), "key": str(certs.key)}
    d.write(raw)
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    return Monitor(d, {NODE: Agent(NODE, enroll(d, NODE))}, scheme="https", ctx=ctx), certs


def test_tls_push_verified_with_the_test_ca(tmp_path: Path) -> None:
    m, _ = tls_monitor(tmp_path, f"http://127.0.0.1:{closed_port()}/health", "1h")
    p1 = m.agents[NODE]
    m.d.start()
    try:
        wait_up(m)
        answer = live_round(m, p1, "over TLS")
        assert answer.accepted == 2
        assert status_of(m)[NODE]["status"] == "ok"

        # A client that does not trust the test's CA refuses the monitor's certificate.
        strange = Monitor(m.d, m.agents, scheme="https", ctx=ssl.create_default_context())
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            live_round(strange, p1, "never sent")
        # Plain HTTP on the TLS port is no way in either.
        plain = Monitor(m.d, m.agents)
        try:
            answer_plain = send(plain, push_of(NODE, [round_of(p1, NODE, "ok", "never filed")]), p1.token)
        except (OSError, HTTPException):
            pass
        else:
            assert answer_plain.status != 200, "a plain HTTP push was accepted on a TLS listener"
        assert count(m.d, "observations", "message LIKE ?", "never %") == 0
        assert_no_token_logged(m)
    finally:
        m.d.stop()


RUNNER = ROOT / "clusterwatch" / "agent" / "runner.py"


@pytest.mark.skipif(not RUNNER.exists(), reason="the agent runtime (clusterwatch/agent/runner.py) has not landed")
def test_agent_run_under_a_tls_monitor(tmp_path: Path) -> None:
    """`clusterwatch agent run` as a real process: gets its config over TLS (verified with --ca-file),
    probes its node and its http check, and pushes: both show ok on the monitor."""
    service_port = free_port()
    service = Proc(
        [sys.executable, "-m", "http.server", str(service_port), "--bind", "127.0.0.1"], tmp_path / "service.log"
    )
    m, certs = tls_monitor(tmp_path, f"http://127.0.0.1:{service_port}/", None)
    agent: Proc | None = None
    try:
        m.d.start()
        wait_up(m)
        agent = Proc(
            [
                sys.executable,
                "-m",
                "clusterwatch",
                "agent",
                "run",
                "--server",
                m.url,
                "--name",
                NODE,
                "--token-file",
                str(m.d.tmp / f"{NODE}.token"),
                "--ca-file",
                str(certs.ca),
                "--state-dir",
                str(tmp_path / "agent-state"),
            ],
            tmp_path / "agent.log",
        )

        def both_ok() -> dict[str, Any] | None:
            assert agent is not None and agent.alive(), f"the agent exited:\n{agent.tail() if agent else ''}"
            shown = status_of(m)
            node, check = shown.get(NODE), shown.get(CHECK)
            ok = node and check and node["status"] == "ok" and check["status"] == "ok"
            return shown if ok else None

        shown = wait_until(
            both_ok,
            timeout=90,
            interval=0.5,
            what=f"{NODE} and {CHECK} ok\nagent:\n{agent.tail()}\nmonitor:\n{m.d.log()[-2000:]}",
        )
        assert shown[NODE]["kind"] == "agent", shown[NODE]
        assert shown[CHECK]["node"] == NODE
        # (the store's row trails what /api/v1/status shows by the writer's commit)
        row = wait_until(
            lambda: (r := m.d.query("SELECT * FROM agents WHERE name = ?", NODE)[0])["acked"] >= 2 and r,
            timeout=20,
            what="the agent's pushes acknowledged in the store",
        )
        assert row["last_addr"] == CLIENT
        assert count(m.d, "observations", "entity = ? AND status = 'ok'", CHECK) >= 1
        agent_log = agent.log.read_text(errors="replace")
        assert m.agents[NODE].token not in agent_log, "the agent logged its own token"
        assert_no_token_logged(m)
    finally:
        if agent is not None:
            agent.stop(timeout=10)
        m.d.stop()
        service.stop()
