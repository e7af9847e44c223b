"""Malformed input to every command: one line, exit 2, no traceback, and the files it was given untouched.

Each case writes the files it hands the command into its own folder, runs the command through the CLI
runner, and checks that folder afterwards: the same files with the same bytes, and nothing added (a
failing command leaves no run folder behind). No case reaches Locust or a lab: every input here is
refused before either would start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from loadlab.cli import main
from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent
LOCUSTFILE = str(REPO / "tests" / "locustfiles" / "closed_loop.py")
LOADLAB = str(Path(sys.executable).with_name("loadlab"))
DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a run that got this far would fail
BINARY = b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00binary"
# A standalone sweep that passes every check before the target; each case breaks one thing.
OK = ["--host", DEAD, "-f", LOCUSTFILE, "--allow-any-host", "--users", "2"]


@dataclass
class Case:
    """One malformed input: the arguments ({d} is the case's folder), the files it is given."""

    args: list[str]
    contains: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


CASES: dict[str, Case] = {}


def case(
    name: str, args: list[str], contains: str, files: dict | None = None, env: dict | None = None
) -> None:
    assert name not in CASES, name
    CASES[name] = Case(args, contains, files or {}, env or {})


# -- usage mistakes, every command and group ------------------------------------------------------------
for name, args, contains in [
    ("top bad flag", ["--bogus"], "--bogus"),
    ("top bad command", ["bogus"], "bogus"),
    ("status bad flag", ["status", "--bogus"], "--bogus"),
    ("status -i without value", ["status", "-i"], "-i"),
    ("status extra argument", ["status", "extra"], "extra"),
    ("exporter bad flag", ["exporter", "--bogus"], "--bogus"),
    ("exporter bad log level", ["exporter", "--log-level", "loud"], "loud"),
    ("exporter --listen without value", ["exporter", "--listen"], "--listen"),
    ("grafana bad flag", ["grafana", "--bogus"], "--bogus"),
    ("grafana bad command", ["grafana", "bogus"], "bogus"),
    ("grafana sync bad flag", ["grafana", "sync", "--bogus"], "--bogus"),
    ("report without folder", ["report"], "RUN_DIR"),
    ("report two folders", ["report", "a", "b"], "b"),
    ("report bad flag", ["report", "--bogus", "x"], "--bogus"),
    ("collect without folder", ["collect"], "RUN_DIR"),
    ("collect bad flag", ["collect", "--bogus", "x"], "--bogus"),
    ("sweep bad flag", ["sweep", "--bogus"], "--bogus"),
    ("sweep --users without value", ["sweep", "--users"], "--users"),
    ("sweep --workers not a number", ["sweep", *OK, "--workers", "many"], "--workers"),
    ("sweep --max-users without auto", ["sweep", *OK, "--max-users", "10"], "--users auto"),
    ("sweep --resolution without auto", ["sweep", *OK, "--resolution", "5%"], "--users auto"),
    ("sweep --max-users zero", ["sweep", *OK[:-2], "--users", "auto", "--max-users", "0"], "--max-users"),
    (
        "sweep --resolution whole",
        ["sweep", *OK[:-2], "--users", "auto", "--resolution", "100%"],
        "resolution",
    ),
    ("sweep --resolution nan", ["sweep", *OK[:-2], "--users", "auto", "--resolution", "nan"], "resolution"),
    ("calibrate bad flag", ["calibrate", "--bogus"], "--bogus"),
    (
        "calibrate unknown case",
        ["calibrate", "-i", str(REPO / "inventory/local.yml"), "--case", "nope"],
        "nope",
    ),
    (
        "calibrate short window",
        ["calibrate", "-i", str(REPO / "inventory/local.yml"), "--step-time", "5s"],
        "--step-time",
    ),
    ("calibrate nan window", ["calibrate", "--step-time", "nan"], "--step-time"),
    (
        "calibrate on your own app",
        ["calibrate", "-i", str(REPO / "inventory/own-app.yml")],
        "the lab runs your own app on localhost (app_command)",
    ),
    ("calibrate empty out", ["calibrate", "--out", " "], "--out"),
]:
    case(name, args, contains)

# -- sweep flags ---------------------------------------------------------------------------------------
for flag, values in {
    "--users": ["10,x", "0", "-1", "1.5", "100001", ",,", " ", "", "ten"],
    "--step-time": ["5q", "nan", "inf", "-1s", "0s", "25h", "", "1e9"],
    "--warmup": ["nan", "-3s", "inf", "", "soon"],
    "--spawn-rate": ["nan", "inf", "-inf", "0", "-1", "fast", "", "1e400"],
    "--threshold": ["p95<200", "p95<<200", "p42<1ms", "rps>10ms", "fail_ratio<5", "p95<200ms@7", "p95<2%",
                    "p95<" + "9" * 400 + "ms", "fail_ratio<2ms", "", "p95<200ms@0"],
    "--name": ["", " ", "bad name!", "-x"],
    "--user-classes": [",", "", "Not-A-Class", "A,,B"],
    "--host": ["http://127.0.0.1:99999", "http://[::1", "ftp://x", "http://", "", "http://127.0.0.1:0",
               "http://127.0.0.1:port"],
    "--workers": ["0", "-1", "1000000"],
    "-f": ["{d}/no-such.py", ""],
    "-i": ["{d}/no-such.yml"],
    "--out": [""],
    "--reset": ["-1", "ten", "20000000"],
    "--target-revision": ["", " ", "x" * 300, "a\tb"],
    "--baseline": ["{d}/no-such-run", "{d}"],
    "--max-regression": ["nan", "-5%", "150%", "lots"],
}.items():  # fmt: skip
    for value in values:
        base = [a for a in OK]
        if flag in base:
            i = base.index(flag)
            base[i + 1] = value
        else:
            base += [flag, value]
        if flag == "--max-regression":
            base += ["--baseline", "{d}"]  # no run there, but the tolerance is checked first
        hint = {"-f": "-f", "-i": "-i", "--threshold": "threshold", "--user-classes": "user-classes",
                "--reset": "reset", "--baseline": "not a"}  # fmt: skip
        case(f"sweep {flag} {value[:20]!r}", ["sweep", *base], hint.get(flag, flag if value.strip() else ""))

for name, text in {
    "syntax error": "from locust import HttpUser\ndef broken(:\n",
    "binary": BINARY,
    "null bytes": b"x = 1\x00\n",
}.items():
    case(f"sweep locustfile {name}", ["sweep", *OK[:2], "-f", "{d}/lf.py", *OK[4:], "--out", "{d}/run"],
         "lf.py", {"lf.py": text})  # fmt: skip
# -- the open model -------------------------------------------------------------------------------------
OPEN = [*OK[:-2], "--rate"]
for value in ["0", "-5", "nan", "inf", "ten", "100,,200", "", "2e6"]:
    case(f"sweep --rate {value!r}", ["sweep", *OPEN, value], "--rate")
case("sweep --rate and --users", ["sweep", *OK, "--rate", "100"], "give one")
case("sweep --arrivals without --rate", ["sweep", *OK, "--arrivals", "poisson"], "--rate")
case("sweep --arrivals unknown", ["sweep", *OPEN, "100", "--arrivals", "bursty"], "--arrivals")
case("sweep --rate --max-users zero", ["sweep", *OPEN, "100", "--max-users", "0"], "--max-users")
case("sweep --rate --resolution", ["sweep", *OPEN, "100", "--resolution", "5%"], "--users auto")
for name, text in {
    "rates zero": "rates: [0]\n",
    "rates text": "rates: fast\n",
    "rates and users": "rates: [10]\nusers: [10]\n",
    "rates empty": "rates: []\n",
    "rates arrivals unknown": "rates: [10]\narrivals: bursty\n",
    "rates max_users zero": "rates: [10]\nmax_users: 0\n",
    "rates max_users text": "rates: [10]\nmax_users: many\n",
    "users with max_users": "users: [10]\nmax_users: 10\n",
}.items():
    case(f"spec {name}", ["sweep", "--spec", "{d}/spec.yml"], "spec.yml", {"spec.yml": text})
case("sweep --reset of a target elsewhere", ["sweep", *OK, "--reset", "100"], "for sweeps of the lab")
case("sweep --max-regression alone", ["sweep", *OK, "--max-regression", "5%"], "needs --baseline")
PARTS = {"a file": "{d}/file", "run.json": "{d}/r1", "steps.jsonl": "{d}/r2", "summary.json": "{d}/r3",
         "steps.csv": "{d}/r4", "report.html": "{d}/r5"}  # fmt: skip
for name, arg in PARTS.items():
    files = {"file": "x"} if name == "a file" else {f"{arg[4:]}/{name}": "{}\n"}
    case(f"sweep --out holding {name}", ["sweep", *OK, "--out", arg], "--out", files)
case(
    "sweep --out whose empty steps hide a summary",
    ["sweep", *OK, "--out", "{d}/run"],
    "already holds a run",
    {"run/steps.jsonl": "", "run/summary.json": json.dumps({"steps": [{"users": 2, "rps": 10}]})},
)

# -- spec files ----------------------------------------------------------------------------------------
SPEC_MISTAKES = {
    "step_time inf": "users: [10]\nstep_time: .inf\n",
    "step_time nan": "users: [10]\nstep_time: .nan\n",
    "step_time negative": "users: [10]\nstep_time: -1\n",
    "step_time zero": "users: [10]\nstep_time: 0\n",
    "step_time a list": "users: [10]\nstep_time: [1]\n",
    "step_time two days": "users: [10]\nstep_time: 48h\n",
    "warmup nan": "users: [10]\nwarmup: .nan\n",
    "warmup inf": "users: [10]\nwarmup: .inf\n",
    "warmup bool": "users: [10]\nwarmup: true\n",
    "spawn_rate nan": "users: [10]\nspawn_rate: .nan\n",
    "spawn_rate inf": "users: [10]\nspawn_rate: .inf\n",
    "spawn_rate zero": "users: [10]\nspawn_rate: 0\n",
    "spawn_rate words": "users: [10]\nspawn_rate: fast\n",
    "spawn_rate bool": "users: [10]\nspawn_rate: true\n",
    "users empty": "users: []\n",
    "users zero": "users: [0]\n",
    "users fraction": "users: [1.5]\n",
    "users text": "users: a\n",
    "users mapping": "users: {a: 1}\n",
    "users bool": "users: true\n",
    "users too many": "users: [100001]\n",
    "users null": "users:\n",
    "workers zero": "users: [10]\nworkers: 0\n",
    "workers text": "users: [10]\nworkers: two\n",
    "workers fraction": "users: [10]\nworkers: 1.5\n",
    "workers bool": "users: [10]\nworkers: true\n",
    "target bad port": "users: [10]\ntarget: http://127.0.0.1:99999\n",
    "target open bracket": "users: [10]\ntarget: 'http://[::1'\n",
    "target ftp": "users: [10]\ntarget: ftp://x\n",
    "target number": "users: [10]\ntarget: 123\n",
    "target word": "users: [10]\ntarget: nginx\n",
    "locustfile list": "users: [10]\nlocustfile: [a]\n",
    "thresholds no unit": "users: [10]\nthresholds: [p95<200]\n",
    "thresholds numbers": "users: [10]\nthresholds: [1]\n",
    "thresholds missing step": "users: [10]\nthresholds: [p95<200ms@7]\n",
    "thresholds empty name": "users: [10]\nthresholds: ','\n",
    "user_classes numbers": "users: [10]\nuser_classes: [1]\n",
    "user_classes comma": "users: [10]\nuser_classes: ','\n",
    "user_classes dash": "users: [10]\nuser_classes: [A-B]\n",
    "name with space": "name: 'a b'\nusers: [10]\n",
    "name empty": "name: ''\nusers: [10]\n",
    "name list": "name: [x]\nusers: [10]\n",
    "unknown field": "users: [10]\nstep: 30s\n",
    "a list": "- 10\n- 20\n",
    "a scalar": "10\n",
    "empty": "",
    "not yaml": "users: [10\n",
    "binary": BINARY,
}
for name, text in SPEC_MISTAKES.items():
    case(f"spec {name}", ["sweep", "--spec", "{d}/spec.yml"], "spec.yml", {"spec.yml": text})
case("spec a folder", ["sweep", "--spec", "{d}"], "--spec")
case("spec missing", ["sweep", "--spec", "{d}/none.yml"], "none.yml")

# -- inventories (read through ansible-inventory, as every command does) -------------------------------
INVENTORY = """all:
  vars: {{ansible_connection: local{extra}}}
  hosts:
    localhost: {{lab_address: 127.0.0.1}}
  children:
{groups}"""
LAB_GROUPS = ("lb", "app", "postgres", "redis", "loadgen", "monitor")
GROUPS = "".join(f"    {g}:\n      hosts:\n        localhost:\n" for g in LAB_GROUPS)
for name, extra, contains in [
    ("nginx_port out of range", ", nginx_port: 99999", "nginx_port"),
    ("nginx_port a word", ", nginx_port: eighty", "nginx_port"),
    ("redis_port zero", ", redis_port: 0", "redis_port"),
    ("app_instances negative", ", app_instances: -1", "app_instances"),
    ("app ports past 65535", ", app_base_port: 65535", "65535"),
]:
    files = {"inventory.yml": INVENTORY.format(extra=extra, groups=GROUPS)}
    case(f"status inventory {name}", ["status", "-i", "{d}/inventory.yml"], contains, files)
    case(f"sweep inventory {name}", ["sweep", "--users", "2", "-i", "{d}/inventory.yml"], contains, files)
case("status inventory missing groups", ["status", "-i", "{d}/inv.yml"], "no host in group",
     {"inv.yml": "all:\n  hosts:\n    localhost: {lab_address: 127.0.0.1}\n"})  # fmt: skip
case("status inventory not yaml", ["status", "-i", "{d}/inv.yml"], "inv.yml", {"inv.yml": "all: [\n"})
case("status inventory missing", ["status", "-i", "{d}/none.yml"], "none.yml")


# -- run folders: report, collect and resume -----------------------------------------------------------
def step(i: int, n: int, **over: object) -> str:
    record = {"index": i, "users": n, "rps": 10.0 * n, "p50_ms": 5, "p95_ms": 9, "p99_ms": 12,
              "fail_ratio": 0.0, "requests": 100, "failures": 0, "diagnosis": ["ok"], **over}  # fmt: skip
    return json.dumps(record) + "\n"


def run_record(**over: object) -> str:
    spec = {"name": "t", "users": [2, 4, 8], "step_time": 3.0, "warmup": 0.0, "spawn_rate": 50.0,
            "user_classes": [], "thresholds": [], "target": DEAD, "locustfile": LOCUSTFILE, "workers": 1,
            "description": ""}  # fmt: skip
    run = {"id": "run", "command": ["loadlab", "sweep"], "mode": "standalone", "target": DEAD,
           "locustfile": LOCUSTFILE, "workers": 1, "allow_any_host": True, "spec": spec,
           "inventory": {"path": None}, **over}  # fmt: skip
    return json.dumps({k: v for k, v in run.items() if v is not ...}, indent=2)


def run_folder(run: str | bytes | None = None, steps: str | bytes | None = None, **more: str | bytes) -> dict:
    return {"run/run.json": run_record() if run is None else run,
            "run/steps.jsonl": step(0, 2) + step(1, 4) if steps is None else steps,
            **{f"run/{k.replace('_', '.')}": v for k, v in more.items()}}  # fmt: skip


NAN = float("nan")  # json.dumps writes it as NaN, which json.loads reads back
RUN_MISTAKES = {
    "run.json empty object": run_folder(run="{}"),
    "run.json a list": run_folder(run="[1]"),
    "run.json not json": run_folder(run="{"),
    "run.json binary": run_folder(run=BINARY),
    "run.json inventory a string": run_folder(run=run_record(inventory="inventory/local.yml")),
    "run.json spec a string": run_folder(run=run_record(spec="x")),
    "run.json spec without users": run_folder(run=run_record(spec={"name": "t"})),
    "run.json spec unknown field": run_folder(run=run_record(spec={"name": "t", "users": [2], "x": 1})),
    "run.json spec users zero": run_folder(run=run_record(spec={"name": "t", "users": [0]})),
    "run.json step_time nan": run_folder(run=run_record(spec={"name": "t", "users": [2], "step_time": NAN})),
    "run.json mode unknown": run_folder(run=run_record(mode="weird")),
    "run.json workers text": run_folder(run=run_record(workers="two")),
    "run.json no run.json": {"run/steps.jsonl": step(0, 2)},
    "steps rps a word": run_folder(steps=step(0, 2) + step(1, 4, rps="fast")),
    "steps users a word": run_folder(steps=step(0, 2, users="x")),
    "steps a list line": run_folder(steps="[1]\n" + step(1, 4)),
    "steps index negative": run_folder(steps=step(-1, 2)),
    "steps diagnosis a number": run_folder(steps=step(0, 2, diagnosis=5)),
    "steps damaged middle line": run_folder(steps=step(0, 2) + '{"index": 1, "us\n' + step(2, 8)),
    "steps binary": run_folder(steps=BINARY),
    "summary a list": run_folder(summary_json="[1]"),
    "summary not json": run_folder(summary_json="{"),
    "summary steps a number": run_folder(summary_json='{"steps": 5}'),
    "summary binary": run_folder(summary_json=BINARY),
}  # fmt: skip
for name, files in RUN_MISTAKES.items():
    case(f"report {name}", ["report", "--no-panels", "{d}/run"], "run", files)
for name in ("run.json empty object", "run.json a list", "run.json binary", "run.json inventory a string"):
    case(f"collect {name}", ["collect", "{d}/run"], "run", RUN_MISTAKES[name])
for name, files in RUN_MISTAKES.items():
    if name.startswith(("run.json", "steps binary")):
        case(f"resume {name}", ["sweep", "--resume", "{d}/run"], "run", files)
case("report no such folder", ["report", "{d}/none"], "none")
case("report a file", ["report", "{d}/file"], "file", {"file": "x"})
case("report no steps", ["report", "{d}/run"], "no finished step", run_folder(steps=""))
case("resume no such folder", ["sweep", "--resume", "{d}/none"], "not a sweep run")
case("resume with --users", ["sweep", "--resume", "{d}/run", "--users", "10"], "drop --users", run_folder())
case("resume with --name", ["sweep", "--resume", "{d}/run", "--name", "x"], "drop --name", run_folder())
# The target is down: the damaged and cut lines stay where they are, every file byte for byte.
case("resume a cut last line, target down", ["sweep", "--resume", "{d}/run"], "unreachable",
     run_folder(steps=step(0, 2) + '{"index": 1, "users": 4, "rps": 3', summary_json="{}"))  # fmt: skip
case("resume a damaged middle line, target down", ["sweep", "--resume", "{d}/run"], "unreachable",
     run_folder(steps=step(0, 2) + step(1, 4).replace("4", "\x00", 1) + step(2, 8)))  # fmt: skip
case("resume a locustfile gone", ["sweep", "--resume", "{d}/run"], "no such locustfile",
     run_folder(run=run_record(locustfile="/no/such.py")))  # fmt: skip
case("resume a target with a bad port", ["sweep", "--resume", "{d}/run"], "invalid port",
     run_folder(run=run_record(target="http://127.0.0.1:99999")))  # fmt: skip
case("resume too many workers", ["sweep", "--resume", "{d}/run"], "--allow-many-workers",
     run_folder(run=run_record(workers=100_000)))  # fmt: skip

# -- exporter configs and flags ------------------------------------------------------------------------
for name, text, contains in [
    ("redis url open bracket", "redis: {url: 'redis://[::1'}", "redis.url"),
    ("redis url port out of range", "redis: {url: 'redis://127.0.0.1:99999/0'}", "redis.url"),
    ("redis url http", "redis: {url: 'http://127.0.0.1:6380'}", "redis.url"),
    ("redis url a number", "redis: {url: 5}", "redis.url"),
    ("nginx url open bracket", "nginx: {status_url: 'http://[::1'}", "nginx.status_url"),
    ("nginx url no host", "nginx: {status_url: 'http://'}", "nginx.status_url"),
    ("nginx section a list", "nginx: [1]", "nginx"),
    ("postgres dsn bad port", "postgres: {dsn: 'host=x port=99999'}", "postgres.dsn"),
    ("postgres dsn garbage", "postgres: {dsn: 'host'}", "postgres.dsn"),
    ("timeout nan", "timeout: .nan", "timeout"),
    ("timeout inf", "timeout: .inf", "timeout"),
    ("timeout negative", "timeout: -1", "timeout"),
    ("timeout too long", "timeout: 61", "timeout"),
    ("timeout a word", "timeout: soon", "timeout"),
    ("timeout bool", "timeout: true", "timeout"),
    ("listen no port", "listen: 127.0.0.1", "listen"),
    ("listen port out of range", "listen: '127.0.0.1:99999'", "listen"),
    ("listen bad ipv6", "listen: '[::zz]:9465'", "listen"),
    ("ports zero", "ports: [0]", "ports"),
    ("ports words", "ports: [http]", "ports"),
    ("ports a mapping", "ports: {a: 1}", "ports"),
    ("process_groups bad regex", "process_groups: {x: '('}", "process_groups"),
    ("process_groups a list", "process_groups: [x]", "process_groups"),
    ("cpu_cgroup relative", "cpu_cgroup: lab/host1", "cpu_cgroup"),
    ("cpu_cgroup not a cgroup", "cpu_cgroup: /tmp", "cpu_cgroup"),
    ("shared_machine a word", "shared_machine: yes please", "shared_machine"),
    ("unknown key", "colour: blue", "colour"),
    ("a list", "- 1", "mapping"),
    ("not yaml", "listen: [", "YAML"),
]:
    case(f"exporter config {name}", ["exporter", "--config", "{d}/exporter.yml"], contains,
         {"exporter.yml": text + "\n"})  # fmt: skip
case(
    "exporter config binary", ["exporter", "--config", "{d}/exporter.yml"], "UTF-8", {"exporter.yml": BINARY}
)
case("exporter config missing", ["exporter", "--config", "{d}/none.yml"], "none.yml")
for flag, value in [
    ("--redis-url", "redis://[::1"),
    ("--redis-url", "redis://127.0.0.1:99999"),
    ("--nginx-status-url", "http://[::1"),
    ("--nginx-status-url", "http://127.0.0.1:70000/stub_status"),
    ("--postgres-dsn", "port=0"),
    ("--listen", "nowhere"),
    ("--listen", ":99999"),
    ("--ports", "1,x"),
    ("--ports", "70000"),
    ("--process-group", "noequals"),
    ("--process-group", "x=("),
]:
    case(f"exporter {flag} {value!r}", ["exporter", flag, value], flag)

# -- grafana -------------------------------------------------------------------------------------------
for value in ("http://[::1", "http://127.0.0.1:99999", "ftp://grafana", "http://", "http://127.0.0.1:x"):
    case(f"grafana --url {value!r}", ["grafana", "sync", "--url", value], "--url")
case("grafana env url open bracket", ["grafana", "sync"], "LOADLAB_GRAFANA_URL",
     env={"LOADLAB_GRAFANA_URL": "http://[::1"})  # fmt: skip
case(
    "grafana password file missing", ["grafana", "sync", "--url", DEAD, "--password-file", "{d}/none"], "none"
)
case("grafana password file binary", ["grafana", "sync", "--url", DEAD, "--password-file", "{d}/pw"], "pw",
     {"pw": BINARY})  # fmt: skip
case("grafana unknown dashboard", ["grafana", "sync", "--url", DEAD, "--dashboard", "nope"], "nope")


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under the folder with its bytes (None for a folder)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def test_the_campaign_covers_enough_inputs() -> None:
    assert len(CASES) >= 150


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_is_one_line_exit_2_and_changes_no_file(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = CASES[name]
    for rel, content in c.files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    monkeypatch.delenv("LOADLAB_GRAFANA_URL", raising=False)
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # a command that wrongly wrote results/ would show up in the snapshot
    before = snapshot(tmp_path)
    args = [a.replace("{d}", str(tmp_path)) for a in c.args]
    result = CliRunner().invoke(main, args)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines[0]
    assert c.contains in lines[0], lines[0]
    assert snapshot(tmp_path) == before


def test_a_locustfile_with_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "lf.py").write_text("x = 1\ndef broken(:\n")
    result = CliRunner().invoke(main, ["sweep", *OK[:2], "-f", str(tmp_path / "lf.py"), *OK[4:]])
    assert result.exit_code == 2
    assert "line 2" in result.output and "results" not in os.listdir(tmp_path)


def test_more_workers_than_four_per_core_need_the_flag_to_pass_that_check(tmp_path: Path) -> None:
    many = str(4 * (os.cpu_count() or 1) + 1)
    refused = CliRunner().invoke(main, ["sweep", *OK, "--workers", many, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2 and "--allow-many-workers" in refused.output
    # Allowed, the run gets as far as the (dead) target: the worker bound is no longer what stops it.
    allowed = CliRunner().invoke(
        main, ["sweep", *OK, "--workers", many, "--allow-many-workers", "--out", str(tmp_path / "b")]
    )
    assert allowed.exit_code == 2 and "unreachable" in allowed.output
    assert not (tmp_path / "b").exists()


def _as_nobody() -> list[str]:
    """Run a command as an unprivileged user (root writes anywhere, so read-only means nothing to it)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is needed to drop root for a read-only folder")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.parametrize("command", ["sweep", "report", "resume"])
def test_a_read_only_run_folder_is_one_line_and_exit_2(command: str) -> None:
    top = Path(tempfile.mkdtemp(prefix="loadlab-ro-"))
    home = Path(tempfile.mkdtemp(prefix="loadlab-home-"))  # matplotlib's cache, outside the checked folder
    try:
        home.chmod(0o777)
        top.chmod(0o755)
        run = top / "run"
        run.mkdir()
        if command != "sweep":
            for rel, content in run_folder().items():
                (top / rel).write_text(content)
        run.chmod(0o555)
        before = snapshot(top)
        args = {
            "sweep": ["sweep", *OK, "--out", str(run)],
            "report": ["report", "--no-panels", str(run)],
            "resume": ["sweep", "--resume", str(run)],
        }[command]
        out = subprocess.run(
            [*_as_nobody(), LOADLAB, *args], capture_output=True, text=True, timeout=120, cwd=top,
            env={**os.environ, "MPLCONFIGDIR": str(home), "HOME": str(home)},
        )  # fmt: skip
        said = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        assert out.returncode == 2, out.stdout + out.stderr
        assert len(said) == 1 and said[0].startswith("error: "), said
        assert str(run) in said[0] and "Traceback" not in out.stderr
        assert snapshot(top) == before
    finally:
        run.chmod(0o755)
        shutil.rmtree(top)
        shutil.rmtree(home)


def test_inventory_mistakes_name_the_inventory_not_a_down_service(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY.format(extra=", nginx_port: 99999", groups=GROUPS))
    result = CliRunner().invoke(main, ["status", "-i", str(inventory)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: inventory {inventory}: localhost: nginx_port is 99999, not a TCP port (1-65535)"
    )


def test_every_spec_mistake_names_the_spec_file(tmp_path: Path) -> None:
    spec = tmp_path / "capacity.yml"
    spec.write_text("users: [10]\nwarmup: .nan\n")
    result = CliRunner().invoke(main, ["sweep", "--spec", str(spec)])
    assert result.output.startswith(f"error: {spec}: warmup")
