"""Redis clients against maxclients, commands, keyspace hits and misses, memory, evictions, rejections."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

INFO_SECTIONS = ("clients", "stats", "memory")

# (metric name, help, INFO field), in exposition order; a name ending in _total is a counter, the rest gauges.
FIELDS = (
    ("loadlab_redis_connected_clients", "Client connections open now.", "connected_clients"),
    ("loadlab_redis_blocked_clients", "Clients waiting in a blocking command.", "blocked_clients"),
    ("loadlab_redis_maxclients", "The server's maxclients.", "maxclients"),
    ("loadlab_redis_memory_used_bytes", "Memory the allocator holds for Redis (used_memory).", "used_memory"),
    ("loadlab_redis_commands_processed_total", "Commands processed.", "total_commands_processed"),
    ("loadlab_redis_keyspace_hits_total", "Key lookups that found the key.", "keyspace_hits"),
    ("loadlab_redis_keyspace_misses_total", "Key lookups that did not find the key.", "keyspace_misses"),
    ("loadlab_redis_evicted_keys_total", "Keys evicted to stay under maxmemory.", "evicted_keys"),
    (
        "loadlab_redis_rejected_connections_total",
        "Connections refused for reaching maxclients.",
        "rejected_connections",
    ),
)


def parse_info(text: str) -> dict[str, str]:
    """INFO text to a flat field -> value mapping (section headers and blank lines dropped)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


class RedisSource:
    """Raw INFO text from one server; redis-py keeps the connection between scrapes."""

    def __init__(self, url: str, timeout: float = 3.0) -> None:
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self.client.set_response_callback("INFO", lambda response, **_: response)
        self._maxclients: str | None = None

    def __call__(self) -> str:
        text = self.client.execute_command("INFO", *INFO_SECTIONS)
        if "maxclients:" not in text:  # Redis before 7 keeps it out of INFO
            if self._maxclients is None:
                self._maxclients = self.client.config_get("maxclients").get("maxclients", "0")
            text += f"\r\nmaxclients:{self._maxclients}\r\n"
        return text

    def close(self) -> None:
        """Close pooled connections."""
        self.client.close()


class RedisCollector(Collector):
    """Clients, commands, keyspace hits and misses, memory, evictions and rejected connections."""

    name = "redis"

    def __init__(self, source: Callable[[], str]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        info = parse_info(self.source())

        def num(key: str) -> float:
            return float(info.get(key, 0) or 0)

        for name, doc, key in FIELDS:
            family = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
            yield family(name, doc, value=num(key))
