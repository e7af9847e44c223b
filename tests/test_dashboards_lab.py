"""Every dashboard panel has data in the real lab (`ansible-playbook lab.yml`) after a short swarm.

The lab's Prometheus scrapes every 5 s, so the swarm runs long enough for $__rate_interval (20 s) to
fill. The load is small: 4 users through the lab's nginx for about 40 s, from the lab's own Locust master.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from PIL import Image

from loadlab.dashboards import DASHBOARDS, load
from loadlab.dashboards.render import (
    SERIES_KEY,
    builtin_variables,
    dashboard_variables,
    render_panels,
    substitute,
)
from loadlab.sweep.lab_view import view_of

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

SWARM_SECONDS = 30


def _leave_time_wait(host: str, port: int) -> None:
    """TIME_WAIT at both ends of the entry port, so the per-state socket panels have something to show."""
    for _ in range(3):
        httpx.get(f"http://{host}:{port}/", headers={"Connection": "close"}, timeout=5)
        with socket.create_connection((host, port), timeout=5):
            pass


@pytest.fixture(scope="module")
def swarm(lab):
    """A short swarm from the lab's Locust master; yields (prometheus_url, start, end, scrape, variables)."""
    view = view_of(lab.lab)
    assert view.prometheus_url and view.locust_web_url and view.nginx_url
    host, port = view.nginx[0]
    start = time.time()
    response = httpx.post(
        f"{view.locust_web_url}/swarm",
        data={
            "user_count": 4,
            "spawn_rate": 4,
            "host": view.nginx_url,
            "user_classes": view.default_user_classes,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    try:
        _leave_time_wait(host, port)
        time.sleep(SWARM_SECONDS)
    finally:
        httpx.post(f"{view.locust_web_url}/stop", timeout=10)
    end = time.time()
    time.sleep(2 * view.scrape_interval)  # the last window's samples reach Prometheus
    return view.prometheus_url, start, end, view.scrape_interval, {"port": str(port)}


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_every_panel_query_returns_data_in_the_lab(swarm, name):
    prometheus_url, start, end, scrape, chosen = swarm
    model = load(name)
    empty = []
    for panel in (p for p in model["panels"] if p["type"] != "row"):
        variables = {**dashboard_variables(model, chosen), **builtin_variables(end - start, scrape, scrape)}
        for target in panel["targets"]:
            query = substitute(target["expr"], variables)
            if panel["type"] == "stat":
                params = {"query": query, "time": end}
                response = httpx.get(f"{prometheus_url}/api/v1/query", params=params, timeout=30)
            else:
                params = {"query": query, "start": start, "end": end, "step": scrape}
                response = httpx.get(f"{prometheus_url}/api/v1/query_range", params=params, timeout=30)
            assert response.status_code == 200, f"{query}\n{response.text}"
            if not response.json()["data"]["result"]:
                empty.append(f"{panel['title']}: {query}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_every_panel_renders_with_data_from_the_lab(swarm, name, tmp_path):
    prometheus_url, start, end, scrape, chosen = swarm
    paths = render_panels(
        prometheus_url, start, end, tmp_path, dashboard=name, variables=chosen, scrape_interval=scrape
    )
    empty = []
    for path in paths:
        with Image.open(path) as image:
            if int(image.text[SERIES_KEY]) == 0:
                empty.append(path.name)
    assert not empty, f"rendered without data: {empty}"
