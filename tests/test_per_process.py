"""core/per_process.py: a value made once per process, never inherited across a fork."""

from __future__ import annotations

import itertools
import os
import threading

from core.per_process import PerProcess
from tests.forks import held_by_a_thread, in_child


def test_a_value_is_made_once_for_all_threads_then_again_after_a_reset():
    made = itertools.count(1)
    value = PerProcess(lambda: {"n": next(made)})
    got: list[dict[str, int]] = []
    threads = [threading.Thread(target=lambda: got.append(value.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [g["n"] for g in got] == [1] * 8 and all(g is got[0] for g in got)
    value.reset()
    assert value.get() == {"n": 2}


def test_a_value_of_none_is_made_once_too():
    made = itertools.count(1)
    value = PerProcess(lambda: next(made) and None)  # a setting that chose nothing, say
    assert [value.get() for _ in range(3)] == [None, None, None]
    assert next(made) == 2  # made once
    value.reset()
    assert value.get() is None and next(made) == 4  # made again after a reset


def test_a_forked_process_makes_its_own_even_while_a_parent_thread_held_the_lock():
    # given a parent that made its value, and one of its threads holding the lock at the fork
    value = PerProcess(lambda: {"pid": os.getpid()})
    parent = value.get()
    with held_by_a_thread(value._lock):
        # when the process forks then and the child asks for the value
        got = in_child(lambda: {"pid": os.getpid(), "made": value.get()["pid"], "parent": parent["pid"]})
    # then it made its own, in the child, not stuck on a lock no thread of it will release
    assert got["made"] == got["pid"] != got["parent"] == os.getpid()
    assert value.get() is parent
