from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Event backbone"

    def ready(self) -> None:
        from . import checks, schedules  # noqa: F401  (registers checks and signal receivers)
