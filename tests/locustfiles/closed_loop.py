"""Users that keep exactly one request in flight each, no think time: a closed loop against GET /."""

from locust import FastHttpUser, constant, task


class ClosedLoopUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def index(self) -> None:
        self.client.get("/", name="/")
