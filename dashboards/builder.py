"""Small builders for Grafana dashboard JSON: the dashboards describe panels, this module owns the layout.

Plain dataclasses rather than grafanalib: the lab needs two panel types, and owning the few lines that emit
them keeps the generated JSON short, readable in review and free of a dependency that lags Grafana's schema.
The builder, not the dashboard modules, assigns panel ids and grid positions, so neither can collide. What it
emits is checked against Grafana's own dashboard schema (grafana-foundation-sdk's models, for the Grafana
release the lab runs) by tests/test_dashboards_model.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class Unit:
    """Grafana unit ids (fieldConfig.defaults.unit). Rendering to PNG understands exactly these."""

    SHORT = "short"
    PERCENT = "percentunit"  # a ratio 0..1 shown as a percentage; CPU panels use 1.0 = one full core
    SECONDS = "s"
    BYTES = "bytes"
    BYTES_PER_SECOND = "Bps"
    REQUESTS_PER_SECOND = "reqps"
    OPS_PER_SECOND = "ops"


UNITS = (
    Unit.SHORT,
    Unit.PERCENT,
    Unit.SECONDS,
    Unit.BYTES,
    Unit.BYTES_PER_SECOND,
    Unit.REQUESTS_PER_SECOND,
    Unit.OPS_PER_SECOND,
)

GRID_WIDTH = 24  # Grafana's grid is 24 columns wide

# Every panel and query reads from the dashboard's datasource variable, never from a fixed datasource.
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
GRAFANA_DATASOURCE = {"type": "grafana", "uid": "-- Grafana --"}

# The tags every sweep annotation carries (loadlab.grafana posts them; the dashboards show them).
SWEEP_ANNOTATION_TAGS = ("loadlab", "sweep")


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel; `limit` draws it as a dashed red ceiling (max connections, cores)."""

    expr: str
    legend: str = ""
    limit: bool = False


@dataclass(frozen=True)
class Panel:
    """A time series (or, with kind="stat", one figure for the selected time range)."""

    title: str
    targets: tuple[Target, ...]
    unit: str
    description: str = ""
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    stack: bool = False
    stepped: bool = False
    min: float | None = 0
    max: float | None = None
    decimals: int | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"panel {self.title!r}: unknown unit {self.unit!r}")
        if self.kind not in ("timeseries", "stat"):
            raise ValueError(f"panel {self.title!r}: unknown kind {self.kind!r}")
        if not 0 < self.width <= GRID_WIDTH:
            raise ValueError(f"panel {self.title!r}: width must be 1..{GRID_WIDTH}")
        if not self.targets:
            raise ValueError(f"panel {self.title!r}: no query")


@dataclass(frozen=True)
class Row:
    """A titled band of panels, laid out left to right and wrapped at the grid's width."""

    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Variable:
    """A dashboard template variable, already in Grafana's JSON shape."""

    name: str
    json: dict[str, Any]


def datasource_variable() -> Variable:
    """The Prometheus datasource picker every panel reads through."""
    return Variable(
        DATASOURCE_VARIABLE,
        {
            # No `current`: Grafana picks the default Prometheus datasource (the schema wants text and
            # value in a `current` it is given).
            "hide": 0,
            "includeAll": False,
            "label": "Prometheus",
            "multi": False,
            "name": DATASOURCE_VARIABLE,
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
            "type": "datasource",
        },
    )


def query_variable(name: str, label: str, query: str, description: str = "") -> Variable:
    """A multi-select label picker; "All" means the regex .* so series without the label still match."""
    return Variable(
        name,
        {
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "datasource": DATASOURCE,
            "description": description,
            "hide": 0,
            "includeAll": True,
            "label": label,
            "multi": True,
            "name": name,
            "options": [],
            "query": query,  # the classic string form: every Grafana version reads it
            "refresh": 2,
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        },
    )


def textbox_variable(name: str, label: str, default: str, description: str = "") -> Variable:
    """A free-text value such as the target port, with the lab's default filled in."""
    return Variable(
        name,
        {
            "current": {"selected": False, "text": default, "value": default},
            "description": description,
            "hide": 0,
            "label": label,
            "name": name,
            "options": [{"selected": True, "text": default, "value": default}],
            "query": default,
            "skipUrlSync": False,
            "type": "textbox",
        },
    )


