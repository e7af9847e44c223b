"""The lab across hosts: test hosts of this machine (scripts/testhosts.sh), provisioned over SSH by
`ansible-playbook -i inventory/testhosts.yml lab.yml`, a sweep from the controller, collection, teardown.

The suite runs the three-host lab of inventory/testhosts-small.yml (six hosts cost too much time on two
cores); LOADLAB_MULTIHOST_INVENTORY=testhosts.yml runs the same tests on the six-host lab. The hosts share
this machine's two cores, so the load stays small (4 users, one 15 s window). Every command runs from the
controller as a user would run it; the hosts are reached only over SSH and the lab bridge, never through
the controller's own files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from loadlab.dashboards import DASHBOARDS, load
from loadlab.dashboards.render import builtin_variables, dashboard_variables, substitute
from loadlab.lab import Lab
from loadlab.remote import RemoteHosts
from tests.lab_fixture import LAB_PROCESS_PATTERN, ROOT, PlaybookRun, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.multihost, pytest.mark.timeout(1800)]

INVENTORY = ROOT / "inventory" / os.environ.get("LOADLAB_MULTIHOST_INVENTORY", "testhosts-small.yml")
TESTHOSTS = ROOT / "scripts" / "testhosts.sh"
LOADLAB = Path(sys.executable).with_name("loadlab")
USERS = 4


@dataclass
class MultiHostLab:
    """The provisioned test hosts: the inventory, the two playbook runs and how long each step took."""

    lab: Lab
    bring_up: PlaybookRun
    rerun: PlaybookRun
    seconds: dict[str, float] = field(default_factory=dict)
    sweep_dir: Path | None = None
    sweep_output: str = ""


def _testhosts(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(TESTHOSTS), *args], capture_output=True, text=True, timeout=300, check=False
    )


def _timed(seconds: dict[str, float], name: str, fn, *args, **kwargs):
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        seconds[name] = round(time.monotonic() - start, 1)


@pytest.fixture(scope="module")
def multihost() -> Iterator[MultiHostLab]:
    """Test hosts up and the lab provisioned on them (twice: the rerun must change nothing)."""
    if os.geteuid() != 0:
        pytest.skip("test hosts need root: network namespaces, mounts, cgroups")
    seconds: dict[str, float] = {}
    try:
        up = _timed(seconds, "hosts_up", _testhosts, "up", *Lab.load(INVENTORY).hosts)
        assert up.returncode == 0, up.stdout + up.stderr
        first = _timed(seconds, "lab_fresh", run_playbook, "lab.yml", inventory=INVENTORY)
        assert first.returncode == 0, first.tail()
        again = _timed(seconds, "lab_rerun", run_playbook, "lab.yml", inventory=INVENTORY)
        assert again.returncode == 0, again.tail()
        yield MultiHostLab(Lab.load(INVENTORY), first, again, seconds)
    finally:
        print(f"\nmulti-host timings (s): {seconds}")
        run_playbook("playbooks/teardown.yml", inventory=INVENTORY)
        _testhosts("down")


def _master_state(lab: Lab) -> dict:
    """The master's /stats/requests, read inside its host's network namespace (the harness's view)."""
    master = lab.locust_master
    url = f"http://127.0.0.1:{master.int_var('locust_web_port')}/stats/requests"
    code = f"import httpx; print(httpx.get({url!r}, timeout=3, trust_env=False).text)"
    done = subprocess.run(
        ["ip", "netns", "exec", f"lab-{master.name}", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return json.loads(done.stdout) if done.returncode == 0 else {}


def _cut_ssh(host_address: str) -> int:
    """End every SSH session the host's sshd serves (as a cut link or a restarted sshd would). The host's
    sshd is its PID 1, the parent of every orphan there (the lab's supervisord too): only its session
    processes (`sshd: root@notty`) are killed."""
    listening = [
        p
        for p in psutil.process_iter(["cmdline"])
        if f"ListenAddress={host_address}" in " ".join(p.info["cmdline"] or ())
    ]
    sessions = [
        child
        for p in listening
        for child in p.children(recursive=True)
        if " ".join(child.cmdline()).startswith("sshd:")
    ]
    for session in sessions:
        session.kill()
    psutil.wait_procs(sessions, timeout=5)
    return len(sessions)


@pytest.fixture(scope="module")
def sweep(multihost: MultiHostLab, tmp_path_factory) -> dict:
    """One short sweep from the controller: the master on loadgen1, Prometheus on the monitor host. A few
    seconds into its window the controller's SSH connection to the master's host is cut."""
    out = tmp_path_factory.mktemp("multihost") / "run"
    cmd = [str(LOADLAB), "sweep", "-i", str(INVENTORY), "--users", str(USERS), "--step-time", "15s"]
    cmd += ["--warmup", "3s", "--out", str(out), "--threshold", "fail_ratio<1%"]
    cut: list[int] = []

    def cut_ssh_in_the_window() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = _master_state(multihost.lab)
            if state.get("state") == "running" and state.get("user_count") == USERS:
                time.sleep(7)  # past the 3 s warm-up: inside the measured window
                cut.append(_cut_ssh(multihost.lab.locust_master.address))
                return
            time.sleep(0.5)

    watcher = threading.Thread(target=cut_ssh_in_the_window)
    watcher.start()
    done = _timed(
        multihost.seconds, "sweep", subprocess.run, cmd, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    watcher.join()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert cut and cut[0] > 0, "the controller's SSH sessions to the master's host were not found"
    multihost.sweep_dir = out
    multihost.sweep_output = done.stdout + done.stderr
    return json.loads((out / "summary.json").read_text())


def test_every_host_is_provisioned_over_ssh_and_a_rerun_changes_nothing(multihost: MultiHostLab):
    assert set(multihost.bring_up.recap) == set(multihost.lab.hosts)
    changed = {host: c["changed"] for host, c in multihost.rerun.recap.items()}
    assert changed == dict.fromkeys(multihost.lab.hosts, 0), multihost.rerun.changed_tasks


def test_the_hosts_are_separate(multihost: MultiHostLab):
    """Own hostname, own lab folders and processes; no project checkout, venv or pip cache inside."""
    probe = (
        f"hostname; test -e {ROOT} && echo sees-checkout; test -e /root/.cache/pip && echo sees-pip-cache; "
        "echo programs=$(ls /etc/loadlab/supervisor.d | tr '\\n' ,); "
        "ps -e --no-headers | wc -l"
    )
    with RemoteHosts(multihost.lab) as remotes:
        seen = {name: remotes[name].run(probe).stdout.split() for name in multihost.lab.hosts}
    for name, lines in seen.items():
        assert lines[0] == name
        assert "sees-checkout" not in lines and "sees-pip-cache" not in lines
        assert int(lines[-1]) < 100, f"{name} sees {lines[-1]} processes: not its own process tree"
    # Each host runs its own programs: the lb + app host other ones than the load generator's.
    programs = {name: next(x for x in lines if x.startswith("programs=")) for name, lines in seen.items()}
    assert programs["target1"] != programs["loadgen1"], programs


def test_status_from_the_controller_sees_every_service_on_every_host(multihost: MultiHostLab):
    done = subprocess.run(
        [str(LOADLAB), "status", "-i", str(INVENTORY)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for host in multihost.lab.hosts:
        assert host in done.stdout


def test_postgres_admits_only_the_lab_hosts_that_need_it(multihost: MultiHostLab):
    data = multihost.lab.group("postgres")[0]
    password = multihost.lab.secret("postgres_app")
    dsn = f"host={data.address} port={data.int_var('postgres_port')} dbname=loadlab user=loadlab"
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        psycopg.connect(f"{dsn} password={password} connect_timeout=5").close()  # the controller: refused
    app_host = next(h.name for h in multihost.lab.group("app") if h.name != data.name)
    with RemoteHosts(multihost.lab) as remotes:  # an app host: admitted, with the generated password
        connect = f"psycopg.connect({f'{dsn} password={password}'!r})"
        code = f"import psycopg; print({connect}.execute('select 1').fetchone()[0])"
        result = remotes[app_host].run(f"/opt/loadlab/venv/bin/python -c {json.dumps(code)}")
    assert result.stdout.strip() == "1", result.stderr


def test_a_sweep_from_the_controller_keeps_every_figure_on_its_host(multihost: MultiHostLab, sweep: dict):
    (step,) = sweep["steps"]
    assert step["users"] == USERS and step["rps"] > 0 and step["fail_ratio"] == 0.0
    res = step["resources"]
    assert res["source"] == "prometheus"
    # One socket per user, counted at the generators, and the same count arriving at target1's nginx.
    assert step["client_sockets"] == USERS
    assert step["server_sockets"] == USERS
    loadgens = {h.name for h in multihost.lab.group("loadgen")}
    per_loadgen = res["client_sockets"]["hosts"]
    assert set(per_loadgen) == loadgens and sum(per_loadgen.values()) == USERS
    # Processes keep their host: app instances on both app hosts, a worker on each loadgen host.
    processes = res["processes"]
    postgres = multihost.lab.group("postgres")[0].name
    for key in ("target1/app-8001", "target2/app-8001", "target1/nginx", f"{postgres}/postgres"):
        assert key in processes, sorted(processes)
    assert processes["target2/app-8001"]["cpu"] > 0 and processes["target1/app-8001"]["cpu"] > 0
    workers = {k for k in processes if "locust-worker" in k}
    assert {k.split("/")[0] for k in workers} == loadgens
    assert set(res["hosts"]) == set(multihost.lab.hosts)
    assert res["shared_machine"] is True
    run = json.loads((multihost.sweep_dir / "run.json").read_text())
    assert set(run["clocks"]["hosts"]) == set(multihost.lab.hosts)


def test_the_sweep_outlives_a_cut_ssh_connection_to_the_masters_host(multihost: MultiHostLab, sweep: dict):
    """The forward to the master's web API opened the connection again and the step went on, its load whole;
    the step names the host whose connection dropped."""
    (step,) = sweep["steps"]
    master = multihost.lab.locust_master.name
    assert step["ssh_reconnects"] == {master: 1}, step.get("ssh_reconnects")
    assert "load_short" not in step["diagnosis"] and step["load"]["users_min"] == USERS, step["load"]
    assert f"the SSH connection to {master} dropped and was opened again" in multihost.sweep_output


def test_requests_reached_the_instances_of_both_app_hosts(multihost: MultiHostLab, sweep: dict):
    (step,) = sweep["steps"]
    prometheus = multihost.lab.prometheus_url
    query = f"sum by (host) (increase(loadlab_app_requests_total[{int(step['window_s'])}s]))"
    rows = httpx.get(
        f"{prometheus}/api/v1/query", params={"query": query, "time": step["window_end"]}, timeout=10
    ).json()["data"]["result"]
    served = {row["metric"]["host"]: float(row["value"][1]) for row in rows}
    assert served.get("target1", 0) > 0 and served.get("target2", 0) > 0, served


def test_prometheus_scrapes_every_hosts_exporter_with_its_host(multihost: MultiHostLab, sweep: dict):
    rows = httpx.get(
        f"{multihost.lab.prometheus_url}/api/v1/query", params={"query": 'up{job="exporter"}'}, timeout=10
    ).json()["data"]["result"]
    assert {row["metric"]["host"]: row["value"][1] for row in rows} == dict.fromkeys(multihost.lab.hosts, "1")


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_dashboard_queries_answer_per_host_in_the_multi_host_lab(multihost: MultiHostLab, sweep, name):
    """Every panel query runs against the multi-host Prometheus; per-host panels show several hosts."""
    (step,) = sweep["steps"]
    prometheus = multihost.lab.prometheus_url
    model = load(name)
    start, end = step["window_start"], step["window_end"]
    variables = {**dashboard_variables(model, {"port": "8080"}), **builtin_variables(end - start, 5, 5)}
    hosts_by_panel = {}
    for panel in (p for p in model["panels"] if p["type"] != "row"):
        for target in panel["targets"]:
            query = substitute(target["expr"], variables)
            params = {"query": query, "start": start, "end": end, "step": 5}
            response = httpx.get(f"{prometheus}/api/v1/query_range", params=params, timeout=30)
            assert response.status_code == 200, f"{query}\n{response.text}"
            hosts = {r["metric"]["host"] for r in response.json()["data"]["result"] if "host" in r["metric"]}
            if hosts:
                hosts_by_panel[panel["title"]] = hosts_by_panel.get(panel["title"], set()) | hosts
    several = [title for title, hosts in hosts_by_panel.items() if len(hosts) > 1]
    assert not hosts_by_panel or several, f"no per-host panel shows more than one host: {hosts_by_panel}"


def test_the_sweep_collected_every_hosts_folder(multihost: MultiHostLab, sweep: dict):
    index = json.loads((multihost.sweep_dir / "hosts.json").read_text())
    hosts = index["hosts"]
    assert set(hosts) == set(multihost.lab.hosts)
    for name, entry in hosts.items():
        assert entry["reachable"] and not entry.get("error"), (name, entry)
        folder = multihost.sweep_dir / "hosts" / name
        assert (folder / "supervisor.txt").read_text().strip(), name
        assert (folder / "sockstat.txt").is_file() and (folder / "sysctl.txt").is_file()
    assert list((multihost.sweep_dir / "hosts" / "target1" / "configs").rglob("nginx*"))
    assert 'href="hosts/target1/' in (multihost.sweep_dir / "report.html").read_text()


def test_a_host_that_lacks_a_package_and_reaches_no_source_is_told_which(multihost: MultiHostLab):
    """Test hosts have no route to a package source, like an air-gapped lab: apt cannot fetch `hello`
    (asked once, for 3 s per source: longer only delays the same answer)."""
    knobs = {
        "common_packages": ["ca-certificates", "hello"],
        "common_apt_update_retries": 0,
        "common_apt_timeout": 3,
    }
    extra = json.dumps(knobs)
    host = multihost.lab.monitor.name
    run = run_playbook("lab.yml", "--limit", host, "-e", extra, inventory=INVENTORY)
    assert run.returncode != 0
    assert f"{host} lacks the Debian package(s) hello and apt could not install them" in run.output, (
        run.tail()
    )


def test_teardown_leaves_no_lab_process_and_down_leaves_no_host(multihost: MultiHostLab, sweep: dict):
    """Runs last: the teardown playbook on every host, with -e wipe=true (the lab's files go, the controller's
    passwords stay), then the hosts themselves go."""
    down = _timed(
        multihost.seconds,
        "teardown",
        run_playbook,
        "playbooks/teardown.yml",
        "-e",
        "wipe=true",
        inventory=INVENTORY,
    )
    assert down.returncode == 0, down.tail()
    folders = "/var/lib/loadlab /etc/loadlab /var/log/loadlab /run/loadlab /opt/loadlab"
    with RemoteHosts(multihost.lab) as remotes:
        left = {
            # exec: the shell that runs pgrep must not be there to match the pattern itself
            name: remotes[name].run(f"exec pgrep -af {json.dumps(LAB_PROCESS_PATTERN)}").stdout.strip()
            for name in multihost.lab.hosts
        }
        files = {
            name: remotes[name].run(f"ls -d {folders} 2>/dev/null").stdout.split()
            for name in multihost.lab.hosts
        }
    assert left == dict.fromkeys(multihost.lab.hosts, ""), left
    assert files == {name: [] for name in multihost.lab.hosts}, files
    assert (multihost.lab.secrets_dir / "postgres_app").is_file()  # the controller's passwords stay
    gone = _timed(multihost.seconds, "hosts_down", _testhosts, "down")
    assert gone.returncode == 0, gone.stderr
    assert not [
        n
        for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        if n.startswith("lab-")
    ]
    assert subprocess.run(["ip", "link", "show", "loadlab-br0"], capture_output=True).returncode != 0
    assert (
        subprocess.run(["pgrep", "-f", "sshd .*ListenAddress=198.18."], capture_output=True).returncode == 1
    )
    assert not Path("/sys/fs/cgroup/cpuacct/loadlab-testhosts").exists()
    assert not Path("/var/lib/loadlab-testhosts").exists()
