"""The lab's knobs as inventory/group_vars/all.yml sets them, read from that file and never restated.

The playbooks and `loadlab` see the knobs through Ansible (`ansible-inventory` applies group_vars/ to every
inventory in inventory/). This module is for where no inventory applies them: an inventory kept outside
inventory/, and the lab exporter started without a config. A value that is a Jinja template over other knobs
(`loadlab_supervisor_conf: "{{ loadlab_etc_dir }}/supervisord.conf"`) is rendered from them; one that needs a
playbook run (`locust_workers: "{{ ansible_facts.processor_vcpus }}"`, a password lookup) is left out.

The file is part of the project checkout, not of the installed package: where `loadlab` runs from a wheel
(the lab's remote hosts), there are no knobs here and every value has to come from an inventory or a config.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml

from loadlab.errors import UserError

GROUP_VARS = Path("inventory", "group_vars", "all.yml")
"""Where a project keeps the lab's knobs, relative to the project folder."""
CHECKOUT = Path(__file__).resolve().parent.parent
"""The project folder this code runs from, where it runs from a checkout (an editable install)."""


def is_template(value: Any) -> bool:
    """A Jinja expression or statement: a value Ansible renders when it uses it."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def group_vars_file(project: Path | None = None) -> Path | None:
    """inventory/group_vars/all.yml of `project`, else of the checkout this code runs from, else None."""
    for folder in (project, CHECKOUT):
        if folder is not None and (folder / GROUP_VARS).is_file():
            return folder / GROUP_VARS
    return None


_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


def render(value: str, knobs: Mapping[str, Any]) -> str | None:
    """A template over other knobs, rendered from their values; None where it needs a playbook run (a fact,
    a lookup, an Ansible filter)."""
    try:
        return _JINJA.from_string(value).render(knobs)
    except jinja2.TemplateError:
        return None


@functools.lru_cache(maxsize=8)
def _read_knobs(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the lab's knobs from {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of knob names to values")
    knobs = {name: value for name, value in data.items() if not is_template(value)}
    for name, value in data.items():
        if is_template(value) and (rendered := render(value, knobs)) is not None:
            knobs[name] = rendered
    return knobs


def lab_knobs(project: Path | None = None) -> dict[str, Any]:
    """Every knob group_vars/all.yml sets, as far as it is known without a playbook run: the lab's
    defaults; empty where no such file is reachable."""
    path = group_vars_file(project)
    return dict(_read_knobs(path)) if path is not None else {}


def knob(name: str, project: Path | None = None) -> Any:
    """One knob's default; a UserError naming it where group_vars/all.yml is not here or does not set it."""
    knobs = lab_knobs(project)
    if name not in knobs:
        where = group_vars_file(project)
        if where is None:
            raise UserError(f"{name} is not set, and the lab's knobs ({GROUP_VARS}) are not installed here")
        raise UserError(f"{name} is not set, and {where} does not set it")
    return knobs[name]
