"""Alerts to a webhook that accepts Slack-compatible JSON (Slack, Mattermost, Rocket.Chat, ...),
and to a Slack app's channel through the Web API's `chat.postMessage` (dagster-slack's client).

The webhook URL and the Slack token are secrets (a Slack incoming-webhook URL embeds its token),
so nothing here ever logs them, nor an exception message from `requests`, which quotes the URL it
failed on. Sending never raises: an alert that cannot be delivered must not fail the sensor that
raised it, and the alert's text is logged instead so it is not lost.
"""

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import requests

if TYPE_CHECKING:
    from slack_sdk import WebClient

TIMEOUT_SECONDS = 10.0
RETRY_DELAY_SECONDS = 1.0
# Slack rejects a section text over 3,000 characters.
MAX_SECTION_CHARS = 3000
# The notification's one line (Slack shows about this much in a push notification).
MAX_SUMMARY_CHARS = 300
SLACK_API_URL = "https://slack.com/api/"


class AlertLogger(Protocol):
    """What `send_alert` needs from a logger: `logging.Logger` and Dagster's `context.log` fit."""

    def info(self, msg: str, *args: Any) -> None: ...

    def warning(self, msg: str, *args: Any) -> None: ...

    def error(self, msg: str, *args: Any) -> None: ...


def _escape(text: str) -> str:
    # Slack's mrkdwn treats <...> as links/mentions; error texts like "<class 'X'>" must not be.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def alert_payload(title: str, lines: Sequence[str], summary: str | None = None) -> dict[str, Any]:
    """The Slack-compatible body: a plain `text` summary (the notification's text: `summary`,
    else the title and the first line) plus one mrkdwn section with the title and every line."""
    body = "\n".join(_escape(line) for line in lines)
    section = _truncate(f"*{_escape(title)}*\n{body}".rstrip(), MAX_SECTION_CHARS)
    if summary is None:
        summary = title + (f": {lines[0]}" if lines else "")
    summary = _truncate(_escape(summary), MAX_SUMMARY_CHARS)
    return {
        "text": summary,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": section}}],
    }


def send_alert(
    webhook_url: str | None,
    title: str,
    lines: list[str],
    logger: AlertLogger,
    *,
    summary: str | None = None,
    timeout: float = TIMEOUT_SECONDS,
    retry_delay: float = RETRY_DELAY_SECONDS,
) -> bool:
    """Post an alert; True when the webhook accepted it.

    Without a webhook the alert is logged at WARNING and False is returned. A 5xx answer or a
    connection error (including a timeout) is retried once; a 4xx is not (it will not get better).
    """
    text = "\n".join(lines)
    if not webhook_url:
        logger.warning("Alert (no webhook configured): %s\n%s", title, text)
        return False

    payload = alert_payload(title, lines, summary)
    for attempt in (1, 2):
        try:
            response = requests.post(webhook_url, json=payload, timeout=timeout)
        except requests.RequestException as exc:
            # Only the exception type: its message contains the URL.
            problem = f"{type(exc).__name__} reaching the webhook"
        else:
            if response.ok:
                logger.info("Alert sent: %s", title)
                return True
            problem = f"webhook answered HTTP {response.status_code}"
            if response.status_code < 500:
                break
        if attempt == 1:
            logger.warning("Alert %r not sent (%s); retrying once", title, problem)
            time.sleep(retry_delay)

    logger.error("Alert not delivered (%s): %s\n%s", problem, title, text)
    return False


def slack_client(token: str, api_url: str | None = None, timeout: float = TIMEOUT_SECONDS):
    """A Slack Web API client for a bot token, from dagster-slack's `SlackResource`.

    `api_url` points it elsewhere (GovSlack's `https://slack-gov.com/api/`, a test double). The
    SDK's own retry of connection errors is turned off: `send_slack_alert` retries once itself,
    as for the webhook, so a channel that is down costs at most two timeouts per alert.
    """
    from dagster_slack import SlackResource

    client = SlackResource(token=token).get_client()
    client.base_url = api_url or SLACK_API_URL
    client.timeout = int(timeout)
    client.retry_handlers = []
    return client


def send_slack_alert(
    client: "WebClient",
    channel: str | None,
    title: str,
    lines: list[str],
    logger: AlertLogger,
    *,
    summary: str | None = None,
    retry_delay: float = RETRY_DELAY_SECONDS,
) -> bool:
    """Post an alert to a Slack channel with `chat.postMessage`; True when Slack accepted it.

    Without a channel the alert is logged at WARNING. A 5xx, a 429 (rate limited) or a connection
    error is retried once; any other refusal (`channel_not_found`, `not_in_channel`,
    `invalid_auth`, ...) is not. Slack's error code is logged, never the token.
    """
    from slack_sdk.errors import SlackApiError

    text = "\n".join(lines)
    if not channel:
        logger.warning(
            "Alert not posted to Slack (RECONCILE_SLACK_CHANNEL is not set): %s\n%s", title, text
        )
        return False
    payload = alert_payload(title, lines, summary)
    problem = "not attempted"
    for attempt in (1, 2):
        retry = True
        try:
            client.chat_postMessage(channel=channel, text=payload["text"], blocks=payload["blocks"])
        except SlackApiError as exc:
            status = exc.response.status_code
            data = exc.response.data
            code = data.get("error") if isinstance(data, dict) else None
            problem = f"Slack answered HTTP {status}" + (f" ({code})" if code else "")
            retry = status >= 500 or status == 429
        except Exception as exc:  # URLError, timeouts, ...: the type only, never the message
            problem = f"{type(exc).__name__} reaching Slack"
        else:
            logger.info("Alert posted to Slack: %s", title)
            return True
        if not retry:
            break
        if attempt == 1:
            logger.warning("Alert %r not posted to Slack (%s); retrying once", title, problem)
            time.sleep(retry_delay)

    logger.error("Alert not posted to Slack (%s): %s\n%s", problem, title, text)
    return False
