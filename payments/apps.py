from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401 - registers the system checks
            console,  # noqa: F401 - registers payments' panel on the Messaging page
            health,  # noqa: F401 - registers payments' monitoring checks
        )
