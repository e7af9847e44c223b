"""The Redis read-through cache in front of single-user reads."""

from __future__ import annotations

import json

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from loadlab.app.store import User

REDIS_TIMEOUT = 2.0
"""Seconds for a Redis connect or command; a stopped Redis must give a quick 503, not a hung request."""


def make_redis(url: str) -> Redis:
    """One retry without backoff: enough to replace a connection Redis dropped, never a slow stall."""
    return Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    )


class UserCache:
    """Users as JSON under `loadlab:user:<id>`, expiring after `ttl` seconds."""

    def __init__(self, redis: Redis, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    @staticmethod
    def key(user_id: int) -> str:
        return f"loadlab:user:{user_id}"

    async def get(self, user_id: int) -> User | None:
        raw = await self.redis.get(self.key(user_id))
        return None if raw is None else json.loads(raw)

    async def put(self, user: User) -> None:
        await self.redis.set(self.key(user["id"]), json.dumps(user), ex=self.ttl)

    async def invalidate(self, user_id: int) -> None:
        await self.redis.delete(self.key(user_id))

    async def ping(self) -> None:
        await self.redis.ping()
