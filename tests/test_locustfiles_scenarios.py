"""The locustfiles as a user runs them (`locust -f ...`), against a real app instance. Loads are tiny."""

from __future__ import annotations

import collections
import csv
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.app_instance import AppInstance, running_app
from tests.servers import established_toward, free_port

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parent.parent
LOCUSTFILES = REPO / "locustfiles"
LOCUST = Path(sys.executable).with_name("locust")

# Every (method, name) row the default scenario must produce; a missing row means a task or helper broke.
SCALING_ROWS = {
    ("POST", "/users"),
    ("GET", "/users"),
    ("GET", "/users/{id}"),
    ("GET", "/users/{id} (repeat)"),
    ("GET", "/users/{id} (missing)"),
    ("PUT", "/users/{id}"),
    ("DELETE", "/users/{id}"),
    ("GET", "/health"),
    ("POST", "/users/bulk"),
    ("GET", "/users/bulk"),
}


@dataclass
class LocustRun:
    """What one headless run left behind, and what was sampled while it ran."""

    returncode: int = -1
    output: str = ""
    rows: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    sockets: list[int] = field(default_factory=list)
    plugin_users: list[float] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return int(self.rows[("", "Aggregated")]["Failure Count"])

    @property
    def seen(self) -> set[tuple[str, str]]:
        return {key for key, row in self.rows.items() if int(row["Request Count"]) > 0}


def plugin_users(port: int) -> float | None:
    """loadlab_locust_users as the lab's Locust plugin serves it, or None if it does not answer."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "loadlab_locust_users":
            return family.samples[0].value
    return None


def run_locust(app: AppInstance, tmp_path: Path, files: str, *args: str, **env: str) -> LocustRun:
    """Run locust headless as a user would, from the repo root, with think times cut tenfold.

    While it runs, sample the client sockets toward the app and the plugin's user gauge. The plugin listens
    on a free port, so a running lab's 9466 is left alone.
    """
    prefix = tmp_path / "run"
    metrics_port = free_port()
    env = {
        **os.environ,
        "LOADLAB_THINK_TIME_SCALE": "0.1",
        "LOCUST_LOADLAB_METRICS_PORT": str(metrics_port),
        **env,
    }
    env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
    cmd = [str(LOCUST), "-f", files, "--headless", "--host", app.url, "--only-summary", "--csv", str(prefix)]
    proc = subprocess.Popen(
        [*cmd, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    run = LocustRun()

    def sample() -> None:
        while proc.poll() is None:
            run.sockets.append(established_toward(app.port))
            if (users := plugin_users(metrics_port)) is not None:
                run.plugin_users.append(users)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    run.output, _ = proc.communicate(timeout=120)
    run.returncode = proc.returncode
    sampler.join()
    stats = Path(f"{prefix}_stats.csv")
    if stats.exists():
        with stats.open(newline="") as f:
            run.rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    return run


@pytest.fixture(scope="module")
def app(postgres_server, redis_server):
    with running_app(postgres_server, redis_server) as instance:
        yield instance


@pytest.fixture(scope="module")
def scaling_run(app, tmp_path_factory):
    """One 8 s run of the default scenario, 6 users: 3 ScalingSystemUser, 2 HighVolumeUser, 1 AdminUser."""
    return run_locust(
        app, tmp_path_factory.mktemp("scaling"), "locustfiles/scaling.py", "-u", "6", "-r", "6", "-t", "8s"
    )


def test_scaling_scenario_runs_without_failures(scaling_run):
    assert scaling_run.returncode == 0, scaling_run.output
    assert scaling_run.failures == 0, scaling_run.output


def test_scaling_scenario_exercises_every_endpoint(scaling_run):
    assert scaling_run.seen >= SCALING_ROWS, f"missing rows: {SCALING_ROWS - scaling_run.seen}"


def test_each_user_holds_exactly_one_socket(scaling_run):
    """6 users, 6 established sockets toward the app: every user owns its connection, none shares a pool."""
    counts = collections.Counter(scaling_run.sockets)
    assert max(counts) == 6, counts
    assert counts.most_common(1)[0][0] == 6, counts


def test_the_lab_metrics_plugin_is_loaded_and_counts_users(scaling_run):
    """lab_base imports the plugin, so the run's own Locust serves loadlab_locust_users."""
    assert max(scaling_run.plugin_users, default=None) == 6, scaling_run.output


@pytest.mark.parametrize(
    ("locustfile", "rows"),
    [
        ("locustfiles/max_rps.py", {("POST", "/users/bulk"), ("GET", "/users/{id}")}),
        ("locustfiles/simple.py", {("POST", "/users"), ("GET", "/users/{id}"), ("GET", "/health")}),
    ],
)
def test_other_scenarios_run_clean(app, tmp_path, locustfile, rows):
    run = run_locust(app, tmp_path, locustfile, "-u", "2", "-r", "2", "-t", "4s")
    assert run.returncode == 0, run.output
    assert run.failures == 0, run.output
    assert run.seen >= rows, f"missing rows: {rows - run.seen}"


def test_a_shape_file_drives_a_scenario_and_ends_the_run(app, tmp_path):
    """The documented invocation `-f SCENARIO,SHAPE`: no -u or -t; the shape sets users and stops the run."""
    quick = tmp_path / "quick_steps.py"
    quick.write_text(
        "import steps\n\n\n"
        "class QuickSteps(steps.StepShape):\n"
        "    step_users = 2\n    step_seconds = 1.5\n    max_users = 4\n    spawn_rate = 10\n"
    )
    run = run_locust(app, tmp_path, f"locustfiles/simple.py,{quick}", PYTHONPATH=str(LOCUSTFILES))
    assert run.returncode == 0, run.output
    assert run.failures == 0, run.output
    assert max(run.sockets) == 4, run.sockets
