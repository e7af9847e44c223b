"""report.html and its PNG plots from a run folder: the capacity table, the curves, what gave out first.

A closed sweep (user counts) is plotted against users; an open sweep (steps that held an arrival rate) is
plotted against the intended rate: achieved rps against the rate with the y = x line, latency from each
request's intended start beside Locust's send-to-answer latency, and the arrivals dropped or started late.
The page says which model the run used, since their latencies mean different things.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # drawn with Agg, no pyplot state

from loadlab.errors import UserError
from loadlab.sweep import analysis
from loadlab.sweep.results import RunDir

log = logging.getLogger(__name__)

REPORT = "report.html"
PANELS_DIR = "panels"
PLOTS = {
    "throughput": "throughput_p95.png",
    "cpu": "cpu.png",
    "sockets": "sockets.png",
}
# An open sweep's plots, all against the intended rate.
OPEN_PLOTS = {
    "throughput": "throughput_rate.png",
    "latency": "latency_rate.png",
    "arrivals": "arrivals_rate.png",
    "cpu": "cpu.png",
    "sockets": "sockets.png",
}
MODEL_TEXT = {
    "open": "open model: arrivals held at a rate; latency from each request's intended start",
    "closed": "closed model: {users} users each waiting for its answer — latency hides queueing "
    "(coordinated omission)",
}


def _by_users(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Closed steps by users; open steps by intended rate."""
    return sorted(steps, key=lambda s: (analysis.load(s), s.get("index", 0)))


