"""The controller's one way to a lab host at runtime: commands, files and services, over SSH with Fabric.

Ansible provisions the hosts; `loadlab status`, `loadlab collect` and the sweep reach them through this
module. A host is reached as Ansible would reach it from the project folder: `ansible_host` (else its name),
`ansible_port`, `ansible_user`, `ansible_ssh_private_key_file` (relative to the project folder), host keys
not checked (ansible.cfg: host_key_checking = false), and `sudo -n` where `ansible_become` asks for root.
A host with `ansible_connection: local` is this machine: its commands run here, without SSH.

Nothing here ever prompts: a host that does not answer, refuses the key or drops the connection is a
`HostUnreachable` with one line saying which host and why.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import select
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadlab.errors import LabError
from loadlab.lab import Host, Lab, project_dir

log = logging.getLogger(__name__)
# paramiko logs a refused forward as an ERROR; the command that asked reports it in its own words.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection and log in; a host slower than this is unreachable."""
COMMAND_TIMEOUT = 30.0
"""Seconds one remote command may take unless the caller says otherwise."""
TIMED_OUT = 124
"""Exit code of a command that ran out of time (as `timeout(1)` reports it)."""


class HostUnreachable(LabError):
    """A lab host SSH cannot reach or log in to: one line naming the host and the reason."""


@dataclass(frozen=True)
class Result:
    """What a command printed and how it ended."""

    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == 0

    def reason(self) -> str:
        """The line that says why a command failed (its last line of stderr, else of stdout)."""
        for text in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                return lines[-1]
        return f"exit {self.exit_code}"


@dataclass(frozen=True)
class Endpoint:
    """Where the controller connects to reach one service of a host."""

    host: str
    port: int
    forwarded: bool  # through an SSH forward to the service's host

    @property
    def address(self) -> str:
        """HOST:PORT to connect to."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """http://HOST:PORT for HTTP services."""
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class ClockReading:
    """A host's clock against this machine's: seconds ahead (negative: behind), and the read's round trip."""

    offset: float
    rtt: float


