from django.db import models


class AuditEntry(models.Model):
    """One row per handler run that committed: counting them shows effects-once."""

    event_id = models.UUIDField()
    event_type = models.CharField(max_length=100)
    aggregate_id = models.CharField(max_length=64)
    aggregate_version = models.BigIntegerField()
    replayed = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.event_type} {self.aggregate_id}"
