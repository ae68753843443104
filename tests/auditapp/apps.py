from django.apps import AppConfig


class AuditAppConfig(AppConfig):
    """A test-only consumer ("audit") used to exercise the consumer machinery end to end."""

    name = "tests.auditapp"
    label = "auditapp"
