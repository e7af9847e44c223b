"""The dashboards' panels as PNG files, straight from Prometheus, for hosts and reports without Grafana.

Each panel's PromQL is taken from the committed dashboard JSON and evaluated as Grafana would: template
variables become their chosen value (or `.*` for "All"), `$__rate_interval`, `$__interval` and `$__range`
become durations derived from the time range, and the panel's unit formats the axis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import matplotlib.dates as mdates
from matplotlib.figure import Figure  # drawn with Agg, no pyplot state: safe to call from any thread
from matplotlib.ticker import FuncFormatter

from loadlab.dashboards import load
from loadlab.dashboards.builder import Unit
from loadlab.errors import UserError

SERIES_KEY = "loadlab:series"  # PNG text chunk: how many series the panel drew (0 = "no data")
MAX_POINTS = 400  # samples per series: about a panel's width in pixels, as Grafana's maxDataPoints
LEGEND_ROWS = 18  # legend entries per column beside a 3.6 in tall panel
MAX_LEGEND = 3 * LEGEND_ROWS
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class Step:
    """A sweep step's measurement window, shaded on time series and one bar on per-step figures."""

    start: float
    end: float
    label: str


@dataclass(frozen=True)
class Series:
    """One result series: its legend and (timestamp, value) samples."""

    legend: str
    times: list[float]
    values: list[float]
    limit: bool


