"""What gave out first in a step, in summary.json's diagnosis vocabulary, with the figures behind each.

Evidence names the host and the process (`loadgen1/locust-worker-2`) that gave out, and CPU is compared
against that host's own cores. A component that was down or restarted in the window (`data1/postgres`) is
named with its down interval, and the step's errors are attributed to it where their text says so.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from loadlab.sweep import resource_model as model
from loadlab.sweep.analysis import (
    ERROR_RATIO,
    LATE_FIGURES,
    TARGET_BEHIND_FIGURES,
    arrivals_behind,
    closest_lighter,
    saturated,
)

VOCABULARY = (
    "ok",
    "generator_cpu_bound",
    "client_connection_capped",
    "load_short",
    "generator_behind",
    "target_saturated",
    "target_cpu_bound",
    "host_cpu_saturated",
    "db_connections_saturated",
    "ephemeral_ports_exhausted",
    "fds_exhausted",
    "listen_queue_overflow",
    "component_down",
    "errors",
)

# The codes that say the load generator held the step back (its CPU, sockets, users or ports): such a step
# is never target_saturated, and a capacity search stops at it as generator-limited.
GENERATOR_CODES = (
    "generator_cpu_bound",
    "client_connection_capped",
    "load_short",
    "generator_behind",
    "ephemeral_ports_exhausted",
)
# The step's load held when Locust ran at least this share of its users, time-weighted, through the window.
# (An open step's arrivals are judged by analysis.arrivals_behind, the rule of keeping up with them.)
LOAD_HELD = 0.98
# The target held the pool's users (rather than the pool being too small for it) when its send-to-answer
# latency rose this much over the closest lighter open step's.
RESPONSE_ROSE = 1.5
# A pool that grew without this gain in iterations done per second met the target's limit (locust_control.py).
GROWTH_GAIN = 1.1
# A Python process (a Locust worker, one app instance) cannot use more than one core; this near is "full".
CORE_FULL = 0.85
# A process that ran or waited for a CPU this share of the window never idled: it wanted a full core.
ALWAYS_RUNNABLE = 0.9
# Client sockets "well below" the users: fewer than this share of them...
SOCKETS_SHORT_SHARE = 0.8
# ...while more requests are in flight than sockets can carry (Little's law: rps x mean response time).
IN_FLIGHT_OVER_SOCKETS = 1.25
# A connection limit is saturated at this share of its maximum.
CONNECTIONS_FULL = 0.9
# A host's CPU is full at this share of its own cores over the window.
HOST_CPU_FULL = 0.9
# Ephemeral ports run out at this share of ip_local_port_range bound at once.
PORTS_FULL = 0.95
# A process runs out of descriptors at this share of its open-files limit.
FDS_FULL = 0.95
# How an error line names a component: the app answers 503 with the dependency that failed ("database
# unavailable", "database pool exhausted: ...", "redis unavailable"; /health says {"db":"down: ...",
# "redis":"ok"}, where only the one that is down counts). nginx signs every error page it serves, its 502
# for a dead app instance too, so its name says nothing about what failed; a down nginx shows as refused
# connections. Any other component (a process group such as app-8002) is named by its own name.
NAMED_BY: dict[str, re.Pattern[str] | None] = {
    "postgres": re.compile(r"database|postgres|psycopg|\bdb\W{1,4}down\b", re.IGNORECASE),
    "redis": re.compile(r"redis(?!\W{1,4}ok\b)", re.IGNORECASE),
    "nginx": None,
}
# An error line that says the server failed (a 5xx, or no answer at all) rather than what the request got
# wrong: lab_base's "expected 200, got 503: ...", requests' "503 Server Error", refused or dropped
# connections.
SERVER_FAILURE = re.compile(
    r"\bgot (?:5\d\d|0)\b|\b5\d\d (?:server error|service unavailable|bad gateway|gateway time-?out)"
    r"|connection ?refused|connection ?reset|remote ?disconnected|connection aborted",
    re.IGNORECASE,
)


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def _resources(step: dict[str, Any]) -> dict[str, Any]:
    return step.get("resources") or {}


def _host(res: dict[str, Any], host: str) -> dict[str, Any]:
    return (res.get("hosts") or {}).get(host) or {}


def generator_cpu(step: dict[str, Any]) -> dict[str, Any] | None:
    """A Locust process near one full core, or runnable all window on a host too busy to give it one, or a
    loadgen host of its own whose cores its Locust processes fill."""
    res = _resources(step)
    procs = {n: p for n, p in (res.get("processes") or {}).items() if p.get("role") == model.LOADGEN}
    by_cpu = sorted(procs.items(), key=lambda kv: (-(kv[1].get("cpu") or 0.0), kv[0]))
    for name, p in by_cpu:
        if (p.get("cpu") or 0.0) >= CORE_FULL:
            return {"process": name, "host": model.host_of(name), "cpu": _r(p["cpu"]), "limit": CORE_FULL}
    by_wait = sorted(procs.items(), key=lambda kv: (-(kv[1].get("runnable") or 0.0), kv[0]))
    for name, p in by_wait:
        if (p.get("runnable") or 0.0) >= ALWAYS_RUNNABLE:
            return {
                "process": name,
                "host": model.host_of(name),
                "cpu": _r(p.get("cpu")),
                "runnable": _r(p["runnable"]),
                "limit": ALWAYS_RUNNABLE,
                "host_cpu": _host(res, model.host_of(name)).get("cpu"),
            }
    # Without the runnable figure (Prometheus): the host's own cores full, mostly with Locust. Hosts that
    # share one machine read the machine's CPU, so only their process figures count.
    for host, used in sorted(model.per_host(res, model.LOADGEN).items()):
        figures = _host(res, host)
        share, cores = figures.get("cpu"), figures.get("cores")
        if figures.get("shared_machine") or share is None or not cores:
            continue
        if share >= CORE_FULL and used >= 0.5 * share * cores:
            name, p = next((n, p) for n, p in by_cpu if model.host_of(n) == host)
            return {
                "host": host,
                "host_cpu": _r(share),
                "cores": cores,
                "limit": CORE_FULL,
                "loadgen_cpu": _r(used),
                "process": name,
                "cpu": _r(p.get("cpu")),
            }
    return None


def connection_cap(step: dict[str, Any]) -> dict[str, Any] | None:
    """Fewer client sockets than users, while requests wait for one (more in flight than sockets)."""
    sockets, users = step.get("client_sockets"), step["users"]
    rps, avg_ms = step.get("rps"), step.get("avg_ms")
    if sockets is None or rps is None or avg_ms is None:
        return None
    in_flight = rps * avg_ms / 1000.0
    if sockets < SOCKETS_SHORT_SHARE * users and in_flight >= IN_FLIGHT_OVER_SOCKETS * max(sockets, 1):
        return {
            "users": users,
            "client_sockets": sockets,
            "in_flight": _r(in_flight, 1),
            "sockets_per_user": _r(sockets / users),
        }
    return None


def load_short(step: dict[str, Any]) -> dict[str, Any] | None:
    """Locust ran fewer users than the step asked for, in part of its window: a worker lost mid-step (killed,
    out of memory, its host gone) takes its users with it, and the master's figures say so."""
    load = step.get("load") or {}
    users = load.get("users", step.get("users"))
    low, mean = load.get("users_min"), load.get("users_mean")
    if not users or low is None or mean is None or low >= users or mean >= LOAD_HELD * users:
        return None
    evidence: dict[str, Any] = {"users": users, "users_min": low, "users_mean": mean}
    if load.get("workers_min") is not None and load["workers_min"] < load.get("workers_start", 0):
        evidence["workers"] = {"at_start": load["workers_start"], "least": load["workers_min"]}
    return evidence


