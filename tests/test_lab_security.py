"""Security by default, on the lab `ansible-playbook lab.yml` brought up: every service the lab started
listens on loopback or the lab address only, and every password is generated, private and never committed.

(The Locust web UI listens on the master host's loopback only, so it needs no password: a sweep from
another host reaches it through SSH.)
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
SUPERVISORD = re.compile(r"supervisord .*/etc/loadlab/")


def _lab_pids() -> set[int]:
    """supervisord of the lab and every process under it."""
    pids: set[int] = set()
    for proc in psutil.process_iter(["cmdline"]):
        if SUPERVISORD.search(" ".join(proc.info["cmdline"] or [])):
            pids.add(proc.pid)
            pids.update(c.pid for c in proc.children(recursive=True))
    return pids


def _listeners() -> list[tuple[str, int, set[int]]]:
    """(address, port, pids) of every listening TCP socket on this machine (ss -ltnp)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        address, _, port = fields[3].rpartition(":")
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        found.append((address.strip("[]"), int(port), pids))
    return found


def test_every_lab_service_listens_on_loopback_or_the_lab_address_only(lab):
    lab_pids = _lab_pids()
    assert lab_pids, "no lab supervisord found: is the lab up?"
    allowed = {h.address for h in lab.lab.hosts.values()}
    ours = [(a, p) for a, p, pids in _listeners() if pids & lab_pids]
    wide = [(a, p) for a, p in ours if a not in allowed and not ipaddress.ip_address(a).is_loopback]
    assert not wide, f"lab services listening beyond loopback and the lab address: {wide}"
    # Not vacuous: the services users reach, and the ones only the lab uses, are among them.
    host = next(iter(lab.lab.hosts.values()))
    expected = {
        host.int_var("nginx_port"),
        host.int_var("postgres_port"),
        host.int_var("redis_port"),
        host.int_var("prometheus_port"),
        host.int_var("locust_web_port"),
        host.int_var("locust_master_port"),
        *host.app_ports(),
    }
    assert expected <= {p for _a, p in ours}, (sorted(expected), sorted(p for _a, p in ours))


def test_passwords_are_distinct_and_never_committed(lab):
    """(Their mode and length: test_lab_playbook.py.) Git ignores them and no tracked file holds one."""
    secrets = lab.lab.secrets_dir
    names = ("postgres_app", "postgres_monitor", "redis")
    values = {}
    for name in names:
        path = secrets / name
        values[name] = path.read_text().strip()
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
    assert len(set(values.values())) == len(names), "two services share one password"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        path = ROOT / rel
        if path.is_file() and path.stat().st_size < 2_000_000:
            text = path.read_bytes()
            leaked = [n for n, v in values.items() if v.encode() in text]
            assert not leaked, f"{rel} holds the generated password of {leaked}"


def test_the_data_stores_refuse_clients_without_the_generated_password(lab):
    host = next(iter(lab.lab.hosts.values()))
    address = host.address
    r = redis.Redis(host=address, port=host.int_var("redis_port"), socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        r.ping()
    r.close()
    good = redis.Redis(
        host=address, port=host.int_var("redis_port"), password=lab.lab.secret("redis"), socket_timeout=5
    )
    assert good.ping()
    good.close()
    dsn = f"host={address} port={host.int_var('postgres_port')} dbname=loadlab user=loadlab connect_timeout=5"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"{dsn} password=loadlab").close()
    psycopg.connect(f"{dsn} password={lab.lab.secret('postgres_app')}").close()
