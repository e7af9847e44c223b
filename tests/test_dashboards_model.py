"""The generated dashboards against Grafana's own dashboard model, since Grafana cannot run here.

grafana-foundation-sdk (the dev extra, pinned to the Grafana release the Compose twin runs) ships Grafana's
dashboard schema as typed Python classes, with the panel plugins' options and field config (timeseries, stat)
and the Prometheus query. Its `from_json` decodes but checks nothing: it skips keys it does not know and
keeps values of any type. So each committed dashboard is checked three ways:

- every key survives a decode and re-encode unchanged: a key the schema does not have (a typo, a field in
  the wrong place, one Grafana dropped) is lost on the way and named;
- every value has the type the schema gives it, enums included (a panel's `graphMode`, a variable's
  `refresh`, the legend's `displayMode`...), checked against the models' type annotations;
- every field the schema requires is there, and panels, queries and options decode into their plugins'
  models (a timeseries panel's options are timeseries options, a query is a Prometheus query), not into
  the SDK's untyped fallbacks.
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import pytest

from loadlab.dashboards import DASHBOARDS, load

gf = pytest.importorskip("grafana_foundation_sdk", reason="grafana-foundation-sdk (the dev extra) is missing")

from grafana_foundation_sdk.cog import runtime as cog_runtime  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.cog.plugins import register_default_plugins  # noqa: E402
from grafana_foundation_sdk.models import dashboard as model  # noqa: E402
from grafana_foundation_sdk.models import prometheus, stat, timeseries  # noqa: E402

register_default_plugins()

NAMES = list(DASHBOARDS)
# The Grafana release whose schema the models are generated from: the one the Compose twin runs.
GRAFANA = "11.5"


def _decode(name: str) -> tuple[dict[str, Any], model.Dashboard]:
    data = load(name)
    return data, model.Dashboard.from_json(data)


def _lost(given: Any, back: Any, path: str = "$") -> Iterator[str]:
    """Where `back` (the decoded and re-encoded JSON) lost or changed something `given` had. Defaults the
    models add for fields the JSON leaves out are not losses."""
    if isinstance(given, dict):
        if not isinstance(back, dict):
            yield f"{path}: {given!r} became {back!r}"
            return
        for key, value in given.items():
            if key not in back:
                yield f"{path}.{key}: not in Grafana's schema"
            else:
                yield from _lost(value, back[key], f"{path}.{key}")
    elif isinstance(given, list):
        if not isinstance(back, list) or len(back) != len(given):
            yield f"{path}: {given!r} became {back!r}"
            return
        for i, (a, b) in enumerate(zip(given, back, strict=True)):
            yield from _lost(a, b, f"{path}[{i}]")
    elif given != back or type(given) is not type(back):
        yield f"{path}: {given!r} became {back!r}"


def _is_model(value: Any) -> bool:
    return type(value).__module__.startswith("grafana_foundation_sdk.models.")


def _json_key(attr: str) -> str:
    """The JSON name of a model attribute (`grid_pos` -> `gridPos`, `type_val` -> `type`)."""
    attr = attr.removesuffix("_val")
    head, *rest = attr.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _mistyped(value: Any, hint: Any, path: str) -> Iterator[str]:
    """Where `value` does not have the type `hint` (a model's annotation) says, down the whole tree."""
    origin = typing.get_origin(hint)
    if hint is typing.Any or hint is object:
        if _is_model(value):
            yield from _model_mistyped(value, path)
        return
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) not in args:
                yield f"{path}: null where {hint} is required"
            return
        args = tuple(a for a in args if a is not type(None))
        # A union of models (a panel or a row): the one the value decoded into.
        chosen = [a for a in args if isinstance(a, type) and _is_model(value) and isinstance(value, a)]
        tries = [list(_mistyped(value, arg, path)) for arg in (chosen or args)]
        if all(tries):
            yield from min(tries, key=len)  # the closest alternative's faults
        return
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            yield f"{path}: {value!r} is not one of {typing.get_args(hint)}"
        return
    if origin is list:
        if not isinstance(value, list):
            yield f"{path}: {value!r} is not a list"
            return
        (item,) = typing.get_args(hint)
        for i, v in enumerate(value):
            yield from _mistyped(v, item, f"{path}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            yield f"{path}: {value!r} is not an object"
            return
        _, item = typing.get_args(hint)
        for k, v in value.items():
            yield from _mistyped(v, item, f"{path}.{k}")
        return
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if value not in {m.value for m in hint}:
            yield f"{path}: {value!r} is not one of {hint.__name__} {[m.value for m in hint]}"
        return
    if value is None:
        yield f"{path}: null where {getattr(hint, '__name__', hint)} is required"
        return
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            yield f"{path}: {value!r} is not a number"
        return
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            yield f"{path}: {value!r} is not an integer"
        return
    if isinstance(hint, type):
        if not isinstance(value, hint):
            yield f"{path}: {value!r} is not {hint.__name__}"
        elif _is_model(value):
            yield from _model_mistyped(value, path)


def _model_mistyped(obj: Any, path: str) -> Iterator[str]:
    hints = typing.get_type_hints(type(obj))
    encoded = obj.to_json()
    for attr, hint in hints.items():
        value = getattr(obj, attr)
        key = _json_key(attr)
        optional = type(None) in typing.get_args(hint)
        if not optional:
            # A field the schema requires: to_json always writes it, so the name mapping is checked too.
            assert key in encoded, f"{type(obj).__name__}.{attr} is not written as {key!r}"
        if value is None and optional:
            continue
        yield from _mistyped(value, hint, f"{path}.{key}")


def _required_missing(data: Any, obj: Any, path: str = "$") -> Iterator[str]:
    """Fields the schema requires that the JSON leaves out (the model fills them with a default)."""
    if isinstance(data, list) and isinstance(obj, list):
        for i, (d, o) in enumerate(zip(data, obj, strict=True)):
            yield from _required_missing(d, o, f"{path}[{i}]")
        return
    if not (isinstance(data, dict) and _is_model(obj)):
        return
    for attr, hint in typing.get_type_hints(type(obj)).items():
        key = _json_key(attr)
        if type(None) not in typing.get_args(hint) and key not in data:
            yield f"{path}.{key} ({type(obj).__name__})"
        if key in data:
            yield from _required_missing(data[key], getattr(obj, attr), f"{path}.{key}")


def test_the_models_are_grafanas_of_the_release_the_lab_runs():
    assert version("grafana-foundation-sdk").endswith(f"!{GRAFANA}.0")
    from loadlab.compose import IMAGES

    assert re.fullmatch(rf"grafana/grafana:{re.escape(GRAFANA)}\.\d+", IMAGES["grafana"])


@pytest.mark.parametrize("name", NAMES)
def test_every_key_is_in_grafanas_dashboard_schema(name):
    data, dashboard = _decode(name)
    back = json.loads(json.dumps(dashboard, cls=JSONEncoder))
    assert list(_lost(data, back)) == []


@pytest.mark.parametrize("name", NAMES)
def test_every_value_has_the_type_the_schema_gives_it(name):
    _, dashboard = _decode(name)
    assert list(_model_mistyped(dashboard, "$")) == []


@pytest.mark.parametrize("name", NAMES)
def test_every_field_the_schema_requires_is_there(name):
    data, dashboard = _decode(name)
    assert list(_required_missing(data, dashboard)) == []


@pytest.mark.parametrize("name", NAMES)
def test_panels_and_queries_decode_into_their_plugins_models(name):
    _, dashboard = _decode(name)
    assert dashboard.panels
    plugins = {"timeseries": (timeseries.Options, timeseries.FieldConfig), "stat": (stat.Options, None)}
    for panel in dashboard.panels:
        if isinstance(panel, model.RowPanel):
            continue
        assert isinstance(panel, model.Panel) and panel.type_val in plugins, panel.title
        options, custom = plugins[panel.type_val]
        assert isinstance(panel.options, options), panel.title
        if custom is not None:
            assert isinstance(panel.field_config.defaults.custom, custom), panel.title
        assert panel.targets, panel.title
        for target in panel.targets:
            assert isinstance(target, prometheus.Dataquery), (panel.title, target)
            assert not isinstance(target, cog_runtime.UnknownDataquery)


def test_the_checks_catch_a_stray_key_a_wrong_type_and_a_missing_field():
    """The checks themselves: each finds what it is for."""
    data = load("sweep")
    stat_panel = next(p for p in data["panels"] if p["type"] == "stat")
    stat_panel["options"]["graphMode"] = "sparkline"  # not a BigValueGraphMode
    stat_panel["fieldConfig"]["defaults"]["unitt"] = "short"  # a typo
    stat_panel["gridPos"]["w"] = "6"  # a string where the schema wants a number
    del data["links"][0]["tooltip"]  # a link's tooltip is required (empty or not)
    dashboard = model.Dashboard.from_json(data)
    back = json.loads(json.dumps(dashboard, cls=JSONEncoder))
    i = data["panels"].index(stat_panel)
    assert list(_lost(data, back)) == [f"$.panels[{i}].fieldConfig.defaults.unitt: not in Grafana's schema"]
    wrong = list(_model_mistyped(dashboard, "$"))
    assert any(w.startswith(f"$.panels[{i}].options.graphMode: 'sparkline'") for w in wrong), wrong
    assert any(w.startswith(f"$.panels[{i}].gridPos.w: '6'") for w in wrong), wrong
    assert list(_required_missing(data, dashboard)) == ["$.links[0].tooltip (DashboardLink)"]
