"""Load shape: a steady baseline, a sudden spike, and back (1 -> 50 -> 1 users by default).

A shape file has no users of its own; give it after a scenario, comma-separated:

    locust -f locustfiles/scaling.py,locustfiles/spike.py --host http://127.0.0.1:8080 --headless

Locust runs the first shape class among all -f files, so each shape sits alone in its file and the file
named on the command line is the shape that runs (never pass the whole locustfiles/ directory). The shape
sets the user count and ends the run; -u, -r and -t are not used.
"""

from __future__ import annotations

from locust import LoadTestShape


class SpikeShape(LoadTestShape):
    """Baseline, spike, baseline: shows how fast the stack absorbs a burst and recovers from it."""

    base_users: int = 1
    """Users before and after the spike."""

    peak_users: int = 50
    """Users during the spike."""

    spawn_rate: float = 25.0
    """Users started (or stopped) per second on the way up and down: high, so the spike is sudden."""

    baseline_seconds: float = 30.0
    """Seconds at base_users before the spike."""

    spike_seconds: float = 60.0
    """Seconds at peak_users."""

    recovery_seconds: float = 30.0
    """Seconds back at base_users before the run ends."""

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        if elapsed < self.baseline_seconds:
            return self.base_users, self.spawn_rate
        if elapsed < self.baseline_seconds + self.spike_seconds:
            return self.peak_users, self.spawn_rate
        if elapsed < self.baseline_seconds + self.spike_seconds + self.recovery_seconds:
            return self.base_users, self.spawn_rate
        return None
