from django.contrib import admin
from django.urls import include, path, reverse_lazy
from django.views.generic import RedirectView

from events.operations.console import messaging_view

admin.site.site_header = "Billing operations"
admin.site.site_title = "Billing operations"
# The header's "View site": there is no public site; the operator's next stop is the Messaging page.
admin.site.site_url = reverse_lazy("admin-messaging")

urlpatterns = [
    path("admin/messaging/", admin.site.admin_view(messaging_view), name="admin-messaging"),
    path("admin/", admin.site.urls),
    # The address make run prints without /admin/, or typed by hand: the admin (its login first).
    path("", RedirectView.as_view(pattern_name="admin:index"), name="root"),
    path("", include("events.urls")),
]
