"""A shared-session bug on purpose: every user reuses the first user's session, so one 10-socket pool caps
the run (users beyond 10 wait for a socket)."""

from locust import FastHttpUser, constant, task


class SharedPoolUser(FastHttpUser):
    wait_time = constant(0)
    concurrency = 10  # FastHttpSession's pool size, shared below by every user of the process
    _shared_client = None

    def on_start(self) -> None:
        cls = type(self)
        if cls._shared_client is None:
            cls._shared_client = self.client
        self.client = cls._shared_client

    @task
    def index(self) -> None:
        self.client.get("/", name="/")
