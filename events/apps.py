from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Event backbone"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import alert_mail, checks, outbox, schedules  # noqa: F401  (registers checks and signal receivers)

        autodiscover_modules("consumers")  # each app's @handles registrations
