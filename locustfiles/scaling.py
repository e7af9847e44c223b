"""The lab's default scenario: a mix of everyday users, read-heavy users and a few administrators.

    locust -f locustfiles/scaling.py --host http://127.0.0.1:8080                 # all three, by weight
    locust -f locustfiles/scaling.py --host http://127.0.0.1:8080 HighVolumeUser  # one class only

With -u 6 the weights give 3 ScalingSystemUser, 2 HighVolumeUser and 1 AdminUser.
"""

from __future__ import annotations

import random

from lab_base import MISSING_USER_ID, LabUser, think
from locust import task


class ScalingSystemUser(LabUser):
    """Everyday use: CRUD on the user's own records, health checks, and repeated reads the cache serves."""

    weight = 3
    wait_time = think(1, 3)

    def on_start(self) -> None:
        self.create_user()

    @task(3)
    def read(self) -> None:
        if (user_id := self.known_id()) is not None:
            self.read_user(user_id)

    @task(2)
    def read_twice(self) -> None:
        """The repeat is reported apart, so Locust's table shows what the cache saves."""
        if (user_id := self.known_id()) is not None:
            self.read_user(user_id)
            self.read_user(user_id, name="/users/{id} (repeat)")

    @task(1)
    def create(self) -> None:
        self.create_user()

    @task(1)
    def update(self) -> None:
        if (user_id := self.known_id()) is not None:
            self.update_user(user_id)

    @task(1)
    def delete(self) -> None:
        """Keeps at least one record, so the reads always have something to read."""
        if len(self.user_ids) > 1:
            self.delete_user(random.choice(self.user_ids))
        else:
            self.create_user()

    @task(1)
    def browse(self) -> None:
        self.list_users()

    @task(1)
    def check_health(self) -> None:
        self.health()

    @task(1)
    def read_missing(self) -> None:
        self.read_missing_user()


class HighVolumeUser(LabUser):
    """Rapid reads over a small hot set: mostly cache hits, the read path at its busiest."""

    weight = 2
    wait_time = think(0.1, 0.5)

    hot_set_size: int = 5
    """Records this user creates at start and then reads over and over."""

    def on_start(self) -> None:
        self.bulk_create(self.hot_set_size)

    @task(5)
    def read_hot(self) -> None:
        if (user_id := self.known_id()) is not None:
            self.read_user(user_id)

    @task(1)
    def browse(self) -> None:
        self.list_users()


class AdminUser(LabUser):
    """Administrative batches: bulk creates and bulk reads, heavier per request and less frequent."""

    weight = 1
    wait_time = think(2, 5)

    batch_size: int = 20
    """Users per bulk create, and at most this many ids per bulk read."""

    def on_start(self) -> None:
        self.bulk_create(self.batch_size)

    @task(1)
    def bulk_create_users(self) -> None:
        self.bulk_create(self.batch_size)

    @task(2)
    def bulk_read_users(self) -> None:
        """Known ids plus one that does not exist: the answer lists it under "missing", not as an error."""
        sample = random.sample(self.user_ids, min(self.batch_size, len(self.user_ids)))
        self.bulk_read([*sample, MISSING_USER_ID])

    @task(1)
    def check_health(self) -> None:
        self.health()
