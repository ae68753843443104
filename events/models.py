from django.db import models


class Heartbeat(models.Model):
    """Last time a named process or job proved it was alive (worker, beat, daily run)."""

    name = models.CharField(max_length=100, unique=True)
    beat_at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.beat_at:%Y-%m-%d %H:%M:%S}"
