"""The ASGI app: GET /health, POST /orders, GET /orders/{id} (read through Redis), GET /work?ms=N (CPU).

Run with `uvicorn ordersvc.app:app --host ADDRESS --port PORT`; one process, one event loop, so a CPU-bound
request holds every other one up (a service that saturates one core is easy to find).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import parse_qs

import psycopg
import redis

_db: psycopg.Connection | None = None
_cache: redis.Redis | None = None


def db() -> psycopg.Connection:
    global _db
    if _db is None or _db.closed:
        _db = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=3)
    return _db


def cache() -> redis.Redis:
    global _cache
    if _cache is None:
        _cache = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=3)
    return _cache


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    try:
        if path == "/health":
            db().execute("SELECT 1")
            cache().ping()
            await _send(send, 200, {"status": "ok", "instance": os.environ.get("LOADLAB_INSTANCE")})
        elif path == "/orders" and method == "POST":
            order = json.loads(await _body(receive) or b"{}")
            row = (
                db()
                .execute(
                    "INSERT INTO orders (item, qty) VALUES (%s, %s) RETURNING id",
                    (order["item"], int(order["qty"])),
                )
                .fetchone()
            )
            await _send(send, 201, {"id": row[0]})
        elif path.startswith("/orders/") and method == "GET":
            key = f"order:{int(path.rsplit('/', 1)[1])}"
            hit = cache().get(key)
            if hit is None:
                row = (
                    db().execute("SELECT id, item, qty FROM orders WHERE id = %s", (int(key[6:]),)).fetchone()
                )
                if row is None:
                    await _send(send, 404, {"error": "no such order"})
                    return
                hit = json.dumps({"id": row[0], "item": row[1], "qty": row[2]})
                cache().set(key, hit, ex=60)
            await _send(send, 200, json.loads(hit))
        elif path == "/work":
            ms = float(parse_qs(scope.get("query_string", b"").decode()).get("ms", ["10"])[0])
            end = time.process_time() + ms / 1000
            while time.process_time() < end:
                pass
            await _send(send, 200, {"burned_ms": ms})
        else:
            await _send(send, 404, {"error": f"no route {method} {path}"})
    except (psycopg.Error, redis.RedisError) as exc:
        await _send(send, 503, {"error": f"dependency unavailable: {exc}"})
