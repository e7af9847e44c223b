"""A service of yours, as the lab sees one it does not provision: one process, so one core at most.

Each GET /work burns --work-ms of CPU in Python (the GIL lets one request run at a time), so the service
saturates at about 1000 / work-ms requests per second, with its one process at a full core; GET /health
answers at once, GET /metrics with its own counter (on --metrics-port too). Run it by hand beside
inventory/external.yml:

    python tests/external_service/service.py --port 8000 --metrics-port 8009 --work-ms 4
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes
    work_seconds = 0.004
    served = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        if self.path.startswith("/work"):
            deadline = time.thread_time() + self.work_seconds
            digest = b"work"
            while time.thread_time() < deadline:
                digest = hashlib.sha256(digest).digest()
            body = digest.hex()[:16].encode() + b"\n"
            with _Handler.lock:
                _Handler.served += 1
        elif self.path.startswith("/health"):
            body = b"ok\n"
        elif self.path.startswith("/metrics"):  # its own Prometheus metrics, as a service of yours may have
            with _Handler.lock:
                served = _Handler.served
            body = (
                "# HELP svc_work_requests_total /work requests answered.\n"
                "# TYPE svc_work_requests_total counter\n"
                f"svc_work_requests_total {served}\n"
            ).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet under load
        pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--work-ms", type=float, default=4.0, help="CPU each /work request burns")
    parser.add_argument("--metrics-port", type=int, help="serve /metrics on this port as well")
    args = parser.parse_args()
    _Handler.work_seconds = args.work_ms / 1000
    server = ThreadingHTTPServer((args.address, args.port), _Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    if args.metrics_port:
        metrics = ThreadingHTTPServer((args.address, args.metrics_port), _Handler)
        metrics.daemon_threads = True
        threading.Thread(target=metrics.serve_forever, daemon=True).start()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