def is_loopback(address: str) -> bool:
    """True for an address only the host itself can reach (127.0.0.0/8, ::1, localhost)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def is_this_machine(host: Host) -> bool:
    """This machine: `ansible_connection: local`, or no `ansible_host` and a lab address of this machine
    (the inventory playbooks/sweep.yml writes for a sweep on the loadgen host)."""
    if host.local:
        return True
    if host.var("ansible_host"):
        return False
    from loadlab.sweep.resources import is_local_address

    return is_local_address(host.address)


class Remote:
    """One lab host as the controller reaches it: run, read, fetch, and reach its services."""

    def __init__(self, host: Host, project: Path | None = None, connect_timeout: float = CONNECT_TIMEOUT):
        self.host = host
        self.project = project or Path.cwd()
        self.connect_timeout = connect_timeout
        vars_ = host.vars
        self.hostname = str(host.var("ansible_host") or host.name)
        self.port = int(host.var("ansible_port") or host.var("ansible_ssh_port") or 22)
        user = host.var("ansible_user") or host.var("ansible_ssh_user")
        self.user: str | None = str(user) if user else None
        key = host.var("ansible_ssh_private_key_file") or host.var("ansible_private_key_file")
        self.key: Path | None = None
        if key:
            path = Path(str(key)).expanduser()
            self.key = path if path.is_absolute() else self.project / path
        self.sudo = _truthy(vars_.get("ansible_become")) and self.user not in (None, "root")
        self._local = is_this_machine(host)
        self._conn: Any = None
        self._lock = threading.Lock()
        self._direct: dict[tuple[str, int], bool] = {}
        self._forwards: list[_Forward] = []
        self.reconnects = 0  # times an open SSH connection was found dropped and opened again

    @property
    def local(self) -> bool:
        """This machine: no SSH."""
        return self._local

    @property
    def target(self) -> str:
        """user@host:port, as messages name it."""
        return f"{self.user + '@' if self.user else ''}{self.hostname}:{self.port}"

    def _unreachable(self, reason: str) -> HostUnreachable:
        return HostUnreachable(f"host {self.host.name} ({self.target}) is not reachable over SSH: {reason}")

    def connection(self) -> Any:
        """The open Fabric connection (opened on first use, once, whichever thread asks first; opened
        again, and counted in `reconnects`, when it dropped: a cut link, a restarted sshd)."""
        import paramiko
        from fabric import Config, Connection

        with self._lock:
            dropped = self._conn is not None
            if self._conn is not None:
                if self._conn.is_connected:
                    return self._conn
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
            if self.key is not None and not self.key.is_file():
                raise self._unreachable(f"private key {self.key} does not exist")
            connect_kwargs: dict[str, Any] = {
                "banner_timeout": self.connect_timeout,
                "auth_timeout": self.connect_timeout,
                "channel_timeout": self.connect_timeout,
            }
            if self.key is not None:
                connect_kwargs["key_filename"] = [str(self.key)]
            config = Config(overrides={"run": {"hide": True, "warn": True, "in_stream": False}})
            conn = Connection(
                self.hostname,
                user=self.user,
                port=self.port,
                config=config,
                connect_timeout=max(1, round(self.connect_timeout)),
                connect_kwargs=connect_kwargs,
            )
            try:
                conn.open()
            except paramiko.AuthenticationException as exc:
                raise self._unreachable(f"login refused ({exc})") from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise self._unreachable(_reason(exc)) from None
            transport = conn.transport
            if transport is not None:
                transport.set_keepalive(15)
            self._conn = conn
            if dropped:
                self.reconnects += 1
                log.warning("the SSH connection to %s dropped and was opened again", self.host.name)
            return conn

    # -- commands ------------------------------------------------------------------------------------

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> Result:
        """Run a shell command on the host; a non-zero exit is a Result, a lost host is HostUnreachable."""
        if self.local:
            try:
                out = subprocess.run(
                    ["/bin/sh", "-c", command],
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return Result("", f"timed out after {timeout:g}s: {command}", TIMED_OUT)
            return Result(out.stdout, out.stderr, out.returncode)
        import paramiko
        from invoke.exceptions import CommandTimedOut, ThreadException

        if self.sudo:
            command = f"sudo -n -- sh -c {shlex.quote(command)}"
        conn = self.connection()
        started = time.monotonic()
        try:
            out = conn.run(command, timeout=timeout)
        except CommandTimedOut:
            return Result("", f"timed out after {timeout:g}s: {command}", TIMED_OUT)
        except (OSError, EOFError, paramiko.SSHException, ThreadException) as exc:
            self._drop()
            raise self._unreachable(_reason(exc)) from None
        if out.exited == -1 and time.monotonic() - started >= timeout:
            # invoke may close the channel at the timeout without raising CommandTimedOut (a race)
            return Result(out.stdout, f"timed out after {timeout:g}s: {command}", TIMED_OUT)
        return Result(out.stdout, out.stderr, out.exited)

    def read_file(self, path: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """A text file of the host; FileNotFoundError when it is missing or unreadable there."""
        if self.local:
            try:
                return Path(path).read_text(errors="replace")
            except OSError as exc:
                raise FileNotFoundError(f"{self.host.name}:{path}: {exc.strerror or exc}") from None
        out = self.run(f"cat -- {shlex.quote(path)}", timeout=timeout)
        if not out.ok:
            raise FileNotFoundError(f"{self.host.name}:{path}: {out.reason()}")
        return out.stdout

    def fetch(self, path: str, dest: Path) -> Path:
        """Copy a file of the host to `dest` on this machine, byte for byte."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.local:
            try:
                shutil.copyfile(path, dest)
            except OSError as exc:
                raise FileNotFoundError(f"{self.host.name}:{path}: {exc.strerror or exc}") from None
            return dest
        if self.sudo:  # sftp runs as the login user; the lab's files may be root's
            import base64

            out = self.run(f"base64 -w0 -- {shlex.quote(path)}")
            if not out.ok:
                raise FileNotFoundError(f"{self.host.name}:{path}: {out.reason()}")
            dest.write_bytes(base64.b64decode(out.stdout))
            return dest
        import paramiko

        conn = self.connection()
        try:
            conn.get(path, local=str(dest))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.host.name}:{path}: no such file") from None
        except PermissionError:
            raise FileNotFoundError(f"{self.host.name}:{path}: permission denied") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._drop()
            raise self._unreachable(_reason(exc)) from None
        return dest

    def clock_offset(self, samples: int = 5) -> ClockReading:
        """How far the host's clock is from this machine's: the fastest of a few reads on one open shell,
        whose midpoint is when the host read its clock (opening the session is not in the round trip)."""
        script = "while read -r _; do date +%s.%N; done"
        if self.local:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
            )
            assert proc.stdin is not None and proc.stdout is not None
            stdin, stdout = proc.stdin, proc.stdout

            def ask() -> str:
                stdin.write("\n")
                stdin.flush()
                return stdout.readline()

            try:
                return _fastest(ask, samples)
            finally:
                proc.kill()
                proc.wait()
        import paramiko

        try:
            channel = self.connection().transport.open_session(timeout=self.connect_timeout)
            channel.settimeout(10)
            channel.exec_command(script)
            replies = channel.makefile("r")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._unreachable(_reason(exc)) from None

        def ask_remote() -> str:
            channel.sendall(b"\n")
            return replies.readline()

        try:
            return _fastest(ask_remote, samples)
        except (OSError, EOFError, paramiko.SSHException, ValueError) as exc:
            raise self._unreachable(f"cannot read its clock: {_reason(exc)}") from None
        finally:
            channel.close()

    # -- services ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reach(self, address: str, port: int, from_host: bool = False) -> Iterator[Endpoint]:
        """A service listening on `address:port` of the host: directly where this machine can connect
        to it, otherwise through an SSH forward (always for a service bound to the host's loopback, and
        with `from_host` for one that admits only lab hosts, as PostgreSQL's hba does)."""
        direct = not from_host and not is_loopback(address) and self._directly_reachable(address, port)
        if self.local or direct:
            yield Endpoint(address, port, forwarded=False)
            return
        forward = self.forward(address, port)
        try:
            forward.probe()
            yield Endpoint("127.0.0.1", forward.port, forwarded=True)
        finally:
            forward.close()

    def forward(self, address: str, port: int) -> _Forward:
        """A loopback port of this machine that reaches `address:port` as seen from the host (close it)."""
        forward = _Forward(
            lambda: self.connection().transport, (address, port), self.host.name, self.connect_timeout
        )
        self._forwards.append(forward)
        return forward

    def _directly_reachable(self, address: str, port: int) -> bool:
        """True when a connection from here gets an answer (accepted or refused) from the host itself."""
        key = (address, port)
        if key not in self._direct:
            try:
                with socket.create_connection(key, timeout=min(2.0, self.connect_timeout)):
                    reached = True
            except ConnectionRefusedError:
                reached = True  # the host answered: the service is down, a forward would not help
            except OSError:
                reached = False
            self._direct[key] = reached
        return self._direct[key]

    # -- lifetime ------------------------------------------------------------------------------------

    def _drop(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None

    def close(self) -> None:
        """Close every forward and the SSH connection."""
        for forward in self._forwards:
            forward.close()
        self._forwards.clear()
        self._drop()


class RemoteHosts:
    """One Remote per host of a lab, opened on first use and closed together."""

    def __init__(self, lab: Lab, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.lab = lab
        self.project = project_dir(lab.inventory) or Path.cwd()
        self.connect_timeout = connect_timeout
        self._remotes: dict[str, Remote] = {}
        self._lock = threading.Lock()

    def __getitem__(self, host: Host | str) -> Remote:
        name = host if isinstance(host, str) else host.name
        with self._lock:
            if name not in self._remotes:
                self._remotes[name] = Remote(self.lab.hosts[name], self.project, self.connect_timeout)
            return self._remotes[name]

    def items(self) -> list[tuple[str, Remote]]:
        """The hosts opened so far and their Remotes."""
        with self._lock:
            return list(self._remotes.items())

    def close(self) -> None:
        """Close every connection this set opened."""
        for remote in self._remotes.values():
            remote.close()

    def __enter__(self) -> RemoteHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Forward:
    """A local port forward over a Fabric connection's transport (like `ssh -L 127.0.0.1:0:ADDR:PORT`).

    Fabric's own `Connection.forward_local` binds its port in a thread after returning, takes no port 0,
    and stops forwarding for good when one connection is refused; a sweep keeps its forward to the Locust
    master for its whole run, so this one binds before returning, survives a refused connection, and opens
    the host's SSH connection again (`transport()`, the Remote's) for the next connection after it dropped.
    """

    def __init__(
        self, transport: Callable[[], Any], target: tuple[str, int], host: str, timeout: float
    ) -> None:
        self._transport = transport
        self.transport = transport()
        self.target = target
        self.host = host
        self.timeout = timeout
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self._closed = threading.Event()
        self._pairs: list[tuple[socket.socket, Any]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"forward-{host}-{target[1]}", daemon=True)
        self._thread.start()

    def probe(self) -> None:
        """Fail like a direct connection would (refused, unreachable) when nothing answers at the target."""
        import paramiko

        address, port = self.target
        try:
            channel = self._open(("127.0.0.1", 0))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not self.transport.is_active():
                raise HostUnreachable(
                    f"host {self.host} dropped the SSH connection: {_reason(exc)}"
                ) from None
            # A refusal is a ChannelException; paramiko hands a concurrent open's refusal to one thread only
            # and a plain SSHException to the others, so either means the same while the transport lives.
            reason = exc.text if isinstance(exc, paramiko.ChannelException) else "connection refused"
            raise ConnectionRefusedError(
                f"nothing accepts connections at {address}:{port} on {self.host} ({reason})"
            ) from None
        channel.close()

    def _open(self, peer: tuple[str, int]) -> Any:
        """A channel to the target, over the live transport (the connection opened again if it dropped)."""
        if not self.transport.is_active():
            self.transport = self._transport()
        return self.transport.open_channel("direct-tcpip", self.target, peer, timeout=self.timeout)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, peer = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                channel = self._open(peer)
            except Exception as exc:  # noqa: BLE001 - refused or lost: this connection fails, the forward stays
                log.debug("forward to %s:%s on %s failed: %s", *self.target, self.host, exc)
                client.close()
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, channel))
            threading.Thread(target=self._pump, args=(client, channel), daemon=True).start()

    def _pump(self, client: socket.socket, channel: Any) -> None:
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select([client, channel], [], [], 0.5)
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        break
                    channel.sendall(data)
                if channel in readable:
                    data = channel.recv(65536)
                    if not data:
                        break
                    client.sendall(data)
        except (OSError, EOFError):
            pass
        finally:
            with contextlib.suppress(Exception):
                channel.close()
            with contextlib.suppress(OSError):
                client.close()
            with self._lock, contextlib.suppress(ValueError):
                self._pairs.remove((client, channel))

    def close(self) -> None:
        """Stop accepting and end every forwarded connection."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self._thread.join(timeout=2)
        with self._lock:
            pairs = list(self._pairs)
        for client, channel in pairs:
            with contextlib.suppress(Exception):
                channel.close()
            with contextlib.suppress(OSError):
                client.close()


def _fastest(ask: Callable[[], str], samples: int) -> ClockReading:
    """The reading with the shortest round trip: the least room for the host's read to be off-centre."""
    best: ClockReading | None = None
    for _ in range(samples):
        t0 = time.time()
        answer = ask()
        t1 = time.time()
        reading = ClockReading(offset=float(answer) - (t0 + t1) / 2, rtt=t1 - t0)
        if best is None or reading.rtt < best.rtt:
            best = reading
    assert best is not None
    return best


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _reason(exc: BaseException) -> str:
    """One line for a connection failure."""
    errors = getattr(exc, "errors", None)  # paramiko's NoValidConnectionsError: one error per address tried
    if isinstance(errors, dict) and errors:
        return _reason(next(iter(errors.values())))
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
        return exc.strerror or str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    # paramiko's NoValidConnectionsError lists every address tried; its first line says enough.
    return text or type(exc).__name__
