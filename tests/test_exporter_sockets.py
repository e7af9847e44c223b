"""The socket collector on the real kernel (exact counts), on recorded netlink replies, on a written table."""

from __future__ import annotations

import contextlib
import csv
import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from loadlab.exporters import sockets as S
from tests.exporter_support import GOLDEN, REGEN, assert_golden, exposition, promtool_check, registry_of

N = 40  # connections per test: enough to catch off-by-role errors, small for a shared 2-core machine


def _rst_close(sock: socket.socket) -> None:
    """Close with RST so the test leaves nothing in TIME_WAIT."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Sockets:
    """Listeners and connections made by one test, all closed at the end."""

    def __init__(self) -> None:
        self.held: list[socket.socket] = []

    def listener(self, family: int = socket.AF_INET) -> tuple[socket.socket, int]:
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        s = socket.socket(family, socket.SOCK_STREAM)
        s.bind((host, 0))
        s.listen(128)
        self.held.append(s)
        return s, s.getsockname()[1]

    def pairs(self, listener: socket.socket, n: int) -> list[tuple[socket.socket, socket.socket]]:
        """n connections to the listener, accepted: (client end, server end)."""
        host, port = listener.getsockname()[:2]
        out = []
        for _ in range(n):
            client = socket.create_connection((host, port))
            server, _ = listener.accept()
            self.held += [client, server]
            out.append((client, server))
        return out

    def close(self) -> None:
        for s in self.held:
            _rst_close(s)


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    made = Sockets()
    try:
        yield made
    finally:
        made.close()


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for the kernel to finish state changes the test started (loopback: milliseconds)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("socket states did not settle")
        time.sleep(0.02)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("compat", [True, False], ids=["one-dump", "per-family-dumps"])
def test_n_connections_are_exactly_n_established_in_each_role(
    sockets: Sockets, family: int, compat: bool
) -> None:
    listener, port = sockets.listener(family)
    sockets.pairs(listener, N)
    counts = dict(S.count_table(S.InetDiag(compat=compat).dump(), [port], S.read_port_range()).items())
    assert counts[(str(port), "established", "server")] == N
    assert counts[(str(port), "established", "client")] == N
    assert counts[(str(port), "listen", "server")] == 1
    assert sum(v for (p, _, _), v in counts.items() if p == str(port)) == 2 * N + 1


def test_count_sockets_is_the_in_process_api(sockets: Sockets) -> None:
    listener, port = sockets.listener()
    sockets.pairs(listener, 3)
    counts = S.count_sockets([port])
    assert counts[(str(port), "established", "client")] == 3
    assert counts[(str(port), "established", "server")] == 3
    assert ("other", "established", "client") in counts


def test_closing_states_are_counted_on_the_right_side(sockets: Sockets) -> None:
    listener, port = sockets.listener()
    server_closes = sockets.pairs(listener, 4)
    client_closes = sockets.pairs(listener, 3)
    for _, server in server_closes:
        server.close()  # server: FIN_WAIT2, client: CLOSE_WAIT
    for client, server in client_closes:
        client.close()  # client FIN first, then the server answers: the client end waits in TIME_WAIT
        server.close()

    def counts() -> dict:
        return S.count_sockets([port])

    until(lambda: counts()[(str(port), "time_wait", "client")] == 3)
    until(lambda: counts()[(str(port), "fin_wait2", "server")] == 4)
    got = counts()
    assert got[(str(port), "close_wait", "client")] == 4
    assert got[(str(port), "established", "server")] == 0
    assert got[(str(port), "established", "client")] == 0
    assert got[(str(port), "listen", "server")] == 1


def test_unlisted_ports_fold_into_other(sockets: Sockets) -> None:
    listed, listed_port = sockets.listener()
    unlisted, unlisted_port = sockets.listener()
    sockets.pairs(listed, 2)
    before = S.count_sockets([listed_port])
    sockets.pairs(unlisted, 5)
    after = S.count_sockets([listed_port])
    assert (str(unlisted_port), "established", "server") not in after
    assert after[("other", "established", "server")] - before[("other", "established", "server")] == 5
    assert after[("other", "established", "client")] - before[("other", "established", "client")] == 5
    assert after[(str(listed_port), "established", "client")] == 2


def test_fast_parse_and_header_walk_agree() -> None:
    raw = (GOLDEN / "sockets_dump.bin").read_bytes()
    meta = json.loads((GOLDEN / "sockets_dump.json").read_text())
    fast = S.parse_replies(raw, meta["msg_type"], meta["seq"], meta["portid"])
    # a wrong port id defeats the header scan, so the parser walks the headers one by one
    walked = S.parse_replies(raw, meta["msg_type"], meta["seq"], meta["portid"] + 1)
    assert (
        S._find_messages(np.frombuffer(raw, np.uint32), meta["msg_type"], meta["seq"], meta["portid"])
        is not None
    )
    assert fast.state.size == 20  # every socket of the recorded scene (its listing is the next test's)
    for field in ("family", "state", "sport", "dport"):
        assert np.array_equal(getattr(fast, field), getattr(walked, field))


def test_recorded_kernel_replies_give_the_recorded_scene() -> None:
    """Real inet_diag bytes (with their attributes), recorded on a Linux host by _record_dump below."""
    if REGEN:
        _record_dump()
    raw = (GOLDEN / "sockets_dump.bin").read_bytes()
    meta = json.loads((GOLDEN / "sockets_dump.json").read_text())
    table = S.parse_replies(raw, meta["msg_type"], meta["seq"], meta["portid"])
    a, b = str(meta["ports"]["a"]), str(meta["ports"]["b"])
    counts = dict(S.count_table(table, [int(a), int(b)], (32768, 60999)).items())
    assert {k: v for k, v in counts.items() if v} == {
        (a, "listen", "server"): 1,
        (a, "established", "server"): 3,
        (a, "established", "client"): 3,
        (a, "fin_wait2", "server"): 2,
        (a, "close_wait", "client"): 2,
        (a, "time_wait", "client"): 1,
        (b, "listen", "server"): 1,
        (b, "established", "server"): 2,
        (b, "established", "client"): 2,
        ("other", "listen", "server"): 1,
        ("other", "established", "server"): 1,
        ("other", "established", "client"): 1,
    }
    assert sorted(set(table.family.tolist())) == [socket.AF_INET, socket.AF_INET6]


def _read_table(path: Path) -> S.SocketTable:
    with path.open() as f:
        rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    number = {name: num for num, name in S.STATES.items()}
    return S.SocketTable(
        family=np.array(
            [socket.AF_INET6 if r["family"] == "ipv6" else socket.AF_INET for r in rows], np.uint8
        ),
        state=np.array([number[r["state"]] for r in rows], np.uint8),
        sport=np.array([int(r["sport"]) for r in rows], np.int32),
        dport=np.array([int(r["dport"]) for r in rows], np.int32),
    )


def test_every_state_golden_output() -> None:
    """States a loopback test cannot hold still (syn_sent, syn_recv, fin_wait1, closing, last_ack...)."""
    table = _read_table(GOLDEN / "sockets_table.csv")
    collector = S.SocketsCollector([8080, 5433], dump=lambda: table, proc_root=GOLDEN / "proc")
    registry = registry_of(collector)
    text = exposition(registry)
    assert_golden(text, "sockets.prom")
    get = registry.get_sample_value
    assert get("loadlab_tcp_sockets", {"port": "8080", "state": "syn_recv", "role": "server"}) == 2
    assert get("loadlab_tcp_sockets", {"port": "8080", "state": "syn_sent", "role": "client"}) == 1
    assert get("loadlab_tcp_sockets", {"port": "5433", "state": "last_ack", "role": "server"}) == 1
    assert get("loadlab_tcp_sockets", {"port": "other", "state": "closing", "role": "client"}) == 1
    assert get("loadlab_tcp_time_wait_sockets") == 3
    # distinct local ports inside 32768-60999 (the recorded range): 40000-40002, 50000, 50001, 50003, 32768
    assert get("loadlab_tcp_ephemeral_ports_used_ratio") == pytest.approx(7 / (60999 - 32768 + 1))
    # the kernel's own TIME_WAIT count (recorded sockstat: tw 397), beside the table's 3 above
    assert get("loadlab_sockstat_sockets", {"protocol": "tcp", "kind": "tw"}) == 397
    assert get("loadlab_tcp_listen_overflows_total") == 17  # TcpExt ListenOverflows in the recorded netstat
    assert promtool_check(text) == ""


def test_live_collector_output_passes_promtool(sockets: Sockets) -> None:
    listener, port = sockets.listener()
    sockets.pairs(listener, 2)
    text = exposition(registry_of(S.SocketsCollector([port])))
    assert f'loadlab_tcp_sockets{{port="{port}",role="server",state="established"}} 2.0' in text
    assert promtool_check(text) == ""


def _record_dump() -> None:
    """Record real kernel replies for a known scene, keeping only the scene's sockets."""
    made = Sockets()
    try:
        a, port_a = made.listener()
        b, port_b = made.listener(socket.AF_INET6)
        c, port_c = made.listener()
        made.pairs(a, 3)
        for _, server in made.pairs(a, 2):
            server.close()
        for client, server in made.pairs(a, 1):
            client.close()
            server.close()
        made.pairs(b, 2)
        made.pairs(c, 1)
        until(lambda: S.count_sockets([port_a])[(str(port_a), "time_wait", "client")] == 1)
        until(lambda: S.count_sockets([port_a])[(str(port_a), "fin_wait2", "server")] == 2)
        scene = {port_a, port_b, port_c}
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, S.NETLINK_SOCK_DIAG) as nl:
            nl.bind((0, 0))
            portid, seq = nl.getsockname()[0], 424242
            request = S._REQ_COMPAT.pack(0, 0, 0, 0, S.ALL_STATES, 0)
            nl.send(
                S._NLMSGHDR.pack(16 + len(request), S.TCPDIAG_GETSOCK, S.NLM_F_REQUEST | S.NLM_F_DUMP, seq, 0)
                + request
            )
            kept, done = bytearray(), False
            while not done:
                data = nl.recv(1 << 16)
                off = 0
                while off < len(data):
                    length, mtype = struct.unpack_from("=IH", data, off)
                    if mtype == S.NLMSG_DONE:
                        done = True
                        break
                    sport, dport = struct.unpack_from(">HH", data, off + 20)
                    if sport in scene or dport in scene:
                        kept += data[off : off + ((length + 3) & ~3)]
                    off += (length + 3) & ~3
        (GOLDEN / "sockets_dump.bin").write_bytes(bytes(kept))
        meta = {
            "msg_type": S.TCPDIAG_GETSOCK,
            "seq": seq,
            "portid": portid,
            "ports": {"a": port_a, "b": port_b, "other": port_c},
        }
        (GOLDEN / "sockets_dump.json").write_text(json.dumps(meta, indent=2) + "\n")
    finally:
        made.close()
