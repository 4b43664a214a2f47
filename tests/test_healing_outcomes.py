"""What a person is told about healing: "recovered, not by this action" counted apart from "succeeded" and
"failed" in the report and the dashboard; the ledger's read-only questions behind the front page's banner
and `heal reset` (on both engines); the banner itself — escaped, and only where the healer gave up."""

from __future__ import annotations

import io
import re
import time
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from clusterwatch import output
from clusterwatch.config.schema import Config
from clusterwatch.report import build, print_text, to_html
from clusterwatch.store.healing import BudgetRow, HealingHistory, HealLedger
from clusterwatch.store.writer import Store
from clusterwatch.web import api, dashboard
from tests.storecheck import store_options

T0 = 1_700_000_000.0
TARGET = "command:/bin/false"


def attempts(ledger: HealLedger, outcomes: list[str], *, check: str = "api", target: str = TARGET, at: float = T0):
    for n, outcome in enumerate(outcomes, 1):
        row = {
            "started": at + n,
            "check": check,
            "entity": check,
            "target": target,
            "action": "command",
            "reason": "connection refused",
            "attempt": n,
            "dry_run": 1 if outcome == "dry_run" else 0,
        }
        ledger.finish(ledger.begin(row), finished=at + n + 0.5, outcome=outcome, detail=f"attempt {n}: {outcome}")


@pytest.fixture
def ledger(store_location: str):
    found = HealLedger(store_location)
    found.open()
    yield found
    found.close()


def test_the_report_counts_recovered_apart(ledger: HealLedger, store_location: str, monkeypatch):
    attempts(ledger, ["succeeded", "recovered", "recovered", "failed", "interrupted", "dry_run"])
    report = build(store_location, since=3600, now=T0 + 60)
    [row] = report["restarts"]
    assert {k: row[k] for k in ("attempts", "succeeded", "recovered", "failed", "dry_run")} == {
        "attempts": 6,
        "succeeded": 1,
        "recovered": 2,
        "failed": 2,  # an interrupted attempt did not help either
        "dry_run": 1,
    }
    assert row["success_rate"] == 20.0  # credit only where it is due: 1 of the 5 real attempts
    assert report["summary"]["restarts_succeeded"] == 1 and report["summary"]["restarts_recovered"] == 2
    out = io.StringIO()
    monkeypatch.setattr(output, "console", lambda: Console(file=out, width=200))
    print_text(report)
    text = out.getvalue()
    assert "6 restart(s), 1 worked, 2 recovered, not by the restart" in text
    assert "recovered, not by it" in text
    page = to_html(report)
    assert "1 worked, 2 recovered, not by the restart." in page
    assert re.search(r"<td>api</td><td>command</td><td>6</td><td>1</td><td>2</td><td>2</td><td>20\.00%</td>", page)


def test_the_ledgers_questions(ledger: HealLedger, store_location: str):
    """The banner's and `heal reset`'s reads: given up since when, after how many attempts, the last one;
    what still counts in the window; which targets a check acted on; whether a queued command was taken."""
    attempts(ledger, ["failed", "failed", "failed"])
    ledger.save_budget(BudgetRow(TARGET, counts_from=T0, exhausted=T0 + 4))
    attempts(ledger, ["recovered", "failed"], check="dask", target="supervisor:dask-worker-w2", at=T0 + 100)
    history = HealingHistory(store_location)
    try:
        for found in (ledger.needs_person(), history.needs_person()):
            [item] = found
            assert {k: item[k] for k in ("target", "check", "entity", "since", "attempts", "healthy_since")} == {
                "target": TARGET,
                "check": "api",
                "entity": "api",
                "since": T0 + 4,
                "attempts": 3,
                "healthy_since": None,
            }
            assert item["last_attempt"]["attempt"] == 3 and item["last_attempt"]["detail"] == "attempt 3: failed"
        assert history.page("actions", limit=1)["items"]  # still the store's whole read side
    finally:
        history.close()
    state = ledger.budget_state(TARGET, window=600, now=T0 + 10)
    assert (state["stored"], state["exhausted"], state["counting"], state["episode"]) == (True, T0 + 4, 3, 3)
    assert ledger.budget_state(TARGET, window=600, now=T0 + 603)["counting"] == 1  # two left the window
    w2 = ledger.budget_state("supervisor:dask-worker-w2", window=600, now=T0 + 110)
    assert (w2["stored"], w2["exhausted"], w2["counting"]) == (False, None, 2)
    assert ledger.targets_of("dask") == ["supervisor:dask-worker-w2"]
    assert ledger.checks_of(TARGET) == ["api"]
    assert ledger.command_taken("heal_reset", "api") is None
    store = Store(store_options(store_location)).open()
    try:
        store.command("heal_reset", "api")
        assert store.flush(30)
        assert ledger.command_taken("heal_reset", "api") is False
        assert [r["target"] for r in store.pending_commands()] == ["api"]
        assert ledger.command_taken("heal_reset", "api") is True
    finally:
        store.close()
    ledger.save_budget(BudgetRow(TARGET, counts_from=T0 + 20))  # a reset: nothing needs a person any more
    assert ledger.needs_person() == []


