"""Health probes answered before anything that could refuse them.

A load balancer or the kubelet probes ``/healthz`` and ``/readyz`` over plain HTTP, with the pod's
IP as Host. Further down the stack SecurityMiddleware would answer 301 (SECURE_SSL_REDIRECT) and
host validation 400 (ALLOWED_HOSTS), so a healthy pod would look dead. This middleware sits first
in MIDDLEWARE and answers those two paths itself; every other request goes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from events.operations.http import healthz, readyz

PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {"/healthz": healthz, "/readyz": readyz}


class HealthProbeMiddleware:
    """Serves GET/HEAD ``/healthz`` and ``/readyz`` without host validation or the SSL redirect.

    The probe views read nothing from the request (no Host, no session, no user), so skipping the
    rest of the stack exposes nothing it would have protected.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is not None and request.method in ("GET", "HEAD"):
            return probe(request)
        return self.get_response(request)
