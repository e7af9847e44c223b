"""Which command line is which lab process: the one definition the exporter role, the teardown, the Compose
twin, the exporter's own defaults and the tests read.

A process group is a name (nginx, app-8001, postgres, redis, locust-master, locust-worker-N, prometheus,
exporter) and a regular expression searched in the full command line of the group's main process; its
workers and children come with it. The names are what metrics, dashboards and diagnoses show, so a change
here changes every one of them. The patterns are written for Python's `re` and for `pgrep -f` (glibc's
extended regular expressions with `\\s`, `\\S` and `\\b`).

Ansible reaches these functions through playbooks/filter_plugins/loadlab_filters.py.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection, Iterable

LAB_GROUPS = ("lb", "app", "postgres", "redis", "loadgen", "monitor")
"""The inventory groups whose processes the lab runs (external hosts run only the exporter)."""

POSTGRES_PROGRAM = r"\S*/bin/postgres"
"""The postmaster as the postgres role starts it (/usr/lib/postgresql/<version>/bin/postgres)."""


def app_instance(app_command: str, lab_address: str, port: int) -> str:
    """Your own app's instance on `port`: its command line as the app role runs it, the first word as found
    on PATH (any folder before it)."""
    words = (
        app_command.replace("{address}", str(lab_address))
        .replace("{port}", str(port))
        .replace("{instance}", f"app-{port}")
        .split()
    )
    rest = re.escape(" " + " ".join(words[1:])) if len(words) > 1 else ""
    return r"(^|/)" + re.escape(posixpath.basename(words[0])) + rest + r"(\s|$)"


def lab_process_groups(
    groups: Collection[str],
    *,
    first_loadgen: bool,
    etc_dir: str,
    app_ports: Iterable[int],
    app_command: str,
    lab_address: str,
    redis_port: int | str,
    locust_workers: int | str,
    exporter_config: str,
    postgres_program: str = POSTGRES_PROGRAM,
) -> dict[str, str]:
    """The lab's process groups on one host, name -> regex, pinned to the lab's own config where the command
    line names one.

    groups are the host's inventory groups; first_loadgen says it runs the Locust master. The knobs are the
    host's: loadlab_etc_dir, its app instances' ports, app_command (empty: the demo app), lab_address,
    redis_port, locust_workers, and the exporter's config file. postgres_program is how the postmaster's
    command line starts (the Compose twin's image starts it as `postgres`, without a /bin/ path).
    """
    out: dict[str, str] = {}
    if "lb" in groups:
        out["nginx"] = "^nginx: master process .*" + re.escape(etc_dir) + "/"
    if "app" in groups:
        for port in app_ports:
            if app_command:
                out[f"app-{port}"] = app_instance(app_command, lab_address, int(port))
            else:
                out[f"app-{port}"] = rf"loadlab\.app .*--port {port}\b"
    if "postgres" in groups:
        out["postgres"] = rf"^({postgres_program} --config-file={etc_dir}/|postgres: loadlab: )"
    if "redis" in groups:
        out["redis"] = rf"^\S*redis-server \S+:{redis_port}\b"
    if "loadgen" in groups:
        if first_loadgen:
            out["locust-master"] = r"locust --config \S*/locust/master\.conf\b"
        for n in range(1, int(locust_workers) + 1):
            out[f"locust-worker-{n}"] = rf"locust --config \S*/locust/worker-{n}\.conf\b"
    if "monitor" in groups:
        out["prometheus"] = rf"prometheus --config\.file={etc_dir}/prometheus/"
    out["exporter"] = "loadlab exporter --config " + re.escape(exporter_config) + "$"
    return out


def lab_process_patterns(
    etc_dir: str,
    *,
    supervisor_conf: str,
    redis_port: int | str,
    app_ports: Iterable[int],
    app_command: str = "",
    lab_address: str = "",
) -> list[str]:
    """Every lab process a host may run, whatever its groups, as `pgrep -f` patterns: what the teardown stops
    should any outlive supervisord, and what the tests check is gone after it."""
    ports = [int(port) for port in app_ports]
    patterns = [
        rf"(^|/)supervisord .*{supervisor_conf}",
        rf"^nginx: master process .*{etc_dir}/",
        rf"^\S*/postgres --config-file={etc_dir}/",
        r"^postgres: loadlab: ",
        rf"^\S*redis-server \S+:{redis_port}\b",
        r"^\S*python\S* -m loadlab\.app .*--port (" + "|".join(map(str, ports)) + r")\b",
        rf"^\S*python\S* -m locust --config {etc_dir}/",
        rf"^\S*python\S* \S*/loadlab exporter --config {etc_dir}/",
        rf"^\S*prometheus --config\.file={etc_dir}/",
        rf"^\S*grafana\S* .*{etc_dir}/",
    ]
    if app_command:
        patterns += [app_instance(app_command, lab_address, port) for port in ports]
    return patterns


def lab_process_pattern(patterns: Iterable[str]) -> str:
    """One `pgrep -f` pattern for any of the patterns (each once, in order)."""
    return "|".join(dict.fromkeys(patterns))
