from collections.abc import Iterator

import pytest

from reconcile_pipeline_tests.dagster.webhook import WebhookServer, running_webhook


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    """A local webhook server for the test; stopped afterwards."""
    with running_webhook() as server:
        yield server