def sweep_annotations() -> dict[str, Any]:
    """Grafana's own annotations plus the sweep's step regions, found by their tags."""
    return {
        "list": [
            {
                "builtIn": 1,
                "datasource": GRAFANA_DATASOURCE,
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            },
            {
                "datasource": GRAFANA_DATASOURCE,
                "enable": True,
                "hide": False,
                "iconColor": "#8F3BB8",
                "name": "Sweep steps",
                "target": {
                    "limit": 500,
                    "matchAny": False,
                    "tags": list(SWEEP_ANNOTATION_TAGS),
                    "type": "tags",
                },
            },
        ]
    }


def _target_json(target: Target, ref_id: str, instant: bool) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": target.expr,
        "instant": instant,
        "legendFormat": target.legend or "__auto",
        "range": not instant,
        "refId": ref_id,
    }


_LEGEND_LABEL = re.compile(r"\{\{\s*\w+\s*\}\}")


def legend_regex(legend: str) -> str:
    """A regex matching every display name a legend format yields ("{{host}} cores" -> ^.+ cores$)."""
    parts = _LEGEND_LABEL.split(legend)
    return "^" + ".+".join(re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", p) for p in parts) + "$"


def _limit_override(target: Target) -> dict[str, Any]:
    return {
        "matcher": {"id": "byRegexp", "options": legend_regex(target.legend)},
        "properties": [
            {"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}},
            {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "custom.stacking", "value": {"group": "A", "mode": "none"}},
        ],
    }


def _panel_json(panel: Panel, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    ref_ids = [chr(ord("A") + i) for i in range(len(panel.targets))]
    instant = panel.kind == "stat"
    result: dict[str, Any] = {
        "datasource": DATASOURCE,
        "description": panel.description,
        "gridPos": grid,
        "id": panel_id,
        "targets": [_target_json(t, r, instant) for t, r in zip(panel.targets, ref_ids, strict=True)],
        "title": panel.title,
        "type": panel.kind,
    }
    if panel.kind == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 25 if panel.stack else 8,
            "lineInterpolation": "stepAfter" if panel.stepped else "linear",
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if panel.stack else "none"},
        }
        result["fieldConfig"] = {
            "defaults": defaults,
            "overrides": [_limit_override(t) for t in panel.targets if t.limit],
        }
        result["options"] = {
            "legend": {
                "calcs": ["mean", "max", "lastNotNull"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "text", "value": None}]}
        result["fieldConfig"] = {"defaults": defaults, "overrides": []}
        result["options"] = {
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "percentChangeColorMode": "standard",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showPercentChange": False,
            "textMode": "auto",
            "wideLayout": True,
        }
    return result


@dataclass
class Dashboard:
    """A whole dashboard: rows of panels, variables and annotations; `to_json()` is what Grafana loads."""

    uid: str
    title: str
    description: str
    rows: list[Row]
    variables: list[Variable] = field(default_factory=list)
    tags: tuple[str, ...] = ("loadlab",)
    refresh: str = "10s"
    time_from: str = "now-30m"

    def to_json(self) -> dict[str, Any]:
        """Grafana's dashboard model, with ids and grid positions assigned in reading order."""
        panels: list[dict[str, Any]] = []
        next_id = 1
        y = 0
        for row in self.rows:
            panels.append(
                {
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                    "id": next_id,
                    "panels": [],
                    "title": row.title,
                    "type": "row",
                }
            )
            next_id += 1
            y += 1
            x = 0
            line_height = 0
            for panel in row.panels:
                if x + panel.width > GRID_WIDTH:
                    y += line_height
                    x, line_height = 0, 0
                grid = {"h": panel.height, "w": panel.width, "x": x, "y": y}
                panels.append(_panel_json(panel, next_id, grid))
                next_id += 1
                x += panel.width
                line_height = max(line_height, panel.height)
            y += line_height
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ValueError(f"dashboard {self.uid}: duplicate variable names {names}")
        return {
            "annotations": sweep_annotations(),
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,  # shared crosshair: one moment lines up across every panel
            "links": [
                {
                    "asDropdown": True,
                    "icon": "external link",
                    "includeVars": True,
                    "keepTime": True,
                    "tags": ["loadlab"],
                    "targetBlank": False,
                    "title": "loadlab",
                    "tooltip": "",
                    "type": "dashboards",
                }
            ],
            "panels": panels,
            "refresh": self.refresh,
            "schemaVersion": 39,
            "tags": list(self.tags),
            "templating": {"list": [v.json for v in self.variables]},
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
        }
