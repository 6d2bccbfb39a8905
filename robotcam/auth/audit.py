"""The audit trail: who signed in, failed, was refused, talked or drove.

Its lines go to the `robotcam.audit` logger (the journal shows them as `robotcam.audit: ...`;
`journalctl -u robotcam | grep audit`). Never a password, token or cookie: users and tokens
appear by name only. Lines that a client can cause in bulk are throttled per key.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("robotcam.audit")

THROTTLE_SECONDS = 60.0
MAX_KEYS = 10_000


class Throttle:
    """At most one line per key per interval; counts what it held back."""

    def __init__(self, interval: float = THROTTLE_SECONDS) -> None:
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> int | None:
        """None: stay quiet. Otherwise the number of lines held back since the last one."""
        now = time.monotonic()
        last, held = self._last.get(key, (-1e18, 0))
        if now - last < self.interval:
            self._last[key] = (last, held + 1)
            return None
        if len(self._last) >= MAX_KEYS:
            self._last.clear()
        self._last[key] = (now, 0)
        return held


def suffix(held: int) -> str:
    return f" (+{held} like it since the last line)" if held else ""
