"""The target service as users and the lab see it: a real process on real PostgreSQL and Redis."""

from __future__ import annotations

import threading
import time

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.app_instance import AppInstance, running_app, start_app, stop_app, wait_healthy
from tests.exporter_support import promtool_check

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def app(postgres_server, redis_server):
    with running_app(postgres_server, redis_server, LOADLAB_INSTANCE="app-under-test") as instance:
        yield instance


def _samples(app: AppInstance) -> dict[tuple[str, tuple], float]:
    """Every sample of GET /metrics, keyed by (name, sorted labels)."""
    text = app.client().get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_crud_round_trip(app):
    with app.client() as http:
        created = http.post("/users", json={"name": "Ada", "email": "ada@example.test"})
        assert created.status_code == 201
        user = created.json()
        assert user["name"] == "Ada" and user["email"] == "ada@example.test"
        user_id = user["id"]

        assert http.get(f"/users/{user_id}").json() == user

        updated = http.put(f"/users/{user_id}", json={"name": "Ada L."})
        assert updated.status_code == 200
        assert updated.json() == {**user, "name": "Ada L."}
        assert http.get(f"/users/{user_id}").json()["name"] == "Ada L."

        assert http.delete(f"/users/{user_id}").status_code == 204
        assert http.get(f"/users/{user_id}").status_code == 404
        assert http.delete(f"/users/{user_id}").status_code == 404
        assert http.put(f"/users/{user_id}", json={"name": "x"}).status_code == 404


def test_every_response_names_its_instance(app):
    with app.client() as http:
        for path in ("/health", "/users/999999999", "/no-such-path", "/metrics"):
            assert http.get(path).headers["x-instance"] == "app-under-test"


def test_cpu_work_holds_the_instances_core_for_the_asked_time(app):
    """GET /cpu?ms=N burns N ms of the instance's CPU; two requests at once take turns on its one core."""
    proc = psutil.Process(app.proc.pid)
    with app.client() as http:
        before = sum(proc.cpu_times()[:2])
        started = time.monotonic()
        threads = [
            threading.Thread(target=http.get, args=("/cpu",), kwargs={"params": {"ms": 300}})
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        used = sum(proc.cpu_times()[:2]) - before
        # /proc counts CPU in clock ticks (10 ms): allow one per request below the asked 600 ms.
        assert used >= 0.6 - 0.02, f"{used:.2f} s of CPU for two requests of 300 ms each"
        assert elapsed >= 0.6  # one core: the second request waited for the first
        assert http.get("/cpu", params={"ms": -1}).status_code == 422


def test_read_through_cache_miss_then_hit_and_invalidation(app):
    with app.client() as http:
        user_id = http.post("/users", json={"name": "Cached", "email": "c@example.test"}).json()["id"]
        assert http.get(f"/users/{user_id}").headers["x-cache"] == "miss"
        assert http.get(f"/users/{user_id}").headers["x-cache"] == "hit"

        http.put(f"/users/{user_id}", json={"email": "new@example.test"})
        after_update = http.get(f"/users/{user_id}")
        assert after_update.headers["x-cache"] == "miss"
        assert after_update.json()["email"] == "new@example.test"
        assert http.get(f"/users/{user_id}").headers["x-cache"] == "hit"

        http.delete(f"/users/{user_id}")
        assert http.get(f"/users/{user_id}").status_code == 404


def test_missing_user_is_404_and_bad_ids_are_rejected(app):
    with app.client() as http:
        missing = http.get(f"/users/{2**62}")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "user not found"}
        assert http.get("/users/0").status_code == 422
        assert http.get("/users/not-a-number").status_code == 422
        assert http.get("/users/bulk", params={"ids": "1,x"}).status_code == 422
        assert http.post("/users", json={"name": ""}).status_code == 422


def test_bulk_create_bulk_read_and_pages(app):
    with app.client() as http:
        batch = [{"name": f"bulk {i}", "email": f"b{i}@example.test"} for i in range(3)]
        created = http.post("/users/bulk", json={"users": batch})
        assert created.status_code == 201
        ids = [u["id"] for u in created.json()]
        assert [u["name"] for u in created.json()] == ["bulk 0", "bulk 1", "bulk 2"]

        missing_id = 2**62
        read = http.get("/users/bulk", params={"ids": ",".join(map(str, [*ids, missing_id]))}).json()
        assert [u["id"] for u in read["users"]] == ids
        assert read["missing"] == [missing_id]

        first_two = http.get("/users", params={"limit": 2}).json()
        next_page = http.get("/users", params={"limit": 2, "offset": 2}).json()
        assert len(first_two) == 2 and len(next_page) >= 1
        assert first_two[-1]["id"] < next_page[0]["id"]
        assert http.get("/users", params={"limit": 1000}).status_code == 422


