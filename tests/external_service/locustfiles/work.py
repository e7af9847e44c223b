"""Load for tests/external_service/service.py: every user asks for /work as fast as it is answered."""

from __future__ import annotations

from locust import FastHttpUser, constant, task


class WorkUser(FastHttpUser):
    """A closed-loop user with no think time: the service's one core is what gives out."""

    wait_time = constant(0)

    @task
    def work(self) -> None:
        self.client.get("/work", name="/work")
