from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Shared kernel"

    def ready(self) -> None:
        from . import schedules  # noqa: F401 - its post_migrate receiver syncs the beat schedule
