"""``airtable-emulator``: run the Airtable emulator as a standalone process."""

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

from reconcile_pipeline.emulator.core import DEFAULT_TOKEN, DEFAULT_TOKEN_RATE_LIMIT, Emulator
from reconcile_pipeline.emulator.schema import demo_schema_path
from reconcile_pipeline.emulator.server import EmulatorHTTPServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airtable-emulator",
        description="A local Airtable Web API server for demos and tests. Admin endpoints "
        "(no auth) live under /_emulator/.",
    )
    parser.add_argument("--schema", help="metadata-API-shaped JSON (default: the demo schema)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="bearer token to accept")
    parser.add_argument(
        "--rate-limit", type=float, default=5.0, help="requests/s per base; 0 turns it off"
    )
    parser.add_argument(
        "--token-rate-limit",
        type=float,
        default=DEFAULT_TOKEN_RATE_LIMIT,
        help="requests/s per token owner across all bases; 0 turns it off",
    )
    parser.add_argument(
        "--extra-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="another bearer token to accept, its own owner (repeatable)",
    )
    parser.add_argument(
        "--penalty-seconds",
        type=float,
        default=30.0,
        help="how long a 429 blocks the base or the token owner",
    )
    parser.add_argument("--data", help="JSON file to load at start and save records to")
    parser.add_argument(
        "--offset-ttl-seconds", type=float, default=300.0, help="idle lifetime of list offsets"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    emulator = Emulator(
        schema_path=args.schema,
        token=args.token,
        rate_limit=args.rate_limit,
        penalty_seconds=args.penalty_seconds,
        data_path=args.data,
        offset_ttl_seconds=args.offset_ttl_seconds,
        token_rate_limit=args.token_rate_limit,
        extra_tokens=args.extra_token,
    )
    server = EmulatorHTTPServer((args.host, args.port), emulator)
    emulator.url = server.url
    emulator.start_autosave()

    def stop(_signum: int, _frame: Any) -> None:
        # shutdown() waits for serve_forever to return, so it cannot run on this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    token_note = f"token {args.token!r}" if args.token == DEFAULT_TOKEN else "custom token"
    if args.extra_token:
        token_note += f" and {len(args.extra_token)} more"
    print(
        f"Airtable emulator on {server.url} ({token_note}); schema "
        f"{args.schema or demo_schema_path()}; bases: {', '.join(sorted(emulator.schema.bases))}",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.close_connections()
        server.server_close()
        emulator.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