def _one_process(name: str, process: dict[str, Any]) -> bool:
    """A `host/group` whose CPU is one process's (resource_model.one_process)."""
    return model.one_process(name.split("/", 1)[1], process.get("processes_max"))


def target_cpu(step: dict[str, Any]) -> dict[str, Any] | None:
    """A target process at a full core, or the target's processes filling every core of their host."""
    res = _resources(step)
    procs = {n: p for n, p in (res.get("processes") or {}).items() if p.get("role") == model.TARGET}
    # One process's CPU: an app instance is one Python process, as is any group that never had more than
    # one; a sampled group knows its busiest process.
    single = {n: p.get("busiest_one", p.get("cpu") if _one_process(n, p) else None) for n, p in procs.items()}
    single = {n: v for n, v in single.items() if v is not None}
    if single:
        name = max(sorted(single), key=lambda n: single[n])
        if single[name] >= CORE_FULL:
            return {"process": name, "host": model.host_of(name), "cpu": _r(single[name]), "limit": CORE_FULL}
    # An app instance (one process) that ran or waited for a CPU all window wanted a whole core: on a busy
    # host it got less than one, and it is still what the requests queued behind.
    waiting = {
        n: p["runnable"]
        for n, p in procs.items()
        if _one_process(n, p) and (p.get("runnable") or 0.0) >= ALWAYS_RUNNABLE
    }
    if waiting:
        name = max(sorted(waiting), key=lambda n: waiting[n])
        return {
            "process": name,
            "host": model.host_of(name),
            "cpu": _r(procs[name].get("cpu")),
            "runnable": _r(waiting[name]),
            "limit": ALWAYS_RUNNABLE,
            "host_cpu": _host(res, model.host_of(name)).get("cpu"),
        }
    for host, used in sorted(model.per_host(res, model.TARGET).items()):
        cores = model.host_cores(res, host)
        if cores and used >= CORE_FULL * cores:
            on_host = {n: p.get("cpu") or 0.0 for n, p in procs.items() if model.host_of(n) == host}
            busiest = max(sorted(on_host), key=lambda n: on_host[n])
            return {
                "host": host,
                "target_cpu": _r(used),
                "cores": cores,
                "limit": _r(CORE_FULL * cores),
                "process": busiest,
                "cpu": _r(on_host[busiest]),
                **({"shared_machine": True} if _host(res, host).get("shared_machine") else {}),
            }
    return None


