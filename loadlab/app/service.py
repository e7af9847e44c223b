"""The HTTP surface of the target service: users CRUD, a read-through cache, health and metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated

import psycopg
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import choose_encoder
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from loadlab.app.cache import UserCache, make_redis
from loadlab.app.metrics import AppMetrics, InstrumentMiddleware
from loadlab.app.settings import Settings
from loadlab.app.store import UserStore, make_pool

BULK_MAX = 100
"""Most users one bulk create or bulk read may carry."""

PAGE_MAX = 100
"""Largest `limit` of GET /users."""

SLEEP_MAX_MS = 10_000
"""Longest hold GET /db/sleep accepts."""

HEALTH_TIMEOUT = 2.0
"""Seconds /health waits for a pool connection before it calls the database down."""

UserId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class UserIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320)


class UserPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, min_length=3, max_length=320)


class BulkIn(BaseModel):
    users: list[UserIn] = Field(min_length=1, max_length=BULK_MAX)


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=503)


def _parse_ids(raw: str) -> list[int] | None:
    try:
        ids = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        return None
    if not ids or len(ids) > BULK_MAX or any(not 1 <= i < 2**63 for i in ids):
        return None
    return list(dict.fromkeys(ids))


def create_app(settings: Settings) -> FastAPI:
    """One instance: its own DB pool, Redis client and metrics registry, named by settings.instance."""
    pool = make_pool(settings.database_url, settings.db_pool_size, settings.db_pool_timeout)
    redis = make_redis(settings.redis_url)
    store = UserStore(pool)
    cache = UserCache(redis, settings.cache_ttl)
    metrics = AppMetrics(pool)
    app = FastAPI(
        title="loadlab target",
        lifespan=_lifespan(pool, redis),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(InstrumentMiddleware, metrics=metrics, instance=settings.instance)
    _answer_outages(app, settings)
    _operations(app, settings, store, cache, metrics)
    _users(app, store, cache, metrics)
    _lab_knobs(app, settings, store)
    return app


def _lifespan(
    pool: AsyncConnectionPool, redis: Redis
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Open the pool as the instance starts, close the pool and the Redis client as it stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # No wait: the pool fills in the background, and a database that went away since the schema
        # check shows up as 503s and an unhealthy /health rather than as a crash loop.
        await pool.open(wait=False)
        try:
            yield
        finally:
            await pool.close()
            await redis.aclose()

    return lifespan


def _answer_outages(app: FastAPI, settings: Settings) -> None:
    """A saturated pool, a database or a Redis that went away: 503 with what gave out, never a 500."""

    # PoolTimeout is an OperationalError; Starlette picks the closest class, so saturation says so.
    @app.exception_handler(PoolTimeout)
    async def pool_exhausted(_: Request, exc: PoolTimeout) -> JSONResponse:
        return _unavailable(f"database pool exhausted: no connection within {settings.db_pool_timeout}s")

    @app.exception_handler(psycopg.OperationalError)
    async def database_down(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        return _unavailable("database unavailable")

    @app.exception_handler(RedisError)
    async def redis_down(_: Request, exc: RedisError) -> JSONResponse:
        return _unavailable("redis unavailable")


def _operations(
    app: FastAPI, settings: Settings, store: UserStore, cache: UserCache, metrics: AppMetrics
) -> None:
    """/health (the database and Redis answer) and /metrics (for Prometheus)."""

    @app.get("/health")
    async def health() -> JSONResponse:
        checks = {"db": "ok", "redis": "ok"}
        try:
            await store.ping(HEALTH_TIMEOUT)
        except (psycopg.Error, OSError) as exc:
            checks["db"] = f"down: {type(exc).__name__}"
        try:
            await cache.ping()
        except (RedisError, OSError) as exc:
            checks["redis"] = f"down: {type(exc).__name__}"
        healthy = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if healthy else "unavailable", "instance": settings.instance, **checks}
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/metrics")
    async def prometheus_metrics(request: Request) -> Response:
        # Negotiated like client_python's own handlers: text 0.0.4 unless the scraper asks for OpenMetrics.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(metrics.registry), headers={"Content-Type": content_type})


def _users(app: FastAPI, store: UserStore, cache: UserCache, metrics: AppMetrics) -> None:
    """Users CRUD; a single user's read goes through the Redis cache, and a write invalidates it."""

    # The fixed paths under /users come before /users/{user_id}, which would otherwise claim them.
    @app.post("/users/bulk", status_code=201)
    async def create_users(body: BulkIn) -> JSONResponse:
        users = await store.create_many([(u.name, u.email) for u in body.users])
        return JSONResponse(users, status_code=201)

    @app.get("/users/bulk")
    async def read_users(ids: Annotated[str, Query(description="comma-separated user ids")]) -> JSONResponse:
        wanted = _parse_ids(ids)
        if wanted is None:
            return JSONResponse(
                {"detail": f"ids must be 1 to {BULK_MAX} comma-separated positive integers"}, status_code=422
            )
        users = await store.get_many(wanted)
        found = {u["id"] for u in users}
        return JSONResponse({"users": users, "missing": [i for i in wanted if i not in found]})

    @app.post("/users", status_code=201)
    async def create_user(body: UserIn) -> JSONResponse:
        return JSONResponse(await store.create(body.name, body.email), status_code=201)

    @app.get("/users")
    async def list_users(
        limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 20, offset: Annotated[int, Query(ge=0)] = 0
    ) -> JSONResponse:
        return JSONResponse(await store.page(limit, offset))

    @app.get("/users/{user_id}")
    async def read_user(user_id: UserId) -> JSONResponse:
        cached = await cache.get(user_id)
        if cached is not None:
            metrics.cache.labels("hit").inc()
            return JSONResponse(cached, headers={"X-Cache": "hit"})
        metrics.cache.labels("miss").inc()
        user = await store.get(user_id)
        if user is None:
            return JSONResponse({"detail": "user not found"}, status_code=404, headers={"X-Cache": "miss"})
        await cache.put(user)
        return JSONResponse(user, headers={"X-Cache": "miss"})

    @app.put("/users/{user_id}")
    async def update_user(user_id: UserId, body: UserPatch) -> JSONResponse:
        user = await store.update(user_id, body.name, body.email)
        if user is None:
            return JSONResponse({"detail": "user not found"}, status_code=404)
        # After the write, so the next read repopulates from the new row.
        await cache.invalidate(user_id)
        return JSONResponse(user)

    @app.delete("/users/{user_id}", status_code=204)
    async def delete_user(user_id: UserId) -> Response:
        if not await store.delete(user_id):
            return JSONResponse({"detail": "user not found"}, status_code=404)
        await cache.invalidate(user_id)
        return Response(status_code=204)


def _lab_knobs(app: FastAPI, settings: Settings, store: UserStore) -> None:
    """Endpoints that provoke a bottleneck on purpose: a held pool connection, a busy event loop."""

    @app.get("/db/sleep")
    async def db_sleep(ms: Annotated[int, Query(ge=0, le=SLEEP_MAX_MS)]) -> JSONResponse:
        """Lab knob: holds one pool connection for `ms` in pg_sleep, to provoke pool saturation on purpose."""
        await store.sleep(ms / 1000)
        return JSONResponse({"slept_ms": ms, "instance": settings.instance})

    @app.get("/cpu")
    async def cpu_work(ms: Annotated[int, Query(ge=0, le=SLEEP_MAX_MS)]) -> JSONResponse:
        """Lab knob: burns `ms` of this thread's CPU time in the event loop, to provoke a CPU-bound
        instance on purpose (one Python process is one core: concurrent requests queue behind it)."""
        end = time.thread_time() + ms / 1000
        while time.thread_time() < end:
            pass
        return JSONResponse({"cpu_ms": ms, "instance": settings.instance})
