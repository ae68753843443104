"""Admin building blocks shared by every app's admin (apps may import from events/)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse


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