def _series(steps: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(x, y) of a figure over the steps that have it: x is the users, or the intended rate of open steps."""
    xs, ys = [], []
    for s in steps:
        if s.get(key) is not None:
            xs.append(analysis.load(s))
            ys.append(float(s[key]))
    return xs, ys


def _figure(xlabel: str = "users") -> tuple[Figure, Any]:
    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.subplots()
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(xlabel)
    return fig, ax


RATE_AXIS = "intended rate (arrivals/s)"


def label(step: dict[str, Any]) -> str:
    """A step in words: '8 users', or '300 req/s' for an open step."""
    if step.get("rate") is not None:
        return f"{analysis.rate_text(step['rate'])} req/s"
    return f"{step['users']} users"


def _axis(steps: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """The x axis of the plots (label, and the words in titles): users or the intended rate."""
    return (RATE_AXIS, "intended rate") if analysis.is_open(steps) else ("users", "users")


def _save(fig: Figure, title: str, path: Path, ax: Any, *twins: Any) -> None:
    """Every y axis from zero, one legend for the lines of all axes, the title; then the PNG."""
    handles: list[Any] = []
    labels: list[str] = []
    for axis in (ax, *twins):
        axis.set_ylim(bottom=0)
        h, lb = axis.get_legend_handles_labels()
        handles += h
        labels += lb
    ax.legend(handles, labels, fontsize=8, loc="upper left")
    ax.set_title(title, loc="left")
    fig.tight_layout()
    fig.savefig(path)


def plot_throughput(steps: Sequence[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    """Throughput and p95 against users, with the USL curve and the knee."""
    steps = _by_users(steps)
    fig, ax = _figure()
    xs, rps = _series(steps, "rps")
    ax.plot(xs, rps, "o-", color="tab:blue", label="throughput (rps)")
    usl = summary.get("usl")
    if usl and xs:
        top = max(max(xs), usl.get("peak_users") or 0) * 1.1
        n = np.linspace(1, max(top, 2), 200)
        ax.plot(
            n,
            analysis.usl_throughput(n, usl["lambda"], usl["sigma"], usl["kappa"]),
            "--",
            color="tab:blue",
            alpha=0.5,
            label=f"USL fit (σ={usl['sigma']:.3g}, κ={usl['kappa']:.3g})",
        )
    knee = summary.get("knee_users")
    if knee is not None and (summary.get("knee") or {}).get("found"):
        ax.axvline(knee, color="grey", linestyle=":", label=f"knee: {knee} users")
    ax.set_ylabel("requests per second", color="tab:blue")
    ax2 = ax.twinx()
    px, p95 = _series(steps, "p95_ms")
    ax2.plot(px, p95, "s-", color="tab:red", label="p95 (ms)")
    ax2.set_ylabel("p95 latency (ms)", color="tab:red")
    _save(fig, "Throughput and p95 against users", path, ax, ax2)


def plot_open_throughput(steps: Sequence[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    """Achieved throughput and the rate actually sent against the intended rate, with the y = x line a
    step that kept up follows (one request per arrival), the knee and the saturation rate."""
    steps = _by_users(steps)
    fig, ax = _figure(RATE_AXIS)
    xs, rps = _series(steps, "rps")
    ax.plot(xs, rps, "o-", color="tab:blue", label="achieved (completed requests/s)")
    sx, sent = _series(steps, "sent_rate")
    if sx:
        ax.plot(sx, sent, "^--", color="tab:green", label="sent (arrivals started/s)")
    if xs:
        top = max(xs) * 1.05
        ax.plot([0, top], [0, top], ":", color="grey", label="y = x: every arrival answered")
    knee = summary.get("knee_rate")
    if knee is not None and (summary.get("knee") or {}).get("found"):
        ax.axvline(knee, color="grey", linestyle="-.", label=f"knee: {analysis.rate_text(knee)}/s")
    saturation = summary.get("saturation_rate")
    if saturation is not None:
        ax.axvline(
            saturation, color="tab:red", linestyle=":", label=f"saturated: {analysis.rate_text(saturation)}/s"
        )
    ax.set_ylabel("per second")
    _save(fig, "Achieved throughput against the intended rate", path, ax)


def plot_open_latency(steps: Sequence[dict[str, Any]], path: Path) -> None:
    """p50/p95/p99 from each request's intended start (solid) and Locust's send-to-answer (dashed)
    against the intended rate: where they part, requests waited to be sent."""
    steps = _by_users(steps)
    fig, ax = _figure(RATE_AXIS)
    for i, q in enumerate(("p50", "p95", "p99")):
        xs, ys = _series(steps, f"{q}_ms")
        ax.plot(xs, ys, "o-", color=f"C{i}", label=f"{q} from intended start")
        rx, ry = _series(steps, f"response_{q}_ms")
        if rx:
            ax.plot(rx, ry, "s--", color=f"C{i}", alpha=0.7, label=f"{q} send to answer")
    ax.set_ylabel("latency (ms)")
    _save(fig, "Latency against the intended rate", path, ax)


def plot_open_arrivals(steps: Sequence[dict[str, Any]], path: Path) -> None:
    """The share of each step's arrivals dropped (never started) or started late, against the rate."""
    steps = _by_users(steps)
    fig, ax = _figure(RATE_AXIS)
    for key, style, words in (("dropped", "o-", "dropped"), ("late", "s--", "started late")):
        pts = [
            (float(s["rate"]), 100.0 * s[key] / s["intended"])
            for s in steps
            if isinstance(s.get(key), int | float)
            and isinstance(s.get("intended"), int | float)
            and s["intended"]
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=f"{words} (% of arrivals)")
    ax.set_ylabel("% of the step's arrivals")
    _save(fig, "Arrivals dropped or started late against the intended rate", path, ax)


def plot_cpu(steps: Sequence[dict[str, Any]], path: Path) -> None:
    """CPU of Locust and of the target (totals over all hosts) and of the busiest Locust process against
    users (open steps: the intended rate), with the one-core line a single process cannot pass."""
    steps = _by_users(steps)
    xlabel, words = _axis(steps)
    fig, ax = _figure(xlabel)
    gx, gy = _series(steps, "loadgen_cpu")
    tx, ty = _series(steps, "target_cpu")
    busiest = [
        (analysis.load(s), s["loadgen_cpu_busiest"]["cpu"]) for s in steps if s.get("loadgen_cpu_busiest")
    ]
    ax.plot(gx, gy, "o-", color="tab:orange", label="Locust, all processes")
    if busiest:
        ax.plot(*zip(*busiest, strict=True), "^--", color="tab:red", label="busiest Locust process")
    ax.plot(tx, ty, "s-", color="tab:green", label="target, all its processes")
    ax.axhline(1.0, color="grey", linestyle=":", label="one core")
    ax.set_ylabel("CPU (cores)")
    _save(fig, f"CPU against {words}", path, ax)


def plot_sockets(steps: Sequence[dict[str, Any]], path: Path) -> None:
    """Established client sockets toward the target against users; a healthy run follows one per user. An
    open run's against the intended rate, beside the users of the pool that served each rate."""
    steps = _by_users(steps)
    xlabel, words = _axis(steps)
    fig, ax = _figure(xlabel)
    sx, sy = _series(steps, "client_sockets")
    ax.plot(sx, sy, "o-", color="tab:purple", label="established client sockets (median)")
    if steps and analysis.is_open(steps):
        ux, uy = _series(steps, "users")
        ax.plot(ux, uy, "s--", color="grey", alpha=0.6, label="users in the pool")
    elif steps:
        top = max(s["users"] for s in steps)
        ax.plot([0, top], [0, top], "--", color="grey", alpha=0.6, label="one socket per user")
    ax.set_ylabel("sockets")
    _save(fig, f"Client sockets against {words}", path, ax)


def _cell(value: Any, fmt: str = "{}") -> str:
    if value is None:
        return "<td>–</td>"
    return f"<td>{html.escape(fmt.format(value))}</td>"


# A capacity table's column: its header and the step's cell.
Column = tuple[str, Callable[[dict[str, Any]], str]]


def _column(key: str, fmt: str = "{}") -> Column:
    """A column of one step figure, headed by its name."""
    return key, lambda s: _cell(s.get(key), fmt)


def _ms(quantile: str) -> Column:
    return f"{quantile} ms", lambda s: _cell(s.get(f"{quantile}_ms"), "{:g}")


def _fail_percent(s: dict[str, Any]) -> str:
    return _cell(None if s.get("fail_ratio") is None else s["fail_ratio"] * 100, "{:.2f}")


def _sent(s: dict[str, Any]) -> str:
    if s.get("sent") is None:
        return _cell(None)
    return _cell(f"{s['sent']:g}" + (f" of {s['intended']:g}" if s.get("intended") is not None else ""))


def _send_to_answer(s: dict[str, Any]) -> str:
    response = [s.get(f"response_{q}_ms") for q in ("p50", "p95", "p99")]
    if all(r is None for r in response):
        return _cell(None)
    return _cell(" / ".join("–" if r is None else f"{r:g}" for r in response))


_STEP: Column = ("step", lambda s: _cell(s.get("index", 0) + 1))
_RPS: Column = ("rps", lambda s: _cell(s.get("rps"), "{:.1f}"))
_FAIL: Column = ("fail %", _fail_percent)
_CLIENT_SOCKETS: Column = ("client sockets", lambda s: _cell(s.get("client_sockets"), "{:g}"))
# The CPU on both sides, the last columns before the diagnosis in both tables.
_CPU: tuple[Column, ...] = (
    ("Locust CPU", lambda s: _cell(s.get("loadgen_cpu"), "{:.2f}")),
    ("busiest Locust process", lambda s: _cell(_busiest_process(s.get("loadgen_cpu_busiest")))),
    ("target CPU", lambda s: _cell(s.get("target_cpu"), "{:.2f}")),
    ("busiest target host", lambda s: _cell(_busiest_host(s.get("target_cpu_busiest_host")))),
)


def _steps_table(
    steps: Sequence[dict[str, Any]], columns: Sequence[Column], knee: Callable[..., bool]
) -> str:
    """The capacity table: a row per step (the knee's marked), these columns and its diagnosis."""
    head = "<tr>" + "".join(f"<th>{title}</th>" for title, _ in columns) + "<th>diagnosis</th></tr>"
    rows = []
    for s in steps:
        cls = ' class="knee"' if knee(s) else ""
        diag = " ".join(
            f'<span class="diag {html.escape(d)}">{html.escape(d)}</span>' for d in s.get("diagnosis") or []
        )
        rows.append(f"<tr{cls}>" + "".join(cell(s) for _, cell in columns) + f"<td>{diag}</td></tr>")
    return f'<table class="capacity">{head}{"".join(rows)}</table>'


def _open_capacity_table(steps: Sequence[dict[str, Any]], knee_rate: float | None) -> str:
    """An open sweep's table: per intended rate the pool, what was sent, dropped and late, and latency
    from intended start beside send-to-answer."""
    columns: list[Column] = [
        _STEP,
        ("rate /s", lambda s: _cell(analysis.rate_text(s.get("rate")))),
        ("users (pool)", lambda s: _cell(s.get("users"))),
        _RPS,
        ("sent", _sent),
        _column("dropped", "{:g}"),
        _column("late", "{:g}"),
        *(_ms(q) for q in ("p50", "p95", "p99")),
        ("send-to-answer p50/p95/p99 ms", _send_to_answer),
        ("lateness p99 ms", lambda s: _cell(s.get("lateness_p99_ms"), "{:g}")),
        ("backlog growth /s", lambda s: _cell((s.get("backlog") or {}).get("growth_per_s"), "{:.3g}")),
        _FAIL,
        _CLIENT_SOCKETS,
        *_CPU,
    ]

    def knee(s: dict[str, Any]) -> bool:
        return knee_rate is not None and s.get("rate") is not None and float(s["rate"]) == float(knee_rate)

    return _steps_table(steps, columns, knee)


def _capacity_table(steps: Sequence[dict[str, Any]], knee_users: int | None) -> str:
    columns: list[Column] = [
        _STEP,
        ("users", lambda s: _cell(s["users"])),
        _RPS,
        *(_ms(q) for q in ("p50", "p90", "p95", "p99", "max")),
        _FAIL,
        _CLIENT_SOCKETS,
        ("server sockets", lambda s: _cell(s.get("server_sockets"), "{:g}")),
        *_CPU,
    ]
    return _steps_table(steps, columns, lambda s: s["users"] == knee_users)


def _busiest_process(busiest: dict[str, Any] | None) -> str | None:
    if not busiest or busiest.get("cpu") is None:
        return None
    return f"{busiest['process']} {busiest['cpu']:.2f}"


def _busiest_host(busiest: dict[str, Any] | None) -> str | None:
    if not busiest or busiest.get("cpu") is None:
        return None
    cores = f" of {busiest['cores']:g}" if busiest.get("cores") else ""
    return f"{busiest['host']} {busiest['cpu']:.2f}{cores}"


def _where(figures: dict[str, Any]) -> str:
    """'on loadgen1/locust-worker-2' or 'on host data1': where the evidence was measured."""
    if figures.get("process") or figures.get("component"):
        return f" on <code>{html.escape(str(figures.get('process') or figures['component']))}</code>"
    if figures.get("host"):
        return f" on host <code>{html.escape(str(figures['host']))}</code>"
    return ""


def _evidence(steps: Sequence[dict[str, Any]]) -> str:
    items = []
    for s in steps:
        for code, figures in (s.get("diagnosis_evidence") or {}).items():
            text = ", ".join(f"{k} {json.dumps(v)}" for k, v in figures.items())
            items.append(
                f"<li>step {s.get('index', 0) + 1} ({html.escape(label(s))}): <b>{html.escape(code)}</b>"
                f"{_where(figures)} — {html.escape(text)}</li>"
            )
    return f"<ul>{''.join(items)}</ul>" if items else "<p>Every step was ok.</p>"


def _gib(value: float | None) -> float | None:
    return None if value is None else value / 2**30


def _shared_note(steps: Sequence[dict[str, Any]]) -> str:
    shared = sorted(
        {
            h
            for s in steps
            for h, f in ((s.get("resources") or {}).get("hosts") or {}).items()
            if f.get("shared_machine")
        }
    )
    if not shared:
        return ""
    return (
        f"<p class='note'>Hosts {html.escape(', '.join(shared))} share one machine's cores and memory: "
        "a host's CPU share is of that machine (or of its own cgroup where <i>CPU from</i> says so), "
        "and per-host diagnoses rest on process figures.</p>"
    )


def _step_resources(s: dict[str, Any]) -> str:
    res = s.get("resources") or {}
    hosts = "".join(
        "<tr>"
        + _cell(h)
        + _cell(f.get("cores"), "{:g}")
        + _cell(None if f.get("cpu") is None else f["cpu"] * 100, "{:.0f}")
        + _cell(f.get("cpu_from"))
        + _cell(_gib(f.get("memory_used_bytes")), "{:.1f}")
        + _cell(_gib(f.get("memory_total_bytes")), "{:.1f}")
        + _cell("yes" if f.get("shared_machine") else "no")
        + _cell(((res.get("client_sockets") or {}).get("hosts") or {}).get(h), "{:g}")
        + _cell(((res.get("server_sockets") or {}).get("hosts") or {}).get(h), "{:g}")
        + "</tr>"
        for h, f in (res.get("hosts") or {}).items()
    )
    procs = "".join(
        "<tr>"
        + _cell(name)
        + _cell(p.get("role"))
        + _cell(p.get("cpu"), "{:.2f}")
        + _cell(p.get("runnable"), "{:.2f}")
        + "</tr>"
        for name, p in sorted(
            (res.get("processes") or {}).items(), key=lambda kv: (-(kv[1].get("cpu") or 0), kv[0])
        )
    )
    connections = [
        f"{section} {host}: " + ", ".join(f"{k} {v:g}" for k, v in figures.items() if v is not None)
        for section in ("postgres", "redis", "nginx", "db_pool")
        for host, figures in (res.get(section) or {}).items()
    ]
    return (
        f"<details><summary>step {s.get('index', 0) + 1}: {html.escape(label(s))} "
        f"({html.escape(str(res.get('source', '–')))})</summary>"
        "<table><tr><th>host</th><th>cores</th><th>CPU %</th><th>CPU from</th><th>memory used GiB</th>"
        "<th>memory GiB</th><th>shared machine</th><th>client sockets</th><th>server sockets</th></tr>"
        f"{hosts}</table>"
        "<table><tr><th>process</th><th>role</th><th>CPU cores</th><th>runnable share</th></tr>"
        f"{procs}</table>"
        + (f"<p>{html.escape('; '.join(connections))}</p>" if connections else "")
        + "</details>"
    )


def _resources(steps: Sequence[dict[str, Any]]) -> str:
    """Per step, each host's CPU, memory and sockets and each process's CPU, keyed host/process."""
    return _shared_note(steps) + "".join(_step_resources(s) for s in steps)


def _endpoints(steps: Sequence[dict[str, Any]]) -> str:
    parts = []
    for s in steps:
        rows = "".join(
            "<tr>"
            + _cell(e.get("method"))
            + _cell(e.get("name"))
            + _cell(e.get("requests"))
            + _cell(e.get("rps"), "{:.1f}")
            + _cell(e.get("p50_ms"), "{:g}")
            + _cell(e.get("p95_ms"), "{:g}")
            + _cell(e.get("p99_ms"), "{:g}")
            + _cell(None if e.get("fail_ratio") is None else e["fail_ratio"] * 100, "{:.2f}")
            + "</tr>"
            for e in s.get("endpoints") or []
        )
        parts.append(
            f"<details><summary>step {s.get('index', 0) + 1}: {html.escape(label(s))}</summary><table>"
            "<tr><th>method</th><th>name</th><th>requests</th><th>rps</th><th>p50 ms</th><th>p95 ms</th>"
            f"<th>p99 ms</th><th>fail %</th></tr>{rows}</table></details>"
        )
    return "".join(parts)


def _broken(threshold: dict[str, Any]) -> str:
    failed = threshold.get("failed_steps") or []
    if not failed and not threshold.get("checked_steps", 1):
        return "no step measured"
    return ", ".join(f"{label(f)}: {f['value']}" for f in failed)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:last-child, td:nth-child(2) { text-align: left; }
table.capacity td:nth-child(2) { text-align: right; }
tr.knee { background: #fff6d5; }
.verdict { display: inline-block; padding: 0.2em 0.8em; border-radius: 4px; color: white; font-weight: bold; }
.verdict.pass { background: #2e7d32; } .verdict.fail { background: #c62828; }
.diag { display: inline-block; padding: 0 0.4em; margin: 1px; border-radius: 3px; background: #eee; }
.diag.ok { background: #dcedc8; } .diag.errors, .diag.target_saturated { background: #ffcdd2; }
.diag.component_down { background: #ffcdd2; }
.diag.generator_cpu_bound, .diag.client_connection_capped, .diag.load_short { background: #ffe0b2; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
.figures img { max-width: 100%; border: 1px solid #ddd; }
.note { background: #fff6d5; padding: 0.4em 0.8em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; } dt { font-weight: bold; }
"""


def render_html(
    run: dict[str, Any],
    summary: dict[str, Any],
    steps: Sequence[dict[str, Any]],
    panels: list[str],
    hosts: dict[str, Any] | None = None,
) -> str:
    """The report page; images are referenced by relative path, so the folder can be moved or fetched."""
    spec = run.get("spec") or {}
    verdict = summary.get("verdict", "pass")
    open_run = analysis.is_open(steps)
    plots = OPEN_PLOTS if open_run else PLOTS
    capacity = (
        _open_capacity_table(_by_users(steps), summary.get("knee_rate"))
        if open_run
        else _capacity_table(steps, summary.get("knee_users"))
    )
    panel_html = (
        f"<h2>Lab panels (Prometheus)</h2><div class='figures'>{_images(panels)}</div>" if panels else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>loadlab sweep {html.escape(str(run.get("id", "")))}</title>
<style>{_CSS}</style></head>
<body>
<h1>loadlab sweep: {html.escape(str(spec.get("name", "")))} <span class="verdict {html.escape(verdict)}">{
        html.escape(verdict)
    }</span></h1>
<p class="meta">{html.escape(str(run.get("id", "")))} · {html.escape(str(run.get("mode", "")))} run against
{html.escape(str(run.get("target", "")))} · started {html.escape(str(run.get("started_at", "")))}{
        html.escape(_status_text(summary))
    }</p>
{_overview(run, summary, steps)}
<h2>Capacity</h2>
{capacity}
<h2>Curves</h2>
<div class="figures">{_images(plots.values())}</div>
<h2>Thresholds</h2>
{_thresholds_html(summary)}
<h2>What gave out</h2>
{_evidence(steps)}
<h2>Hosts and processes</h2>
{_resources(steps)}
<h2>Endpoints</h2>
{_endpoints(steps)}
{_lab_hosts(hosts, run)}
{panel_html}
</body></html>
"""


def _status_text(summary: dict[str, Any]) -> str:
    """'' for a complete run, else how far it got and what stopped it."""
    if summary.get("complete", True):
        return ""
    return f" — incomplete: {summary.get('finished_steps')} of {summary.get('planned_steps')} steps" + (
        f" (stopped by {summary['interrupted']})" if summary.get("interrupted") else ""
    )


def _overview(run: dict[str, Any], summary: dict[str, Any], steps: Sequence[dict[str, Any]]) -> str:
    """The run at a glance: model, recommendation, max throughput, knee, USL fit (an open run's saturation
    rate), steps, Locust and revision."""
    spec = run.get("spec") or {}
    rec = summary.get("recommendation") or {}
    open_run = analysis.is_open(steps)
    knee_text, usl_text = _open_knee_text(summary) if open_run else _closed_knee_text(summary)
    at_max = (
        f" at {analysis.rate_text(summary['max_rps_rate'])} req/s"
        if open_run and summary.get("max_rps_rate") is not None
        else (f" at {summary.get('max_rps_users')} users" if summary.get("max_rps_users") else "")
    )
    versions = run.get("versions") or {}
    git = run.get("git") or {}
    max_rps = summary.get("max_rps")
    return f"""<dl>
<dt>Model</dt><dd class="model">{html.escape(model_text(steps))}</dd>
<dt>Recommendation</dt><dd>{html.escape(rec.get("text", "–"))}</dd>
<dt>Max throughput</dt><dd>{"–" if max_rps is None else f"{max_rps:.1f} rps"}{html.escape(at_max)}</dd>
<dt>Knee</dt><dd>{html.escape(knee_text)}</dd>
<dt>{"Saturation" if open_run else "USL fit"}</dt><dd>{html.escape(usl_text)}</dd>
<dt>Steps</dt><dd>{html.escape(_steps_text(spec, steps))}; window
{steps[0].get("window_s") if steps else "–"} s after {steps[0].get("warmup_s") if steps else "–"} s warm-up{
        "" if open_run else f", spawn rate {spec.get('spawn_rate')}/s"
    }</dd>
<dt>Locust</dt><dd>{html.escape(str(versions.get("locust")))}{
        f", {run['workers']} workers on this machine" if run.get("workers") else " (the lab's master)"
    }</dd>
<dt>Revision</dt><dd>{html.escape(str(git.get("commit") or "uncommitted"))}{
        " (local changes)" if git.get("dirty") else ""
    }</dd>
</dl>"""


def _closed_knee_text(summary: dict[str, Any]) -> tuple[str, str]:
    """A closed run's knee (users) and USL fit, in words."""
    knee = summary.get("knee") or {}
    usl = summary.get("usl")
    if usl:
        peak = (
            f"peak {usl['peak_rps']} rps at {usl['peak_users']} users"
            if usl.get("peak_users")
            else (f"throughput levels off toward {usl['peak_rps']} rps" if usl.get("peak_rps") else "no peak")
        )
        usl_text = f"σ = {usl['sigma']:.4g}, κ = {usl['kappa']:.4g}; {peak} (R² {usl['r2']})"
    else:
        usl_text = f"not fitted (needs {analysis.USL_MIN_POINTS} distinct user counts)"
    knee_text = (
        f"{summary.get('knee_users')} users"
        + ("" if knee.get("found") else " (throughput still grew with users at the last step)")
        if summary.get("knee_users") is not None
        else "–"
    )
    return knee_text, usl_text


def _thresholds_html(summary: dict[str, Any]) -> str:
    """Each threshold, whether it held, and the steps that broke it."""
    rows = "".join(
        f"<tr><td>{html.escape(t['expr'])}</td><td>{'pass' if t['passed'] else 'fail'}</td>"
        f"<td>{html.escape(_broken(t))}</td></tr>"
        for t in summary.get("thresholds") or []
    )
    if not rows:
        return "<p>No thresholds were set.</p>"
    return f"<table><tr><th>threshold</th><th>result</th><th>steps that broke it</th></tr>{rows}</table>"


def _images(names: Iterable[str]) -> str:
    return "".join(f'<img src="{html.escape(name)}" alt="{html.escape(name)}">' for name in names)


def model_text(steps: Sequence[dict[str, Any]]) -> str:
    """Which model the run used, and what its latency means."""
    if analysis.is_open(steps):
        return MODEL_TEXT["open"]
    users = sorted({s["users"] for s in steps})
    counts = "–" if not users else (str(users[0]) if len(users) == 1 else f"{users[0]} to {users[-1]}")
    return MODEL_TEXT["closed"].format(users=counts)


def _steps_text(spec: dict[str, Any], steps: Sequence[dict[str, Any]]) -> str:
    """The planned steps: '2, 4, 8 users', or an open sweep's '100, 200 req/s (even arrivals)'."""
    if not analysis.is_open(steps):
        return f"{', '.join(str(u) for u in spec.get('users', []))} users"
    rates = spec.get("rates") or [s["rate"] for s in steps]
    arrivals = ((steps[0].get("open") or {}).get("arrivals") or spec.get("arrivals")) if steps else None
    return f"{', '.join(analysis.rate_text(r) for r in rates)} req/s" + (
        f" ({arrivals} arrivals)" if arrivals else ""
    )


def _open_knee_text(summary: dict[str, Any]) -> tuple[str, str]:
    """An open run's knee (the last rate that kept up) and saturation rate, in words."""
    knee = summary.get("knee") or {}
    rate = summary.get("knee_rate")
    if not knee.get("found"):
        knee_text = (
            "–"
            if rate is None
            else f"{analysis.rate_text(rate)} req/s (every step kept up with its arrivals)"
        )
    else:
        behind = analysis.behind_text(knee.get("fell_behind") or {})
        first = (
            "none: even the lightest rate" if rate is None else f"{analysis.rate_text(rate)} req/s; the next"
        )
        knee_text = (
            f"{first}, {analysis.rate_text(knee.get('next_rate'))} req/s, did not keep up "
            f"({knee.get('side', 'target')}: {behind})"
        )
    saturation = summary.get("saturation_rate")
    saturation_text = (
        f"the target fell behind from {analysis.rate_text(saturation)} req/s"
        if saturation is not None
        else "the target kept up with every rate measured"
    ) + " (no USL fit: it models throughput against users)"
    return knee_text, saturation_text


def _lab_hosts(index: dict[str, Any] | None, run: dict[str, Any]) -> str:
    """The lab's hosts as `loadlab collect` found them (hosts.json), each linked to its folder."""
    if not index or not index.get("hosts"):
        if run.get("mode") != "lab":
            return ""
        return (
            "<h2>Lab hosts</h2><p>Not collected: <code>loadlab collect RUN_DIR</code> gathers each host's "
            "logs, sockets, kernel settings and configs; then <code>loadlab report RUN_DIR</code>.</p>"
        )
    clocks = (run.get("clocks") or {}).get("hosts") or {}
    rows = []
    for name, host in index["hosts"].items():
        memory = host.get("memory_bytes")
        offset = (clocks.get(name) or {}).get("offset_ms")
        state = "collected" if host.get("reachable") and not host.get("error") else host.get("error") or "–"
        folder = html.escape(str(host.get("folder") or f"hosts/{name}"))
        rows.append(
            f'<tr><td><a href="{folder}/">{html.escape(name)}</a></td>'
            + f"<td>{html.escape(', '.join(host.get('groups') or []))}</td>"
            + _cell(host.get("cores"))
            + _cell(None if memory is None else memory / 2**30, "{:.1f} GiB")
            + _cell(host.get("kernel"))
            + _cell(offset, "{:+.1f} ms")
            + f"<td>{html.escape(str(state))}</td></tr>"
        )
    span = index.get("span") or {}
    return (
        "<h2>Lab hosts</h2><table><tr><th>host</th><th>groups</th><th>cores</th><th>memory</th>"
        "<th>kernel</th><th>clock offset</th><th>collected</th></tr>"
        + "".join(rows)
        + f"</table><p>Each host's folder holds its supervisor status, lab logs from "
        f"{html.escape(str(span.get('start', '?')))} to {html.escape(str(span.get('end', '?')))}, "
        "<code>ss -s</code>, sockstat, kernel settings and rendered configs.</p>"
    )


def render_lab_panels(path: Path, run: dict[str, Any], steps: Sequence[dict[str, Any]]) -> list[Path]:
    """PNG panels of the lab dashboards over the run, from the lab's Prometheus (best effort)."""
    prometheus_url = (run.get("inventory") or {}).get("prometheus_url")
    if run.get("mode") != "lab" or not prometheus_url or not steps:
        return []
    try:
        from loadlab.dashboards.render import Step, render_panels
    except ImportError:
        return []
    windows = [Step(s["window_start"], s["window_end"], label(s)) for s in steps]
    try:
        return render_panels(
            prometheus_url,
            windows[0].start - 30,
            windows[-1].end + 30,
            path / PANELS_DIR,
            "load-saturation",
            steps=windows,
        )
    except Exception as exc:  # noqa: BLE001 - the report stands without the panels
        log.warning("lab panels not rendered: %s", exc)
        return []


def write_report(path: Path, panels: bool = False) -> Path:
    """Write report.html and the PNG plots into the run folder; `panels` also renders lab dashboards."""
    if not path.is_dir():
        raise UserError(f"{path} is not a folder")
    run_dir = RunDir(path)
    run = run_dir.read_run()
    steps = run_dir.read_steps()
    if not steps:
        raise UserError(f"{path} has no finished step to report on")
    summary = run_dir.read_summary() or {}
    if not summary.get("steps"):
        from loadlab.sweep.results import summarize

        spec = run_dir.read_spec(run)
        summary = summarize(steps, spec.parsed_thresholds(), spec.planned_steps(steps), search=spec.search)
    if analysis.is_open(steps):
        plot_open_throughput(steps, summary, path / OPEN_PLOTS["throughput"])
        plot_open_latency(steps, path / OPEN_PLOTS["latency"])
        plot_open_arrivals(steps, path / OPEN_PLOTS["arrivals"])
    else:
        plot_throughput(steps, summary, path / PLOTS["throughput"])
    plot_cpu(steps, path / PLOTS["cpu"])
    plot_sockets(steps, path / PLOTS["sockets"])
    if panels:
        render_lab_panels(path, run, steps)
    panel_files = []
    with contextlib.suppress(OSError):
        panel_files = sorted(f"{PANELS_DIR}/{p.name}" for p in (path / PANELS_DIR).glob("*.png"))
    out = path / REPORT
    from loadlab.collect import HOSTS_INDEX

    hosts = None
    with contextlib.suppress(OSError, ValueError):
        hosts = json.loads((path / HOSTS_INDEX).read_text())
    out.write_text(render_html(run, summary, steps, panel_files, hosts))
    return out