_GROUPS = (
    (model.TARGET, "target"),
    (model.LOADGEN, "generator"),
    (model.DATA, "data"),
    (model.MONITOR, "monitor"),
    (model.OTHER, "other"),
)


def _machines(res: dict[str, Any]) -> list[tuple[str, list[str], float, float]]:
    """(name, hosts, busy share, cores) per machine: each host alone, except hosts that share one machine,
    which are one machine whose CPU is theirs together."""
    hosts = res.get("hosts") or {}
    out, shared = [], []
    for host, figures in sorted(hosts.items()):
        share, cores = figures.get("cpu"), figures.get("cores")
        if share is None or not cores:
            continue
        if figures.get("shared_machine"):
            shared.append((host, figures))
        else:
            out.append((host, [host], float(share), float(cores)))
    if shared:
        names = [h for h, _ in shared]
        cores = max(float(f["cores"]) for _, f in shared)
        own = [float(f["cpu"]) for _, f in shared if f.get("cpu_from") == "cgroup"]
        whole = [float(f["cpu"]) for _, f in shared if f.get("cpu_from") != "cgroup"]
        # A cgroup share is that host's own use of the machine's cores: they add up. A machine share is
        # already the whole machine's.
        share = max([sum(own)] + whole)
        out.append((f"shared machine ({', '.join(names)})", names, share, cores))
    return out


def host_cpu(step: dict[str, Any]) -> dict[str, Any] | None:
    """A host's CPU full with no single process at a full core: the host gave out, shared between groups."""
    res = _resources(step)
    procs = res.get("processes") or {}
    for name, hosts, share, cores in _machines(res):
        if share < HOST_CPU_FULL:
            continue
        mine = {n: p for n, p in procs.items() if model.host_of(n) in hosts}
        if any((p.get("cpu") or 0.0) >= CORE_FULL for p in mine.values()):
            continue  # one process at a full core is what gave out; its own check names it
        groups = {}
        for role, label in _GROUPS:
            used = sum(p.get("cpu") or 0.0 for p in mine.values() if p.get("role") == role)
            groups[label] = used
        # CPU no configured process group accounts for (the kernel, unlisted processes) is `other` too.
        groups["other"] += max(0.0, share * cores - sum(groups.values()))
        return {
            "host": name,
            "host_cpu": _r(share),
            "cores": cores,
            "limit": HOST_CPU_FULL,
            "groups": {g: {"cpu": _r(c), "share": _r(c / cores)} for g, c in groups.items()},
            "runs_generator": groups["generator"] > 0,
            **({"shared_machine": True, "hosts": hosts} if name != hosts[0] else {}),
        }
    return None


