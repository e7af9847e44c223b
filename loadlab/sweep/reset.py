"""`sweep --reset N`: a known starting state before the first step, so two runs compare the same state.

The lab's demo app keeps its users in PostgreSQL (table `users`) and caches them in Redis. A reset empties
the table, seeds it with N users in one statement, refreshes the planner's statistics, and flushes Redis's
database, all before Locust starts; run.json records what was done and when. PostgreSQL admits only the
lab's hosts, so it is reached from its own host (an SSH forward on a multi-host lab), as `loadlab status`
reaches it. A lab running your own app, or a service of yours, has data the lab does not know: the reset
is refused there (your app's `app_setup_command` is where its seeding belongs).
"""

from __future__ import annotations

from typing import Any

from loadlab.errors import LabError, UserError
from loadlab.lab import Lab
from loadlab.sweep.results import now_iso

TABLE = "users"


def check_resettable(lab: Lab | None) -> Lab:
    """The lab a reset can work on: the lab's own stack running its demo app."""
    if lab is None or not lab.group("postgres") or not lab.group("redis"):
        raise UserError("--reset resets the lab's own PostgreSQL and Redis: the inventory names none")
    own = sorted({h.name for h in lab.group("app") if h.var("app_command")})
    if own:
        raise UserError(
            f"--reset seeds the demo app's data; the lab runs your own app on {', '.join(own)} "
            "(app_command): seed yours in app_setup_command"
        )
    return lab


def reset_lab(lab: Lab, rows: int) -> dict[str, Any]:
    """Empty and seed the demo app's users, flush Redis; what was done, for run.json."""
    import psycopg
    import redis

    from loadlab.remote import RemoteHosts

    pg, rd = lab.group("postgres")[0], lab.group("redis")[0]
    with RemoteHosts(lab) as remotes:
        try:
            with (
                remotes[pg].reach(pg.address, pg.int_var("postgres_port"), from_host=True) as at,
                psycopg.connect(
                    host=at.host,
                    port=at.port,
                    dbname=pg.var("postgres_db"),
                    user=pg.var("postgres_app_user"),
                    password=lab.secret("postgres_app"),
                    connect_timeout=10,
                ) as db,
            ):
                db.execute(f"TRUNCATE {TABLE} RESTART IDENTITY")
                db.execute(
                    f"INSERT INTO {TABLE} (name, email) SELECT 'seed-' || g, 'seed-' || g || '@lab.invalid' "
                    "FROM generate_series(1, %s) AS g",
                    (rows,),
                )
                db.commit()
                db.execute(f"ANALYZE {TABLE}")
                seeded = db.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
        except psycopg.Error as exc:
            raise LabError(f"--reset: PostgreSQL on {pg.name}: {str(exc).strip().splitlines()[0]}") from None
        try:
            with remotes[rd].reach(rd.address, rd.int_var("redis_port")) as at:
                password = lab.secret("redis")
                client = redis.Redis(host=at.host, port=at.port, password=password, socket_timeout=10)
                try:
                    client.flushdb()
                    keys = client.dbsize()
                finally:
                    client.close()
        except redis.RedisError as exc:
            raise LabError(f"--reset: Redis on {rd.name}: {exc}") from None
    return {
        "at": now_iso(),
        "postgres": {"host": pg.name, "table": TABLE, "rows": int(seeded)},
        "redis": {"host": rd.name, "flushed": True, "keys": int(keys)},
    }
