"""The remote-access layer against a real sshd on loopback: commands, files, forwards, unreachable hosts."""

from __future__ import annotations

import http.server
import math
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from loadlab.errors import LabError
from loadlab.lab import Host
from loadlab.remote import HostUnreachable, Remote
from loadlab.sweep.locust_driver import LocustWeb
from tests import ssh_server
from tests.servers import free_port
from tests.ssh_server import SshServer

sshd = ssh_server.sshd  # the fixture


def _host(server: SshServer, name: str = "box", **extra: object) -> Host:
    vars_ = {
        "ansible_host": server.host,
        "ansible_port": server.port,
        "ansible_user": server.user,
        "ansible_ssh_private_key_file": str(server.key),
        "lab_address": "127.0.0.1",
        **extra,
    }
    return Host(name, "127.0.0.1", frozenset({"app"}), vars_)


@pytest.fixture
def remote(sshd: SshServer) -> Iterator[Remote]:
    r = Remote(_host(sshd))
    yield r
    r.close()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)  # quick shutdown()
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.server
def test_a_command_runs_over_ssh_with_its_output_and_exit_code(remote: Remote) -> None:
    result = remote.run("echo out; echo err >&2; exit 3")
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.exit_code == 3 and not result.ok
    assert remote.connection().is_connected  # over SSH, not run locally


@pytest.mark.server
def test_a_slow_command_ends_at_its_timeout(remote: Remote) -> None:
    result = remote.run("sleep 30", timeout=1)
    assert not result.ok
    assert "timed out" in result.stderr


@pytest.mark.server
def test_files_are_read_and_fetched(remote: Remote, tmp_path: Path) -> None:
    text = tmp_path / "conf.txt"
    text.write_text("maxclients 100\n")
    assert remote.read_file(str(text)) == "maxclients 100\n"
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 10)
    fetched = remote.fetch(str(blob), tmp_path / "out" / "blob.bin")
    assert fetched.read_bytes() == blob.read_bytes()
    with pytest.raises(FileNotFoundError, match="box:.*missing.txt"):
        remote.read_file(str(tmp_path / "missing.txt"))


@pytest.mark.server
def test_a_loopback_service_is_reached_through_an_ssh_forward(remote: Remote, http_server: int) -> None:
    with remote.reach("127.0.0.1", http_server) as endpoint:
        assert endpoint.forwarded and endpoint.port != http_server
        with httpx.Client(base_url=endpoint.url, trust_env=False) as client:
            assert client.get("/one").text == "hello /one"
            assert client.get("/two").text == "hello /two"
    refused = pytest.raises(
        ConnectionRefusedError, match="nothing accepts connections at 127.0.0.1:.* on box"
    )
    with refused, remote.reach("127.0.0.1", free_port()):
        pass


@pytest.mark.server
def test_a_forward_outlives_a_refused_connection(remote: Remote) -> None:
    port = free_port()
    forward = remote.forward("127.0.0.1", port)
    try:
        with pytest.raises(httpx.HTTPError):  # nothing listens there yet
            httpx.get(f"http://127.0.0.1:{forward.port}/early", timeout=5, trust_env=False)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Hello)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            answer = httpx.get(f"http://127.0.0.1:{forward.port}/late", timeout=5, trust_env=False)
            assert answer.text == "hello /late"
        finally:
            server.shutdown()
            server.server_close()
    finally:
        forward.close()


def _sshd_sessions(server: SshServer) -> list[psutil.Process]:
    """The sshd processes serving connections (the children of the listening one)."""
    pid = int((server.root / "sshd.pid").read_text())
    return psutil.Process(pid).children(recursive=False)


