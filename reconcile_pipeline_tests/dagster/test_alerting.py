"""Alerts go to a Slack-compatible webhook and to a Slack app's channel over real HTTP, never
raise and never log the URL or the token.

The webhook URL embeds a token (Slack incoming webhooks do), so every test that posts also checks
that the URL is absent from the captured log; the Slack app's bot token likewise.
"""

import logging
import socket
from collections.abc import Iterator

import pytest

from reconcile_pipeline.alerting import send_alert, send_slack_alert, slack_client
from reconcile_pipeline.defs.alert_resource import (
    ALERT_WEBHOOK_URL_ENV,
    SLACK_API_URL_ENV,
    SLACK_CHANNEL_ENV,
    SLACK_TOKEN_ENV,
    AlertWebhookResource,
    alert_webhook_resource,
)
from reconcile_pipeline_tests.dagster.slack_api import SLACK_TOKEN, SlackApi, running_slack_api
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


def test_a_summary_replaces_the_notification_text_but_not_the_section(
    webhook: WebhookServer,
) -> None:
    send_alert(webhook.url, "Run failed: j", ["Job: j", "boom"], LOGGER, summary="j (demo): boom")

    [payload] = webhook.payloads
    assert payload["text"] == "j (demo): boom"
    assert payload["blocks"][0]["text"]["text"] == "*Run failed: j*\nJob: j\nboom"


# A Slack app (bot token + channel) through dagster-slack's client, against a local Web API.


@pytest.fixture
def slack_api() -> Iterator[SlackApi]:
    with running_slack_api() as api:
        yield api


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    # DEBUG too: slack_sdk logs each request at DEBUG, and the token must not be in it either.
    caplog.set_level(logging.DEBUG)
    return caplog


def client_for(api: SlackApi, token: str = SLACK_TOKEN):
    return slack_client(token, api.url, timeout=5)


def test_posts_to_the_channel_with_chat_post_message_and_the_bot_token(
    slack_api: SlackApi, caplog_all: pytest.LogCaptureFixture
) -> None:
    sent = send_slack_alert(
        client_for(slack_api),
        "#reconcile-alerts",
        "Run failed: reconcile_job",
        ["Client: demo", "set AIRTABLE_API_KEY <now>"],
        LOGGER,
        summary="Run failed: reconcile_job (demo / leads): set AIRTABLE_API_KEY",
    )

    assert sent is True
    [(path, auth, body)] = slack_api.calls
    assert path == "/api/chat.postMessage"
    assert auth == f"Bearer {SLACK_TOKEN}"
    assert body["channel"] == "#reconcile-alerts"
    assert body["text"] == "Run failed: reconcile_job (demo / leads): set AIRTABLE_API_KEY"
    assert body["blocks"] == [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    "*Run failed: reconcile_job*\nClient: demo\nset AIRTABLE_API_KEY &lt;now&gt;"
                ),
            },
        }
    ]
    assert SLACK_TOKEN not in caplog_all.text
    assert "Alert posted to Slack" in caplog_all.text


def test_a_refused_post_is_not_retried_and_logs_slacks_error_code_not_the_token(
    slack_api: SlackApi, caplog_all: pytest.LogCaptureFixture
) -> None:
    slack_api.answers = [(200, {"ok": False, "error": "channel_not_found"})]

    sent = send_slack_alert(client_for(slack_api), "#nope", "T", ["the line"], LOGGER)

    assert sent is False
    assert len(slack_api.calls) == 1
    [error] = [r for r in caplog_all.records if r.levelno == logging.ERROR]
    assert "channel_not_found" in error.getMessage()
    assert "the line" in error.getMessage()  # the alert is kept in the log
    assert SLACK_TOKEN not in caplog_all.text


def test_a_bad_token_is_refused_by_slack_and_never_logged(
    slack_api: SlackApi, caplog_all: pytest.LogCaptureFixture
) -> None:
    wrong = "fake-slack-token-wrong-s3cr3t"

    assert send_slack_alert(client_for(slack_api, wrong), "#a", "T", ["l"], LOGGER) is False
    assert "invalid_auth" in caplog_all.text
    assert wrong not in caplog_all.text


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_5xx_or_429_from_slack_is_retried_once(
    slack_api: SlackApi, caplog_all: pytest.LogCaptureFixture, status: int
) -> None:
    slack_api.answers = [(status, {"ok": False, "error": "ratelimited"})]

    sent = send_slack_alert(client_for(slack_api), "#a", "T", ["l"], LOGGER, retry_delay=0)

    assert sent is True
    assert len(slack_api.messages) == 2
    assert f"HTTP {status}" in caplog_all.text


def test_slack_unreachable_is_retried_then_logged(caplog_all: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = slack_client(SLACK_TOKEN, f"http://127.0.0.1:{port}/api/", timeout=5)

    assert send_slack_alert(client, "#a", "T", ["l"], LOGGER, retry_delay=0) is False
    assert "reaching Slack" in caplog_all.text
    assert "retrying once" in caplog_all.text
    assert SLACK_TOKEN not in caplog_all.text


def test_a_token_without_a_channel_logs_the_alert_naming_the_variable(
    slack_api: SlackApi, caplog_info: pytest.LogCaptureFixture
) -> None:
    assert send_slack_alert(client_for(slack_api), None, "T", ["the line"], LOGGER) is False
    assert slack_api.calls == []
    assert SLACK_CHANNEL_ENV in caplog_info.text
    assert "the line" in caplog_info.text


def test_the_resource_sends_to_the_webhook_and_the_slack_app_both(
    webhook: WebhookServer, slack_api: SlackApi
) -> None:
    resource = AlertWebhookResource(
        webhook_url=webhook.url,
        slack_token=SLACK_TOKEN,
        slack_channel="C0123ALERTS",
        slack_api_url=slack_api.url,
    )

    assert resource.send("T", ["line"], LOGGER, summary="the summary") is True
    assert [p["text"] for p in webhook.payloads] == ["the summary"]
    assert [(m["channel"], m["text"]) for m in slack_api.messages] == [
        ("C0123ALERTS", "the summary")
    ]


def test_the_env_bound_resource_binds_the_slack_variables_by_name(
    slack_api: SlackApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALERT_WEBHOOK_URL_ENV, raising=False)
    monkeypatch.setenv(SLACK_TOKEN_ENV, SLACK_TOKEN)
    monkeypatch.setenv(SLACK_CHANNEL_ENV, "#alerts")
    monkeypatch.setenv(SLACK_API_URL_ENV, slack_api.url)

    resource = alert_webhook_resource()

    # Nothing bound when the code location loads (the UI shows no token, and setting a
    # variable later needs no reload): the variables are read when an alert is sent.
    assert resource.slack_token is None and resource.webhook_url is None
    assert set(resource.destinations()) == {"slack"}
    assert resource.send("Run failed: x", ["boom"], LOGGER)
    [posted] = slack_api.messages
    assert posted["channel"] == "#alerts"
    monkeypatch.delenv(SLACK_TOKEN_ENV)
    assert resource.destinations() == {}  # unset later: only logged from then on
