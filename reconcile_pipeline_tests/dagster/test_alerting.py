"""Alerts go to a Slack-compatible webhook over real HTTP, never raise and never log the URL.

The webhook URL embeds a token (Slack incoming webhooks do), so every test that posts also checks
that the URL is absent from the captured log.
"""

import logging
import socket

import pytest

from reconcile_pipeline.alerting import send_alert
from reconcile_pipeline_tests.dagster.webhook import SECRET_PATH, WebhookServer

LOGGER = logging.getLogger("reconcile_pipeline_tests.alerting")


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    # Everything our code logs (INFO and up); urllib3's DEBUG request lines are not ours.
    caplog.set_level(logging.INFO)
    return caplog


def assert_secret_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert SECRET_PATH not in caplog.text
    assert "s3cr3t" not in caplog.text


def test_posts_slack_json_with_summary_text_and_a_section(
    webhook: WebhookServer, caplog_info: pytest.LogCaptureFixture
) -> None:
    sent = send_alert(webhook.url, "Run failed: reconcile_job", ["Run: abc", "boom"], LOGGER)

    assert sent is True
    [(path, payload)] = webhook.received
    assert path == SECRET_PATH
    assert payload["text"] == "Run failed: reconcile_job: Run: abc"
    assert payload["blocks"] == [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*Run failed: reconcile_job*\nRun: abc\nboom"},
        }
    ]
    assert_secret_not_logged(caplog_info)


def test_markup_characters_are_escaped_for_slack(webhook: WebhookServer) -> None:
    # "<...>" is a link or mention in Slack's mrkdwn; an error text must show literally.
    send_alert(webhook.url, "A & B", ["TypeError: <class 'int'>"], LOGGER)

    section = webhook.payloads[0]["blocks"][0]["text"]["text"]
    assert section == "*A &amp; B*\nTypeError: &lt;class 'int'&gt;"


def test_long_alerts_are_cut_to_slacks_section_limit(webhook: WebhookServer) -> None:
    send_alert(webhook.url, "Big", ["x" * 5000], LOGGER)

    section = webhook.payloads[0]["blocks"][0]["text"]["text"]
    assert len(section) == 3000
    assert section.endswith("…")


@pytest.mark.parametrize("url", [None, ""])
def test_without_webhook_the_alert_is_logged_as_warning(
    url: str | None, caplog_info: pytest.LogCaptureFixture
) -> None:
    sent = send_alert(url, "Asset check failed", ["Check: no_loops", "pushed_again: 3"], LOGGER)

    assert sent is False
    [record] = caplog_info.records
    assert record.levelno == logging.WARNING
    assert "Asset check failed" in record.getMessage()
    assert "pushed_again: 3" in record.getMessage()


def test_a_5xx_is_retried_once_and_then_succeeds(
    webhook: WebhookServer, caplog_info: pytest.LogCaptureFixture
) -> None:
    webhook.statuses = [503]

    assert send_alert(webhook.url, "T", ["l"], LOGGER, retry_delay=0) is True
    assert len(webhook.received) == 2
    assert "HTTP 503" in caplog_info.text
    assert_secret_not_logged(caplog_info)


def test_two_5xx_give_up_with_an_error_log_that_keeps_the_alert(
    webhook: WebhookServer, caplog_info: pytest.LogCaptureFixture
) -> None:
    webhook.statuses = [500, 502]

    assert send_alert(webhook.url, "Title", ["the line"], LOGGER, retry_delay=0) is False
    assert len(webhook.received) == 2
    [error] = [r for r in caplog_info.records if r.levelno == logging.ERROR]
    assert "HTTP 502" in error.getMessage()
    assert "the line" in error.getMessage()
    assert_secret_not_logged(caplog_info)


def test_a_4xx_is_not_retried(webhook: WebhookServer) -> None:
    # A rejected payload or a revoked webhook will not get better by sending it again.
    webhook.statuses = [404]

    assert send_alert(webhook.url, "T", ["l"], LOGGER, retry_delay=0) is False
    assert len(webhook.received) == 1


def test_connection_refused_is_retried_then_logged_without_the_url(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more: requests' message would quote the URL.
    url = f"http://127.0.0.1:{port}{SECRET_PATH}"

    assert send_alert(url, "T", ["l"], LOGGER, retry_delay=0) is False
    assert "ConnectionError" in caplog_info.text
    assert "retrying once" in caplog_info.text
    assert_secret_not_logged(caplog_info)
