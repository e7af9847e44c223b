"""Load shapes and the base user's guard, exercised in-process (no target needed)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

LOCUSTFILES = Path(__file__).resolve().parent.parent / "locustfiles"
sys.path.insert(0, str(LOCUSTFILES))

# Importing locust gevent-patches the whole process; these checks need only the classes, so the pytest
# process stays unpatched (unless an earlier test module imported locust already).
_skip_patch = os.environ.get("LOCUST_SKIP_MONKEY_PATCH")
os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
try:
    import lab_base
    from spike import SpikeShape
    from steps import StepShape
finally:
    if _skip_patch is None:
        del os.environ["LOCUST_SKIP_MONKEY_PATCH"]


def _at(shape, seconds: float):
    """The shape's answer `seconds` into the run."""
    shape.start_time = time.perf_counter() - seconds
    return shape.tick()


def test_spike_goes_up_comes_back_and_ends():
    shape = SpikeShape()
    assert _at(shape, 0) == (1, 25.0)
    assert _at(shape, 31) == (50, 25.0)
    assert _at(shape, 95) == (1, 25.0)
    assert _at(shape, 121) is None


def test_steps_climb_to_max_then_end():
    shape = StepShape()
    assert [_at(shape, t)[0] for t in (0, 31, 61, 91, 121)] == [10, 20, 30, 40, 50]
    assert _at(shape, 151) is None


def test_a_user_class_cannot_share_a_connection_pool():
    from geventhttpclient.client import HTTPClientPool

    with pytest.raises(TypeError, match="client_pool"):

        class SharedPoolUser(lab_base.LabUser):  # noqa: F841
            client_pool = HTTPClientPool(concurrency=10)


@pytest.mark.parametrize("scenario", ["scaling", "max_rps", "simple", "calibrate"])
def test_locust_runs_the_scenarios_users_never_the_base_and_each_keeps_one_connection(scenario):
    """What Locust finds in a scenario file: its own user classes, never LabUser itself (abstract), and
    each LabUser keeps a pool of one connection (calibrate.py's SharedPoolUser shares one on purpose)."""
    from locust.util.load_locustfile import load_locustfile

    users, _ = load_locustfile(str(LOCUSTFILES / f"{scenario}.py"))
    assert users and "LabUser" not in users, sorted(users)
    lab_users = {name: cls.concurrency for name, cls in users.items() if issubclass(cls, lab_base.LabUser)}
    assert lab_users and set(lab_users.values()) == {1}, lab_users
