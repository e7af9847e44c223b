"""`ordersvc-migrate`: the one-time setup the lab runs before the instances start (idempotent SQL).

Each run is counted in setup_runs, so a test can see how often the lab ran it.
"""

from __future__ import annotations

import os

import psycopg


def main() -> None:
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS orders "
            "(id bigserial PRIMARY KEY, item text NOT NULL, qty int NOT NULL)"
        )
        conn.execute("CREATE TABLE IF NOT EXISTS setup_runs (at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO setup_runs DEFAULT VALUES")
    print("ordersvc: schema ready")


if __name__ == "__main__":
    main()
