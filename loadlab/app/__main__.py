"""`python -m loadlab.app --host H --port P`: one app instance, one process, configured by LOADLAB_* env."""

from __future__ import annotations

import argparse

import psycopg
import uvicorn

from loadlab.app.service import create_app
from loadlab.app.settings import settings_from_env
from loadlab.app.store import prepare_schema
from loadlab.console import fail
from loadlab.errors import LoadlabError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadlab.app",
        description="The loadlab target service. Env: LOADLAB_DATABASE_URL, LOADLAB_REDIS_URL (required), "
        "LOADLAB_DB_POOL_SIZE (5), LOADLAB_DB_POOL_TIMEOUT (5.0 s), LOADLAB_CACHE_TTL (300 s), "
        "LOADLAB_INSTANCE (app-PORT).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to bind (default 8001)")
    parser.add_argument(
        "--keep-alive",
        type=int,
        default=75,
        help="seconds an idle client connection stays open (default 75, nginx's own default): longer than "
        "any think time, so one load user keeps one socket instead of churning TIME_WAITs",
    )
    parser.add_argument(
        "--db-wait",
        type=float,
        default=10.0,
        help="seconds to keep trying PostgreSQL at start before giving up (default 10)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (costs CPU under load)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Check settings and schema before binding, so a bad start is one line on stderr and exit 2."""
    args = _parser().parse_args(argv)
    try:
        settings = settings_from_env(port=args.port)
    except LoadlabError as exc:
        fail(str(exc), exc.exit_code)
    try:
        prepare_schema(settings.database_url, args.db_wait)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(f"PostgreSQL at {settings.database_address} refused the schema setup: {reason}")
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=args.access_log,
        timeout_keep_alive=args.keep_alive,
        server_header=False,
    )


if __name__ == "__main__":
    main()
