"""Worker bootstep running the push-mode event consumers (kept import-light for celery.py)."""

from __future__ import annotations

from typing import Any

from celery import bootsteps


class EventConsumersStep(bootsteps.StartStopStep):
    """Run the push-mode event consumers inside a Celery worker (see events/pollers.py)."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, event_consumers: str | None = None, **kwargs: Any) -> None:
        self.option = event_consumers
        self.consumers: list[Any] = []

    def start(self, worker: Any) -> None:
        from .config import consumer_configs, push_consumer_names
        from .push import PushConsumer

        configs = consumer_configs()
        self.consumers = [PushConsumer(configs[n]) for n in push_consumer_names(self.option)]
        for consumer in self.consumers:
            consumer.start()

    def stop(self, worker: Any) -> None:
        for consumer in self.consumers:
            consumer.stopping.set()
        for consumer in self.consumers:
            consumer.stop()
        self.consumers = []

    shutdown = stop
