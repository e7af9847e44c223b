"""What every lab host looked like during a run, kept beside the run's figures.

`loadlab collect RUN_DIR` (and the sweep, at its end in a lab) reads from every host of the run's inventory,
over the remote-access layer: supervisor status, each lab log's lines inside the run's time span, `ss -s`
and sockstat, the kernel settings the common role sets, the rendered nginx/PostgreSQL/Redis configs, and
the host's cores, memory and kernel. Each host gets RUN_DIR/hosts/<host>/; RUN_DIR/hosts.json indexes
them. A host that cannot be reached is recorded as such; it never stops the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from loadlab.errors import UserError
from loadlab.lab import Host, Lab
from loadlab.remote import TIMED_OUT, HostUnreachable, Remote, RemoteHosts, Result

HOSTS_DIR = "hosts"
HOSTS_INDEX = "hosts.json"
HOST_FILE = "host.json"
INDEX_FIELDS = ("groups", "cores", "memory_bytes", "kernel", "reachable", "error")
"""What hosts.json says of each host (host.json in its folder has the rest)."""
MARGIN = 30.0
"""Seconds of log kept before the run starts and after it ends."""
LOG_TAIL_BYTES = 4 * 1024 * 1024
"""Bytes read from the end of each log: a run's lines are at the end, and a log may be 20 MB."""
TAIL_LINES = 200
"""Lines kept from a log whose lines carry no timestamp (uvicorn's access log)."""
SYSCTLS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
)
"""The common role's kernel settings, where the inventory does not list its own common_sysctls."""
CONFIGS = {
    "lb": ("nginx/nginx.conf",),
    "postgres": ("postgres/postgresql.conf", "postgres/pg_hba.conf"),
    "redis": ("redis/redis.conf",),
}
"""Rendered configs under loadlab_etc_dir that decide what a service can carry, per group."""
_SECRET_LINE = re.compile(r"^(\s*(?:requirepass|masterauth)\s+).*$", re.I | re.M)


@dataclass(frozen=True)
class Span:
    """The run's time span on this machine's clock (Unix seconds), margins included."""

    start: float
    end: float

    def to_dict(self) -> dict[str, str]:
        return {"start": _iso(self.start), "end": _iso(self.end)}


def run_span(run: dict[str, Any], steps: Sequence[dict[str, Any]], ended: float | None = None) -> Span:
    """From run.json's start (or the first window) to the last window or the run's last write."""
    starts = [float(s["window_start"]) for s in steps if s.get("window_start")]
    ends = [float(s["window_end"]) for s in steps if s.get("window_end")]
    started = run.get("started_at")
    if started:
        with contextlib.suppress(ValueError):
            starts.append(datetime.fromisoformat(started).timestamp())
    if ended is not None:
        ends.append(ended)
    now = datetime.now(UTC).timestamp()
    start = min(starts) if starts else now - 3600
    end = max(ends) if ends else now
    return Span(start - MARGIN, end + MARGIN)


