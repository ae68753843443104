from django.apps import AppConfig


class InvoicingConfig(AppConfig):
    name = "invoicing"

    def ready(self) -> None:
        from . import health  # noqa: F401 - registers invoicing's monitoring checks