def monitor(needs: list[dict[str, Any]], counts: list[dict[str, Any]] | None = None) -> Any:
    """What the web is given of the monitor (web/view.py), for one page."""
    config = Config.model_validate(
        {
            "checks": [
                {"name": "api", "kind": "tcp", "port": 1, "restart": {"command": ["/bin/false"]}},
                {
                    "name": "dask",
                    "kind": "dask",
                    "scheduler": "tcp://127.0.0.1:1",
                    "restart": [
                        {"supervisor": "dask-worker-{entity}"},
                        {"command": ["/bin/recreate", "{entity}"]},
                    ],
                },
                {"name": "plain", "kind": "tcp", "port": 2},
            ]
        }
    )
    history = SimpleNamespace(needs_person=needs, needs_person_error=None)
    return SimpleNamespace(config=config, web=SimpleNamespace(history=history, counts={"restarts": counts or []}))


def given_up(check: str, target: str, detail: str, **extra: Any) -> dict[str, Any]:
    last = {"attempt": 3, "outcome": "failed", "detail": detail, "check_name": check, "entity": f"{check}/x"}
    return {
        "target": target,
        "check": check,
        "entity": f"{check}/x",
        "since": time.time() - 125,
        "attempts": 3,
        "healthy_since": None,
        "last_attempt": last,
        **extra,
    }


def test_the_banner_names_what_needs_a_person_escaped():
    hostile = '<script>alert("x")</script> & exit 1'
    needs = [
        given_up("api", TARGET, hostile),
        given_up("dask", "supervisor:dask-worker-w1", "escalated"),  # a ladder's first step: the next is tried
        given_up("dask", "command:/bin/recreate w2", "the ladder's last step did not help"),
        given_up("plain", "command:/bin/gone", "no longer healed"),  # its restart was taken out of the config
        given_up("gone", "command:/bin/old", "no such check any more"),
    ]
    m = monitor(needs)
    found = api.needs_person(m)
    assert [(i["check"], i["target"]) for i in found] == [("api", TARGET), ("dask", "command:/bin/recreate w2")]
    assert found[0]["reset"] == "clusterwatch heal reset api"
    html = dashboard.needs_person_box(m, time.time())
    assert html.startswith('<section id="needs-person" role="alert"><h2>A person is needed (2)</h2>')
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; exit 1" in html
    assert "the healer gave up on <code>command:/bin/false</code>" in html and "after 3 attempts." in html
    assert "Last attempt (#3, failed)" in html and "<code>clusterwatch heal reset dask</code>" in html
    assert "escalated" not in html and "no longer healed" not in html and "no such check" not in html
    assert dashboard.needs_person_box(monitor([]), time.time()) == '<section id="needs-person" hidden></section>'
    healthy = given_up("api", TARGET, "x", healthy_since=time.time() - 5)
    assert "healthy again since" in dashboard.needs_person_box(monitor([healthy]), time.time())


def test_the_healing_history_counts_recovered_apart():
    counts = [
        {"check_name": "api", "action": "command", "outcome": "succeeded", "n": 2},
        {"check_name": "api", "action": "command", "outcome": "recovered", "n": 3},
        {"check_name": "dask", "action": "supervisor", "outcome": "failed", "n": 1},
        {"check_name": "dask", "action": "supervisor", "outcome": "interrupted", "n": 1},
    ]
    m = monitor([], counts)
    line = dashboard.healing_counts(m)
    assert re.sub("<[^>]+>", "", line) == (
        "all attempts: 2 succeeded · 3 recovered, not by this action · 1 failed · 1 interrupted"
    )
    assert re.sub("<[^>]+>", "", dashboard.healing_counts(m, "api")) == (
        "all attempts: 2 succeeded · 3 recovered, not by this action · 0 failed"
    )
    assert dashboard.healing_counts(monitor([]), None) == ""
