"""Optimizer tasks: take sample batches off the queue, run the minimize step in
the learner's executor, publish the new weights to the predictor."""

from __future__ import annotations

import asyncio

from asynca3c.learner_pool import ProcessLearner, ThreadLearner
from asynca3c.predictor import Predictor
from asynca3c.progress import Progress
from asynca3c.samples import SampleBatch

#: Put on the queue (once per optimizer) after the agents stopped: train what is left, then return.
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


async def optimizer_task(queue: asyncio.Queue, learner: ProcessLearner | ThreadLearner, predictor: Predictor,
                         progress: Progress, min_batch: int, max_batch: int) -> None:
    stopped = False
    while not stopped:
        batches, stopped = await _collect(queue, min_batch, max_batch)
        if not batches:
            continue
        stats, weights = await learner.step(SampleBatch.concat(batches))
        predictor.set_weights(weights, stats.version)
        progress.add_update(stats)
