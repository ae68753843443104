from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Event backbone"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import checks  # noqa: F401 - registers the system checks
        from .audit import panel  # noqa: F401 - registers the delivery audit's Messaging panel
        from .operations import alert_mail  # noqa: F401 - registers the alerts_mail handlers
        from .publishing import outbox  # noqa: F401 - connects the outbox to domain_event

        autodiscover_modules("consumers")  # each app's @handles registrations
