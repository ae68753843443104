"""The local alerts consumer ("alerts_mail"): e-mails every alert.* event through Django's backend.

On AWS, operators and third parties can instead subscribe by e-mail to the alerts topic
(ALERT_EMAILS -> messaging_provision). Locally this consumer does the same over SMTP.
"""

from __future__ import annotations

import json
import logging
import re

from django.conf import settings
from django.core.mail import send_mail

from .. import contracts
from ..consuming import Event, handles

logger = logging.getLogger(__name__)


def alert_send_mail(event: Event) -> None:
    """E-mail one alert. At-least-once: a crash after sending and before commit re-sends it.

    The subject is the summary on one line (truncated); the body keeps it whole, line breaks included.
    """
    recipients = list(settings.ALERT_EMAILS)
    if not recipients:
        logger.warning("alert %s not mailed: ALERT_EMAILS is empty", event.type)
        return
    data = event.data
    send_mail(
        subject=one_line(f"[billing {data['severity']}] {event.type}: {data['summary']}", SUBJECT_MAX),
        message=f"{data['summary']}\n\n{json.dumps(data['details'], indent=2, sort_keys=True)}\n\n"
        f"event {event.id} at {event.occurred_at.isoformat()}",
        from_email=settings.ALERT_MAIL_FROM,
        recipient_list=recipients,
    )


# A summary can carry text from outside (a gateway's decline message): in a header, a line break
# is refused by Django (BadHeaderError: the alert was never mailed) and anything else is unsafe.
SUBJECT_MAX = 200
_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str, limit: int) -> str:
    """``text`` as one header-safe line: every run of whitespace or control characters becomes one
    space; longer than ``limit`` characters, it is cut and ends with an ellipsis."""
    line = _CONTROL_OR_SPACE.sub(" ", text).strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


for _type in contracts.ALERT_TYPES:
    handles(_type, consumer="alerts_mail")(alert_send_mail)
