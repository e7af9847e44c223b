"""Shared fixtures: real servers on loopback (tests/servers.py) and the whole lab (tests/lab_fixture.py).

The tiers, by marker (pyproject.toml lists them, README's Tests section says how to run each):
  fast       needs no server: given here to every test that is not `server`, `lab` or `multihost`
  server     starts real servers on loopback (PostgreSQL, Redis, nginx, Prometheus, sshd, Locust, the app,
             sweep targets, exporter processes) or loads this machine's cores; marked in the test modules,
             and given here to any test that uses a real-server fixture, so none slips into the fast tier
  lab        brings the whole lab up with ansible-playbook (and `multihost`: across test hosts over SSH)
"""

import pytest

pytest_plugins = ["tests.servers", "tests.lab_fixture"]

# Fixtures that start a real server: a test that uses one (directly or through another fixture) is `server`.
SERVER_FIXTURES = frozenset({"postgres_server", "redis_server", "nginx_stub", "sshd"})
SLOW_TIERS = ("server", "lab", "multihost")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the markers given here must count
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
        if not any(item.get_closest_marker(tier) for tier in SLOW_TIERS):
            item.add_marker(pytest.mark.fast)
