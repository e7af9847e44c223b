"""One home per knob: a lab knob is set in inventory/group_vars/all.yml only, a role's own setting in that
role's defaults/main.yml only; each role's meta/argument_specs.yml documents every variable the role takes,
in step with both; the Python side reads the knobs instead of restating their values. Each check is a
function of the files' contents, and each has a test feeding it a doctored copy to show it can fail."""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GROUP_VARS = ROOT / "inventory" / "group_vars" / "all.yml"
ROLES_DIR = ROOT / "playbooks" / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if p.is_dir())
PLAYBOOK_FILES = sorted(
    p for ext in ("yml", "j2") for p in (ROOT / "playbooks").glob(f"**/*.{ext}") if "/defaults/" not in str(p)
)
# The Python modules that read knobs (the exporter's defaults, the inventory, the sweep's view of the lab).
PYTHON_READERS = ("loadlab/lab.py", "loadlab/knobs.py", "loadlab/sweep/lab_view.py", "exporters/config.py")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def group_vars() -> dict[str, Any]:
    return _yaml(GROUP_VARS)


def role_defaults() -> dict[str, dict[str, Any]]:
    return {role: _yaml(ROLES_DIR / role / "defaults" / "main.yml") or {} for role in ROLES}


def role_spec(role: str) -> dict[str, Any]:
    """The options of the role's entry point `main`."""
    return (
        _yaml(ROLES_DIR / role / "meta" / "argument_specs.yml")["argument_specs"]["main"].get("options") or {}
    )


def per_inventory_vars(group_vars_text: str) -> set[str]:
    """The variables group_vars/all.yml documents as set per inventory (lab_address, external_*): its comment
    lines `#   name   what it is`."""
    return set(re.findall(r"^#\s{3}([a-z][a-z0-9]*_[a-z0-9_]+)\s{2,}\S", group_vars_text, re.M))


def role_words(role: str) -> set[str]:
    """Every name in a role's tasks, templates, vars, handlers, files and defaults' values."""
    text = ""
    for sub in ("tasks", "templates", "vars", "handlers", "files"):
        text += "".join(p.read_text() for p in sorted((ROLES_DIR / role / sub).glob("**/*")) if p.is_file())
    text += yaml.safe_dump(list((role_defaults()[role]).values()))
    return set(re.findall(r"\b[a-z][a-z0-9_]*\b", text))


# --- the checks --------------------------------------------------------------------------------------------


def knobs_defined_twice(lab_knobs: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A knob set in group_vars/all.yml and in a role's defaults, or in two roles' defaults."""
    found = [
        f"{name}: group_vars/all.yml and {role}"
        for role, d in defaults.items()
        for name in d
        if name in lab_knobs
    ]
    homes: dict[str, list[str]] = {}
    for role, d in defaults.items():
        for name in d:
            homes.setdefault(name, []).append(role)
    found += [f"{name}: {' and '.join(roles)}" for name, roles in homes.items() if len(roles) > 1]
    return found


def spec_problems(
    role: str,
    defaults: Mapping[str, Any],
    spec: Mapping[str, Mapping[str, Any]],
    lab_knobs: Mapping[str, Any],
    per_inventory: Iterable[str],
    uses: Iterable[str] = (),
    others: Mapping[str, Any] = {},
) -> list[str]:
    """Where a role's argument spec and its defaults part: a default the spec lacks or states otherwise, a
    spec default the defaults lack, a lab knob the spec gives a default (or does not require), an option
    nothing defines, a variable the role uses and the spec lacks, another role's own setting used here."""
    per_inventory = set(per_inventory)
    found = []
    for name, value in defaults.items():
        if name not in spec:
            found.append(f"{role}: default {name} is not in meta/argument_specs.yml")
        elif "default" not in spec[name]:
            found.append(f"{role}: {name} has no default in meta/argument_specs.yml")
        elif spec[name]["default"] != value:
            found.append(f"{role}: {name} defaults to {value!r}, the spec says {spec[name]['default']!r}")
    for name, option in spec.items():
        if name in defaults:
            continue
        if "default" in option:
            where = "group_vars/all.yml sets it" if name in lab_knobs else "defaults/main.yml lacks it"
            found.append(f"{role}: the spec gives {name} a default; {where}")
        elif name in lab_knobs:
            if not option.get("required"):
                found.append(f"{role}: {name} comes from group_vars/all.yml: the spec should require it")
        elif name not in per_inventory:
            found.append(
                f"{role}: {name} has no default, and group_vars/all.yml neither sets nor documents it"
            )
    known = set(defaults) | set(lab_knobs) | per_inventory
    found += [f"{role}: uses {name}, which the spec lacks" for name in sorted(set(uses) & known - set(spec))]
    found += [
        f"{role}: uses {name}, the {other}'s own setting: a knob two roles share goes to group_vars/all.yml"
        for other, d in others.items()
        for name in sorted(set(uses) & set(d) - set(defaults))
    ]
    return found


def restated_defaults(text: str, knob_names: Iterable[str]) -> list[str]:
    """`knob | default(...)` in a role or playbook: every knob is defined (group_vars/all.yml or the role's
    defaults), so the fallback restates its value."""
    names = "|".join(sorted(knob_names))
    return re.findall(rf"\b(?:{names})\s*\|\s*default\([^)]*\)", text)


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list | tuple | set):
        return [v for item in value for v in _flatten(item)]
    if isinstance(value, dict):
        return [*_flatten(list(value)), *_flatten(list(value.values()))]
    return [value]


