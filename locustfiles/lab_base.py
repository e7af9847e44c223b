"""The lab's abstract Locust user: one HTTP session and one socket per simulated user, and the lab's defaults.

Scenario files (scaling.py, max_rps.py, simple.py) subclass `LabUser`; load shapes live in files of their
own (spike.py, steps.py) so that one can be picked by naming its file:

    locust -f locustfiles/scaling.py --host http://127.0.0.1:8080
    locust -f locustfiles/scaling.py,locustfiles/spike.py --headless      # the spike drives the user count
    locust -f locustfiles/scaling.py HighVolumeUser                        # one user class only

Locust runs the first shape class it finds, so never pass the whole directory (`-f locustfiles/`); in the web
UI, `--class-picker` lets you choose the user classes and the shape instead.

Why one user can never share another's connections (the 10-socket cap of a shared pool): Locust builds
`self.client` in `FastHttpUser.__init__`, once per user instance, with a connection pool of its own unless
the class sets `client_pool`. `LabUser` refuses any subclass that sets `client_pool`, and no helper here keeps
a session in a class attribute or a module global: every request goes through `self.client`. A user is one
greenlet that sends one request at a time, and `concurrency = 1` caps its pool at one connection, so N
running users hold exactly N established sockets (the app and nginx keep idle connections for 75 s, longer
than any think time here).
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Any

from locust import FastHttpUser, between
from locust.contrib.fasthttp import ResponseContextManager

import loadlab.exporters.locust  # noqa: F401  (registers the metrics plugin through Locust events)

DEFAULT_TARGET = "http://127.0.0.1:8080"
"""The lab's nginx on this machine, used when neither --host nor LOADLAB_TARGET is given."""

TARGET: str = os.environ.get("LOADLAB_TARGET", DEFAULT_TARGET)
"""Base URL of the stack under test; Locust's --host overrides it."""

THINK_TIME_SCALE: float = float(os.environ.get("LOADLAB_THINK_TIME_SCALE", "1"))
"""Multiplies every scenario's think time: 0.1 makes users ten times as busy, 0 removes waits."""

MISSING_USER_ID = 2**62
"""An id no identity sequence in the lab reaches, for reads that must answer 404."""


def think(low: float, high: float):
    """A `between` wait scaled by THINK_TIME_SCALE, so one knob changes every scenario's pace."""
    return between(low * THINK_TIME_SCALE, high * THINK_TIME_SCALE)


def expect(response: ResponseContextManager, *statuses: int) -> bool:
    """Mark the request a success only on an expected status, so an expected 404 is not a failure."""
    if response.status_code in statuses:
        response.success()
        return True
    detail = (response.text or "")[:200] if response.status_code else str(response.error)
    response.failure(f"expected {'/'.join(map(str, statuses))}, got {response.status_code}: {detail}")
    return False


class LabUser(FastHttpUser):
    """Owns the per-user session and the ids this user created; scenarios are tasks over these helpers."""

    abstract = True
    host = TARGET

    concurrency: int = 1
    """Connections in this user's own pool: a user sends one request at a time, so one socket per user."""

    connection_timeout: float = 10.0
    """Seconds to establish a connection before the request counts as failed."""

    network_timeout: float = 30.0
    """Seconds to wait for a response: longer than the app's pool timeout, so saturation shows as 503s."""

    max_known_ids: int = 100
    """Ids of created users this user remembers for later reads, updates and deletes."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.client_pool is not None:
            raise TypeError(
                f"{cls.__name__} sets client_pool: users would share sockets; each LabUser owns its own pool"
            )

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.user_ids: list[int] = []

    def on_stop(self) -> None:
        """Close this user's connection as it stops, so a stopped run leaves no socket open toward the target.

        Without it the socket lingers until the server's keep-alive timeout, and socket counts taken after a
        step still show users that are gone.
        """
        self.client.client.clientpool.close()

    def remember(self, user_id: int) -> None:
        """Keep an id for later requests, forgetting the oldest beyond max_known_ids."""
        self.user_ids.append(user_id)
        if len(self.user_ids) > self.max_known_ids:
            del self.user_ids[0]

    def known_id(self) -> int | None:
        """An id this user created and has not deleted, creating one if it has none."""
        if not self.user_ids:
            self.create_user()
        return random.choice(self.user_ids) if self.user_ids else None

    @staticmethod
    def new_user_body() -> dict[str, str]:
        tag = uuid.uuid4().hex[:12]
        return {"name": f"load user {tag}", "email": f"{tag}@loadlab.test"}

    def create_user(self) -> int | None:
        with self.client.post("/users", json=self.new_user_body(), name="/users", catch_response=True) as r:
            if not expect(r, 201):
                return None
            user_id = r.json()["id"]
        self.remember(user_id)
        return user_id

    def read_user(self, user_id: int, name: str = "/users/{id}") -> dict | None:
        """A user this user created must be there: 404 is a failure here."""
        with self.client.get(f"/users/{user_id}", name=name, catch_response=True) as r:
            return r.json() if expect(r, 200) else None

    def read_missing_user(self) -> None:
        """The 404 path: expected, so counted as a success; a 200 would be the failure."""
        with self.client.get(
            f"/users/{MISSING_USER_ID}", name="/users/{id} (missing)", catch_response=True
        ) as r:
            expect(r, 404)

    def update_user(self, user_id: int) -> None:
        body = {"name": f"renamed {uuid.uuid4().hex[:8]}"}
        with self.client.put(f"/users/{user_id}", json=body, name="/users/{id}", catch_response=True) as r:
            expect(r, 200)

    def delete_user(self, user_id: int) -> None:
        self.user_ids.remove(user_id)
        with self.client.delete(f"/users/{user_id}", name="/users/{id}", catch_response=True) as r:
            expect(r, 204)

    def list_users(self, limit: int = 20) -> None:
        offset = random.randrange(0, 200, limit)
        path = f"/users?limit={limit}&offset={offset}"
        with self.client.get(path, name="/users", catch_response=True) as r:
            expect(r, 200)

    def bulk_create(self, count: int) -> list[int]:
        body = {"users": [self.new_user_body() for _ in range(count)]}
        with self.client.post("/users/bulk", json=body, name="/users/bulk", catch_response=True) as r:
            if not expect(r, 201):
                return []
            ids = [user["id"] for user in r.json()]
        for user_id in ids:
            self.remember(user_id)
        return ids

    def bulk_read(self, ids: list[int]) -> None:
        query = ",".join(map(str, ids))
        with self.client.get(f"/users/bulk?ids={query}", name="/users/bulk", catch_response=True) as r:
            expect(r, 200)

    def health(self) -> None:
        with self.client.get("/health", name="/health", catch_response=True) as r:
            expect(r, 200)
