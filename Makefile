# The two commands of the README's quick start; each sets up what it needs by itself.
.PHONY: run test lint bench clean

ARGS ?=
PYTEST_ARGS ?=

run:
	@bash scripts/bootstrap.sh run
	.venv/bin/clusterwatch run $(ARGS)

test:
	@bash scripts/bootstrap.sh test
	.venv/bin/ruff check clusterwatch tests bench
	@# the self-contained tests two at a time, then the ones with real components one at a time
	@# (their bounds are for a busy 2-core machine, not for one busy with other tests too)
	.venv/bin/python -m pytest -ra --durations=10 -n 2 -m "not real" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	.venv/bin/python -m pytest -ra --durations=25 -m real $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint:
	.venv/bin/ruff check clusterwatch tests bench

bench:
	@bash scripts/bootstrap.sh bench
	.venv/bin/python bench/check_http_targets.py
	.venv/bin/python bench/check_nothing_running.py
	.venv/bin/python bench/engine_10k.py
	.venv/bin/python bench/healing_vs_monit.py
	.venv/bin/python bench/alert_latency.py
	.venv/bin/python bench/web_10k.py
	.venv/bin/python bench/config_load_10k.py
	.venv/bin/python bench/ha_failover.py
	.venv/bin/python bench/agent_footprint.py
	.venv/bin/python bench/vs_prometheus.py
	.venv/bin/python bench/idle_footprint.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache test-artifacts
