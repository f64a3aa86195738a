"""The review console (DESIGN §9): conflicts, quarantine and a record's history for the people
who own the data, as server-rendered pages (Starlette + Jinja2). `reconcile console` serves it;
`reconcile ui` starts it next to Dagster."""

from reconcile_pipeline.console.app import create_app
from reconcile_pipeline.console.server import (
    DEFAULT_PORT,
    ConsolePortInUse,
    console_from_environment,
    running_console,
    serve,
)

__all__ = [
    "DEFAULT_PORT",
    "ConsolePortInUse",
    "console_from_environment",
    "create_app",
    "running_console",
    "serve",
]