def _seconds(t: datetime | float) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t)


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def dashboard_variables(
    dashboard: Mapping[str, Any], chosen: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each template variable's value: the chosen one, else the dashboard's default, "All" as `.*`."""
    values: dict[str, str] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        name = var["name"]
        if var["type"] == "datasource":
            continue
        if var["type"] == "textbox":
            values[name] = str(var.get("current", {}).get("value", var.get("query", "")))
        else:
            values[name] = var.get("allValue") or ".*"
    for name, value in (chosen or {}).items():
        values[name] = value
    return values


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """The PromQL Grafana would send: `$name` and `${name}` replaced, unknown names refused."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise UserError(f"query uses ${name}, which has no value: {expr}")
        return variables[name]

    return _VARIABLE.sub(replace, expr)


def builtin_variables(duration: float, step: float, scrape_interval: float) -> dict[str, str]:
    """Grafana's interval variables for a range: $__rate_interval covers at least four scrapes."""
    return {
        "__interval": _duration(step),
        "__rate_interval": _duration(max(step + scrape_interval, 4 * scrape_interval)),
        "__range": _duration(duration),
    }


def _legend(fmt: str, labels: Mapping[str, str]) -> str:
    if not fmt or fmt == "__auto":
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return f"{labels.get('__name__', '')}{{{inner}}}" if inner or "__name__" in labels else "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


class _Prometheus:
    """The two query endpoints, with errors turned into one line a user can act on."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout)

    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            response = self.client.get(f"{self.url}{path}", params=params)
        except httpx.HTTPError as exc:
            raise UserError(f"cannot reach Prometheus at {self.url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or body.get("status") != "success":
            raise UserError(
                f"Prometheus at {self.url} refused {params['query']!r}: "
                f"{body.get('error', response.text.strip()[:200])}"
            )
        return body["data"]["result"]

    def range(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self._get("/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step})

    def instant(self, query: str, at: float) -> list[dict[str, Any]]:
        return self._get("/api/v1/query", {"query": query, "time": at})

    def close(self) -> None:
        self.client.close()


def _si(value: float, suffix: str = "") -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}{suffix}"
    return f"{value:.3g}{suffix}"


def _binary(value: float, suffix: str = "") -> str:
    for factor, prefix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{suffix}"
    return f"{value:.3g} B{suffix}"


def _time(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) < 1:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s"


FORMATTERS: dict[str, Callable[[float], str]] = {
    Unit.SHORT: _si,
    Unit.PERCENT: lambda v: f"{v * 100:.3g}%",
    Unit.SECONDS: _time,
    Unit.BYTES: _binary,
    Unit.BYTES_PER_SECOND: lambda v: _binary(v, "/s"),
    Unit.REQUESTS_PER_SECOND: lambda v: _si(v, " req/s"),
    Unit.OPS_PER_SECOND: lambda v: _si(v, " ops/s"),
}


def format_value(value: float, unit: str) -> str:
    """A value as the panel's unit shows it in Grafana (close enough to compare)."""
    if math.isnan(value):
        return "NaN"
    return FORMATTERS.get(unit, _si)(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p.get("type") in ("timeseries", "stat")]


def _limits(panel: Mapping[str, Any]) -> list[re.Pattern[str]]:
    """Display names the panel draws as ceilings (its byRegexp overrides), as Grafana matches them."""
    return [
        re.compile(o["matcher"]["options"])
        for o in panel.get("fieldConfig", {}).get("overrides", [])
        if o["matcher"]["id"] == "byRegexp"
    ]


def _plot_timeseries(
    ax: Any, panel: Mapping[str, Any], series: list[Series], start: float, end: float, steps: Sequence[Step]
) -> None:
    custom = panel["fieldConfig"]["defaults"].get("custom", {})
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    drawstyle = "steps-post" if custom.get("lineInterpolation") == "stepAfter" else "default"
    for i, step in enumerate(steps):
        ax.axvspan(_dt(step.start), _dt(step.end), color="#8F3BB8", alpha=0.08 + 0.06 * (i % 2))
        ax.annotate(
            step.label,
            (_dt(step.start), 0.98),
            xycoords=("data", "axes fraction"),
            xytext=(3, 0),
            textcoords="offset points",
            va="top",
            fontsize=7,
            color="#8F3BB8",
        )
    plain = [s for s in series if not s.limit]
    if stacked and plain:
        grid = sorted({t for s in plain for t in s.times})
        rows = []
        for s in plain:
            by_time = dict(zip(s.times, s.values, strict=True))
            rows.append([0.0 if math.isnan(by_time.get(t, math.nan)) else by_time[t] for t in grid])
        ax.stackplot([_dt(t) for t in grid], rows, labels=[s.legend for s in plain], alpha=0.6)
    else:
        for s in plain:
            ax.plot([_dt(t) for t in s.times], s.values, label=s.legend, lw=1.2, drawstyle=drawstyle)
    for s in series:
        if s.limit:
            ax.plot([_dt(t) for t in s.times], s.values, label=s.legend, color="red", ls="--", lw=1)
    ax.set_xlim(_dt(start), _dt(end))
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _legend_outside(fig: Figure, ax: Any) -> None:
    """The legend right of the plot, in more columns (and at most MAX_LEGEND entries) when series abound."""
    handles, labels = ax.get_legend_handles_labels()
    if not labels:
        return
    shown = min(len(labels), MAX_LEGEND)
    if shown < len(labels):
        ax.set_title(f"legend: {shown} of {len(labels)} series", loc="right", fontsize=7, color="grey")
    fig.legend(
        handles[:shown],
        labels[:shown],
        loc="outside right upper",
        fontsize=7,
        ncols=math.ceil(shown / LEGEND_ROWS),
        frameon=False,
    )


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")


def _plot_steps(ax: Any, unit: str, labels: list[str], per_step: dict[str, list[float]]) -> None:
    width = 0.8 / max(1, len(per_step))
    for i, (legend, values) in enumerate(per_step.items()):
        xs = [j + (i - (len(per_step) - 1) / 2) * width for j in range(len(labels))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in values], width=width, label=legend)
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                "–" if math.isnan(value) else format_value(value, unit),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(range(len(labels)), labels, fontsize=8)


