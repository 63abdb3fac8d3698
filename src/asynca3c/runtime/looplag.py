"""Event-loop lag: how late a coroutine that asked to wake up actually woke up.

A trainer that shares its loop with a service must not hold the loop; this is
how it checks itself. A heartbeat sleeps ``interval`` seconds again and again
and records the overshoot in a fixed histogram (0.05 ms bins up to 1 s, plus
the exact maximum), so a run of any length costs constant memory.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np

BIN_MS = 0.05
BINS = 20_000  # 0 .. 1000 ms; larger lags land in the last bin (the maximum stays exact)


class LoopLag:
    """Histogram of wake-up lags, in milliseconds."""

    def __init__(self):
        self.counts = np.zeros(BINS, dtype=np.int64)
        self.max_ms = 0.0
        self.samples = 0

    def add(self, lag_ms: float) -> None:
        lag_ms = max(lag_ms, 0.0)
        self.counts[min(int(lag_ms / BIN_MS), BINS - 1)] += 1
        self.samples += 1
        if lag_ms > self.max_ms:
            self.max_ms = lag_ms

    def percentile(self, q: float) -> float:
        """Upper edge of the bin holding the q-th percentile (NaN before any sample)."""
        if not self.samples:
            return math.nan
        rank = math.ceil(q / 100 * self.samples)
        index = int(np.searchsorted(np.cumsum(self.counts), max(rank, 1)))
        return min((index + 1) * BIN_MS, self.max_ms)

    def p99_ms(self) -> float:
        return self.percentile(99)

    async def watch(self, interval: float = 0.002) -> None:
        """Record lags until cancelled."""
        clock = time.perf_counter
        while True:
            due = clock() + interval
            await asyncio.sleep(interval)
            self.add((clock() - due) * 1000.0)
