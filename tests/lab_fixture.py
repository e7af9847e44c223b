"""The whole lab on this machine: `ansible-playbook lab.yml` once per session, the teardown at its end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from loadlab.knobs import lab_knobs
from loadlab.lab import Lab
from loadlab.process_groups import lab_process_pattern, lab_process_patterns

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
KNOBS = lab_knobs()  # inventory/group_vars/all.yml: the lab on this machine and on the test hosts
SUPERVISORCTL = ["supervisorctl", "-c", KNOBS["loadlab_supervisor_conf"]]


def _lab_process_pattern() -> str:
    """Every lab process on this machine or a test host (pgrep -f), as the teardown finds them: the default
    knobs, with the demo app and with tests/own_app as the lab's app (inventory/own-app.yml)."""
    own_app = yaml.safe_load((ROOT / "inventory" / "own-app.yml").read_text())["all"]["hosts"]["localhost"]
    patterns = lab_process_patterns(
        KNOBS["loadlab_etc_dir"],
        supervisor_conf=KNOBS["loadlab_supervisor_conf"],
        redis_port=KNOBS["redis_port"],
        app_ports=range(KNOBS["app_base_port"], KNOBS["app_base_port"] + KNOBS["app_instances"]),
        app_command=own_app["app_command"],
        lab_address=own_app["lab_address"],
    )
    return lab_process_pattern(patterns)


LAB_PROCESS_PATTERN = _lab_process_pattern()


@dataclass(frozen=True)
class PlaybookRun:
    """One ansible-playbook run: its exit code, its output, and the PLAY RECAP counters per host."""

    returncode: int
    output: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """host -> {ok, changed, unreachable, failed, skipped, rescued, ignored}."""
        found: dict[str, dict[str, int]] = {}
        tail = self.output.rsplit("PLAY RECAP", 1)[-1]
        for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", tail, re.M):
            found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counters)}
        return found

    @property
    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported a change, to say what a rerun did."""
        names: list[str] = []
        task = ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:") and task not in names:
                names.append(task)
        return names

    def tail(self, lines: int = 60) -> str:
        """The end of the output, where Ansible says what failed."""
        return "\n".join(self.output.splitlines()[-lines:])


def run_playbook(playbook: str, *args: str, inventory: Path | None = None) -> PlaybookRun:
    """ansible-playbook from the project's venv, in the project folder, as a user would run it."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("ANSIBLE_FORCE_COLOR", None)
    cmd = [str(VENV_BIN / "ansible-playbook"), playbook, *args]
    if inventory is not None:
        cmd += ["-i", str(inventory)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    return PlaybookRun(out.returncode, out.stdout + out.stderr)


def lab_processes() -> list[str]:
    """`pid command` of every lab process still running."""
    cmd = ["pgrep", "-a", "-f", LAB_PROCESS_PATTERN]
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.splitlines()


@dataclass(frozen=True)
class LabSession:
    """The running lab: its inventory view and the output of the run that brought it up."""

    lab: Lab
    bring_up: PlaybookRun


@pytest.fixture(scope="session")
def lab() -> Iterator[LabSession]:
    """The lab brought up on this machine by `ansible-playbook lab.yml`; torn down after the session."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root: it installs packages and runs services")
    run = run_playbook("lab.yml")
    if run.returncode != 0:
        pytest.fail(f"ansible-playbook lab.yml failed ({run.returncode}):\n{run.tail()}")
    try:
        yield LabSession(Lab.load(ROOT / "inventory" / "local.yml"), run)
    finally:
        down = run_playbook("playbooks/teardown.yml")
        assert down.returncode == 0, f"teardown failed:\n{down.tail()}"
