"""Users that provoke one known bottleneck each, for `loadlab calibrate` (one class per case).

    loadlab calibrate                     # runs each against the lab and checks the sweep names it

They are not scenarios: each hammers one path with no think time so that one part of the stack gives out.
"""

from __future__ import annotations

from lab_base import LabUser, expect
from locust import FastHttpUser, constant, task

POOL_HOLD_MS = 300
"""How long /db/sleep holds a DB pool connection: a few users per pool slot keep every pool full."""

CPU_MS = 20
"""CPU burnt per request by /cpu: back-to-back requests keep one app instance's core busy."""


class OnePathUser(LabUser):
    """Requests `path` back to back (after `wait_time`), each a success only when it answers 200."""

    abstract = True
    wait_time = constant(0)
    path = "/"
    request_name = "/"

    @task
    def request(self) -> None:
        with self.client.get(self.path, name=self.request_name, catch_response=True) as r:
            expect(r, 200)


class PoolHoldUser(OnePathUser):
    """Every request holds one of the app's DB pool connections for POOL_HOLD_MS."""

    path = f"/db/sleep?ms={POOL_HOLD_MS}"
    request_name = "/db/sleep"


class CpuUser(OnePathUser):
    """Every request burns CPU_MS of the instance's one core."""

    path = f"/cpu?ms={CPU_MS}"
    request_name = "/cpu"


class LbPingUser(OnePathUser):
    """nginx answers by itself: the Locust worker, not the stack, is the slowest part."""

    path = request_name = "/lb-ping"


class SteadyDbUser(OnePathUser):
    """A light, steady load that needs PostgreSQL on every request: when it stops, requests fail."""

    wait_time = constant(0.05)
    path = "/db/sleep?ms=5"
    request_name = "/db/sleep"


class SharedPoolUser(FastHttpUser):
    """The shared-session bug on purpose: every user of a Locust process reuses the first user's session,
    so one pool of 10 sockets carries them all (LabUser refuses this; here it is the point)."""

    wait_time = constant(0)
    concurrency = 10
    _shared_client = None

    def on_start(self) -> None:
        cls = type(self)
        if cls._shared_client is None:
            cls._shared_client = self.client
        self.client = cls._shared_client

    @task
    def hold(self) -> None:
        self.client.get("/db/sleep?ms=50", name="/db/sleep")
