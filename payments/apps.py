from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        from . import (
            console,  # noqa: F401 - registers payments' panel on the Messaging page
            health,  # noqa: F401 - registers payments' monitoring checks
        )
