"""The chat's login (`qa serve --auth USER:PASSWORD`): one account, and a pause after repeated wrong passwords."""
from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import deque
from typing import Callable

log = logging.getLogger(__name__)


class LoginLimiter:
    """Gradio's auth callable: True for the right user name and password, compared in constant time.

    After max_failures wrong tries for a user name within window seconds, that name is refused for
    pause seconds, right password or not; after max_total wrong tries of any names within window,
    every login is (guessing through many names). 5 tries a minute make guessing even a short
    password take months, while a user who mistypes waits one minute.
    """

    def __init__(self, username: str, password: str, max_failures: int = 5, max_total: int = 50,
                 window: float = 300.0, pause: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._user, self._password = username.encode(), password.encode()
        self.max_failures, self.max_total, self.window, self.pause = max_failures, max_total, window, pause
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}  # per user name, times of recent wrong tries
        self._all: deque[float] = deque()  # times of recent wrong tries, any name
        self._paused: dict[str, float] = {"": 0.0}  # user name ('' = everyone) -> refused until
        self._lock = threading.Lock()

    def __call__(self, username: str, password: str) -> bool:
        with self._lock:
            now = self._clock()
            self._forget(now)
            if max(self._paused.get(username, 0.0), self._paused[""]) > now:
                log.debug("login refused for %r: paused after repeated wrong passwords", username[:80])
                return False
            # Both compared, always: the time taken does not tell which one was wrong.
            right = hmac.compare_digest(username.encode(), self._user) & hmac.compare_digest(password.encode(),
                                                                                              self._password)
            if right:
                self._failures.pop(username, None)
                return True
            tries = self._failures.setdefault(username, deque())
            tries.append(now)
            self._all.append(now)
            if len(tries) >= self.max_failures:
                self._paused[username] = now + self.pause
                tries.clear()
                log.warning("login: %d wrong passwords for %r; refusing it for %.0f s", self.max_failures,
                            username[:80], self.pause)
            if len(self._all) >= self.max_total:
                self._paused[""] = now + self.pause
                self._all.clear()
                log.warning("login: %d wrong passwords within %.0f s; refusing every login for %.0f s",
                            self.max_total, self.window, self.pause)
            return False

    def _forget(self, now: float) -> None:
        """Drop what is older than the window, so that memory stays bounded whatever names are tried."""
        while self._all and now - self._all[0] > self.window:
            self._all.popleft()
        for name in [n for n, t in self._failures.items() if not t or now - t[-1] > self.window]:
            del self._failures[name]
        for name in [n for n, until in self._paused.items() if n and until <= now]:
            del self._paused[name]
