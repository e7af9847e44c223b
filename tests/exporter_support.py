"""Helpers for the exporter tests: a fresh registry per collector, golden files, promtool."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from tests.servers import require

GOLDEN = Path(__file__).parent / "golden"
# LOADLAB_REGEN_GOLDEN=1 rewrites the golden files from the current output (review the diff, then keep it).
REGEN = os.environ.get("LOADLAB_REGEN_GOLDEN") == "1"


def registry_of(*collectors: Collector) -> CollectorRegistry:
    """A fresh registry holding only these collectors."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> str:
    """The text Prometheus would scrape."""
    return generate_latest(registry).decode()


def assert_golden(text: str, name: str) -> None:
    """The output equals the approved file tests/golden/NAME."""
    path = GOLDEN / name
    if REGEN:
        path.write_text(text)
    assert text == path.read_text(), f"output differs from {path} (LOADLAB_REGEN_GOLDEN=1 to rewrite it)"


def promtool_check(text: str) -> str:
    """What `promtool check metrics` says about this exposition (empty when it has nothing to say); the test
    skips where promtool is not installed (call it after the test's other checks)."""
    promtool = require("promtool")
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    return (done.stdout + done.stderr).strip() + (
        "" if done.returncode == 0 else f"\n(exit {done.returncode})"
    )


class Snapshot:
    """One scrape of a registry, to read several samples from the same moment."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in registry.collect()
            for s in family.samples
        }

    def get(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.samples.get((name, frozenset((labels or {}).items())))
