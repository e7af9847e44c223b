"""TCP sockets per port, state and role, read from the kernel through netlink sock_diag (inet_diag).

One dump returns every TCP socket, IPv4 and IPv6 (listening, connected, request and time-wait). Replies are
parsed with numpy: each message starts with a netlink header carrying the request's sequence number and our
port id, so the message offsets come from one vectorised scan, checked by chaining their lengths, instead
of a walk over tens of thousands of messages in Python. The kernel adds attributes to full sockets and not
to time-wait ones, so messages do not all have one size; the scan does not care.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Kernel TCP states (include/net/tcp_states.h), named as in the metric contract.
STATES: dict[int, str] = {
    1: "established",
    2: "syn_sent",
    3: "syn_recv",
    4: "fin_wait1",
    5: "fin_wait2",
    6: "time_wait",
    7: "close",
    8: "close_wait",
    9: "last_ack",
    10: "listen",
    11: "closing",
}
TCP_LISTEN = 10
TCP_TIME_WAIT = 6
TCP_NEW_SYN_RECV = 12  # request sockets; the kernel reports them as syn_recv
ROLES = ("server", "client")
OTHER = "other"

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
TCPDIAG_GETSOCK = 18  # the pre-sock_diag request: dumps both address families in one walk
ALL_STATES = 0xFFFFFFFF
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP = 0x300
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ_V2 = struct.Struct("=BBBBI48x")  # inet_diag_req_v2: family, protocol, ext, pad, states, zeroed sockid
_REQ_COMPAT = struct.Struct("=BBBB48xII")  # inet_diag_req: family, src_len, dst_len, ext, sockid, states, dbs
_DONE_LEN = 20  # header + int error
_RECV_CHUNK = 64 * 1024  # the kernel fills at most 32 KiB per dump read; keep twice that free
# One reply: nlmsghdr (4 words), then inet_diag_msg: family/state/timer/retrans (word 4), sport/dport
# (word 5), addresses, interface, cookie, expires, queues, uid, inode: 72 bytes, then attributes.
_WORD_HEAD, _WORD_PORTS = 4, 5
_ROW_WORDS = 6  # the words read per message
_MSG_LEN = 16 + 72


@dataclass(frozen=True)
class SocketTable:
    """Every TCP socket as parallel arrays: cheap to count many ways, nothing per socket in Python."""

    family: np.ndarray  # uint8: AF_INET or AF_INET6
    state: np.ndarray  # uint8: kernel TCP state
    sport: np.ndarray  # int32: local port
    dport: np.ndarray  # int32: remote port

    @classmethod
    def empty(cls) -> SocketTable:
        """A table with no sockets."""
        z8, z32 = np.zeros(0, np.uint8), np.zeros(0, np.int32)
        return cls(z8, z8, z32, z32)

    @classmethod
    def concat(cls, tables: Iterable[SocketTable]) -> SocketTable:
        """One table from several dumps (one per address family)."""
        tables = list(tables)
        if not tables:
            return cls.empty()
        return cls(
            *(np.concatenate([getattr(t, f) for t in tables]) for f in ("family", "state", "sport", "dport"))
        )

    def __len__(self) -> int:
        return len(self.state)


class InetDiag:
    """A reusable netlink sock_diag client; keeps one receive buffer so repeated dumps allocate nothing big.

    It asks with the kernel's older TCPDIAG_GETSOCK request where it can, because that one dump covers IPv4
    and IPv6 in a single walk of the socket tables; a kernel without it gets one SOCK_DIAG_BY_FAMILY dump
    per family (each of which walks every socket again).
    """

    def __init__(self, compat: bool | None = None, initial_buffer: int = 1 << 20) -> None:
        self._buf = bytearray(initial_buffer)
        self._compat = compat  # does the kernel answer TCPDIAG_GETSOCK? None: learnt on first use

    def dump(self) -> SocketTable:
        """Every TCP socket, IPv4 and IPv6, in every state."""
        with socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
        ) as sock:
            sock.bind((0, 0))
            portid = sock.getsockname()[0]
            if self._compat is not False:
                try:
                    table = self._dump(
                        sock, portid, TCPDIAG_GETSOCK, _REQ_COMPAT.pack(0, 0, 0, 0, ALL_STATES, 0)
                    )
                except OSError:
                    if self._compat:
                        raise
                    self._compat = False
                else:
                    self._compat = True
                    return table
            return SocketTable.concat(
                self._dump(
                    sock,
                    portid,
                    SOCK_DIAG_BY_FAMILY,
                    _REQ_V2.pack(family, socket.IPPROTO_TCP, 0, 0, ALL_STATES),
                )
                for family in (socket.AF_INET, socket.AF_INET6)
            )

    def _dump(self, sock: socket.socket, portid: int, msg_type: int, request: bytes) -> SocketTable:
        seq = secrets.randbits(31) | 1
        end, datagrams = self._receive(sock, msg_type, request, seq)
        with memoryview(self._buf) as whole, whole[:end] as replies:
            return parse_replies(replies, msg_type, seq, portid, datagrams)

    def _receive(
        self, sock: socket.socket, msg_type: int, request: bytes, seq: int
    ) -> tuple[int, list[tuple[int, int]]]:
        """Send one dump request and read the replies into the buffer until NLMSG_DONE."""
        sock.send(
            _NLMSGHDR.pack(_NLMSGHDR.size + len(request), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
            + request
        )
        off = 0
        datagrams: list[tuple[int, int]] = []
        while True:
            if len(self._buf) - off < _RECV_CHUNK:
                self._buf.extend(bytes(len(self._buf)))
            free = len(self._buf) - off
            with memoryview(self._buf) as whole, whole[off:] as view:
                n = sock.recv_into(view, free, socket.MSG_TRUNC)
            if n > free:
                raise OSError("netlink reply larger than the receive buffer")
            if n >= _NLMSGHDR.size and _NLMSGHDR.unpack_from(self._buf, off)[1] == NLMSG_ERROR:
                (errno,) = struct.unpack_from("=i", self._buf, off + _NLMSGHDR.size)
                raise OSError(-errno, f"sock_diag dump failed: {os.strerror(-errno)}")
            if n >= _DONE_LEN:
                length, mtype, _, mseq, _ = _NLMSGHDR.unpack_from(self._buf, off + n - _DONE_LEN)
                if length == _DONE_LEN and mtype == NLMSG_DONE and mseq == seq:
                    datagrams.append((off, n - _DONE_LEN))
                    return off + n - _DONE_LEN, datagrams
            datagrams.append((off, n))
            off += (n + 3) & ~3


def parse_replies(
    buf: memoryview | bytes,
    msg_type: int,
    seq: int,
    portid: int,
    datagrams: list[tuple[int, int]] | None = None,
) -> SocketTable:
    """Sockets from concatenated inet_diag replies (4-byte aligned datagrams, NLMSG_DONE stripped)."""
    nwords = len(buf) // 4
    if nwords == 0:
        return SocketTable.empty()
    words = np.frombuffer(buf, dtype=np.uint32, count=nwords)
    rows = _find_messages(words, msg_type, seq, portid)
    if rows is None:
        rows = _rows(words, _walk_messages(buf, msg_type, datagrams or [(0, len(buf))]) // 4)
    # Words 4 and 5 reread in memory order as big-endian: family, state, timer, retrans; then the two ports,
    # which are in network byte order.
    fixed = np.ascontiguousarray(rows[:, _WORD_HEAD : _WORD_PORTS + 1]).view(">u4")
    head, ports = fixed[:, 0].astype(np.uint32), fixed[:, 1].astype(np.uint32)
    state = ((head >> 16) & 0xFF).astype(np.uint8)
    state[state == TCP_NEW_SYN_RECV] = 3
    return SocketTable(
        family=(head >> 24).astype(np.uint8),
        state=state,
        sport=(ports >> 16).astype(np.int32),
        dport=(ports & 0xFFFF).astype(np.int32),
    )


def _rows(words: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The first _ROW_WORDS words of each message, copied in one gather of fixed-size records."""
    records = np.ndarray(
        shape=(len(words) - _ROW_WORDS + 1,),
        dtype=np.dtype((np.void, 4 * _ROW_WORDS)),
        buffer=words,
        strides=(4,),
    )
    return records[starts].view(np.uint32).reshape(-1, _ROW_WORDS)


