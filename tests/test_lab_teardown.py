"""`ansible-playbook playbooks/teardown.yml` leaves no lab process, keeps the data, and the lab comes back."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import httpx
import pytest

from tests.lab_fixture import lab_processes, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_teardown_stops_everything_and_the_lab_comes_back_with_its_data(lab):
    email = f"teardown-{uuid.uuid4().hex[:8]}@example.com"
    created = httpx.post(f"{lab.lab.nginx_url}/users", json={"name": "kept", "email": email}, timeout=5)
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]

    down = run_playbook("playbooks/teardown.yml")
    assert down.returncode == 0, down.tail()
    assert lab_processes() == []
    assert not Path("/run/loadlab/supervisord.pid").exists()
    assert [p for p in (8080, 8001, 5433, 6380, 8089, 9465, 9490) if _accepts(p)] == []
    assert Path("/var/lib/loadlab/postgres/PG_VERSION").is_file()  # data stays without -e wipe=true

    up = run_playbook("lab.yml")
    assert up.returncode == 0, up.tail()
    again = httpx.get(f"{lab.lab.nginx_url}/users/{user_id}", timeout=5)
    assert again.status_code == 200 and again.json()["email"] == email


def test_wipe_removes_the_labs_files_and_keeps_its_passwords(lab):
    """The session's last word on the one-host lab: it stays down (the tests after this file run without
    it). The next `ansible-playbook lab.yml` brings a fresh lab up on the kept passwords: the next session's
    bring-up (tests/lab_fixture.py) is that run, and test_lab_playbook.py checks its passwords."""
    down = run_playbook("playbooks/teardown.yml", "-e", "wipe=true")
    assert down.returncode == 0, down.tail()
    assert lab_processes() == []
    assert [
        p
        for p in ("/var/lib/loadlab", "/etc/loadlab", "/var/log/loadlab", "/run/loadlab")
        if Path(p).exists()
    ] == []
    assert (lab.lab.secrets_dir / "postgres_app").is_file()  # the controller's passwords stay