def python_restatements(source: str, lab_knobs: Mapping[str, Any]) -> list[str]:
    """Knob values the Python source spells out: a mapping keyed by knob names, a field or constant named
    after a knob with its value, a port knob's number or a path knob's value in a module constant."""
    ports = {v for k, v in lab_knobs.items() if k.endswith("_port") and isinstance(v, int)}
    paths = {
        v for k, v in lab_knobs.items() if k.endswith("_dir") and isinstance(v, str) and v.startswith("/")
    }
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = [_literal(k) for k in node.keys if k is not None]
            named = [k for k in keys if isinstance(k, str) and k in lab_knobs]
            if len(named) >= 2:
                found.append(f"line {node.lineno}: a mapping of knobs ({', '.join(named[:3])}, ...)")
        if isinstance(node, ast.AnnAssign | ast.Assign) and node.value is not None:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            names = [t.id if isinstance(t, ast.Name) else getattr(t, "attr", "") for t in targets]
            value = _literal(node.value)
            for name in names:
                knob = next((k for k in lab_knobs if k == name or k.endswith("_" + name)), None)
                if knob is not None and value and value == lab_knobs[knob]:  # not False, "", 0
                    found.append(f"line {node.lineno}: {name} = {value!r}, the value of {knob}")
            if node in tree.body:  # a module constant
                for item in _flatten(value):
                    texts = re.findall(r"\d+", item) if isinstance(item, str) else []
                    if item in ports or any(int(t) in ports for t in texts):
                        found.append(f"line {node.lineno}: {names[0]} holds a port knob's value ({item!r})")
                    elif isinstance(item, str) and any(p in item for p in paths):
                        found.append(f"line {node.lineno}: {names[0]} holds a path knob's value ({item!r})")
    return found


# --- the project -------------------------------------------------------------------------------------------


def test_every_knob_has_one_home():
    assert knobs_defined_twice(group_vars(), role_defaults()) == []


@pytest.mark.parametrize("role", ROLES)
def test_the_argument_spec_documents_every_variable_the_role_takes(role):
    defaults = role_defaults()
    others = {f"{other} role": d for other, d in defaults.items() if other != role}
    per_inventory = per_inventory_vars(GROUP_VARS.read_text())
    found = spec_problems(
        role, defaults[role], role_spec(role), group_vars(), per_inventory, role_words(role), others
    )
    assert found == []


def test_no_role_or_playbook_restates_a_knobs_value_as_a_fallback():
    names = set(group_vars()) | {name for d in role_defaults().values() for name in d}
    found = {p.relative_to(ROOT).as_posix(): restated_defaults(p.read_text(), names) for p in PLAYBOOK_FILES}
    assert {path: hits for path, hits in found.items() if hits} == {}


@pytest.mark.parametrize("module", PYTHON_READERS)
def test_the_python_side_restates_no_knob(module):
    from loadlab.knobs import lab_knobs

    assert python_restatements((ROOT / module).read_text(), lab_knobs()) == []


def test_the_documented_per_inventory_variables():
    assert per_inventory_vars(GROUP_VARS.read_text()) >= {
        "lab_address",
        "loadlab_python",
        "loadlab_python_install",
        "external_target_url",
        "external_process_groups",
        "external_ports",
        "external_health_path",
        "external_metrics_path",
        "external_metrics_port",
    }


# --- each check fails on a doctored copy -------------------------------------------------------------------


def test_a_knob_restated_in_a_role_or_in_two_roles_is_found():
    defaults = copy.deepcopy(role_defaults())
    defaults["nginx"]["nginx_port"] = 8080
    assert knobs_defined_twice(group_vars(), defaults) == ["nginx_port: group_vars/all.yml and nginx"]
    defaults = copy.deepcopy(role_defaults())
    defaults["app"]["nginx_listen_backlog"] = 4096
    assert knobs_defined_twice(group_vars(), defaults) == ["nginx_listen_backlog: app and nginx"]


def _nginx_spec_problems(defaults=None, spec=None, uses=None, others=None) -> list[str]:
    real = role_defaults()
    return spec_problems(
        "nginx",
        real["nginx"] if defaults is None else defaults,
        role_spec("nginx") if spec is None else spec,
        group_vars(),
        per_inventory_vars(GROUP_VARS.read_text()),
        role_words("nginx") if uses is None else uses,
        {f"{r} role": d for r, d in real.items() if r != "nginx"} if others is None else others,
    )


