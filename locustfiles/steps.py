"""Load shape: add users in equal steps and hold each step (10, 20, ... 50 users by default).

A shape file has no users of its own; give it after a scenario, comma-separated:

    locust -f locustfiles/scaling.py,locustfiles/steps.py --host http://127.0.0.1:8080 --headless

Locust runs the first shape class among all -f files, so each shape sits alone in its file. For measured
steps with warm-up excluded, knee detection and a verdict, use `loadlab sweep`; this shape is the quick
look from the Locust UI.
"""

from __future__ import annotations

from locust import LoadTestShape


class StepShape(LoadTestShape):
    """Staircase to max_users, then stop: where latency starts to climb is where the stack saturates."""

    step_users: int = 10
    """Users added at each step."""

    step_seconds: float = 30.0
    """Seconds each step is held, ramp included."""

    max_users: int = 50
    """Users at the last step; the run ends after it has been held step_seconds."""

    spawn_rate: float = 10.0
    """Users started per second when a step begins."""

    def tick(self) -> tuple[int, float] | None:
        step = int(self.get_run_time() // self.step_seconds) + 1
        users = step * self.step_users
        if users > self.max_users:
            return None
        return users, self.spawn_rate
