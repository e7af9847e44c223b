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


class PoolHoldUser(LabUser):
    """Every request holds one of the app's DB pool connections for POOL_HOLD_MS."""

    wait_time = constant(0)

    @task
    def hold(self) -> None:
        with self.client.get(f"/db/sleep?ms={POOL_HOLD_MS}", name="/db/sleep", catch_response=True) as r:
            expect(r, 200)


class CpuUser(LabUser):
    """Every request burns CPU_MS of the instance's one core."""

    wait_time = constant(0)

    @task
    def burn(self) -> None:
        with self.client.get(f"/cpu?ms={CPU_MS}", name="/cpu", catch_response=True) as r:
            expect(r, 200)


class LbPingUser(LabUser):
    """nginx answers by itself: the Locust worker, not the stack, is the slowest part."""

    wait_time = constant(0)

    @task
    def ping(self) -> None:
        with self.client.get("/lb-ping", name="/lb-ping", catch_response=True) as r:
            expect(r, 200)


class SteadyDbUser(LabUser):
    """A light, steady load that needs PostgreSQL on every request: when it stops, requests fail."""

    wait_time = constant(0.05)

    @task
    def query(self) -> None:
        with self.client.get("/db/sleep?ms=5", name="/db/sleep", catch_response=True) as r:
            expect(r, 200)


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
