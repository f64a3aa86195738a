"""Where alerts go, as a Dagster resource, and how to bind it from the environment.

Two destinations, either, both or neither: a webhook accepting Slack-compatible JSON
(`RECONCILE_ALERT_WEBHOOK_URL`) and a Slack app posting to a channel through dagster-slack
(`RECONCILE_SLACK_TOKEN` + `RECONCILE_SLACK_CHANNEL`). With neither, alerts are only logged.
"""

import os
from collections.abc import Callable

import dagster as dg

from reconcile_pipeline.alerting import AlertLogger, send_alert, send_slack_alert, slack_client

ALERT_WEBHOOK_URL_ENV = "RECONCILE_ALERT_WEBHOOK_URL"
DAGSTER_UI_URL_ENV = "RECONCILE_DAGSTER_UI_URL"
SLACK_TOKEN_ENV = "RECONCILE_SLACK_TOKEN"
SLACK_CHANNEL_ENV = "RECONCILE_SLACK_CHANNEL"
SLACK_API_URL_ENV = "RECONCILE_SLACK_API_URL"

# send(title, lines, summary, logger) -> whether the destination accepted the alert
Destination = Callable[[str, list[str], str | None, AlertLogger], bool]


class AlertWebhookResource(dg.ConfigurableResource):
    """Where alerts go: a webhook accepting Slack-compatible JSON and/or a Slack app's channel,
    or only the log when neither is set.

    `ui_url`, when set, is the Dagster UI's base URL, used to link alerts to their runs.
    `slack_token` is a Slack app's bot token (`chat:write`), `slack_channel` the channel it posts
    to, `slack_api_url` the Web API root when it is not Slack's (GovSlack, a test double).
    """

    webhook_url: str | None = None
    ui_url: str | None = None
    slack_token: str | None = None
    slack_channel: str | None = None
    slack_api_url: str | None = None

    def _setting(self, value: str | None, env: str) -> str | None:
        """The field when set, else its variable as the process sees it now (read when the
        alert is sent, never when the code location loads)."""
        return value or (os.environ.get(env) or "").strip() or None

    @property
    def _webhook(self) -> str | None:
        return self._setting(self.webhook_url, ALERT_WEBHOOK_URL_ENV)

    @property
    def _slack_token(self) -> str | None:
        return self._setting(self.slack_token, SLACK_TOKEN_ENV)

    @property
    def configured(self) -> bool:
        """Whether any destination is set (otherwise alerts are only logged)."""
        return bool(self._webhook or self._slack_token)

    def destinations(self) -> dict[str, Destination]:
        """The configured destinations by name ("webhook", "slack"), each a function that sends
        one alert and never raises."""
        found: dict[str, Destination] = {}
        if self._webhook:
            url = self._webhook
            found["webhook"] = lambda title, lines, summary, logger: send_alert(
                url, title, lines, logger, summary=summary
            )
        if self._slack_token:
            client = slack_client(
                self._slack_token, self._setting(self.slack_api_url, SLACK_API_URL_ENV)
            )
            channel = self._setting(self.slack_channel, SLACK_CHANNEL_ENV)
            found["slack"] = lambda title, lines, summary, logger: send_slack_alert(
                client, channel, title, lines, logger, summary=summary
            )
        return found

    def send(
        self, title: str, lines: list[str], logger: AlertLogger, summary: str | None = None
    ) -> bool:
        """Send the alert to every destination (never raises); True when at least one accepted
        it, False when it was only logged."""
        destinations = self.destinations()
        if not destinations:
            return send_alert(None, title, lines, logger)  # logs it at WARNING
        results = [send(title, lines, summary, logger) for send in destinations.values()]
        return any(results)

    def run_link(self, run_id: str) -> str | None:
        """The run's page in the Dagster UI, when the UI's URL is known."""
        ui_url = self._setting(self.ui_url, DAGSTER_UI_URL_ENV)
        if not ui_url:
            return None
        return f"{ui_url.rstrip('/')}/runs/{run_id}"


def alert_webhook_resource() -> AlertWebhookResource:
    """The resource reading RECONCILE_ALERT_WEBHOOK_URL, RECONCILE_DAGSTER_UI_URL and
    RECONCILE_SLACK_TOKEN / _CHANNEL / _API_URL when an alert is sent (never when the code
    location loads: issue 13), so setting one needs no reload. Secrets (the webhook URL, the
    Slack token) are never shown in the UI: nothing is bound in the definitions."""
    return AlertWebhookResource()
