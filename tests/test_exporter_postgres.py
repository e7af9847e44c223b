"""The postgres collector against a real PostgreSQL through the least-privilege monitoring role."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import psycopg
import pytest

from loadlab.exporters.host import HostCollector
from loadlab.exporters.postgres import PostgresCollector, PostgresSource
from loadlab.exporters.server import LabExporter
from tests.exporter_support import GOLDEN, assert_golden, exposition, promtool_check, registry_of


@pytest.fixture
def source(postgres_server):
    src = PostgresSource(postgres_server.monitor_dsn)
    yield src
    src.close()


def _sample(source, name, labels=None):
    return registry_of(PostgresCollector(source)).get_sample_value(name, labels or {})


@pytest.mark.server
def test_monitoring_role_is_not_a_superuser(postgres_server) -> None:
    with psycopg.connect(postgres_server.monitor_dsn) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
            False,
        )


@pytest.mark.server
def test_connections_locks_and_long_transactions(postgres_server, source) -> None:
    def idle_in_tx() -> float:
        return _sample(source, "loadlab_postgres_connections", {"state": "idle_in_transaction"})

    assert _sample(source, "loadlab_postgres_max_connections") == postgres_server.max_connections
    before_idle_tx = idle_in_tx()
    holder = psycopg.connect(postgres_server.app_dsn)
    waiter = psycopg.connect(postgres_server.app_dsn)
    try:
        holder.execute("CREATE TABLE IF NOT EXISTS exporter_t (id int PRIMARY KEY, v int)")
        holder.execute("INSERT INTO exporter_t VALUES (1, 0) ON CONFLICT DO NOTHING")
        holder.commit()
        holder.execute(
            "UPDATE exporter_t SET v = v + 1 WHERE id = 1"
        )  # holds the row lock, idle in transaction
        blocked = threading.Thread(
            target=lambda: (waiter.execute("UPDATE exporter_t SET v = 0 WHERE id = 1"), waiter.commit())
        )
        blocked.start()
        deadline = time.monotonic() + 10
        while _sample(source, "loadlab_postgres_locks_waiting") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        # another role's sessions are visible to the monitoring role (pg_monitor), states and all
        assert idle_in_tx() == before_idle_tx + 1
        assert _sample(source, "loadlab_postgres_locks_waiting") >= 1
        assert _sample(source, "loadlab_postgres_connections", {"state": "active"}) >= 1  # the waiter
        assert _sample(source, "loadlab_postgres_longest_transaction_seconds") > 0
        holder.rollback()
        blocked.join(timeout=10)
    finally:
        holder.close()
        waiter.close()
    assert idle_in_tx() == before_idle_tx


@pytest.mark.server
def test_transactions_and_deadlocks_count_up(postgres_server, source) -> None:
    commits = _sample(source, "loadlab_postgres_transactions_total", {"result": "commit"})
    rollbacks = _sample(source, "loadlab_postgres_transactions_total", {"result": "rollback"})
    deadlocks = _sample(source, "loadlab_postgres_deadlocks_total")
    a = psycopg.connect(postgres_server.app_dsn)
    b = psycopg.connect(postgres_server.app_dsn)
    try:
        a.execute("CREATE TABLE IF NOT EXISTS exporter_d (id int PRIMARY KEY)")
        a.execute("INSERT INTO exporter_d VALUES (1), (2) ON CONFLICT DO NOTHING")
        a.commit()
        a.execute("SELECT * FROM exporter_d WHERE id = 1 FOR UPDATE")
        b.execute("SELECT * FROM exporter_d WHERE id = 2 FOR UPDATE")
        errors = []

        def lock(conn, row):
            try:
                conn.execute("SELECT * FROM exporter_d WHERE id = %s FOR UPDATE", (row,))
            except psycopg.errors.DeadlockDetected as exc:
                errors.append(exc)

        t = threading.Thread(target=lock, args=(a, 2))
        t.start()
        time.sleep(0.2)
        lock(b, 1)  # one of the two is chosen as the victim after deadlock_timeout (1 s)
        t.join(timeout=20)
        a.rollback()
        b.rollback()
        assert len(errors) == 1
    finally:
        a.close()
        b.close()
    assert _sample(source, "loadlab_postgres_deadlocks_total") == deadlocks + 1
    assert _sample(source, "loadlab_postgres_transactions_total", {"result": "commit"}) > commits
    assert _sample(source, "loadlab_postgres_transactions_total", {"result": "rollback"}) >= rollbacks + 2
    assert _sample(source, "loadlab_postgres_blocks_total", {"source": "hit"}) > 0


@pytest.mark.server
def test_real_output_passes_promtool(source) -> None:
    assert promtool_check(exposition(registry_of(PostgresCollector(source)))) == ""


@pytest.mark.server
def test_stopped_server_is_up_0_others_intact_logged_once(postgres_server, source, caplog) -> None:
    exporter = LabExporter([PostgresCollector(source), HostCollector()])
    registry = registry_of(exporter)
    assert registry.get_sample_value("loadlab_postgres_up") == 1
    _fast_stop(postgres_server)
    try:
        with caplog.at_level(logging.INFO, logger="loadlab.exporter"):
            for _ in range(3):
                assert registry.get_sample_value("loadlab_postgres_up") == 0
                assert registry.get_sample_value("loadlab_postgres_max_connections") is None
                assert registry.get_sample_value("loadlab_host_up") == 1
                assert registry.get_sample_value("loadlab_host_cpus") == os.cpu_count()
                # the down source is still timed, and a refused connection costs less than the source's 3 s
                took = registry.get_sample_value("loadlab_scrape_duration_seconds", {"collector": "postgres"})
                assert 0 < took < 3
        down = [r for r in caplog.records if "postgres: source down" in r.getMessage()]
        assert len(down) == 1
    finally:
        postgres_server.start()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="loadlab.exporter"):
        deadline = time.monotonic() + 30  # the port opens before the server accepts queries
        while registry.get_sample_value("loadlab_postgres_up") != 1:
            assert time.monotonic() < deadline, "postgres did not come back"
            time.sleep(0.2)
        assert registry.get_sample_value("loadlab_postgres_up") == 1
    assert [r.getMessage() for r in caplog.records] == ["postgres: source recovered"]


def _fast_stop(server) -> None:
    """Fast shutdown: on SIGTERM (smart shutdown) PostgreSQL waits for the collector's open connection."""
    if server.proc is not None and server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)
        server.proc.wait(timeout=30)
    server.stop()


def test_recorded_row_golden_output() -> None:
    """A row recorded while one session held a lock another waited for (tests/golden/postgres_row.json)."""
    row = json.loads((GOLDEN / "postgres_row.json").read_text())
    registry = registry_of(PostgresCollector(lambda: row))
    text = exposition(registry)
    assert_golden(text, "postgres.prom")
    assert registry.get_sample_value("loadlab_postgres_connections", {"state": "idle_in_transaction"}) == 1
    assert registry.get_sample_value("loadlab_postgres_connections", {"state": "idle"}) == 0
    assert registry.get_sample_value("loadlab_postgres_locks_waiting") == 1
    assert promtool_check(text) == ""
