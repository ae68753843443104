"""core.commands.interrupts_held: a Ctrl-C during steps that must happen together waits for them."""

from __future__ import annotations

import signal
import threading

import pytest

from core.commands import interrupts_held

pytestmark = pytest.mark.usefixtures("ctrl_c_raises")


def test_a_ctrl_c_inside_the_block_is_raised_once_the_block_is_done():
    done = []
    # when a SIGINT arrives in the middle of the block
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            done.append("first")
            signal.raise_signal(signal.SIGINT)
            done.append("second")
    # then the block ran to its end before the KeyboardInterrupt, and the handler is back
    assert done == ["first", "second"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nested_blocks_hand_a_ctrl_c_outwards_and_none_means_none():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            with interrupts_held():
                signal.raise_signal(signal.SIGINT)
            done.append("outer went on")
    assert done == ["outer went on"]
    with interrupts_held():
        done.append("quiet")  # no signal: nothing raised
    assert done[-1] == "quiet"


def test_outside_the_main_thread_it_changes_nothing():
    # signal.signal may only be called from the main thread: the helper must not try elsewhere
    seen = []

    def other() -> None:
        with interrupts_held():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=other)
    t.start()
    t.join(5)
    assert seen == [signal.default_int_handler]


def test_an_error_raised_in_the_block_wins_over_a_held_ctrl_c():
    with pytest.raises(ZeroDivisionError):
        with interrupts_held():
            signal.raise_signal(signal.SIGINT)
            1 / 0  # noqa: B018 - the error under test
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_ignored_before_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    done = []
    with interrupts_held():
        signal.raise_signal(signal.SIGINT)
        done.append("ran")
    assert done == ["ran"] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
