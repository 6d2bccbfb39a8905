"""Tasks an object owns: tracked while they run, cancelled and awaited when it closes."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Iterable, Iterator


class TaskSet:
    """Every background task has an owner that ends it: this set is the owner's list."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(tuple(self._tasks))

    async def close(self, grace: float = 0.0, finish: Iterable[asyncio.Task[Any]] | None = None) -> None:
        """Give `finish` (default: every task) up to `grace` seconds to end by themselves, then
        cancel what is left and wait for it."""
        if grace > 0:
            waiting = set(self._tasks if finish is None else finish)
            if waiting:
                await asyncio.wait(waiting, timeout=grace)
        tasks = tuple(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
