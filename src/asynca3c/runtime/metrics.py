"""Where progress rows go: synchronous sinks (callback, CSV, TensorBoard, log) and async subscribers.

A sink is called on the loop thread with every row; a subscriber (one per
``Trainer.metrics()`` iterator) gets a bounded inbox, so a slow reader loses its
oldest rows, never the end of the stream or the error that ended it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable

from asynca3c.core.messages import MetricsRow

log = logging.getLogger("asynca3c")

#: Put in subscribers' inboxes when training ended.
END = object()


def log_row(row: MetricsRow) -> None:
    log.info("steps=%d steps/s=%.0f episodes=%d eval=%.1f", row["env_steps"], row["steps_per_second"],
             row["episodes"], row["eval_return_mean"])


class MetricsHub:
    """Fans each progress row out to the sinks and the subscribers."""

    def __init__(self, sinks: list[Callable[[MetricsRow], None]] | None = None, inbox_size: int = 1000):
        self.sinks = list(sinks or [])
        self._inbox_size = inbox_size
        self._subscribers: list[asyncio.Queue] = []

    def emit(self, row: MetricsRow) -> None:
        for sink in self.sinks:
            sink(row)
        self._publish(row)

    def end(self, error: BaseException | None = None) -> None:
        """Training ended (with ``error``): subscribers get it after the rows they hold."""
        self._publish(END if error is None else error)

    async def subscribe(self) -> AsyncGenerator[MetricsRow, None]:
        """Rows from now until the end; the error that ended training is raised."""
        inbox: asyncio.Queue = asyncio.Queue(maxsize=self._inbox_size)
        self._subscribers.append(inbox)
        try:
            while True:
                item = await inbox.get()
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._subscribers.remove(inbox)

    def _publish(self, item: object) -> None:
        for inbox in self._subscribers:
            if inbox.full():
                inbox.get_nowait()  # a slow reader loses the oldest row, never the end
            inbox.put_nowait(item)
