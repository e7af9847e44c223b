"""The redis collector against a real redis-server, stopped and started, and on recorded INFO output."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
import redis

from loadlab.exporters.host import HostCollector
from loadlab.exporters.redis import RedisCollector, RedisSource
from loadlab.exporters.server import LabExporter
from tests.exporter_support import GOLDEN, assert_golden, exposition, promtool_check, registry_of


@pytest.fixture
def source(redis_server):
    src = RedisSource(redis_server.url)
    yield src
    src.close()


@pytest.fixture
def client(redis_server):
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def _get(source, name):
    return registry_of(RedisCollector(source)).get_sample_value(name)


@pytest.mark.server
def test_hits_misses_clients_and_limits(redis_server, source, client) -> None:
    key = f"exporter-{uuid.uuid4().hex}"
    client.set(key, "1")
    hits, misses = (
        _get(source, "loadlab_redis_keyspace_hits_total"),
        _get(source, "loadlab_redis_keyspace_misses_total"),
    )
    client.get(key)
    client.get(key)
    client.get(key + "-missing")
    assert _get(source, "loadlab_redis_keyspace_hits_total") == hits + 2
    assert _get(source, "loadlab_redis_keyspace_misses_total") == misses + 1
    assert _get(source, "loadlab_redis_maxclients") == 200  # the fixture's --maxclients
    assert _get(source, "loadlab_redis_connected_clients") >= 2  # the test's client and the collector's
    assert _get(source, "loadlab_redis_memory_used_bytes") > 0
    assert _get(source, "loadlab_redis_commands_processed_total") > 0
    assert _get(source, "loadlab_redis_evicted_keys_total") == 0
    client.delete(key)


@pytest.mark.server
def test_blocked_clients(redis_server, source) -> None:
    blocker = redis.Redis.from_url(redis_server.url)
    before = _get(source, "loadlab_redis_blocked_clients")
    t = threading.Thread(
        target=blocker.blpop, args=([f"exporter-empty-{uuid.uuid4().hex}"],), kwargs={"timeout": 2}
    )
    t.start()
    try:
        deadline = time.monotonic() + 5
        while _get(source, "loadlab_redis_blocked_clients") != before + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _get(source, "loadlab_redis_blocked_clients") == before + 1
    finally:
        t.join()
        blocker.close()


@pytest.mark.server
def test_real_output_passes_promtool(source) -> None:
    assert promtool_check(exposition(registry_of(RedisCollector(source)))) == ""


@pytest.mark.server
def test_stopped_server_is_up_0_others_intact_logged_once(redis_server, source, caplog) -> None:
    registry = registry_of(LabExporter([RedisCollector(source), HostCollector()]))
    assert registry.get_sample_value("loadlab_redis_up") == 1
    redis_server.stop()
    try:
        with caplog.at_level(logging.INFO, logger="loadlab.exporter"):
            for _ in range(3):
                assert registry.get_sample_value("loadlab_redis_up") == 0
                assert registry.get_sample_value("loadlab_redis_maxclients") is None
                assert registry.get_sample_value("loadlab_host_up") == 1
        assert len([r for r in caplog.records if "redis: source down" in r.getMessage()]) == 1
    finally:
        redis_server.start()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="loadlab.exporter"):
        assert registry.get_sample_value("loadlab_redis_up") == 1
    assert [r.getMessage() for r in caplog.records] == ["redis: source recovered"]


def test_recorded_info_golden_output() -> None:
    """INFO recorded from a redis-server pushed past maxclients (3) and maxmemory (2 MB) with allkeys-lru."""
    text = (GOLDEN / "redis_info.txt").read_text()
    registry = registry_of(RedisCollector(lambda: text))
    out = exposition(registry)
    assert_golden(out, "redis.prom")
    assert registry.get_sample_value("loadlab_redis_rejected_connections_total") == 22
    assert registry.get_sample_value("loadlab_redis_evicted_keys_total") == 14680
    assert registry.get_sample_value("loadlab_redis_maxclients") == 3
    assert promtool_check(out) == ""
