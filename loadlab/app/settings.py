"""The target service's settings: read once from the environment, checked before anything starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict
from redis.asyncio.connection import parse_url

from loadlab.errors import UserError

DEFAULT_DB_POOL_SIZE = 5
"""Connections each instance holds open; the knob that provokes DB saturation."""

DEFAULT_DB_POOL_TIMEOUT = 5.0
"""Seconds a request waits for a free pool connection before it gets 503."""

DEFAULT_CACHE_TTL = 300
"""Seconds a user stays in Redis after a read-through miss."""


@dataclass(frozen=True)
class Settings:
    """Everything one app instance needs; one instance is one process on one port."""

    database_url: str
    redis_url: str
    instance: str
    db_pool_size: int = DEFAULT_DB_POOL_SIZE
    db_pool_timeout: float = DEFAULT_DB_POOL_TIMEOUT
    cache_ttl: int = DEFAULT_CACHE_TTL

    @property
    def database_address(self) -> str:
        """host:port/dbname without the password, for messages."""
        info = conninfo_to_dict(self.database_url)
        return f"{info.get('host', 'localhost')}:{info.get('port', '5432')}/{info.get('dbname', '')}"


def _required(env: Mapping[str, str], name: str, example: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise UserError(f"{name} is not set (example: {example})")
    return value


def _number(env: Mapping[str, str], name: str, default: float, kind: type, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value < minimum:
        raise UserError(f"{name}={raw!r} must be at least {minimum}")
    return value


def settings_from_env(env: Mapping[str, str] | None = None, port: int | None = None) -> Settings:
    """Read LOADLAB_* variables; a wrong one is a UserError naming the variable, never a traceback later."""
    env = os.environ if env is None else env
    database_url = _required(
        env, "LOADLAB_DATABASE_URL", "postgresql://loadlab:PASSWORD@127.0.0.1:5433/loadlab"
    )
    try:
        conninfo_to_dict(database_url)
    except psycopg.ProgrammingError:
        # The libpq message repeats the string, password included, so it is not shown.
        raise UserError(
            "LOADLAB_DATABASE_URL is not a PostgreSQL URL (postgresql://USER:PASSWORD@HOST:PORT/DB)"
        ) from None
    redis_url = _required(env, "LOADLAB_REDIS_URL", "redis://:PASSWORD@127.0.0.1:6380/0")
    try:
        parse_url(redis_url)
    except ValueError as exc:
        raise UserError(f"LOADLAB_REDIS_URL is not a Redis URL (redis://:PW@HOST:PORT/N): {exc}") from None
    default_instance = f"app-{port}" if port else "app"
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        instance=env.get("LOADLAB_INSTANCE", "").strip() or default_instance,
        db_pool_size=int(_number(env, "LOADLAB_DB_POOL_SIZE", DEFAULT_DB_POOL_SIZE, int, 1)),
        db_pool_timeout=_number(env, "LOADLAB_DB_POOL_TIMEOUT", DEFAULT_DB_POOL_TIMEOUT, float, 0.01),
        cache_ttl=int(_number(env, "LOADLAB_CACHE_TTL", DEFAULT_CACHE_TTL, int, 1)),
    )