def collect_run(
    run_dir: Path,
    inventory: str | os.PathLike[str] | None = None,
    note: Callable[[str], None] = lambda _line: None,
) -> dict[str, Any]:
    """Collect every host of the run's inventory into run_dir; the hosts.json index it wrote."""
    from loadlab.sweep.results import RunDir

    folder = RunDir(run_dir)
    run = folder.read_run()
    inventory = inventory or (run.get("inventory") or {}).get("path")
    if not inventory:
        raise UserError(f"{run_dir}/run.json names no inventory (a standalone run): give -i INVENTORY")
    lab = Lab.load(inventory)
    written = [run_dir / name for name in ("summary.json", "steps.jsonl")]
    ended = max((p.stat().st_mtime for p in written if p.exists()), default=None)
    span = run_span(run, folder.read_steps(), ended)
    clocks = (run.get("clocks") or {}).get("hosts") or {}
    hosts_dir = run_dir / HOSTS_DIR
    with RemoteHosts(lab) as remotes, ThreadPoolExecutor(max_workers=8) as pool:

        def one(host: Host) -> dict[str, Any]:
            offset = ((clocks.get(host.name) or {}).get("offset_ms") or 0.0) / 1000
            entry = collect_host(remotes[host], hosts_dir / host.name, span, offset)
            note(_host_line(host.name, entry))
            return entry

        entries = dict(zip(lab.hosts, pool.map(one, lab.hosts.values()), strict=True))
    index = {
        "collected_at": _iso(datetime.now(UTC).timestamp()),
        "inventory": str(Path(inventory).resolve()),
        "span": span.to_dict(),
        "hosts": {
            name: {k: entry.get(k) for k in INDEX_FIELDS} | {"folder": f"{HOSTS_DIR}/{name}"}
            for name, entry in entries.items()
        },
    }
    (run_dir / HOSTS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return index


def _host_line(name: str, entry: dict[str, Any]) -> str:
    if not entry["reachable"]:
        return f"collect {name}: not reachable ({entry['error']})"
    if entry.get("error"):
        return f"collect {name}: {entry['error']}"
    memory = entry.get("memory_bytes")
    size = f"{memory / 2**30:.1f} GiB" if memory else "? GiB"
    problems = f", {len(entry['problems'])} missing" if entry.get("problems") else ""
    return (
        f"collect {name}: {entry.get('cores')} cores, {size}, kernel {entry.get('kernel')}; "
        f"{len(entry.get('logs') or {})} logs, {len(entry.get('files') or [])} files{problems}"
    )


def collect_host(remote: Remote, folder: Path, span: Span, clock_offset: float = 0.0) -> dict[str, Any]:
    """One host's state into `folder` (host.json beside it); never raises for a host that is down."""
    host = remote.host
    folder.mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {
        "host": host.name,
        "groups": sorted(host.groups),
        "address": host.address,
        "reachable": True,
        "error": None,
        "files": [],
        "logs": {},
        "problems": [],
        "clock_offset_ms": round(clock_offset * 1000, 1),
    }
    try:
        _collect(_Guarded(remote), folder, span, clock_offset, entry)
    except HostUnreachable as exc:
        entry["reachable"] = False
        entry["error"] = str(exc)
    except _Stuck as exc:
        entry["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - one host's surprise never stops the others
        entry["error"] = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    (folder / HOST_FILE).write_text(json.dumps(entry, indent=2) + "\n")
    return entry


class _Stuck(Exception):
    """The host logs in but its commands do not finish: waiting on each of them would take minutes."""


class _Guarded:
    """A host's commands, given up on after the first one that runs out of time."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.host = remote.host

    def run(self, command: str, timeout: float = 30.0) -> Result:
        out = self.remote.run(command, timeout=timeout)
        if out.exit_code == TIMED_OUT:
            raise _Stuck(
                f"host {self.host.name} answers over SSH but its commands do not finish ({out.reason()})"
            )
        return out

    def read_file(self, path: str) -> str:
        if self.remote.local:
            return self.remote.read_file(path)
        out = self.run(f"cat -- {shlex.quote(path)}")
        if not out.ok:
            raise FileNotFoundError(f"{self.host.name}:{path}: {out.reason()}")
        return out.stdout


def _collect(remote: _Guarded, folder: Path, span: Span, offset: float, entry: dict[str, Any]) -> None:
    host = remote.host
    facts = remote.run(
        "nproc; awk '/^MemTotal:/ {print $2}' /proc/meminfo; uname -r; date +%z; hostname", timeout=15
    )
    lines = facts.stdout.splitlines() + [""] * 5
    entry["cores"] = _int(lines[0])
    mem_kib = _int(lines[1])  # /proc/meminfo's kB are KiB
    entry["memory_bytes"] = mem_kib * 1024 if mem_kib is not None else None
    entry["kernel"] = lines[2].strip() or None
    entry["utc_offset"] = lines[3].strip() or "+0000"
    entry["hostname"] = lines[4].strip() or None

    def save(name: str, text: str) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        entry["files"].append(name)

    etc = str(host.var("loadlab_etc_dir"))
    status = remote.run(f"supervisorctl -c {shlex.quote(etc + '/supervisord.conf')} status", timeout=20)
    save("supervisor.txt", status.stdout + status.stderr)
    ss = remote.run("ss -s", timeout=15)
    save("ss.txt", ss.stdout if ss.ok else f"ss -s failed: {ss.reason()}\n")
    try:
        save("sockstat.txt", remote.read_file("/proc/net/sockstat"))
    except FileNotFoundError as exc:
        entry["problems"].append(str(exc))
    keys = list((host.var("common_sysctls") or {}).keys()) or list(SYSCTLS)
    sysctl = remote.run("sysctl " + " ".join(shlex.quote(k) for k in keys), timeout=15)
    save("sysctl.txt", sysctl.stdout + sysctl.stderr)
    entry["sysctls"] = dict(
        (key.strip(), " ".join(value.split()))
        for key, _, value in (ln.partition("=") for ln in sysctl.stdout.splitlines())
        if value
    )
    for group, names in CONFIGS.items():
        if group not in host.groups:
            continue
        for name in names:
            try:
                save(f"configs/{name}", redact(remote.read_file(f"{etc}/{name}")))
            except FileNotFoundError as exc:
                entry["problems"].append(str(exc))
    _collect_logs(remote, folder, span, offset, entry)


def _collect_logs(remote: _Guarded, folder: Path, span: Span, offset: float, entry: dict[str, Any]) -> None:
    """Each lab log touched during the run, cut to the run's span (host clock = this clock + offset)."""
    log_dir = str(remote.host.var("loadlab_log_dir"))
    listing = remote.run(
        f"find {shlex.quote(log_dir)} -maxdepth 1 -type f -name '*.log' -printf '%T@ %s %f\\n'", timeout=15
    )
    if not listing.ok:
        entry["problems"].append(f"{remote.host.name}:{log_dir}: {listing.reason()}")
        return
    tz = _utc_offset(entry.get("utc_offset", "+0000"))
    for line in sorted(listing.stdout.splitlines()):
        mtime, size, name = (line.split(" ", 2) + ["", ""])[:3]
        if not name or float(mtime or 0) - offset < span.start:
            continue  # not written since the run began
        path = f"{log_dir}/{name}"
        out = remote.run(f"tail -c {LOG_TAIL_BYTES} -- {shlex.quote(path)}", timeout=60)
        if not out.ok:
            entry["problems"].append(f"{remote.host.name}:{path}: {out.reason()}")
            continue
        kept, how = cut_log(out.stdout, span, offset, tz)
        truncated = int(size or 0) > LOG_TAIL_BYTES
        dest = folder / "logs" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("".join(kept))
        entry["logs"][name] = {"lines": len(kept), "cut": how, "truncated": truncated}
        entry["files"].append(f"logs/{name}")


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\s?(Z|UTC|GMT|[+-]\d{2}:?\d{2})?"
)
_NGINX = re.compile(r"(\d{2})/(\w{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})")
_REDIS = re.compile(r"\b(\d{1,2}) (\w{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?")
_HEAD = 64
"""A line's timestamp sits near its start; later ones belong to the message."""


def line_time(line: str, tz: timezone) -> float | None:
    """The Unix time a log line was written, from the formats lab processes write; None without one."""
    head = line[:_HEAD]
    if match := _ISO.search(head):
        y, mo, d, h, mi, s, frac, zone = match.groups()
        when = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=_zone(zone, tz))
        return when.timestamp() + (float(f"0.{frac}") if frac else 0.0)
    if match := _NGINX.search(head):
        d, mon, y, h, mi, s, zone = match.groups()
        if mon in _MONTHS:
            when = datetime(int(y), _MONTHS[mon], int(d), int(h), int(mi), int(s), tzinfo=_zone(zone, tz))
            return when.timestamp()
    if match := _REDIS.search(head):
        d, mon, y, h, mi, s, frac = match.groups()
        if mon in _MONTHS:
            when = datetime(int(y), _MONTHS[mon], int(d), int(h), int(mi), int(s), tzinfo=tz)
            return when.timestamp() + (float(f"0.{frac}") if frac else 0.0)
    return None


