"""`loadlab grafana sync` and the sweep's step annotator, through grafana-client, against a stand-in.

The stand-in is a small http.server on loopback, not Grafana: Grafana cannot be installed on this machine
(no Grafana package source). It records every request and answers with the response shapes Grafana's HTTP
API documents (POST /api/dashboards/db, /api/folders, /api/search, /api/annotations, GET /api/health), so
these tests pin what we send and how we read the answers; they do not prove Grafana accepts the dashboards.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from loadlab.cli import main
from loadlab.dashboards import DASHBOARDS, load
from loadlab.grafana import GrafanaSettings, StepAnnotator, resolve_settings
from tests.servers import free_port

PASSWORD = "s3cret-from-the-role"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict | None
    user: str | None


@dataclass
class StandIn:
    """Grafana's HTTP API shapes for the calls loadlab makes; `fail_with` forces an error status."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    folders: dict[str, dict] = field(default_factory=dict)
    dashboards: dict[str, dict] = field(default_factory=dict)
    annotations: dict[int, dict] = field(default_factory=dict)
    fail_with: int | None = None

    def calls(self, method: str, prefix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def answer(self, req: Request) -> tuple[int, object]:
        if self.fail_with:
            return self.fail_with, {"message": "stand-in failure"}
        if req.path == "/api/health":  # no auth needed, as in Grafana
            return 200, {"commit": "0000000", "database": "ok", "version": "11.2.0"}
        if req.user != f"admin:{PASSWORD}":
            return 401, {"message": "Unauthorized"}
        if req.method == "GET" and (m := re.fullmatch(r"/api/folders/([\w-]+)", req.path)):
            folder = self.folders.get(m.group(1))
            return (200, folder) if folder else (404, {"message": "folder not found", "status": "not-found"})
        if req.method == "POST" and req.path == "/api/folders":
            uid = req.body["uid"]
            self.folders[uid] = {
                "id": len(self.folders) + 1,
                "uid": uid,
                "title": req.body["title"],
                "url": f"/dashboards/f/{uid}/{uid}",
                "version": 1,
            }
            return 200, self.folders[uid]
        if req.method == "POST" and req.path == "/api/dashboards/db":
            model = req.body["dashboard"]
            slug = re.sub(r"[^a-z0-9]+", "-", model["title"].lower()).strip("-")
            version = self.dashboards.get(model["uid"], {}).get("version", 0) + 1
            self.dashboards[model["uid"]] = {"model": model, "version": version, "slug": slug}
            return 200, {
                "id": list(self.dashboards).index(model["uid"]) + 1,
                "uid": model["uid"],
                "url": f"/d/{model['uid']}/{slug}",
                "status": "success",
                "version": version,
                "slug": slug,
            }
        if req.method == "GET" and req.path == "/api/search":
            hits = [
                {
                    "id": i + 1,
                    "uid": uid,
                    "title": d["model"]["title"],
                    "uri": f"db/{d['slug']}",
                    "url": f"/d/{uid}/{d['slug']}",
                    "slug": "",
                    "type": "dash-db",
                    "tags": d["model"]["tags"],
                    "isStarred": False,
                    "folderUid": "loadlab",
                }
                for i, (uid, d) in enumerate(self.dashboards.items())
            ]
            hits.append(
                {
                    "id": 99,
                    "uid": "hand-made",
                    "title": "Someone's copy",
                    "type": "dash-db",
                    "tags": ["loadlab"],
                }
            )
            return 200, hits
        if req.method == "POST" and req.path == "/api/annotations":
            annotation_id = len(self.annotations) + 1
            self.annotations[annotation_id] = dict(req.body)
            return 200, {"message": "Annotation added", "id": annotation_id}
        if req.method == "PATCH" and (m := re.fullmatch(r"/api/annotations/(\d+)", req.path)):
            self.annotations[int(m.group(1))].update({k: v for k, v in req.body.items() if v is not None})
            return 200, {"message": "Annotation patched"}
        return 404, {"message": "Not found"}


@pytest.fixture
def grafana() -> Iterator[StandIn]:
    state = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            auth = self.headers.get("Authorization", "")
            user = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else None
            req = Request(
                self.command, parts.path, parse_qs(parts.query), json.loads(raw) if raw else None, user
            )
            state.requests.append(req)
            status, body = state.answer(req)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = _handle

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)  # quick shutdown()
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def password_file(tmp_path) -> Path:
    path = tmp_path / "grafana_admin"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def sync(*args: str, **env: str):
    return CliRunner().invoke(main, ["grafana", "sync", *args], env=env)


def test_sync_pushes_every_committed_dashboard_into_the_lab_folder(grafana, password_file):
    result = sync("--url", grafana.url, "--password-file", str(password_file))

    assert result.exit_code == 0, result.output
    posts = grafana.calls("POST", "/api/dashboards/db")
    assert len(posts) == len(DASHBOARDS)
    for post, name in zip(posts, DASHBOARDS, strict=True):
        assert post.body["dashboard"] == {**load(name), "id": None}
        assert post.body["folderUid"] == "loadlab" and post.body["overwrite"] is True
        assert post.user == f"admin:{PASSWORD}"
    assert [r.body for r in grafana.calls("POST", "/api/folders")] == [{"title": "loadlab", "uid": "loadlab"}]
    assert grafana.calls("GET", "/api/search")[0].query == {"tag": ["loadlab"], "type": ["dash-db"]}
    for name in DASHBOARDS:
        uid = load(name)["uid"]
        assert f"{uid}  v1  {grafana.url}/d/{uid}/" in result.output
    assert "hand-made" in result.output and "not built by this checkout" in result.output
    assert f"synced {len(DASHBOARDS)} dashboards" in result.output