def _find_messages(words: np.ndarray, msg_type: int, seq: int, portid: int) -> np.ndarray | None:
    """The first words of each message, by a vectorised header scan; None unless they chain end to end."""
    nwords = len(words)
    (type_flags,) = struct.unpack("=I", struct.pack("=HH", msg_type, NLM_F_MULTI))
    k = np.flatnonzero(words[2 : nwords - _ROW_WORDS + 3] == seq)  # the header's seq is its third word
    rows = _rows(words, k)
    keep = (rows[:, 1] == type_flags) & (rows[:, 3] == portid)
    if not keep.all():
        k, rows = k[keep], rows[keep]
    if len(k) == 0:
        return None
    lengths = rows[:, 0]
    following = k + ((lengths.astype(np.int64) + 3) >> 2)
    chained = k[0] == 0 and following[-1] == nwords and np.array_equal(k[1:], following[:-1])
    return rows if chained and lengths.min() >= _MSG_LEN else None


def _walk_messages(buf: memoryview | bytes, msg_type: int, datagrams: list[tuple[int, int]]) -> np.ndarray:
    """Message starts (byte offsets) by walking headers one by one: the slow, always-right path."""
    offsets = []
    for start, n in datagrams:
        off, end = start, start + n
        while off + _NLMSGHDR.size <= end:
            length, mtype = struct.unpack_from("=IH", buf, off)
            if length < _NLMSGHDR.size:
                break
            if mtype == msg_type and length >= _MSG_LEN:
                offsets.append(off)
            off += (length + 3) & ~3
    return np.array(offsets, dtype=np.int64)


