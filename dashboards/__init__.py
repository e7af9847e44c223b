"""Grafana dashboards as code: one module per dashboard; json/ holds the generated, provisioned JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadlab.dashboards import host_processes, load_saturation, sockets, sweep

JSON_DIR = Path(__file__).parent / "json"

# file stem under json/ -> the module building that dashboard
DASHBOARDS = {
    "load-saturation": load_saturation,
    "sockets": sockets,
    "host-processes": host_processes,
    "sweep": sweep,
}


def generate() -> dict[str, str]:
    """Every dashboard's JSON text as committed: sorted keys, so a diff shows what changed."""
    return {
        f"{name}.json": json.dumps(module.build().to_json(), indent=2, sort_keys=True) + "\n"
        for name, module in DASHBOARDS.items()
    }


def load(name: str) -> dict[str, Any]:
    """A committed dashboard by file stem (`load-saturation`) or path, as Grafana receives it."""
    path = Path(name)
    if path.suffix != ".json":
        if name not in DASHBOARDS:
            raise KeyError(f"no dashboard {name!r}; known: {', '.join(DASHBOARDS)}")
        path = JSON_DIR / f"{name}.json"
    return json.loads(path.read_text())
