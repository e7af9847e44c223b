"""Shared fixtures: real servers on loopback (tests/servers.py) and the whole lab (tests/lab_fixture.py)."""

pytest_plugins = ["tests.servers", "tests.lab_fixture"]
