"""Throughput ceiling: no think time, cached single-user reads only.

    locust -f locustfiles/max_rps.py --host http://127.0.0.1:8080 -u 50 -r 10

Each user still holds one socket; the request rate is limited only by round trips, the target and the
generator's CPU (watch loadgen CPU: one Locust process saturates one core).
"""

from __future__ import annotations

from lab_base import LabUser
from locust import constant, task


class MaxRpsUser(LabUser):
    """Reads its own hot set back to back, so nearly every request is a Redis hit."""

    wait_time = constant(0)

    hot_set_size: int = 10
    """Records created at start and read in a loop."""

    def on_start(self) -> None:
        self.bulk_create(self.hot_set_size)

    @task
    def read_hot(self) -> None:
        if (user_id := self.known_id()) is not None:
            self.read_user(user_id)