def _range_series(
    prom: _Prometheus,
    panel: Mapping[str, Any],
    variables: Mapping[str, str],
    t0: float,
    t1: float,
    step: float,
) -> list[Series]:
    limits = _limits(panel)
    series = []
    for target in panel["targets"]:
        for result in prom.range(substitute(target["expr"], variables), t0, t1, step):
            legend = _legend(target.get("legendFormat", ""), result["metric"])
            times = [float(t) for t, _ in result["values"]]
            values = [float(v) for _, v in result["values"]]
            series.append(Series(legend, times, values, any(p.search(legend) for p in limits)))
    return series


def _step_values(
    prom: _Prometheus,
    panel: Mapping[str, Any],
    chosen: Mapping[str, str],
    windows: Sequence[Step],
    scrape_interval: float,
) -> dict[str, list[float]]:
    """A one-figure panel evaluated at the end of each window, over that window ($__range)."""
    per_step: dict[str, list[float]] = {}
    for i, window in enumerate(windows):
        builtins = builtin_variables(window.end - window.start, scrape_interval, scrape_interval)
        for target in panel["targets"]:
            query = substitute(target["expr"], {**chosen, **builtins})
            for result in prom.instant(query, window.end):
                legend = _legend(target.get("legendFormat", ""), result["metric"])
                per_step.setdefault(legend, [math.nan] * len(windows))[i] = float(result["value"][1])
    return per_step


def render_panels(
    prometheus_url: str,
    start: datetime | float,
    end: datetime | float,
    out_dir: str | Path,
    dashboard: str = "load-saturation",
    *,
    variables: Mapping[str, str] | None = None,
    steps: Sequence[Step] = (),
    scrape_interval: float = 5.0,
    timeout: float = 30.0,
) -> list[Path]:
    """One PNG per panel of `dashboard` over [start, end], so a run can be read without Grafana.

    `dashboard` is a file stem under dashboards/json (load-saturation, sockets, host-processes, sweep) or a
    path to a dashboard JSON. `variables` overrides template variables (host, instance, port); values are
    regexes where the dashboard filters with =~. `steps` shades each step on time series, and turns the
    one-figure (stat) panels into one bar per step, each evaluated over its step's window.
    """
    t0, t1 = _seconds(start), _seconds(end)
    if t1 <= t0:
        raise UserError(f"empty time range: end {end} is not after start {start}")
    try:
        model = load(dashboard)
    except (KeyError, OSError) as exc:
        raise UserError(str(exc)) from exc
    stem = Path(dashboard).stem
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = dashboard_variables(model, variables)
    step = max(1.0, math.ceil((t1 - t0) / MAX_POINTS))
    prom = _Prometheus(prometheus_url, timeout)
    written: list[Path] = []
    try:
        for panel in _panels(model):
            unit = panel["fieldConfig"]["defaults"].get("unit", Unit.SHORT)
            fig = Figure(figsize=(11, 3.6), dpi=100, layout="constrained")
            ax = fig.subplots()
            if panel["type"] == "timeseries":
                builtins = builtin_variables(t1 - t0, step, scrape_interval)
                series = _range_series(prom, panel, {**chosen, **builtins}, t0, t1, step)
                _plot_timeseries(ax, panel, series, t0, t1, steps)
                drawn = sum(1 for s in series if not s.limit and any(math.isfinite(v) for v in s.values))
            else:
                windows = list(steps) or [Step(t0, t1, "whole run")]
                per_step = _step_values(prom, panel, chosen, windows, scrape_interval)
                _plot_steps(ax, unit, [w.label for w in windows], per_step)
                drawn = sum(1 for values in per_step.values() if any(math.isfinite(v) for v in values))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos, u=unit: format_value(v, u)))
            ax.set_ylim(bottom=panel["fieldConfig"]["defaults"].get("min"))
            ax.set_title(panel["title"], loc="left", fontsize=11)
            ax.grid(True, alpha=0.3)
            if drawn:
                _legend_outside(fig, ax)
            else:
                _no_data(ax)
            path = out / f"{stem}-{panel['id']:02d}-{_slug(panel['title'])}.png"
            fig.savefig(path, metadata={SERIES_KEY: str(drawn)})
            written.append(path)
    finally:
        prom.close()
    return written
