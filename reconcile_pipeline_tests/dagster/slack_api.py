"""A tiny local stand-in for Slack's Web API: `chat.postMessage` over real HTTP on 127.0.0.1.

It answers as Slack does: HTTP 200 with `{"ok": true, ...}`, or HTTP 200 with
`{"ok": false, "error": "..."}` for a refused call (unknown channel, bad token), and it checks the
bearer token. Tests point the real `slack_sdk.WebClient` (dagster-slack's) at it by base URL.
"""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLACK_TOKEN = "fake-slack-bot-token-s3cr3t"


@dataclass
class SlackApi:
    """`answers` are served in order, each a (status, body) pair; once they run out, a good token
    gets `{"ok": true}` and any other `invalid_auth`."""

    url: str  # the Web API root, as `WebClient(base_url=...)` wants it (trailing slash)
    answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # (method path, Authorization header, JSON body) of every call
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [body for path, _, body in self.calls if path.endswith("/chat.postMessage")]


@contextmanager
def running_slack_api() -> Iterator[SlackApi]:
    state: SlackApi

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw) if raw else {}
            auth = self.headers.get("Authorization", "")
            state.calls.append((self.path, auth, body))
            if state.answers:
                status, answer = state.answers.pop(0)
            elif auth == f"Bearer {SLACK_TOKEN}":
                status, answer = 200, {"ok": True, "channel": body.get("channel"), "ts": "1.000"}
            else:
                status, answer = 200, {"ok": False, "error": "invalid_auth"}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = SlackApi(url=f"http://127.0.0.1:{server.server_address[1]}/api/")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
