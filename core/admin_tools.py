"""Admin building blocks shared by every app's admin: guards, read-only history, and how the
console shows money, links, dates and warnings (one place, so every page shows them alike).

A link is shown only to whom may open it: ``ConsoleRequestMiddleware`` tells the helpers who is
looking (a read-only field's function is given only the object), and a page the user may not view
is named as text instead of a link that answers 403."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from datetime import date, datetime
from operator import attrgetter
from typing import Any
from urllib.parse import urlencode

from django.apps import apps
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.money import format_money

# The request being answered, for the display helpers below (set by ConsoleRequestMiddleware).
_request: ContextVar[HttpRequest | None] = ContextVar("console_request", default=None)


class ConsoleRequestMiddleware:
    """Lets the display helpers know who is looking, while a response is made and rendered."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)


def may_view(app_label: str, model_name: str) -> bool:
    """Whether the user being answered may open that model's admin pages (outside a request, as
    in a shell: yes)."""
    request = _request.get()
    if request is None:
        return True
    try:
        model_admin = admin.site.get_model_admin(apps.get_model(app_label, model_name))
    except (LookupError, admin.sites.NotRegistered):
        return False
    return bool(model_admin.has_view_permission(request))


class GuardedActionsMixin(admin.ModelAdmin):
    """A staff user who lacks an action's permission gets 403 when posting it.

    Django's admin already hides such actions; without this it would answer a
    forged POST with a quiet "no action selected" instead of refusing.
    """

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST" and "action" in request.POST:
            name = request.POST["action"]
            declared = {a if isinstance(a, str) else a.__name__ for a in (self.actions or [])}
            if name in declared and name not in self.get_actions(request):
                raise PermissionDenied(f"You may not run {name!r}.")
        return super().changelist_view(request, extra_context)


class ReadOnlyMixin:
    """History to read, never to edit: no add, change or delete (admins and inlines alike)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class NoAddDeleteMixin:
    """Rows made and changed only by services (and their admin actions): never added or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class HistoryInline(ReadOnlyMixin, admin.TabularInline):
    """Rows of a parent's history (invoice lines, attempts, chunks) as a plain read-only table.

    Django's tabular inline prints each row's ``str()`` above its cells, which repeats a column
    (an invoice line's description twice); this template shows the cells only.
    """

    template = "admin/edit_inline/history_tabular.html"
    extra = 0
    can_delete = False


# --- how values are shown ---------------------------------------------------------------------
def money(amount: str, *, currency: str = "currency", description: str) -> Callable[[Any, Any], str]:
    """A column or read-only field showing ``amount`` (integer minor units) with its currency
    (``£15.00``). ``currency`` names the attribute holding the ISO code; a dotted path
    (``"invoice.currency"``) reads it from a related row (select_related it)."""
    currency_of = attrgetter(currency)

    @admin.display(description=description, ordering=amount)
    def show(model_admin: Any, obj: Any) -> str:
        value = getattr(obj, amount)
        return "-" if value is None else format_money(value, currency_of(obj))

    return show


def date_range(start: date | None, end: date | None) -> SafeString:
    """``2026-01-01 – 2026-02-01``: ISO dates, each kept on one line."""
    return format_html(
        '<span class="nowrap">{}</span> – <span class="nowrap">{}</span>',
        start.isoformat() if start else "…",
        end.isoformat() if end else "…",
    )


def moment(at: datetime | None, *, date_only: bool = False) -> SafeString:
    """A compact local time for a list (``2026-11-28 14:03``, or the date alone); the full time,
    to the second, in its tooltip."""
    if at is None:
        return format_html("{}", "-")
    local = timezone.localtime(at)
    shown = local.date().isoformat() if date_only else local.strftime("%Y-%m-%d %H:%M")
    return format_html('<span class="nowrap" title="{}">{}</span>', local.isoformat(" ", "seconds"), shown)


def warning(text: str) -> SafeString:
    """A value an operator must notice (a poisoned message, a flagged agreement)."""
    return format_html('<span class="console-label console-warning">{}</span>', text)


def admin_link(app_label: str, model_name: str, object_id: Any, text: Any = None) -> SafeString:
    """``text`` (default: the id) linking to the object's admin page.

    Contexts never import each other's models, so the page is found by its admin URL name and the
    row through the app registry. Without such a page or row here (the object lives in another
    context's database, or is not there yet) the id is shown as text, saying so.
    """
    text = object_id if text is None else text
    if object_id in (None, ""):
        return format_html("{}", "-")
    try:
        url = reverse(f"admin:{app_label}_{model_name}_change", args=[object_id])
        model = apps.get_model(app_label, model_name)
        found = model._default_manager.filter(pk=object_id).exists()
    except (NoReverseMatch, LookupError, ValidationError, ValueError):
        found = False
    if not found:
        return format_html('{} <span class="console-note">(not in this database)</span>', text)
    if not may_view(app_label, model_name):
        return format_html("{}", text)
    return format_html('<a href="{}">{}</a>', url, text)


def events_link(aggregate_id: Any, text: str = "events") -> SafeString:
    """A link to the event store (Admin → Events) showing this aggregate's events; for a user who
    may not open it, ``text`` when it is the aggregate's id, else ``-``."""
    if not may_view("events", "outboxevent"):
        return format_html("{}", text if text == str(aggregate_id) else "-")
    url = reverse("admin:events_outboxevent_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode({"aggregate_id": str(aggregate_id)}), text)


def changelist_link(app_label: str, model_name: str, params: dict[str, Any], text: str) -> SafeString:
    """A link to another admin list filtered by ``params`` (``-`` when this site has no such list)."""
    try:
        url = reverse(f"admin:{app_label}_{model_name}_changelist")
    except NoReverseMatch:
        return format_html("{}", "-")
    if not may_view(app_label, model_name):
        return format_html("{}", "-")
    query = urlencode({k: str(v) for k, v in params.items()})
    return format_html('<a href="{}?{}">{}</a>', url, query, text)


def object_and_events(app_label: str, model_name: str, object_id: Any, text: Any = None) -> SafeString:
    """The object's admin link followed by a link to its events: ``<id> · events``."""
    if object_id in (None, ""):
        return format_html("{}", "-")
    if not may_view("events", "outboxevent"):
        return admin_link(app_label, model_name, object_id, text)
    return format_html("{} · {}", admin_link(app_label, model_name, object_id, text), events_link(object_id))
