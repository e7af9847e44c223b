"""A gentle smoke scenario: health checks and reads of one record, with human think times.

    locust -f locustfiles/simple.py --host http://127.0.0.1:8080 -u 5 -r 1 -t 60s --headless

Think times scale with LOADLAB_THINK_TIME_SCALE (see lab_base.py).
"""

from __future__ import annotations

from lab_base import LabUser, think
from locust import task


class SimpleUser(LabUser):
    """Creates one record at start, then alternates health checks and reads of it."""

    wait_time = think(1, 3)

    def on_start(self) -> None:
        self.create_user()

    @task
    def check_health(self) -> None:
        self.health()

    @task
    def read(self) -> None:
        if (user_id := self.known_id()) is not None:
            self.read_user(user_id)
