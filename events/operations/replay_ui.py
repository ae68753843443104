"""Replaying from the operators' screens: one form and one confirmation page, used by the event
store's admin action (events chosen by selection) and the Messaging page (chosen by type and day).
Both show what would be sent first; nothing is sent until the operator confirms."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from .. import contracts, topology
from ..publishing.replay import ReplayReport

TEMPLATE = "admin/events/replay_confirm.html"


def replay_targets() -> list[tuple[str, str]]:
    return [("topic", "their topics (every subscriber receives them again)")] + [
        (q.consumer, f"only the {q.consumer} consumer's queue") for q in topology.EVENT_QUEUES
    ]


class ReplayTargetForm(forms.Form):
    """Where selected events go again: their topics, or one consumer's queue."""

    target = forms.ChoiceField(choices=replay_targets)

    def to_queue(self) -> str | None:
        target = self.cleaned_data["target"]
        return None if target == "topic" else target


class ReplayForm(ReplayTargetForm):
    """Events chosen by type and day (the Messaging page)."""

    type = forms.ChoiceField(choices=lambda: [(t, t) for t in sorted(contracts.REGISTRY)])
    since = forms.DateField(help_text="Events that occurred on or after this day (UTC).")
    field_order = ["type", "since", "target"]


def confirm_page(
    request: HttpRequest,
    *,
    report: ReplayReport,
    hidden: list[tuple[str, str]],
    submit_name: str,
    cancel_url: str,
    form: forms.Form | None = None,
) -> TemplateResponse:
    """The dry run's count and sample, and the form that sends them for real."""
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Confirm replay",
        "report": report,
        "hidden": hidden,
        "form": form,
        "submit_name": submit_name,
        "cancel_url": cancel_url,
    }
    return TemplateResponse(request, TEMPLATE, context)