@dataclass(frozen=True)
class SocketCounts:
    """Sockets counted per port label, role and state, plus the host-wide figures derived from one dump."""

    labels: tuple[str, ...]  # the configured ports, then "other"
    counts: np.ndarray  # [label, role, state] with state indexed by the kernel number
    time_wait: int
    ephemeral_used: int
    ephemeral_size: int

    def items(self) -> Iterator[tuple[tuple[str, str, str], int]]:
        """((port, state, role), count) for every label, role and state, zeros too (listen: server only)."""
        for li, label in enumerate(self.labels):
            for ri, role in enumerate(ROLES):
                for num, state in STATES.items():
                    if num == TCP_LISTEN and role == "client":
                        continue
                    yield (label, state, role), int(self.counts[li, ri, num])


def count_table(table: SocketTable, ports: Iterable[int | str], port_range: tuple[int, int]) -> SocketCounts:
    """Count a socket table by port label, role and state.

    A socket is `server` when its local port is a port something listens on (listeners included), labelled
    by that local port; otherwise it is `client`, labelled by its remote port. Ports not listed fold into
    `other`.
    """
    wanted = sorted({int(p) for p in ports})
    labels = (*[str(p) for p in wanted], OTHER)
    label_of = np.full(65536, len(wanted), dtype=np.int64)
    label_of[wanted] = np.arange(len(wanted))
    listening = np.zeros(65536, dtype=bool)
    listening[table.sport[table.state == TCP_LISTEN]] = True
    server = listening[table.sport]
    port = np.where(server, table.sport, table.dport)
    key = (label_of[port] * 2 + (~server).astype(np.int64)) * 16 + table.state
    counts = np.bincount(key, minlength=len(labels) * 2 * 16).reshape(len(labels), 2, 16)
    lo, hi = port_range
    used = np.zeros(65536, dtype=bool)
    used[table.sport] = True
    return SocketCounts(
        labels=labels,
        counts=counts,
        time_wait=int(np.count_nonzero(table.state == TCP_TIME_WAIT)),
        ephemeral_used=int(np.count_nonzero(used[lo : hi + 1])),
        ephemeral_size=hi - lo + 1,
    )


