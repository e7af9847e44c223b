"""A locustfile that cannot be imported: Locust must fail to start and the sweep must say so."""

from locust import HttpUser, task

raise RuntimeError("this locustfile is broken on purpose")


class NeverUser(HttpUser):
    @task
    def index(self) -> None:
        self.client.get("/")