def test_a_spec_out_of_step_with_the_defaults_is_found():
    assert _nginx_spec_problems() == []
    spec = copy.deepcopy(role_spec("nginx"))
    del spec["nginx_listen_backlog"]
    assert _nginx_spec_problems(spec=spec) == [
        "nginx: default nginx_listen_backlog is not in meta/argument_specs.yml",
        "nginx: uses nginx_listen_backlog, which the spec lacks",
    ]
    spec = copy.deepcopy(role_spec("nginx"))
    spec["nginx_listen_backlog"]["default"] = 128
    assert _nginx_spec_problems(spec=spec) == [
        "nginx: nginx_listen_backlog defaults to 4096, the spec says 128"
    ]
    spec = copy.deepcopy(role_spec("nginx"))
    del spec["nginx_listen_backlog"]["default"]
    assert _nginx_spec_problems(spec=spec) == [
        "nginx: nginx_listen_backlog has no default in meta/argument_specs.yml"
    ]


def test_a_spec_option_nothing_defines_is_found():
    spec = copy.deepcopy(role_spec("nginx"))
    spec["nginx_gzip"] = {"type": "bool", "description": "Compress."}
    assert _nginx_spec_problems(spec=spec) == [
        "nginx: nginx_gzip has no default, and group_vars/all.yml neither sets nor documents it"
    ]
    spec = copy.deepcopy(role_spec("nginx"))
    spec["nginx_gzip"] = {"type": "bool", "default": False, "description": "Compress."}
    assert _nginx_spec_problems(spec=spec) == [
        "nginx: the spec gives nginx_gzip a default; defaults/main.yml lacks it"
    ]


def test_a_lab_knob_the_spec_restates_or_does_not_require_is_found():
    spec = copy.deepcopy(role_spec("nginx"))
    spec["nginx_port"] = {**spec["nginx_port"], "default": 8080}
    del spec["nginx_port"]["required"]
    assert _nginx_spec_problems(spec=spec) == [
        "nginx: the spec gives nginx_port a default; group_vars/all.yml sets it"
    ]
    spec = copy.deepcopy(role_spec("nginx"))
    del spec["nginx_port"]["required"]
    assert _nginx_spec_problems(spec=spec) == [
        "nginx: nginx_port comes from group_vars/all.yml: the spec should require it"
    ]


def test_a_variable_the_spec_does_not_document_is_found():
    spec = copy.deepcopy(role_spec("nginx"))
    del spec["loadlab_nofile"]
    assert _nginx_spec_problems(spec=spec) == ["nginx: uses loadlab_nofile, which the spec lacks"]
    uses = role_words("nginx") | {"supervisor_minprocs"}
    assert _nginx_spec_problems(uses=uses) == [
        "nginx: uses supervisor_minprocs, the supervisor role's own setting: a knob two roles share goes to "
        "group_vars/all.yml"
    ]


def test_a_fallback_that_restates_a_knob_is_found():
    names = set(group_vars())
    task = 'cache_valid_time: "{{ common_apt_cache_valid_time | default(86400) }}"\n'
    assert restated_defaults(task, names) == ["common_apt_cache_valid_time | default(86400)"]
    assert restated_defaults("when: external_ports | default([]) | length > 0", names) == []


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            'DEFAULTS = {"loadlab_etc_dir": "/etc/loadlab", "nginx_port": 8080}\n',
            "a mapping of knobs (loadlab_etc_dir, nginx_port, ...)",
        ),
        (
            "class LabView:\n    locust_web_port: int = 8089\n",
            "locust_web_port = 8089, the value of locust_web_port",
        ),
        (
            'class LabView:\n    etc_dir: str = "/etc/loadlab"\n',
            "etc_dir = '/etc/loadlab', the value of loadlab_etc_dir",
        ),
        ("DEFAULT_PORTS = (8080, 8001, 8002)\n", "DEFAULT_PORTS holds a port knob's value (8080)"),
        (
            'DEFAULT_LISTEN = "127.0.0.1:9465"\n',
            "DEFAULT_LISTEN holds a port knob's value ('127.0.0.1:9465')",
        ),
        (
            'CONF = "/etc/loadlab/exporter.yml"\n',
            "CONF holds a path knob's value ('/etc/loadlab/exporter.yml')",
        ),
    ],
)
def test_a_knob_value_spelled_out_in_python_is_found(source, says):
    from loadlab.knobs import lab_knobs

    found = python_restatements(source, lab_knobs())
    assert any(says in hit for hit in found), found
    assert python_restatements("DEFAULT_TIMEOUT = 2.0\nGROUPS = ('lb', 'app')\n", lab_knobs()) == []
