"""HTTP/1.1 keep-alive server for the emulator, and `run_emulator` for in-process use."""

import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from reconcile_pipeline.emulator.core import DEFAULT_TOKEN, Emulator

logger = logging.getLogger(__name__)

# A keep-alive connection idle this long is closed (clients detect that before reuse).
_IDLE_TIMEOUT_SECONDS = 120


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY the second one waits
    # for the client's delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024  # flushed once per response by handle_one_request
    timeout = _IDLE_TIMEOUT_SECONDS
    server: "EmulatorHTTPServer"

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = self.server.emulator.handle(self.command, self.path, self.headers, body)
        if response.drop:
            # The write is applied; the client must never see the answer.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        data = response.body()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        logger.debug("%s - %s", self.address_string(), format % args)


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A thread per connection; tracks connections so stopping closes idle keep-alives too."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


@contextmanager
def serving(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[Emulator]:
    """Serve an emulator over HTTP on a background thread; ``port=0`` picks a free port."""
    server = EmulatorHTTPServer((host, port), emulator)
    # A short poll interval keeps stopping fast (tests start and stop many emulators).
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="airtable-emulator", daemon=True
    )
    thread.start()
    emulator.url = server.url
    emulator.start_autosave()
    try:
        yield emulator
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=5)
        emulator.close()
        emulator.url = None


@contextmanager
def run_emulator(
    schema_path: str | Path | None = None,
    token: str = DEFAULT_TOKEN,
    rate_limit: float = 0.0,
    penalty_seconds: float = 30.0,
    data_path: str | Path | None = None,
    offset_ttl_seconds: float = 300.0,
    host: str = "127.0.0.1",
    port: int = 0,
    token_rate_limit: float | None = None,
    extra_tokens: Sequence[str] = (),
) -> Iterator[Emulator]:
    """Run an emulator in this process for the duration of the ``with`` block.

    Yields the `Emulator`, with ``url`` (``http://127.0.0.1:PORT``) and ``token`` set, and its
    direct helpers (``seed_records``, ``update_record_fields``, ``set_faults``, …).
    ``rate_limit=0`` turns Airtable's 5 requests/s per base off; ``token_rate_limit`` is the
    limit per token owner across bases (None: Airtable's 50 when ``rate_limit`` is on, else
    off; 0: off). See `Emulator`.
    """
    emulator = Emulator(
        schema_path=schema_path,
        token=token,
        rate_limit=rate_limit,
        penalty_seconds=penalty_seconds,
        data_path=data_path,
        offset_ttl_seconds=offset_ttl_seconds,
        token_rate_limit=token_rate_limit,
        extra_tokens=extra_tokens,
    )
    with serving(emulator, host, port) as served:
        yield served
