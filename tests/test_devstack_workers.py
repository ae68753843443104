"""`make run`'s workers (devsupport.stack.WORKERS): the bulk workers read every push consumer's
queue, a consumer added later included (README, "A new consumer": an ``EventQueue`` or
``EXTRA_EVENT_QUEUES``, nothing else to edit); the ops worker reads none."""

from __future__ import annotations

from devsupport.stack import WORKERS, Worker
from events.consuming.config import consumer_configs, push_consumer_names


def consumers_run_by(worker: Worker) -> list[str]:
    """The push consumers this worker of `make run` starts (its --event-consumers, as the worker reads it)."""
    options = list(worker.options)
    option = options[options.index("--event-consumers") + 1] if "--event-consumers" in options else None
    return push_consumer_names(option)


def test_make_runs_bulk_workers_read_every_push_consumer_a_new_one_included(settings):
    # given a consumer the topology does not list, added as the README says (test settings' "audit")
    every = sorted(c.name for c in consumer_configs().values() if c.mode == "push")
    assert "audit" in every

    # then each bulk worker of make run polls it, with the topology's own consumers
    bulk = [w for w in WORKERS if w.name != "ops"]
    assert len(bulk) == 2
    for worker in bulk:
        assert sorted(consumers_run_by(worker)) == every, worker.name
    # and the ops worker polls none: operations never wait behind a consumer's handlers
    [ops] = [w for w in WORKERS if w.name == "ops"]
    assert consumers_run_by(ops) == []