def cut_log(text: str, span: Span, offset: float = 0.0, tz: timezone = UTC) -> tuple[list[str], str]:
    """The lines inside the span ("time"); a line without a timestamp goes with the one above it.
    A log without any timestamp keeps its last TAIL_LINES lines ("tail")."""
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    stamped = False
    current: float | None = None
    for line in lines:
        when = line_time(line, tz)
        if when is not None:
            stamped = True
            current = when - offset
        if current is not None and span.start <= current <= span.end:
            kept.append(line)
    if not stamped:
        return lines[-TAIL_LINES:], "tail"
    return kept, "time"


def redact(text: str) -> str:
    """A config with its password lines blanked (Redis's requirepass, masterauth): run folders get shared."""
    return _SECRET_LINE.sub(lambda m: f"{m.group(1)}<redacted>", text)


def _zone(text: str | None, default: timezone) -> timezone:
    if not text:
        return default
    if text in ("Z", "UTC", "GMT"):
        return UTC
    return _utc_offset(text)


def _utc_offset(text: str) -> timezone:
    """`date +%z` (+0100, -05:30) as a timezone; UTC where it is unreadable."""
    match = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text.strip())
    if not match:
        return UTC
    sign = -1 if match.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))


def _int(text: str) -> int | None:
    try:
        return int(float(text.strip()))
    except ValueError:
        return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
