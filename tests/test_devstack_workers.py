"""`make run`'s workers (devsupport.stack.WORKERS): the bulk workers read every push consumer's
queue, a consumer added later included (README, "A new consumer": an ``EventQueue`` or
``EXTRA_EVENT_QUEUES``, nothing else to edit); the ops worker reads none. Workers and beat run
with DEBUG off unless it is set; the development server keeps settings.dev's."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from devsupport import stack
from devsupport.stack import ROOT, WORKERS, Worker, background_env
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


def debug_in(env: dict[str, str]) -> bool:
    """settings.DEBUG as a process started with ``env`` reads it under make run's settings."""
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    env = {**env, "DJANGO_SETTINGS_MODULE": "billing_project.settings.dev"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1] == "True"


def test_make_runs_workers_and_beat_run_without_debug_and_the_web_server_with_it():
    # given make run's environment, DEBUG not set (the development server shows Django's error pages)
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    assert debug_in(env)
    # then its workers and beat run without it (no debug cursor around every statement)
    assert not debug_in(background_env(env))
    # and a developer who sets DEBUG gets it everywhere
    assert debug_in(background_env({**env, "DEBUG": "true"}))


def test_make_run_starts_its_workers_and_beat_with_debug_off(monkeypatch):
    # given make run starting its services, DEBUG not set (each child's environment recorded)
    started: dict[str, dict[str, str]] = {}
    monkeypatch.setattr(stack, "Child", lambda name, argv, env, **kw: started.setdefault(name, env))
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    stack.start_services(env, 8000, {w.name: threading.Event() for w in WORKERS})
    # then every worker and beat run without DEBUG, and the web server with settings.dev's
    assert sorted(started) == sorted([*(w.name for w in WORKERS), "beat", "web"])
    assert {name: e.get("DEBUG") for name, e in started.items() if name != "web"} == dict.fromkeys(
        [*(w.name for w in WORKERS), "beat"], "false"
    )
    assert "DEBUG" not in started["web"]
