"""PostgreSQL connections, transactions, buffer hits, lock waits and long transactions.

Everything comes from one query that the least-privilege monitoring role (a member of pg_monitor) may run:
pg_stat_activity, pg_stat_database, pg_locks and pg_settings. The connection is kept between scrapes and
opened again after a failure.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.rows import dict_row

# pg_stat_activity.state values, as label values.
CONNECTION_STATES = {
    "active": "active",
    "idle": "idle",
    "idle in transaction": "idle_in_transaction",
    "idle in transaction (aborted)": "idle_in_transaction_aborted",
    "fastpath function call": "fastpath_function_call",
    "disabled": "disabled",
}

QUERY = """
SELECT
  (SELECT setting::int FROM pg_settings WHERE name = 'max_connections') AS max_connections,
  (SELECT coalesce(json_object_agg(state, n), '{}')
     FROM (SELECT coalesce(state, 'disabled') AS state, count(*) AS n FROM pg_stat_activity
            WHERE backend_type = 'client backend' GROUP BY 1) s) AS connections,
  (SELECT sum(xact_commit) FROM pg_stat_database) AS xact_commit,
  (SELECT sum(xact_rollback) FROM pg_stat_database) AS xact_rollback,
  (SELECT sum(blks_hit) FROM pg_stat_database) AS blks_hit,
  (SELECT sum(blks_read) FROM pg_stat_database) AS blks_read,
  (SELECT sum(deadlocks) FROM pg_stat_database) AS deadlocks,
  (SELECT count(*) FROM pg_locks WHERE NOT granted) AS locks_waiting,
  (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0) FROM pg_stat_activity
    WHERE xact_start IS NOT NULL AND backend_type = 'client backend' AND pid <> pg_backend_pid())
    AS longest_transaction_seconds
"""


class PostgresSource:
    """One kept connection for the monitoring query; short timeouts so a hung server cannot stall a scrape."""

    def __init__(self, dsn: str, timeout: float = 3.0) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        self.dsn,
                        autocommit=True,
                        connect_timeout=max(1, int(self.timeout)),
                        application_name="loadlab-exporter",
                        options=f"-c statement_timeout={int(self.timeout * 1000)}",
                    )
                with self._conn.cursor(row_factory=dict_row) as cur:
                    cur.execute(QUERY)
                    row = cur.fetchone()
                    assert row is not None
                    return row
            except Exception:
                self.close()
                raise

    def close(self) -> None:
        """Drop the connection (it is opened again on the next scrape)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # a broken connection may fail to close; it is gone anyway
                conn.close()


def _num(value: Any) -> float:
    return float(value or 0)


class PostgresCollector(Collector):
    """Connections by state against max_connections, transactions, blocks, lock waits, long transactions."""

    name = "postgres"

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        row = self.source()
        connections = GaugeMetricFamily(
            "loadlab_postgres_connections", "Client connections by state.", labels=["state"]
        )
        by_state = dict.fromkeys(CONNECTION_STATES.values(), 0)
        for state, n in (row["connections"] or {}).items():
            label = CONNECTION_STATES.get(state, state.replace(" ", "_"))
            by_state[label] = by_state.get(label, 0) + int(n)
        for label, n in by_state.items():
            connections.add_metric([label], n)
        yield connections
        yield GaugeMetricFamily(
            "loadlab_postgres_max_connections",
            "The server's max_connections.",
            value=_num(row["max_connections"]),
        )
        xact = CounterMetricFamily(
            "loadlab_postgres_transactions_total", "Transactions ended, all databases.", labels=["result"]
        )
        xact.add_metric(["commit"], _num(row["xact_commit"]))
        xact.add_metric(["rollback"], _num(row["xact_rollback"]))
        yield xact
        blocks = CounterMetricFamily(
            "loadlab_postgres_blocks_total",
            "Data blocks found in shared buffers (hit) or read from the OS (read), all databases.",
            labels=["source"],
        )
        blocks.add_metric(["hit"], _num(row["blks_hit"]))
        blocks.add_metric(["read"], _num(row["blks_read"]))
        yield blocks
        yield GaugeMetricFamily(
            "loadlab_postgres_locks_waiting",
            "Lock requests not granted yet.",
            value=_num(row["locks_waiting"]),
        )
        yield GaugeMetricFamily(
            "loadlab_postgres_longest_transaction_seconds",
            "Age of the oldest open transaction of a client backend (0 when none).",
            value=_num(row["longest_transaction_seconds"]),
        )
        yield CounterMetricFamily(
            "loadlab_postgres_deadlocks_total",
            "Deadlocks detected, all databases.",
            value=_num(row["deadlocks"]),
        )
