"""The real-PostgreSQL harness does what store tests rely on: a fresh database per test, and a server
that can be crashed, hung and brought back with committed data intact."""

from __future__ import annotations

import psutil
import psycopg
import pytest

from tests.pg import PASSWORD, PostgresServer

pytest_plugins = ["tests.pg"]  # the postgres_server and pg_url fixtures


def test_fresh_database_as_clusterwatch(postgres_server: PostgresServer, pg_url: str) -> None:
    assert pg_url.startswith(f"postgresql://clusterwatch:{PASSWORD}@127.0.0.1:{postgres_server.port}/")
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("clusterwatch",)
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        conn.commit()
        assert conn.execute("SELECT v FROM t ORDER BY id").fetchall() == [("one",), ("two",)]
    with psycopg.connect(postgres_server.url()) as conn:  # the default database exists too
        assert conn.execute("SELECT current_database()").fetchone() == ("clusterwatch",)


def test_committed_data_survives_kill9(postgres_server: PostgresServer, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
    pending = psycopg.connect(pg_url)  # a transaction open at the crash must not survive it
    pending.execute("INSERT INTO t VALUES (2)")
    old_pid = postgres_server.pid
    port = postgres_server.port

    postgres_server.kill9()
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url, connect_timeout=5).close()
    pending.close()

    postgres_server.start_again()
    assert postgres_server.port == port
    assert postgres_server.pid != old_pid
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,)]


def test_halt_and_pause(postgres_server: PostgresServer, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t VALUES (1)")
    postgres_server.halt()
    assert not postgres_server.running()
    postgres_server.start_again()

    with psycopg.connect(pg_url, autocommit=True) as before:
        postgres_server.pause()
        try:
            # A hung postmaster never answers a new connection; the backend of an old one still works.
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(pg_url, connect_timeout=2).close()
            assert before.execute("SELECT count(*) FROM t").fetchone() == (1,)
        finally:
            postgres_server.resume()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
