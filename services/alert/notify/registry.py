"""Build the notifier plugins of this process from the settings and the alerting file."""

from __future__ import annotations

from services.alert.config import AlertingConfig, ChannelSpec
from services.alert.notify.base import Notifier
from services.alert.notify.email import EmailNotifier
from services.alert.notify.log import LogNotifier
from services.alert.notify.slack import SlackNotifier
from services.alert.notify.teams import TeamsNotifier
from services.alert.notify.webhook import WebhookNotifier
from shared.config import Settings


def _required(spec: ChannelSpec, name: str, value: str | None) -> str:
    if not value:
        raise ValueError(f"channel {name!r} ({spec.type}) needs url_env or url_file")
    return value


def make_notifier(name: str, spec: ChannelSpec) -> Notifier:
    if spec.type == "log":
        return LogNotifier()
    if spec.type == "slack":
        return SlackNotifier(_required(spec, name, spec.secret("url")))
    if spec.type == "teams":
        return TeamsNotifier(_required(spec, name, spec.secret("url")))
    if spec.type == "webhook":
        return WebhookNotifier(_required(spec, name, spec.secret("url")), spec.secret("secret"))
    return EmailNotifier(
        spec.host,
        spec.port,
        spec.sender,
        spec.recipients,
        username=spec.username,
        password=spec.secret("password"),
        starttls=spec.starttls,
        use_tls=spec.use_tls,
    )


def build_notifiers(settings: Settings, config: AlertingConfig) -> dict[str, Notifier]:
    """``log`` always; ``webhook`` from THIRDRING_NOTIFY_WEBHOOK_*; the rest from the file."""
    notifiers: dict[str, Notifier] = {"log": LogNotifier()}
    if settings.notify_webhook_url:
        secret = settings.notify_webhook_secret
        notifiers["webhook"] = WebhookNotifier(
            settings.notify_webhook_url, secret.get_secret_value() if secret else None
        )
    for name, spec in config.channels.items():
        notifiers[name] = make_notifier(name, spec)
    return notifiers
