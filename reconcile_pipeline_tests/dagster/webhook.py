"""A real local webhook: an HTTP server on 127.0.0.1 that records what alerts post to it."""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Shaped like a Slack incoming-webhook URL, whose path is the secret token.
SECRET_PATH = "/services/T000TEST/B000TEST/s3cr3tT0kenDoNotLog"


@dataclass
class WebhookServer:
    """Answers each POST with the next status in `statuses` (200 once they run out)."""

    url: str
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def payloads(self) -> list[Any]:
        return [payload for _, payload in self.received]


@contextmanager
def running_webhook() -> Iterator[WebhookServer]:
    state: WebhookServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.received.append((self.path, json.loads(body)))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"error")

        def log_message(self, format: str, *args: Any) -> None:
            # The default writes each request line, secret path included, to stderr.
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = WebhookServer(url=f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}")
    # A short poll interval keeps shutdown() (and so each test) from waiting half a second.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
