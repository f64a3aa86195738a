"""pytest plugin for `make mutation` only (loaded by [tool.mutmut] pytest_add_cli_args).

- Test selection: of reconcile_pipeline_tests/dagster/ only the modules that exercise the engine
  and the asset checks are collected (test_reconcile_assets.py, test_checks_fail.py once it
  exists); reconcile_pipeline_tests/engine/ is collected whole.
- One PostgreSQL for all mutants: tools/mutation.py starts a server and sets TEST_DATABASE_URL,
  and mutmut runs two pytest sessions at once on it. The session fixture drops and recreates
  one fixed template database, so each session gets its own name for it (suffixed by its pid).
"""

import os
import sys
from pathlib import Path

DAGSTER_TESTS_FOR_MUTATION = {"test_reconcile_assets.py", "test_checks_fail.py"}
_TEMPLATE_BASE: dict[str, str] = {}


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    parent = collection_path.parent
    if (
        parent.name == "dagster"
        and parent.parent.name == "reconcile_pipeline_tests"
        and collection_path.name.startswith("test_")
        and collection_path.suffix == ".py"
        and collection_path.name not in DAGSTER_TESTS_FOR_MUTATION
    ):
        return True
    return None


def pytest_collection_finish(session) -> None:
    if not os.environ.get("TEST_DATABASE_URL"):
        return  # each session starts its own embedded server: nothing shared
    conftest = sys.modules.get("reconcile_pipeline_tests.conftest")
    if conftest is None or not hasattr(conftest, "TEMPLATE_DB"):
        return
    base = _TEMPLATE_BASE.setdefault("name", conftest.TEMPLATE_DB)
    conftest.TEMPLATE_DB = f"{base}_{os.getpid()}"
