"""The daemon process's own resource counts for /health: what a slow leak would show first."""

from __future__ import annotations

import asyncio
import os
import resource
import threading
from typing import Any

PROC = "/proc/self"


def _proc_status() -> dict[str, str]:
    """/proc/self/status as a dict (Linux); empty elsewhere."""
    try:
        with open(f"{PROC}/status", encoding="ascii", errors="replace") as status:
            return dict(line.split(":", 1) for line in status if ":" in line)
    except OSError:
        return {}


def process_report() -> dict[str, Any]:
    """RSS, open file descriptors, OS threads and asyncio tasks, read from procfs (cheap: no
    disk I/O, safe on the event loop). Counts that cannot be read are None."""
    status = _proc_status()
    rss_kb = status.get("VmRSS", "").split()
    try:
        fds: int | None = len(os.listdir(f"{PROC}/fd"))
    except OSError:
        fds = None
    try:
        tasks: int | None = len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (a report outside the daemon)
        tasks = None
    return {
        "pid": os.getpid(),
        "rss_bytes": int(rss_kb[0]) * 1024 if rss_kb else None,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "fds": fds,
        "threads": int(status["Threads"]) if "Threads" in status else threading.active_count(),
        "tasks": tasks,
    }
