"""The Airtable emulator in a process of its own, for benchmarks.

In the benchmark's own process the emulator would share the GIL with the code being measured:
answering a filtered listing of 20k records costs CPU there that Airtable spends on its own
servers. A child process keeps the measured process's time the pipeline's. The emulator's Python
helpers (seed, edit, request log) are reached through a pipe; bulk edits run in the child in one
call.
"""

import multiprocessing
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

_EDIT_MANY = "edit_many"


def _serve(connection, rate_limit: float) -> None:
    """The child: run the emulator until told to stop, answering helper calls."""
    from reconcile_pipeline.emulator.server import run_emulator

    with run_emulator(rate_limit=rate_limit) as emulator:
        connection.send((emulator.url, emulator.token))
        while True:
            message = connection.recv()
            if message is None:
                break
            name, args, kwargs = message
            try:
                if name == _EDIT_MANY:
                    base, table, edits = args
                    for record_id, fields in edits:
                        emulator.update_record_fields(base, table, record_id, fields)
                    result: Any = len(edits)
                else:
                    result = getattr(emulator, name)(*args, **kwargs)
                connection.send(("ok", result))
            except Exception as exc:  # reported in the parent, with its type
                connection.send(("error", f"{type(exc).__name__}: {exc}"))
    connection.close()


class EmulatorProcess:
    """The parent's handle: `url`, `token` and the helpers the benchmarks use."""

    def __init__(self, connection, process, url: str, token: str) -> None:
        self._connection = connection
        self._process = process
        self.url = url
        self.token = token

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._connection.send((name, args, kwargs))
        status, result = self._connection.recv()
        if status != "ok":
            raise RuntimeError(f"emulator {name}: {result}")
        return result

    def seed_records(self, base: str, table: str, records: Sequence[dict], **kwargs) -> list:
        return self._call("seed_records", base, table, list(records), **kwargs)

    def edit_many(self, base: str, table: str, edits: Sequence[tuple[str, dict]]) -> int:
        """Edits made inside Airtable (each bumps the record's modified time), in one call."""
        return self._call(_EDIT_MANY, base, table, list(edits))

    def all_records(self, base: str, table: str) -> list[dict]:
        return self._call("all_records", base, table)

    def request_log(self) -> dict:
        return self._call("request_log", entries=False)

    def reset_request_log(self) -> None:
        self._call("reset_request_log")


@contextmanager
def emulator_process(rate_limit: float) -> Iterator[EmulatorProcess]:
    """Start the emulator (Airtable's `rate_limit` requests/s per base) in a spawned child;
    stopped (and joined) when the block ends."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(child, rate_limit), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + 60
        while not parent.poll(0.2):
            if not process.is_alive():
                raise RuntimeError(f"the emulator process exited ({process.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator process did not start within 60 s")
        url, token = parent.recv()
        yield EmulatorProcess(parent, process, url, token)
    finally:
        try:
            parent.send(None)
        except (BrokenPipeError, OSError):
            pass
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join(5)
        parent.close()
