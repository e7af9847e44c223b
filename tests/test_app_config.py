"""A misconfigured app instance says what to fix in one line and exits 2: supervisor logs stay readable."""

from __future__ import annotations

import pytest

from tests.app_instance import app_env, run_app
from tests.servers import free_port

GOOD_DB = "postgresql://loadlab:s3cret-pw@127.0.0.1:5433/loadlab"
GOOD_REDIS = "redis://:pw@127.0.0.1:6380/0"


def _one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"LOADLAB_DATABASE_URL": ""}, "LOADLAB_DATABASE_URL"),
        ({"LOADLAB_REDIS_URL": ""}, "LOADLAB_REDIS_URL"),
        ({"LOADLAB_DATABASE_URL": "s3cret-pw@nowhere"}, "LOADLAB_DATABASE_URL"),
        ({"LOADLAB_REDIS_URL": "http://127.0.0.1:6380"}, "LOADLAB_REDIS_URL"),
        ({"LOADLAB_REDIS_URL": "redis://:pw@127.0.0.1:port/0"}, "LOADLAB_REDIS_URL"),
        ({"LOADLAB_DB_POOL_SIZE": "many"}, "LOADLAB_DB_POOL_SIZE"),
        ({"LOADLAB_DB_POOL_SIZE": "0"}, "LOADLAB_DB_POOL_SIZE"),
        ({"LOADLAB_DB_POOL_TIMEOUT": "soon"}, "LOADLAB_DB_POOL_TIMEOUT"),
    ],
)
def test_bad_environment_is_one_line_and_exit_2(overrides, names):
    env = app_env(GOOD_DB, GOOD_REDIS)
    env.update(overrides)
    line = _one_line_error(run_app(env, "--port", str(free_port())))
    assert names in line
    assert "s3cret-pw" not in line


def test_unreachable_database_is_one_line_and_exit_2():
    url = f"postgresql://loadlab:s3cret-pw@127.0.0.1:{free_port()}/loadlab"
    line = _one_line_error(run_app(app_env(url, GOOD_REDIS), "--port", str(free_port()), "--db-wait", "0"))
    assert "PostgreSQL at 127.0.0.1:" in line
    assert "s3cret-pw" not in line
