"""The chat's login: the right password opens, wrong ones are counted and pause the name."""
from __future__ import annotations

import pytest

from qa.login import LoginLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_right_password_only(clock):
    login = LoginLimiter("ann", "s3cret", clock=clock)
    assert login("ann", "s3cret")
    assert not login("ann", "s3cre") and not login("ann", "s3cret ") and not login("bob", "s3cret")


def test_five_wrong_passwords_pause_the_name_for_a_minute(clock):
    login = LoginLimiter("ann", "s3cret", max_failures=5, pause=60, clock=clock)
    for _ in range(5):
        assert not login("ann", "guess")
    assert not login("ann", "s3cret")  # even the right password waits
    clock.now += 59
    assert not login("ann", "s3cret")
    clock.now += 2
    assert login("ann", "s3cret")


def test_two_hundred_quick_guesses_leave_the_name_paused(clock):
    """The red team's 200 tries in 4 s: after the fifth, not even the right password gets in."""
    login = LoginLimiter("ann", "s3cret", clock=clock)
    for i in range(200):
        clock.now += 0.02
        assert not login("ann", f"guess{i}")
    assert not login("ann", "s3cret")
    clock.now += 61
    assert login("ann", "s3cret")


def test_guessing_through_many_names_pauses_everyone(clock):
    login = LoginLimiter("ann", "s3cret", max_failures=5, max_total=50, pause=60, clock=clock)
    for i in range(50):
        login(f"user{i}", "guess")
    assert not login("ann", "s3cret")
    clock.now += 61
    assert login("ann", "s3cret")


def test_a_success_clears_earlier_mistakes_and_old_ones_are_forgotten(clock):
    login = LoginLimiter("ann", "s3cret", max_failures=3, window=300, clock=clock)
    login("ann", "typo")
    login("ann", "typo")
    assert login("ann", "s3cret")
    login("ann", "typo")
    login("ann", "typo")
    clock.now += 301
    login("ann", "typo")
    assert login("ann", "s3cret")  # 3 wrong in all, but never 3 within the window
    for i in range(1000):
        login(f"name{i}", "x")
        clock.now += 1
    assert len(login._failures) <= 301  # only the names tried within the window are remembered
