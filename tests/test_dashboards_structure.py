"""The dashboards' shape: generated JSON is committed as generated, and every panel is well formed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from loadlab.dashboards import DASHBOARDS, JSON_DIR, generate, load, queries
from loadlab.dashboards.__main__ import main as dashboards_main
from loadlab.dashboards.__main__ import stale_files
from loadlab.dashboards.builder import (
    DATASOURCE,
    GRAFANA_DATASOURCE,
    SWEEP_ANNOTATION_TAGS,
    UNITS,
    Panel,
    Target,
    legend_regex,
)
from loadlab.dashboards.render import builtin_variables, dashboard_variables, format_value, substitute
from loadlab.errors import UserError

NAMES = list(DASHBOARDS)
BUILTINS = {"__rate_interval", "__range", "__interval"}


def panels(name: str) -> list[dict]:
    return [p for p in load(name)["panels"] if p["type"] != "row"]


def exprs(name: str) -> list[str]:
    return [t["expr"] for p in panels(name) for t in p["targets"]]


def metric_names(name: str) -> set[str]:
    return set(re.findall(r"\bloadlab_[a-z_]+", " ".join(exprs(name))))


@pytest.mark.parametrize("name", NAMES)
def test_every_query_parses_as_promql(name, tmp_path):
    """promtool parses each query (as Grafana sends it) the way Prometheus would; no server needed."""
    model = load(name)
    variables = {**dashboard_variables(model), **builtin_variables(600, 5, 5)}
    queries = [substitute(e, variables) for e in exprs(name)]
    rules = {
        "groups": [{"name": name, "rules": [{"record": f"q{i}", "expr": q} for i, q in enumerate(queries)]}]
    }
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_json_is_what_the_code_generates():
    assert stale_files(JSON_DIR) == [], "run `python -m loadlab.dashboards` and commit dashboards/json"


def test_check_fails_on_a_hand_edit_until_regenerated(tmp_path):
    runner = CliRunner()
    assert runner.invoke(dashboards_main, ["--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(dashboards_main, ["--check", "--out", str(tmp_path)]).exit_code == 0

    edited = tmp_path / "sockets.json"
    edited.write_text(edited.read_text().replace('"refresh": "10s"', '"refresh": "5s"'))
    (tmp_path / "old.json").write_text("{}\n")
    result = runner.invoke(dashboards_main, ["--check", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "old.json, sockets.json" in result.output
    assert "python -m loadlab.dashboards" in result.output

    assert runner.invoke(dashboards_main, ["--out", str(tmp_path)]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(generate())
    assert runner.invoke(dashboards_main, ["--check", "--out", str(tmp_path)]).exit_code == 0


@pytest.mark.parametrize("name", NAMES)
def test_json_has_sorted_keys(name):
    text = (JSON_DIR / f"{name}.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_dashboard_uids_are_unique():
    uids = [load(n)["uid"] for n in NAMES]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", NAMES)
def test_panel_ids_are_unique(name):
    ids = [p["id"] for p in load(name)["panels"]]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("name", NAMES)
def test_grid_positions_fit_and_never_overlap(name):
    taken: dict[tuple[int, int], str] = {}
    for p in load(name)["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{p['title']} overlaps {taken[(x, y)]} at {(x, y)}"
                taken[(x, y)] = p["title"]


@pytest.mark.parametrize("name", NAMES)
def test_every_panel_has_a_unit_a_description_and_a_query(name):
    for p in panels(name):
        assert p["fieldConfig"]["defaults"]["unit"] in UNITS, p["title"]
        assert p["description"], p["title"]
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]


def _datasources(node, path="$"):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield path, value
            yield from _datasources(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _datasources(value, f"{path}[{i}]")


@pytest.mark.parametrize("name", NAMES)
def test_every_datasource_goes_through_the_variable(name):
    model = load(name)
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for path, ds in _datasources(model):
        if path.startswith("$.annotations"):
            assert ds == GRAFANA_DATASOURCE, path  # annotations are Grafana's own, not Prometheus data
        else:
            assert ds == DATASOURCE, path
    for p in panels(name):
        assert p["datasource"] == DATASOURCE
        assert all(t["datasource"] == DATASOURCE for t in p["targets"])


@pytest.mark.parametrize("name", NAMES)
def test_host_and_instance_variables_filter_the_queries(name):
    variables = {v["name"]: v for v in load(name)["templating"]["list"]}
    assert {"datasource", "host", "instance", "port"} <= set(variables)
    for var in ("host", "instance"):
        assert variables[var]["includeAll"] and variables[var]["allValue"] == ".*"
    for expr in exprs(name):
        if "loadlab_" in expr:
            assert 'host=~"$host"' in expr, expr


@pytest.mark.parametrize("name", NAMES)
def test_queries_use_only_defined_variables(name):
    defined = {v["name"] for v in load(name)["templating"]["list"]} | BUILTINS
    used = {m for e in exprs(name) for m in re.findall(r"\$\{?(\w+)", e)}
    assert used <= defined, used - defined


@pytest.mark.parametrize("name", NAMES)
def test_ceiling_lines_match_the_series_they_style(name):
    for p in panels(name):
        legends = {t["legendFormat"] for t in p["targets"]}
        for override in p["fieldConfig"]["overrides"]:
            pattern = re.compile(override["matcher"]["options"])
            shown = {re.sub(r"\{\{\s*\w+\s*\}\}", "lab-1", legend) for legend in legends}
            matched = {s for s in shown if pattern.search(s)}
            assert len(matched) == 1, (p["title"], pattern.pattern, shown)


@pytest.mark.parametrize("name", NAMES)
def test_sweep_steps_show_on_every_dashboard(name):
    steps = [a for a in load(name)["annotations"]["list"] if a.get("target", {}).get("type") == "tags"]
    assert steps and steps[0]["target"]["tags"] == list(SWEEP_ANNOTATION_TAGS)


def test_load_saturation_puts_load_and_both_sides_on_one_page():
    metrics = metric_names("load-saturation")
    assert {
        "loadlab_locust_users",
        "loadlab_locust_requests_total",
        "loadlab_locust_failures_total",
        "loadlab_locust_response_time_seconds_bucket",
        "loadlab_process_cpu_seconds_total",
        "loadlab_tcp_sockets",
        "loadlab_postgres_connections",
        "loadlab_postgres_max_connections",
        "loadlab_redis_connected_clients",
        "loadlab_nginx_connections",
    } <= metrics
    text = " ".join(exprs("load-saturation"))
    # CPU of the target, of the data stores and of each Locust process: process groups chosen by role, not
    # by name, and the target apart from its data stores
    assert 'loadlab_process_group_info{host=~"$host", role="target"}' in text
    assert 'loadlab_process_group_info{host=~"$host", role="data"}' in text
    assert 'loadlab_process_group_info{host=~"$host", role="loadgen"}' in text
    assert "target|data" not in text
    assert "group=~" not in text
    assert 'role="server"' in text and 'role="client"' in text and 'port="$port"' in text
    for q in ("0.5", "0.95", "0.99"):  # p50, p95, p99 from the Locust plugin's histogram
        assert (
            f"histogram_quantile({q}, sum by (le) (rate(loadlab_locust_response_time_seconds_bucket" in text
        )


def test_target_cpu_selects_process_groups_by_role_on_their_own_host():
    """The target is the groups whose role is target (the sweep's target_cpu), the data stores those whose
    role is data, whatever they are called, each matched to the role its own host's exporter gives it."""
    for expr, role in (
        (queries.target_cpu(), "target"),
        (queries.target_cpu(queries.RANGE), "target"),
        (queries.process_cpu(queries.TARGET_ROLES), "target"),
        (queries.data_cpu(), "data"),
        (queries.process_cpu(queries.DATA_ROLES), "data"),
    ):
        assert "and on (host, group) max_over_time(loadlab_process_group_info{" in expr
        assert f'role="{role}"' in expr and "role=~" not in expr
    assert 'role="loadgen"' in queries.busiest_locust_process()
    assert "loadlab_process_group_info" not in queries.process_cpu()  # every group, whatever its role


def test_the_sweeps_cpu_figures_are_the_dashboards_queries():
    """The sweep dashboard's "Target CPU" and "Data stores CPU" stats are the queries the module builds over
    the selected range, and the time series the same over $__rate_interval."""
    stats = {p["title"]: p["targets"][0]["expr"] for p in panels("sweep") if p["type"] == "stat"}
    assert stats["Target CPU"] == queries.target_cpu(queries.RANGE)
    assert stats["Data stores CPU"] == queries.data_cpu(queries.RANGE)
    cpu = next(p for p in panels("sweep") if p["title"] == "Generator, target and data stores CPU")
    assert {t["expr"] for t in cpu["targets"]} >= {queries.target_cpu(), queries.data_cpu()}


def test_shared_queries_take_a_host_matcher_or_none():
    """The sweep reads every host (no matcher) or some (hosts_matcher); the dashboards read `$host`."""
    assert queries.host_cores("") == "max by (host) (loadlab_host_cpus)"
    assert queries.host_cores() == 'max by (host) (loadlab_host_cpus{host=~"$host"})'
    assert queries.hosts_matcher(["b.lab", "a"]) == r'host=~"a|b\\.lab"'  # PromQL's string escapes
    assert queries.hosts_matcher([]) == ""
    assert queries.established("client", by="", hosts="", port="8080") == (
        'sum(loadlab_tcp_sockets{role="client", state="established", port="8080"})'
    )
    assert queries.over_window("quantile_over_time", "up", "30s", "5s", 0.5) == (
        "quantile_over_time(0.5, (up)[30s:5s])"
    )


def test_sockets_dashboard_covers_both_roles_time_wait_and_ports():
    text = " ".join(exprs("sockets"))
    assert 'role="server"' in text and 'role="client"' in text
    assert "by (host, port, state)" in text
    assert {"loadlab_tcp_time_wait_sockets", "loadlab_tcp_ephemeral_ports_used_ratio"} <= metric_names(
        "sockets"
    )


def test_host_dashboard_covers_cores_memory_network_and_process_groups():
    text = " ".join(exprs("host-processes"))
    assert "by (host, cpu)" in text
    assert {
        "loadlab_host_memory_available_bytes",
        "loadlab_host_network_receive_bytes_total",
        "loadlab_host_network_transmit_bytes_total",
        "loadlab_process_cpu_seconds_total",
        "loadlab_process_resident_memory_bytes",
        "loadlab_process_open_fds",
    } <= metric_names("host-processes")


def test_sweep_dashboard_has_a_per_step_row_over_the_selected_range():
    stats = [p for p in panels("sweep") if p["type"] == "stat"]
    assert len(stats) >= 8
    for p in stats:
        assert all("$__range" in t["expr"] and t["instant"] for t in p["targets"]), p["title"]


def test_panels_refuse_units_the_renderer_does_not_know():
    with pytest.raises(ValueError, match="unknown unit"):
        Panel("x", (Target("up"),), "celsius")


def test_legend_regex_matches_what_a_legend_format_displays():
    assert re.fullmatch(legend_regex("{{host}} cores"), "lab-1 cores")
    assert not re.fullmatch(legend_regex("{{host}} cores"), "lab-1 nginx")
    assert re.fullmatch(legend_regex("a (b).c"), "a (b).c")


def test_template_variables_become_their_value_or_match_all():
    model = load("load-saturation")
    values = dashboard_variables(model)
    assert values["host"] == ".*" and values["instance"] == ".*" and values["port"] == "8080"
    assert dashboard_variables(model, {"host": "lab-1"})["host"] == "lab-1"
    assert substitute('x{host=~"$host", port="${port}"}[$__r]', {"host": "a", "port": "1", "__r": "4s"}) == (
        'x{host=~"a", port="1"}[4s]'
    )
    with pytest.raises(UserError, match=r"\$nope"):
        substitute("up{a=~'$nope'}", {})


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (0.25, "percentunit", "25%"),
        (0.035, "s", "35 ms"),
        (2.5, "s", "2.5 s"),
        (3 * 2**20, "bytes", "3 MiB"),
        (1500, "reqps", "1.5k req/s"),
        (12, "short", "12"),
        (float("nan"), "short", "NaN"),
    ],
)
def test_values_are_shown_in_the_panel_unit(value, unit, shown):
    assert format_value(value, unit) == shown


@pytest.mark.parametrize("name", NAMES)
def test_per_group_and_per_instance_aggregations_keep_the_host(name):
    """Several hosts run the same process groups (app-8001 on two app hosts): grouping must keep `host`."""
    for expr in exprs(name):
        for clause in re.findall(r"by \(([^)]*)\)", expr):
            labels = {label.strip() for label in clause.split(",")}
            if labels & {"group", "instance", "port", "cpu", "device", "state", "mode", "collector"}:
                assert "host" in labels, f"by ({clause}) merges hosts: {expr}"
