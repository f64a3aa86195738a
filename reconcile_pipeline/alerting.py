"""Alerts to a webhook that accepts Slack-compatible JSON (Slack, Mattermost, Rocket.Chat, ...).

The webhook URL is a secret (a Slack incoming-webhook URL embeds its token), so nothing here ever
logs it, nor an exception message from `requests`, which quotes the URL it failed on.
Sending never raises: an alert that cannot be delivered must not fail the sensor that raised it,
and the alert's text is logged instead so it is not lost.
"""

import time
from collections.abc import Sequence
from typing import Any, Protocol

import requests

TIMEOUT_SECONDS = 10.0
RETRY_DELAY_SECONDS = 1.0
# Slack rejects a section text over 3,000 characters.
MAX_SECTION_CHARS = 3000


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


def alert_payload(title: str, lines: Sequence[str]) -> dict[str, Any]:
    """The Slack-compatible body: a plain `text` summary plus one mrkdwn section."""
    body = "\n".join(_escape(line) for line in lines)
    section = _truncate(f"*{_escape(title)}*\n{body}".rstrip(), MAX_SECTION_CHARS)
    summary = _truncate(_escape(title) + (f": {_escape(lines[0])}" if lines else ""), 300)
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

    payload = alert_payload(title, lines)
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