def read_port_range(proc_root: str | Path = "/proc") -> tuple[int, int]:
    """The kernel's ephemeral port range (net.ipv4.ip_local_port_range, used by IPv6 too)."""
    lo, hi = (Path(proc_root) / "sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(lo), int(hi)


def read_sockstat(proc_root: str | Path = "/proc") -> list[tuple[str, str, int]]:
    """(protocol, kind, sockets) from /proc/net/sockstat and sockstat6; memory figures are left out."""
    rows = []
    for name in ("sockstat", "sockstat6"):
        path = Path(proc_root) / "net" / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            proto, _, rest = line.partition(":")
            fields = rest.split()
            protocol = "all" if proto == "sockets" else proto.lower()
            for kind, value in zip(fields[::2], fields[1::2], strict=False):
                if kind not in ("mem", "memory"):
                    rows.append((protocol, kind, int(value)))
    return rows


def read_listen_overflows(proc_root: str | Path = "/proc") -> int | None:
    """Times a listen queue was full when a connection completed its handshake (TcpExt ListenOverflows in
    /proc/net/netstat, since boot, for this network namespace); None where the kernel does not count it."""
    path = Path(proc_root) / "net" / "netstat"
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(row["ListenOverflows"]) if "ListenOverflows" in row else None
    return None


_shared = InetDiag()
_shared_lock = threading.Lock()


def sample_sockets(ports: Iterable[int | str]) -> SocketCounts:
    """Sockets on this host now, counted (with ephemeral port use): the sweep samples this in-process."""
    with _shared_lock:
        table = _shared.dump()
    return count_table(table, ports, read_port_range())


def count_sockets(ports: Iterable[int | str]) -> dict[tuple[str, str, str], int]:
    """Sockets on this host now, keyed (port, state, role)."""
    return dict(sample_sockets(ports).items())


class SocketsCollector(Collector):
    """TCP sockets per port, state and role, TIME_WAIT, ephemeral port use, /proc/net/sockstat and listen
    queue overflows."""

    name = "sockets"

    def __init__(
        self,
        ports: Iterable[int | str],
        dump: Callable[[], SocketTable] | None = None,
        proc_root: str | Path = "/proc",
    ) -> None:
        self.ports = [int(p) for p in ports]
        self._dump = dump if dump is not None else InetDiag().dump
        self.proc_root = proc_root

    def collect(self) -> Iterator[Metric]:
        counts = count_table(self._dump(), self.ports, read_port_range(self.proc_root))
        sockets = GaugeMetricFamily(
            "loadlab_tcp_sockets",
            "TCP sockets by port, state and role (server: the port is the local end of a listening port; "
            "client: the port is the remote end); unlisted ports fold into other.",
            labels=["port", "state", "role"],
        )
        for (port, state, role), value in counts.items():
            sockets.add_metric([port, state, role], value)
        yield sockets
        yield GaugeMetricFamily(
            "loadlab_tcp_time_wait_sockets", "TCP sockets in TIME_WAIT, all ports.", value=counts.time_wait
        )
        yield GaugeMetricFamily(
            "loadlab_tcp_ephemeral_ports_used_ratio",
            "Share of the ephemeral port range (ip_local_port_range) bound by some TCP socket.",
            value=counts.ephemeral_used / counts.ephemeral_size,
        )
        sockstat = GaugeMetricFamily(
            "loadlab_sockstat_sockets",
            "Sockets by protocol and kind from /proc/net/sockstat and sockstat6.",
            labels=["protocol", "kind"],
        )
        for protocol, kind, value in read_sockstat(self.proc_root):
            sockstat.add_metric([protocol, kind], value)
        yield sockstat
        overflows = read_listen_overflows(self.proc_root)
        if overflows is not None:
            yield CounterMetricFamily(
                "loadlab_tcp_listen_overflows",
                "Connections dropped because a listen queue (accept backlog) was full "
                "(TcpExt ListenOverflows).",
                value=overflows,
            )
