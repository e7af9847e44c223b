"""The nginx collector against a real nginx stub_status, stopped and started, and on recorded text."""

from __future__ import annotations

import logging
import urllib.request

import pytest

from loadlab.exporters.host import HostCollector
from loadlab.exporters.nginx import NginxCollector, NginxSource, parse_stub_status
from loadlab.exporters.server import LabExporter
from tests.exporter_support import GOLDEN, Snapshot, assert_golden, exposition, promtool_check, registry_of


@pytest.mark.server
def test_requests_and_connections(nginx_stub) -> None:
    collector = NginxCollector(NginxSource(nginx_stub.status_url))
    before = registry_of(collector).get_sample_value("loadlab_nginx_requests_total")
    for _ in range(3):
        with urllib.request.urlopen(f"http://{nginx_stub.host}:{nginx_stub.port}/", timeout=5) as r:
            assert r.read() == b"ok\n"
    now = Snapshot(registry_of(collector))
    # three requests, plus this scrape's own request for the status page
    assert now.get("loadlab_nginx_requests_total") == before + 4
    assert now.get("loadlab_nginx_connections", {"state": "active"}) >= 1
    assert now.get("loadlab_nginx_connections", {"state": "writing"}) >= 1  # this scrape
    assert now.get("loadlab_nginx_connections_handled_total") == now.get(
        "loadlab_nginx_connections_accepted_total"
    )
    assert promtool_check(exposition(registry_of(collector))) == ""


@pytest.mark.server
def test_stopped_server_is_up_0_others_intact_logged_once(nginx_stub, caplog) -> None:
    registry = registry_of(LabExporter([NginxCollector(NginxSource(nginx_stub.status_url)), HostCollector()]))
    assert registry.get_sample_value("loadlab_nginx_up") == 1
    nginx_stub.stop()
    try:
        with caplog.at_level(logging.INFO, logger="loadlab.exporter"):
            for _ in range(3):
                assert registry.get_sample_value("loadlab_nginx_up") == 0
                assert registry.get_sample_value("loadlab_nginx_requests_total") is None
                assert registry.get_sample_value("loadlab_host_up") == 1
        assert len([r for r in caplog.records if "nginx: source down" in r.getMessage()]) == 1
    finally:
        nginx_stub.start()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="loadlab.exporter"):
        assert registry.get_sample_value("loadlab_nginx_up") == 1
    assert [r.getMessage() for r in caplog.records] == ["nginx: source recovered"]


def test_a_page_that_is_not_stub_status_is_a_failure() -> None:
    registry = registry_of(LabExporter([NginxCollector(lambda: "<html>Welcome to nginx!</html>")]))
    assert registry.get_sample_value("loadlab_nginx_up") == 0
    with pytest.raises(ValueError, match="stub_status"):
        parse_stub_status("Active connections: 1")


def test_recorded_stub_status_golden_output() -> None:
    text = (GOLDEN / "nginx_stub_status.txt").read_text()
    registry = registry_of(NginxCollector(lambda: text))
    out = exposition(registry)
    assert_golden(out, "nginx.prom")
    assert registry.get_sample_value("loadlab_nginx_requests_total") == 6
    assert registry.get_sample_value("loadlab_nginx_connections_accepted_total") == 7
    assert promtool_check(out) == ""