def ephemeral_ports(step: dict[str, Any]) -> dict[str, Any] | None:
    """A host bound nearly every port of its ephemeral range: new connections from it fail."""
    for host, tcp in sorted((_resources(step).get("tcp") or {}).items()):
        used = tcp.get("ephemeral_ports_used_ratio")
        if used is not None and used >= PORTS_FULL:
            return {"host": host, "ports_used_ratio": _r(used), "time_wait": tcp.get("time_wait"),
                    "limit": PORTS_FULL}  # fmt: skip
    return None


def descriptors(step: dict[str, Any]) -> dict[str, Any] | None:
    """A process at its open-files limit: it cannot open another socket."""
    procs = _resources(step).get("processes") or {}
    full = {n: p["fds_limit_ratio"] for n, p in procs.items() if (p.get("fds_limit_ratio") or 0) >= FDS_FULL}
    if not full:
        return None
    name = max(sorted(full), key=lambda n: full[n])
    return {
        "process": name,
        "host": model.host_of(name),
        "fds_limit_ratio": _r(full[name]),
        "limit": FDS_FULL,
    }


def listen_queue(step: dict[str, Any]) -> dict[str, Any] | None:
    """A listen queue overflowed in the window: the kernel dropped connections nobody accepted in time."""
    tcp = _resources(step).get("tcp") or {}
    hit = {h: t["listen_overflows"] for h, t in tcp.items() if (t.get("listen_overflows") or 0) > 0}
    if not hit:
        return None
    host = max(sorted(hit), key=lambda h: hit[h])
    return {"host": host, "listen_overflows": hit[host], "hosts": dict(sorted(hit.items()))}


def db_connections(step: dict[str, Any]) -> dict[str, Any] | None:
    """PostgreSQL near max_connections, or an app instance's DB pool busy all window."""
    res = _resources(step)
    for host, pg in sorted((res.get("postgres") or {}).items()):
        used, most = pg.get("connections"), pg.get("max_connections")
        if used is not None and most and used >= CONNECTIONS_FULL * most:
            return {
                "host": host,
                "pg_connections": used,
                "pg_max_connections": most,
                "limit_share": CONNECTIONS_FULL,
            }
    for name, pool in sorted((res.get("db_pool") or {}).items()):
        in_use, size = pool.get("in_use_avg"), pool.get("size")
        if in_use is not None and size and in_use >= CONNECTIONS_FULL * size:
            return {
                "process": name,
                "host": model.host_of(name),
                "pool_in_use_avg": _r(in_use, 2),
                "pool_size": size,
            }
    return None


def _names(text: str, component: str) -> bool:
    """True when an error line names the component (`postgres`, `app-8002`) as what failed."""
    if component not in NAMED_BY:
        return re.search(rf"(?<![\w-]){re.escape(component)}(?![\w-])", text, re.IGNORECASE) is not None
    rx = NAMED_BY[component]
    return rx is not None and rx.search(text) is not None


