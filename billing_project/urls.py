from django.contrib import admin
from django.urls import include, path

from events.operations.console import messaging_view

admin.site.site_header = "Billing operations"
admin.site.site_title = "Billing operations"

urlpatterns = [
    path("admin/messaging/", admin.site.admin_view(messaging_view), name="admin-messaging"),
    path("admin/", admin.site.urls),
    path("", include("events.urls")),
]
