"""Update tasks: take sample batches off the queue, have the learner run the minimize step, publish
the new weights to the predictor. Several run at once, so one batch trains while the next crosses
to the learner."""

from __future__ import annotations

import asyncio

from asynca3c.core.messages import SampleBatch
from asynca3c.runtime.learner_client import LearnerClient
from asynca3c.runtime.predictor import Predictor
from asynca3c.runtime.progress import Progress

#: Put on the queue (once per update task) after the agents stopped: train what is left, then return.
STOP = None


async def _collect(queue: asyncio.Queue, min_batch: int, max_batch: int) -> tuple[list[SampleBatch], bool]:
    """At least ``min_batch`` samples (fewer only at STOP), plus whatever is queued up to ``max_batch``."""
    batches: list[SampleBatch] = []
    size = 0
    while size < max_batch:
        if size >= min_batch and queue.empty():
            break
        item = await queue.get()
        if item is STOP:
            return batches, True
        batches.append(item)
        size += len(item)
    return batches, False


async def update_task(queue: asyncio.Queue, learner: LearnerClient, predictor: Predictor,
                      progress: Progress, min_batch: int, max_batch: int) -> None:
    stopped = False
    while not stopped:
        batches, stopped = await _collect(queue, min_batch, max_batch)
        if not batches:
            continue
        stats, weights = await learner.step(SampleBatch.concat(batches))
        predictor.set_weights(weights, stats.version)
        progress.add_update(stats)