def test_sync_again_overwrites_and_reuses_the_folder(grafana, password_file):
    assert sync("--url", grafana.url, "--password-file", str(password_file)).exit_code == 0
    result = sync("--url", grafana.url, "--password-file", str(password_file), "--dashboard", "sweep")

    assert result.exit_code == 0, result.output
    assert len(grafana.calls("POST", "/api/folders")) == 1
    assert "loadlab-sweep  v2" in result.output
    assert "synced 1 dashboards" in result.output


def test_sync_finds_grafana_and_password_where_the_lab_puts_them(grafana, tmp_path, monkeypatch):
    """$LOADLAB_GRAFANA_URL for the address, secrets/grafana_admin (the grafana role's) for the password."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "grafana_admin").write_text(PASSWORD)

    result = sync(LOADLAB_GRAFANA_URL=grafana.url)

    assert result.exit_code == 0, result.output
    assert grafana.calls("POST", "/api/dashboards/db")[0].user == f"admin:{PASSWORD}"


def test_sync_with_a_wrong_password_says_where_the_right_one_is(grafana, tmp_path):
    wrong = tmp_path / "pw"
    wrong.write_text("not-it")
    result = sync("--url", grafana.url, "--password-file", str(wrong))

    assert result.exit_code == 2
    assert "refused user 'admin'" in result.output and "secrets/grafana_admin" in result.output
    assert "Traceback" not in result.output


def test_sync_without_grafana_fails_in_one_line(password_file):
    url = f"http://127.0.0.1:{free_port()}"
    result = sync("--url", url, "--password-file", str(password_file))

    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: Grafana at {url} failed while checking /api/health: Connection refused"
    ]


def test_sync_refuses_an_unknown_dashboard(grafana, password_file):
    result = sync("--url", grafana.url, "--password-file", str(password_file), "--dashboard", "nope")
    assert result.exit_code == 2
    assert "no dashboard nope; known: load-saturation" in result.output
    assert grafana.requests == []


def test_a_step_is_a_point_when_it_starts_and_a_region_when_it_ends(grafana):
    annotator = StepAnnotator(GrafanaSettings(grafana.url, password=PASSWORD))

    first = annotator.annotate_step("run-7", 2, 50, start=1_700_000_000.0)
    same = annotator.annotate_step("run-7", 2, 50, start=1_700_000_000.0, end=1_700_000_060.5, text="812 rps")

    assert first == same == 1
    [added] = grafana.calls("POST", "/api/annotations")
    [patched] = grafana.calls("PATCH", "/api/annotations/1")
    tags = ["loadlab", "sweep", "run:run-7", "step:2", "users:50"]
    assert added.body["time"] == 1_700_000_000_000 and added.body["timeEnd"] is None
    assert added.body["tags"] == tags and added.body["text"] == "run run-7 step 2: 50 users"
    assert patched.body == {
        "time": 1_700_000_000_000,
        "timeEnd": 1_700_000_060_500,
        "tags": tags,
        "text": "run run-7 step 2: 50 users\n812 rps",
    }


def test_a_finished_step_without_a_start_is_posted_as_a_region(grafana):
    annotator = StepAnnotator(GrafanaSettings(grafana.url, password=PASSWORD))
    assert annotator.annotate_step("r", 1, 10, start=100.0, end=160.0) == 1
    assert grafana.annotations[1]["time"] == 100_000 and grafana.annotations[1]["timeEnd"] == 160_000


@pytest.mark.parametrize("failure", ["unreachable", "server error", "wrong password"])
def test_annotations_never_break_a_sweep_and_warn_once(grafana, caplog, failure):
    url = grafana.url
    if failure == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    elif failure == "server error":
        grafana.fail_with = 500
    password = "wrong" if failure == "wrong password" else PASSWORD
    annotator = StepAnnotator(GrafanaSettings(url, password=password), timeout=2)

    with caplog.at_level(logging.WARNING, logger="loadlab.grafana"):
        for step in range(1, 4):
            assert annotator.annotate_step("r", step, step * 10, start=float(step)) is None
            assert annotator.annotate_step("r", step, step * 10, start=float(step), end=step + 0.5) is None

    assert not annotator.enabled
    warnings = [r for r in caplog.records if r.name == "loadlab.grafana"]
    assert len(warnings) == 1 and "sweep goes on without annotations" in warnings[0].getMessage()
    assert len(grafana.requests) <= 1  # tried once, then left alone


def test_the_annotator_finds_the_lab_grafana_like_sync(grafana, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOADLAB_GRAFANA_URL", grafana.url + "/")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "grafana_admin").write_text(PASSWORD)

    assert resolve_settings().url == grafana.url
    assert StepAnnotator.from_lab().annotate_step("r", 1, 5, start=1.0) == 1
