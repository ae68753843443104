"""The local alerts consumer ("alerts_mail"): e-mails every alert.* event through Django's backend.

On AWS, operators and third parties can instead subscribe by e-mail to the alerts topic
(ALERT_EMAILS -> messaging_provision). Locally this consumer does the same over SMTP.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.core.mail import send_mail

from . import contracts
from .consumers import Event, handles

logger = logging.getLogger(__name__)


def alert_send_mail(event: Event) -> None:
    """E-mail one alert. At-least-once: a crash after sending and before commit re-sends it."""
    recipients = list(settings.ALERT_EMAILS)
    if not recipients:
        logger.warning("alert %s not mailed: ALERT_EMAILS is empty", event.type)
        return
    data = event.data
    send_mail(
        subject=f"[billing {data['severity']}] {event.type}: {data['summary']}"[:200],
        message=f"{data['summary']}\n\n{json.dumps(data['details'], indent=2, sort_keys=True)}\n\n"
        f"event {event.id} at {event.occurred_at.isoformat()}",
        from_email=settings.ALERT_MAIL_FROM,
        recipient_list=recipients,
    )


for _type in contracts.ALERT_TYPES:
    handles(_type, consumer="alerts_mail")(alert_send_mail)