def attribute_errors(step: dict[str, Any], components: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """host/component -> the step's error lines that belong to it: those whose text names the component,
    and server failures (5xx, no answer) that name no component, since it was down in this window."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in components}
    for line in step.get("errors") or []:
        text = html.unescape(str(line.get("error") or ""))  # Locust's web UI may hand it HTML-escaped
        named = [n for n in components if _names(text, n.split("/", 1)[-1])]
        if not named and SERVER_FAILURE.search(text) and not any(_names(text, c) for c in NAMED_BY):
            named = list(components)
        for name in named:
            out[name].append(line)
    return out


def components_down(step: dict[str, Any]) -> dict[str, Any] | None:
    """A component down or restarted in the window: the one down longest, its interval, restarts, the
    series that said so and its error lines; every such component under `components` when more than one."""
    found = _resources(step).get("components") or {}
    if not found:
        return None
    lines = attribute_errors(step, found)
    name = min(
        found, key=lambda n: (-(found[n].get("down_s") or 0.0), -len(found[n].get("restarted_at") or ()), n)
    )
    evidence = {"component": name, "host": model.host_of(name), **found[name], "error_lines": lines[name]}
    if len(found) > 1:
        evidence["components"] = {n: {**found[n], "error_lines": lines[n]} for n in sorted(found)}
    return evidence


def errors(step: dict[str, Any]) -> dict[str, Any] | None:
    """Failures above one percent of requests."""
    ratio = step.get("fail_ratio")
    if ratio is not None and ratio >= ERROR_RATIO:
        return {"fail_ratio": _r(ratio, 4), "failures": step.get("failures"), "limit": ERROR_RATIO}
    return None


def saturation(step: dict[str, Any], earlier: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Against the closest lighter step: throughput did not keep up with users while latency climbed (the
    knee rule, analysis.saturated)."""
    prev = closest_lighter(step, earlier)
    return None if prev is None else saturated(prev, step)


def open_late(step: dict[str, Any]) -> dict[str, Any] | None:
    """An open step whose generator did not start its arrivals on time: it sent fewer than were due, or
    too many started late (analysis.arrivals_behind)."""
    intended, sent, late = step.get("intended") or 0, step.get("sent") or 0, step.get("late") or 0
    if not intended or LATE_FIGURES.isdisjoint(arrivals_behind(step)):
        return None
    return {
        "rate": step["rate"],
        "intended": intended,
        "sent": sent,
        "dropped": step.get("dropped"),
        "late": late,
        "late_share": _r(late / sent if sent else 0.0),
        "lateness_p99_ms": step.get("lateness_p99_ms"),
        "users": step.get("users"),
        "max_users": (step.get("open") or {}).get("max_users"),
    }


def open_fell_behind(step: dict[str, Any]) -> dict[str, Any] | None:
    """The target did not keep up with an open step's arrivals: it ended fewer than were due while the
    backlog grew (analysis.arrivals_behind)."""
    if not TARGET_BEHIND_FIGURES.issubset(arrivals_behind(step)):
        return None
    return _open_evidence(step)


def _open_evidence(step: dict[str, Any]) -> dict[str, Any]:
    """What an open step's target did with its arrivals."""
    return {
        "rate": step["rate"],
        "rps": step.get("rps"),
        "intended": step.get("intended"),
        "done": step.get("done"),
        "backlog": step.get("backlog"),
        "p99_ms": step.get("p99_ms"),
        "response_p99_ms": step.get("response_p99_ms"),
    }


def _response_rose(step: dict[str, Any], earlier: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    prev = closest_lighter(step, earlier)
    if prev is None:
        return None
    for q in ("response_p50_ms", "response_p95_ms"):
        before, now = prev.get(q), step.get(q)
        if before and now and now >= RESPONSE_ROSE * before and now - before >= 2:
            return {"rate": [prev["rate"], step["rate"]], q: [before, now]}
    return None


def _growth_in_vain(step: dict[str, Any]) -> dict[str, Any] | None:
    """The pool grew during the warm-up and the iterations done per second did not follow."""
    growth = [g for g in (step.get("open") or {}).get("pool_growth") or [] if g.get("done_per_s")]
    if len(growth) < 2 or growth[-1]["done_per_s"] >= GROWTH_GAIN * growth[-2]["done_per_s"]:
        return None
    return {"users": [growth[-2]["users"], growth[-1]["users"]],
            "done_per_s": [growth[-2]["done_per_s"], growth[-1]["done_per_s"]]}  # fmt: skip


def _pool_sufficed(step: dict[str, Any]) -> dict[str, Any] | None:
    """The pool could carry the rate at the target's mean send-to-answer time (Little's law): arrivals that
    still waited for a user waited for answers slower than that mean — the target's stalls or spikes."""
    users, avg_ms, rate = step.get("users"), step.get("avg_ms"), step.get("rate")
    if not users or not avg_ms or not rate:
        return None
    carries = users / (avg_ms / 1000.0)
    if carries < rate:
        return None
    return {"users": users, "avg_ms": avg_ms, "carries_per_s": _r(carries, 1), "rate": rate}


def open_verdict(
    step: dict[str, Any], earlier: Sequence[dict[str, Any]], found: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """An open step's `generator_behind` (arrivals not started on time, and why) or `target_saturated`
    (it fell behind the rate with its arrivals started on time; or they started late because the target
    held every user: its own latency rose, a bigger pool got no more done, or the pool could carry the
    rate at the target's mean latency, so slower answers — a stall — held it)."""
    late = open_late(step)
    behind = open_fell_behind(step)
    cpu = found.get("generator_cpu_bound")
    if late is not None and cpu is not None:
        return "generator_behind", {**late, "why": f"its CPU was full ({cpu.get('process')})"}
    if late is not None:
        # The users were all busy because the target answered slower and slower (its send-to-answer
        # latency rose over a lighter step's), or a bigger pool got no more done: the target's limit.
        held = _response_rose(step, earlier) or _growth_in_vain(step) or _pool_sufficed(step)
        if held is not None:
            evidence = behind if behind is not None else _open_evidence(step)
            return "target_saturated", {**evidence, "users_held_by_target": held, "late": late["late"]}
        cap = (step.get("open") or {}).get("pool_cap")
        full = " (the most --max-users allows)" if cap and late["users"] >= cap else ""
        pool = f"{late['users']} users{full}"
        why = f"no free user: arrivals waited for one of the pool of {pool}"
        avg_ms = step.get("avg_ms")
        if avg_ms:  # Little's law: the users the rate needs at the latency the target answered with
            late["users_needed"] = math.ceil(step["rate"] * avg_ms / 1000.0)
            why += f", where the rate needs {late['users_needed']} at the target's mean {avg_ms:g} ms"
        return "generator_behind", {**late, "why": why}
    if behind is not None:
        return "target_saturated", behind
    return None


def diagnose(step: dict[str, Any], earlier: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The step's diagnosis codes and, per code, the figures that triggered it; ['ok'] when nothing did."""
    found: dict[str, dict[str, Any]] = {}
    checks = (
        ("generator_cpu_bound", generator_cpu(step)),
        ("client_connection_capped", connection_cap(step)),
        ("load_short", load_short(step)),
        ("target_cpu_bound", target_cpu(step)),
        ("host_cpu_saturated", host_cpu(step)),
        ("db_connections_saturated", db_connections(step)),
        ("ephemeral_ports_exhausted", ephemeral_ports(step)),
        ("fds_exhausted", descriptors(step)),
        ("listen_queue_overflow", listen_queue(step)),
        ("component_down", components_down(step)),
        ("errors", errors(step)),
    )
    for code, evidence in checks:
        if evidence is not None:
            found[code] = evidence
    # Errors in a window where a component was down are put down to it: to those their lines name (or, as
    # 5xx naming nothing, fell while it was down); with no error lines recorded, to every component down.
    if "errors" in found and "component_down" in found:
        components = _resources(step).get("components") or {}
        lines = attribute_errors(step, components)
        if step.get("errors"):
            blamed = [n for n in sorted(components) if lines[n]]
        else:
            blamed = [n for n in sorted(components) if components[n].get("down_s")]
        if blamed:
            found["errors"]["attributed_to"] = blamed
    # A full host already blamed as a whole on one group (Locust filling a loadgen host, the target filling
    # its host) needs no second code; a worker that only waited for a CPU on it still leaves the host named.
    full = found.get("host_cpu_saturated")
    blamed = (
        (found.get("generator_cpu_bound") or {}, "loadgen_cpu"),
        (found.get("target_cpu_bound") or {}, "target_cpu"),
    )
    if full and any(figure in ev and ev.get("host") == full["host"] for ev, figure in blamed):
        del found["host_cpu_saturated"]
    # The target is only "saturated" when the generator could have pushed harder: not when the generator
    # was CPU-bound, short of sockets, ports, descriptors or users, or shared a full host with the target.
    fds = found.get("fds_exhausted")
    procs = _resources(step).get("processes") or {}
    generator_starved = (found.get("host_cpu_saturated") or {}).get("runs_generator", False) or bool(
        fds and (procs.get(fds["process"]) or {}).get("role") == model.LOADGEN
    )
    if step.get("rate") is not None:
        verdict = open_verdict(step, earlier, found)
        if verdict is not None and not (verdict[0] == "target_saturated" and generator_starved):
            found[verdict[0]] = verdict[1]
    elif not generator_starved and not any(code in found for code in GENERATOR_CODES):
        evidence = saturation(step, earlier)
        if evidence is not None:
            found["target_saturated"] = evidence
    codes = [c for c in VOCABULARY if c in found] or ["ok"]
    return codes, found
