"""Slowing down guessing (failed sign-ins) and floods of offers, per client address."""

from __future__ import annotations

import collections
import math
import time
from typing import Deque

WINDOW = 60.0  # seconds over which failed sign-ins count
USER_FACTOR = 2  # a user name locks after twice the per-address count: spread-out guessing
MAX_KEYS = 10_000  # addresses/names remembered at most; the oldest are forgotten first


class _Bounded(collections.OrderedDict):  # type: ignore[type-arg]
    """An LRU map: an attacker cycling addresses cannot grow it without bound."""

    def touch(self, key: str, default: object) -> object:
        if key in self:
            self.move_to_end(key)
        else:
            self[key] = default
            if len(self) > MAX_KEYS:
                self.popitem(last=False)
        return self[key]


class LoginGuard:
    """After `max_failures` failed sign-ins from one address within a minute (or twice that for
    one user name from anywhere), every sign-in from it waits `lockout` seconds: 429."""

    def __init__(self, max_failures: int, lockout: float) -> None:
        self.max_failures = max_failures
        self.lockout = lockout
        self._failures: _Bounded = _Bounded()  # key -> deque of failure times
        self._locked: _Bounded = _Bounded()  # key -> locked until (monotonic)

    def retry_after(self, address: str, user: str) -> float:
        """Seconds until this sign-in may be tried, 0 when it may be tried now."""
        now = time.monotonic()
        waits = [self._locked.get(k, 0.0) - now for k in (f"a:{address}", f"u:{user}")]
        return max(0.0, *waits)

    def failed(self, address: str, user: str) -> bool:
        """Count a failure; True when it locked the address or the name."""
        now = time.monotonic()
        locked = False
        for key, limit in ((f"a:{address}", self.max_failures), (f"u:{user}", self.max_failures * USER_FACTOR)):
            times: Deque[float] = self._failures.touch(key, collections.deque())  # type: ignore[assignment]
            times.append(now)
            while times and now - times[0] > WINDOW:
                times.popleft()
            if len(times) >= limit:
                self._locked.touch(key, 0.0)
                self._locked[key] = now + self.lockout
                times.clear()
                locked = True
        return locked

    def succeeded(self, address: str, user: str) -> None:
        self._failures.pop(f"a:{address}", None)
        self._failures.pop(f"u:{user}", None)


class OfferLimiter:
    """A token bucket per address: `per_minute` offers in a burst, refilled at that rate, so a
    page reconnecting or a script opening dozens of viewers passes and a flood does not."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: _Bounded = _Bounded()  # address -> [tokens, stamp]

    def retry_after(self, address: str) -> float:
        """Take one offer's token: 0 when allowed, else seconds until one is there."""
        if self.per_minute <= 0:
            return 0.0
        now = time.monotonic()
        rate = self.per_minute / 60.0
        bucket = self._buckets.touch(address, [float(self.per_minute), now])
        tokens = min(float(self.per_minute), bucket[0] + (now - bucket[1]) * rate)  # type: ignore[index]
        bucket[1] = now  # type: ignore[index]
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0  # type: ignore[index]
            return 0.0
        bucket[0] = tokens  # type: ignore[index]
        return (1.0 - tokens) / rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
