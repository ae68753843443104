from django.urls import path

from .operations import http
from .publishing import api

urlpatterns = [
    path("healthz", http.healthz, name="healthz"),
    path("readyz", http.readyz, name="readyz"),
    path("metrics", http.metrics_view, name="metrics"),
    path("api/events/", api.events_api, name="events-api"),
]
