"""A real OpenSSH server on loopback for tests of the remote-access layer: its own host key, one
authorized key, a free port; stopped after the test module."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import free_port, require, terminate, wait_port

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshServer:
    """Where the test sshd listens and the key that logs in to it."""

    host: str
    port: int
    user: str
    key: Path
    root: Path

    def inventory_vars(self) -> str:
        """The Ansible connection variables (YAML flow mapping body) that reach this server."""
        return (
            f"ansible_host: {self.host}, ansible_port: {self.port}, ansible_user: {self.user}, "
            f"ansible_ssh_private_key_file: {self.key}"
        )


def _keygen(path: Path) -> None:
    keygen = require("ssh-keygen")
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "loadlab-test", "-f", str(path)], check=True
    )


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    """sshd -D on 127.0.0.1:<free port>, accepting one generated key for the current user."""
    require(SSHD)
    root = Path(tempfile.mkdtemp(prefix="loadlab-sshd-"))
    try:
        _keygen(root / "host_key")
        _keygen(root / "client_key")
        shutil.copyfile(root / "client_key.pub", root / "authorized_keys")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        port = free_port()
        config = root / "sshd_config"
        config.write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {root / 'host_key'}\n"
            f"PidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "AllowTcpForwarding yes\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel ERROR\n"
        )
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(root / "sshd.log").open("ab"),
            start_new_session=True,
        )
        try:
            wait_port(port)
            yield SshServer("127.0.0.1", port, getpass.getuser(), root / "client_key", root)
        finally:
            terminate(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
