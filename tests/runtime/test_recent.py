"""Recent results (``sop_engine.runtime.recent``): computed once per key and age, answered at
once when old while one background computation replaces them, a failure never losing the
last good value; and the runtime's compliance served from them when asked to."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest

from sop_engine.clock import ManualClock
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.recent import Recent

WAIT = 30.0


class Source:
    """A computation that counts its calls and can be held or made to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.done = threading.Event()
        self.fail = False

    def __call__(self, key: str) -> str:
        self.calls += 1
        self.started.set()
        assert self.release.wait(WAIT)
        try:
            if self.fail:
                raise RuntimeError("the database is gone")
            return f"{key}-{self.calls}"
        finally:
            self.done.set()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_computed_once_while_it_is_young() -> None:
    source, clock = Source(), Clock()
    recent = Recent(source, 30, now=clock)
    assert recent.get("sop") == "sop-1"
    clock.now = 29.9
    assert recent.get("sop") == "sop-1"
    assert recent.get("agency") == "agency-2"  # each key its own
    assert source.calls == 2


def test_an_old_value_is_answered_at_once_and_replaced_in_the_background() -> None:
    source, clock = Source(), Clock()
    recent = Recent(source, 30, now=clock)
    assert recent.get("sop") == "sop-1"
    clock.now = 30
    source.release.clear()
    source.started.clear()
    source.done.clear()
    assert recent.get("sop") == "sop-1"  # at once, although the computation is held
    assert source.started.wait(WAIT)
    assert recent.get("sop") == "sop-1"  # one background computation, not two
    assert source.calls == 2
    source.release.set()
    assert source.done.wait(WAIT)
    for _ in range(1000):  # the thread stores its value just after it is done
        if recent.get("sop") == "sop-2":
            break
        threading.Event().wait(0.01)
    assert recent.get("sop") == "sop-2"
    assert source.calls == 2


def test_requests_for_a_new_key_wait_for_one_computation() -> None:
    source = Source()
    source.release.clear()
    recent = Recent(source, 30, now=Clock())
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(recent.get("k"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert source.started.wait(WAIT)
    source.release.set()
    for thread in threads:
        thread.join(WAIT)
    assert answers == ["k-1"] * 4
    assert source.calls == 1


def test_a_failed_first_computation_is_the_callers_and_leaves_nothing() -> None:
    source = Source()
    source.fail = True
    recent = Recent(source, 30, now=Clock())
    with pytest.raises(RuntimeError, match="the database is gone"):
        recent.get("k")
    source.fail = False
    assert recent.get("k") == "k-2"


def test_a_failed_refresh_keeps_the_last_value_and_is_logged_without_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, clock = Source(), Clock()
    recent = Recent(source, 30, now=clock)
    assert recent.get("k") == "k-1"
    clock.now, source.fail = 31, True
    source.done.clear()
    with caplog.at_level(logging.ERROR, logger="sop_engine.runtime.recent"):
        assert recent.get("k") == "k-1"
        assert source.done.wait(WAIT)
        for _ in range(1000):
            if caplog.records:
                break
            threading.Event().wait(0.01)
    assert [r.getMessage() for r in caplog.records] == [
        "recomputing a recent result failed (RuntimeError: the database is gone); "
        "the previous one is kept"
    ]
    source.fail = False
    for _ in range(1000):  # each request while old starts an attempt once the last is over
        assert recent.get("k") in ("k-1", "k-3")
        if source.calls == 3:
            break
        threading.Event().wait(0.01)
    assert source.calls == 3


def test_only_the_most_recently_used_keys_are_kept() -> None:
    source = Source()
    recent = Recent(source, 30, size=2, now=Clock())
    recent.get("a")
    recent.get("b")
    recent.get("a")
    recent.get("c")  # drops b, the least recently used
    assert recent.get("a") == "a-1"
    assert recent.get("b") == "b-4"
    assert source.calls == 4


def test_the_runtime_answers_a_recent_compliance_report_when_asked_to(
    runtime: Runtime, clock: ManualClock
) -> None:
    kept = Runtime(
        runtime.db,
        runtime.library,
        runtime.services.keyring,
        clock,
        compliance_max_age=timedelta(minutes=5),
    )
    first = kept.compliance("agency")
    clock.advance(timedelta(minutes=1))
    assert kept.compliance("agency") is first  # as_of says how old it is
    assert kept.compliance("sop").as_of == clock.now()
    assert runtime.compliance("agency").as_of == clock.now()  # without: counted each time