class _Stats(http.server.BaseHTTPRequestHandler):
    """A Locust master's /stats/requests, as far as LocustWeb.stats() reads it."""

    protocol_version = "HTTP/1.1"  # keep-alive: the client's pooled connection dies with the SSH session

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b'{"state": "running", "user_count": 4}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.server
def test_a_forward_and_the_locust_client_outlive_a_dropped_ssh_connection(
    remote: Remote, sshd: SshServer
) -> None:
    """The sshd session serving the controller is killed, as a cut link or a restarted sshd ends it: the
    client asks again, the forward opens the SSH connection again, and the Remote counts the reconnect."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stats)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    forward = remote.forward("127.0.0.1", server.server_address[1])
    web = LocustWeb(f"http://127.0.0.1:{forward.port}", timeout=5, retry_for=20)
    try:
        assert web.stats()["user_count"] == 4
        sessions = _sshd_sessions(sshd)
        assert sessions, "no sshd session serves the forward"
        for session in sessions:
            session.kill()
        psutil.wait_procs(sessions, timeout=5)
        assert web.stats()["user_count"] == 4
        assert remote.reconnects == 1
        assert remote.run("echo still").stdout == "still\n"
        # Without time to ask again, the same cut is one clear error naming the master.
        for session in _sshd_sessions(sshd):
            session.kill()
        server.shutdown()
        with pytest.raises(LabError, match="Locust master at .* did not answer /stats/requests"):
            LocustWeb(f"http://127.0.0.1:{forward.port}", timeout=2).stats()
    finally:
        web.close()
        forward.close()
        server.server_close()


def _own_address() -> str:
    """A non-loopback IPv4 address of this machine (where a lab address would be), or skip."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    pytest.skip("this machine has no non-loopback IPv4 address")


@pytest.mark.server
def test_a_service_on_a_lab_address_this_machine_reaches_is_not_forwarded(remote: Remote) -> None:
    address = _own_address()
    server = http.server.ThreadingHTTPServer((address, 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with remote.reach(address, server.server_address[1]) as endpoint:
            assert not endpoint.forwarded and endpoint.host == address
            assert httpx.get(f"{endpoint.url}/d", trust_env=False).text == "hello /d"
    finally:
        server.shutdown()
        server.server_close()


def test_a_local_host_runs_commands_here_without_ssh(http_server: int) -> None:
    remote = Remote(Host("here", "127.0.0.1", frozenset(), {"ansible_connection": "local"}))
    assert remote.run("echo $((6 * 7))").stdout == "42\n"
    with remote.reach("127.0.0.1", http_server) as endpoint:
        assert not endpoint.forwarded and endpoint.port == http_server
    assert remote._conn is None


@pytest.mark.server
def test_a_relative_key_path_resolves_against_the_project_folder(sshd: SshServer, tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    shutil.copyfile(sshd.key, tmp_path / "secrets" / "key")
    (tmp_path / "secrets" / "key").chmod(0o600)
    remote = Remote(_host(sshd, ansible_ssh_private_key_file="secrets/key"), project=tmp_path)
    try:
        assert remote.run("echo ok").stdout == "ok\n"
    finally:
        remote.close()


@pytest.mark.server
def test_the_clock_offset_of_a_host_on_this_machine_is_near_zero(remote: Remote) -> None:
    reading = remote.clock_offset()
    assert math.isfinite(reading.offset) and reading.rtt > 0
    assert abs(reading.offset) < 1.0  # the same clock: seconds, not nanoseconds or a wrong sign


@pytest.mark.server
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("port", "not reachable over SSH: .*(refused|Unable to connect)"),
        ("key", "login refused"),
        ("missing_key", "private key .* does not exist"),
    ],
)
def test_an_unreachable_host_is_one_clear_error(
    sshd: SshServer, tmp_path: Path, change: str, reason: str
) -> None:
    extra: dict[str, object] = {}
    if change == "port":
        extra["ansible_port"] = free_port()
    elif change == "key":
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        extra["ansible_ssh_private_key_file"] = str(other)
    else:
        extra["ansible_ssh_private_key_file"] = str(tmp_path / "nope")
    remote = Remote(_host(sshd, name="ghost", **extra))
    with pytest.raises(HostUnreachable, match=f"host ghost .*{reason}") as info:
        remote.run("true")
    assert "\n" not in str(info.value)
