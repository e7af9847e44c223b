"""Users in PostgreSQL, through one fixed-size pool per instance (its size is the lab's saturation knob)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

# Any fixed number works; every instance must use the same one so concurrent starts take turns.
SCHEMA_LOCK_ID = 0x10AD1AB

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""

User = dict[str, Any]
_COLUMNS = "id, name, email"


def prepare_schema(database_url: str, wait: float) -> None:
    """Create the schema before serving; the advisory lock lets several instances start at once safely.

    CREATE TABLE IF NOT EXISTS alone races when two sessions run it together (one fails on the catalog's
    unique index), so each start holds a transaction-scoped advisory lock around it. Retries connecting for
    `wait` seconds because under a process manager the database may still be starting.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            conn = psycopg.connect(database_url, connect_timeout=5)
            break
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    with conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
        conn.execute(SCHEMA)


def make_pool(database_url: str, size: int, timeout: float) -> AsyncConnectionPool:
    """min = max = size: exactly `size` connections per instance; waiters give up after `timeout`."""
    return AsyncConnectionPool(
        database_url,
        min_size=size,
        max_size=size,
        timeout=timeout,
        open=False,
        kwargs={"autocommit": True, "row_factory": dict_row},
        name="loadlab-app",
    )


class UserStore:
    """Every SQL statement the service runs; each call borrows one pool connection for one round trip."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def _fetch(self, sql: str, params: tuple = ()) -> list[User]:
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(sql, params)
            return await cur.fetchall() if cur.description else []

    async def ping(self, timeout: float) -> None:
        """Raise unless a pooled connection answers within `timeout` seconds."""
        async with self.pool.connection(timeout=timeout) as conn:
            await conn.execute("SELECT 1")

    async def create(self, name: str, email: str) -> User:
        rows = await self._fetch(
            f"INSERT INTO users (name, email) VALUES (%s, %s) RETURNING {_COLUMNS}", (name, email)
        )
        return rows[0]

    async def create_many(self, users: list[tuple[str, str]]) -> list[User]:
        """One statement for the whole batch, so a bulk create costs one round trip."""
        names = [name for name, _ in users]
        emails = [email for _, email in users]
        return await self._fetch(
            "INSERT INTO users (name, email) SELECT * FROM unnest(%s::text[], %s::text[]) "
            f"RETURNING {_COLUMNS}",
            (names, emails),
        )

    async def get(self, user_id: int) -> User | None:
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM users WHERE id = %s", (user_id,))
        return rows[0] if rows else None

    async def get_many(self, ids: list[int]) -> list[User]:
        return await self._fetch(f"SELECT {_COLUMNS} FROM users WHERE id = ANY(%s) ORDER BY id", (ids,))

    async def page(self, limit: int, offset: int) -> list[User]:
        return await self._fetch(
            f"SELECT {_COLUMNS} FROM users ORDER BY id LIMIT %s OFFSET %s", (limit, offset)
        )

    async def update(self, user_id: int, name: str | None, email: str | None) -> User | None:
        rows = await self._fetch(
            "UPDATE users SET name = COALESCE(%s, name), email = COALESCE(%s, email) "
            f"WHERE id = %s RETURNING {_COLUMNS}",
            (name, email, user_id),
        )
        return rows[0] if rows else None

    async def delete(self, user_id: int) -> bool:
        rows = await self._fetch("DELETE FROM users WHERE id = %s RETURNING id", (user_id,))
        return bool(rows)

    async def sleep(self, seconds: float) -> None:
        """Hold one pool connection busy in the server for `seconds` (the saturation knob's probe)."""
        await self._fetch("SELECT pg_sleep(%s)", (seconds,))
