"""Load for ordersvc (tests/own_app): create orders, read them back, and some CPU work."""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task


class OrderUser(FastHttpUser):
    wait_time = between(0.01, 0.05)

    def on_start(self) -> None:
        self.ids: list[int] = []

    @task(2)
    def create(self) -> None:
        with self.client.post("/orders", json={"item": "widget", "qty": 2}, catch_response=True) as r:
            if r.status_code == 201:
                self.ids.append(r.json()["id"])
            else:
                r.failure(f"expected 201, got {r.status_code}: {r.text[:200]}")

    @task(5)
    def read(self) -> None:
        if self.ids:
            self.client.get(f"/orders/{random.choice(self.ids)}", name="/orders/{id}")

    @task(1)
    def work(self) -> None:
        self.client.get("/work?ms=5", name="/work")
