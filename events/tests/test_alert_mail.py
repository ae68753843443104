"""Alert e-mail: whatever an alert's summary holds (a gateway's decline message), it is mailed."""

from __future__ import annotations

import email
from email.policy import default as default_policy

import pytest
from django.db import transaction

from events.consuming.pull import pull_once
from events.models import ConsumerFailure
from events.publishing.outbox import record_event
from events.publishing.relay import relay_pending

pytestmark = pytest.mark.django_db(transaction=True)

DECLINE = "Card declined.\r\nBcc: everyone@example.com\nReason:\tdo_not_honor\x0b (issuer said: call us)"


def test_an_alert_whose_summary_has_newlines_is_mailed_with_a_one_line_subject(empty_queues, smtp):
    # given a final payment failure whose gateway message spans lines (and tries a header)
    summary = f"Payment for invoice INV-2026-0000042 failed for good: {DECLINE} " + "x" * 400
    with transaction.atomic():
        record_event(
            sender=None,
            type="alert.payment_failed",
            aggregate_id="payment_failed:42",
            aggregate_version=1,
            data={"check": "payment_failed", "severity": "warning", "summary": summary, "details": {}},
        )
    # when it goes out through the alerts topic to the alerts_mail consumer
    relay_pending()
    result = pull_once("alerts_mail")
    # then it is handled (not failed, not retried) and mailed
    assert result.outcomes == {"handled": 1}, result.outcomes
    assert not ConsumerFailure.objects.exists()
    assert len(smtp.messages) == 1
    mail = email.message_from_bytes(smtp.messages[0].content, policy=default_policy)
    subject = str(mail["Subject"]).strip()  # a long subject is folded right after "Subject:"
    # with the subject on one line, truncated, and no header smuggled in
    assert subject.startswith("[billing warning] alert.payment_failed: Payment for invoice INV-2026-0000042")
    assert "Card declined. Bcc: everyone@example.com Reason: do_not_honor (issuer said" in subject
    assert len(subject) <= 200 and subject.endswith("…")
    assert mail["Bcc"] is None
    assert smtp.messages[0].rcpt_tos == ["ops@example.com"]
    # and the body keeps the full text, line breaks included
    body = mail.get_content()
    assert "Card declined.\nBcc: everyone@example.com\nReason:\tdo_not_honor" in body.replace("\r\n", "\n")
    assert "x" * 400 in body