def test_metrics_expose_the_contract_names(app):
    before = _samples(app)  # the instance is shared with the module's other tests: count from here
    with app.client() as http:
        user_id = http.post("/users", json={"name": "m", "email": "m@example.test"}).json()["id"]
        http.get(f"/users/{user_id}")
        http.get(f"/users/{user_id}")
    samples = _samples(app)

    def added(name: str, labels: tuple) -> float:
        return samples[(name, labels)] - before.get((name, labels), 0.0)

    names = {name for name, _ in samples}
    for name in (
        "loadlab_app_requests_total",
        "loadlab_app_request_duration_seconds_bucket",
        "loadlab_app_cache_requests_total",
        "loadlab_app_db_pool_connections",
        "loadlab_app_db_pool_size",
    ):
        assert name in names
    labels = (("handler", "/users/{user_id}"), ("method", "GET"), ("status", "200"))
    assert added("loadlab_app_requests_total", labels) == 2
    # the first read of the new user misses the cache and fills it, the second hits
    assert added("loadlab_app_cache_requests_total", (("result", "miss"),)) == 1
    assert added("loadlab_app_cache_requests_total", (("result", "hit"),)) == 1
    assert samples[("loadlab_app_db_pool_size", ())] == 5
    in_use = samples[("loadlab_app_db_pool_connections", (("state", "in_use"),))]
    idle = samples[("loadlab_app_db_pool_connections", (("state", "idle"),))]
    assert in_use + idle == 5


def test_metrics_pass_promtool(app):
    assert promtool_check(app.client().get("/metrics").text) == ""


def test_health_is_503_while_redis_is_down(app, redis_server):
    with app.client() as http:
        user_id = http.post("/users", json={"name": "r", "email": "r@example.test"}).json()["id"]
        assert http.get("/health").status_code == 200
        redis_server.stop()
        try:
            health = http.get("/health")
            assert health.status_code == 503
            assert health.json()["redis"].startswith("down") and health.json()["db"] == "ok"
            # A cached read cannot be answered honestly without the cache: a quick 503, not a hang.
            assert http.get(f"/users/{user_id}").status_code == 503
        finally:
            redis_server.start()
        wait_healthy(app)
        assert http.get(f"/users/{user_id}").status_code == 200


def test_exhausted_db_pool_answers_503_instead_of_queueing(postgres_server, redis_server):
    """Pool size 1: while one request holds the only connection, the next gives up with 503."""
    with running_app(
        postgres_server, redis_server, LOADLAB_DB_POOL_SIZE="1", LOADLAB_DB_POOL_TIMEOUT="0.5"
    ) as small:
        holder: dict = {}
        sleeper = threading.Thread(
            target=lambda: holder.update(response=small.client().get("/db/sleep", params={"ms": 5000}))
        )
        sleeper.start()
        try:
            while _samples(small)[("loadlab_app_db_pool_connections", (("state", "in_use"),))] < 1:
                time.sleep(0.05)
            with small.client() as http:
                starved = http.get("/users", params={"limit": 1})
                assert starved.status_code == 503
                assert "pool exhausted" in starved.json()["detail"]
        finally:
            sleeper.join()
        assert holder["response"].status_code == 200
        with small.client() as http:
            assert http.get("/users", params={"limit": 1}).status_code == 200
        samples = _samples(small)
        assert samples[("loadlab_app_db_pool_timeouts_total", ())] >= 1
        labels = (("handler", "/users"), ("method", "GET"), ("status", "503"))
        assert samples[("loadlab_app_requests_total", labels)] == 1


def test_instances_starting_together_share_one_schema(postgres_server, redis_server):
    """Three instances on a fresh database at once: the advisory lock lets every one come up."""
    postgres_server.psql("CREATE DATABASE loadlab_race OWNER loadlab")
    url = postgres_server.app_dsn.rsplit("/", 1)[0] + "/loadlab_race"
    apps = [start_app(postgres_server, redis_server, database_url=url) for _ in range(3)]
    try:
        for app in apps:
            wait_healthy(app)
        for app in apps:
            assert app.client().post("/users", json={"name": "n", "email": "e@x.test"}).status_code == 201
        assert postgres_server.psql("SELECT count(*) FROM users", dbname="loadlab_race") == "3"
    finally:
        for app in apps:
            stop_app(app)
        postgres_server.psql("DROP DATABASE loadlab_race WITH (FORCE)")
