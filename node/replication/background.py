"""A component that runs one asyncio task from ``start()`` until ``stop()``."""

from __future__ import annotations

import asyncio
import contextlib


class Background:
    """Subclasses define ``_loop`` (runs until cancelled) and ``task_name``."""

    task_name = "background"
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        raise NotImplementedError
