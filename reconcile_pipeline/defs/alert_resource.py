"""The alert webhook as a Dagster resource, and how to bind it from the environment."""

import os

import dagster as dg

from reconcile_pipeline.alerting import AlertLogger, send_alert

ALERT_WEBHOOK_URL_ENV = "RECONCILE_ALERT_WEBHOOK_URL"
DAGSTER_UI_URL_ENV = "RECONCILE_DAGSTER_UI_URL"


class AlertWebhookResource(dg.ConfigurableResource):
    """Where alerts go: a webhook accepting Slack-compatible JSON, or only the log when unset.

    `ui_url`, when set, is the Dagster UI's base URL, used to link alerts to their runs.
    """

    webhook_url: str | None = None
    ui_url: str | None = None

    def send(self, title: str, lines: list[str], logger: AlertLogger) -> bool:
        """Post the alert (never raises); False when it was only logged."""
        return send_alert(self.webhook_url, title, lines, logger)

    def run_link(self, run_id: str) -> str | None:
        """The run's page in the Dagster UI, when the UI's URL is known."""
        if not self.ui_url:
            return None
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"


def _env_var_if_set(name: str) -> dg.EnvVar | None:
    # An EnvVar whose variable is unset fails resource initialisation in Dagster 1.13 (even for
    # an optional field), so an absent variable is bound as None instead: alerts are then logged.
    return dg.EnvVar(name) if os.environ.get(name) else None


def alert_webhook_resource() -> AlertWebhookResource:
    """The resource bound to RECONCILE_ALERT_WEBHOOK_URL and RECONCILE_DAGSTER_UI_URL.

    A set variable is bound as `dg.EnvVar`, so the secret webhook URL is read when the resource
    is initialised and never shown in the UI; an unset one becomes None. Whether a variable is set
    is decided when the code location loads, so setting one later needs a reload.
    """
    return AlertWebhookResource(
        webhook_url=_env_var_if_set(ALERT_WEBHOOK_URL_ENV),
        ui_url=_env_var_if_set(DAGSTER_UI_URL_ENV),
    )
