"""Update tasks: take what agents queued, have the learner train on it, publish the new weights to the
predictor. Several run at once, so one batch trains while the next crosses to the learner.

n-step samples are trained on in batches of whatever is queued (between ``min_batch`` and
``max_batch``), one gradient step each: the seed's A3C. Segments are trained on in batches of exactly
``batch_envs`` environment columns (a fixed number of samples), split off the queued segments;
``SegmentBatcher`` does that, for the update tasks and for the deterministic mode's direct path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from asynca3c.core.messages import SampleBatch, Segment
from asynca3c.runtime.learner_client import LearnerClient
from asynca3c.runtime.predictor import Predictor
from asynca3c.runtime.progress import Progress

#: Put on the queue (once per update task) after the agents stopped: train what is left, then return.
STOP = None

#: The factor of the configured learning rate for the next update (``lr_factor``).
LrFactor = Callable[[], float]


def lr_factor(schedule: str, progress: Progress, seconds: float, steps: int) -> LrFactor:
    """'constant': always 1; 'linear': the fraction of the budget (``seconds`` and ``steps``, 0 for none)
    still to go, so the last updates are small ones."""
    if schedule == "constant":
        return lambda: 1.0
    if schedule == "linear":
        return lambda: 1.0 - progress.budget_spent(seconds, steps)
    raise ValueError(f"lr_schedule {schedule!r}: constant or linear")


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
                      progress: Progress, min_batch: int, max_batch: int, lr: LrFactor) -> None:
    stopped = False
    while not stopped:
        batches, stopped = await _collect(queue, min_batch, max_batch)
        if not batches:
            continue
        stats, weights = await learner.step(SampleBatch.concat(batches), lr())
        predictor.set_weights(weights, stats.version)
        progress.add_update(stats)


class SegmentBatcher:
    """Cuts queued segments into batches of exactly ``batch_envs`` columns; columns left over wait for
    the next segment."""

    def __init__(self, batch_envs: int):
        self.batch_envs = batch_envs
        self._parts: list[Segment] = []
        self._held = 0

    def add(self, segment: Segment) -> list[Segment]:
        """The batches that are complete once ``segment`` is added."""
        self._parts.append(segment)
        self._held += segment.envs
        batches = []
        while self._held >= self.batch_envs:
            merged = Segment.concat(self._parts)
            batches.append(merged.columns(0, self.batch_envs))
            rest = merged.columns(self.batch_envs, merged.envs)
            self._parts, self._held = ([rest] if rest.envs else []), rest.envs
        return batches


async def learn_and_publish(batch: Segment, learner: LearnerClient, predictor: Predictor, progress: Progress,
                            lr: LrFactor) -> None:
    stats, weights = await learner.learn(batch, lr())
    predictor.set_weights(weights, stats.version)
    progress.add_update(stats)


async def segment_update_task(queue: asyncio.Queue, learner: LearnerClient, predictor: Predictor,
                              progress: Progress, batch_envs: int, lr: LrFactor) -> None:
    """Until STOP: full batches of ``batch_envs`` columns to the learner (a part-filled one at STOP is dropped:
    every gradient step sees the same number of samples)."""
    batcher = SegmentBatcher(batch_envs)
    while (item := await queue.get()) is not STOP:
        for batch in batcher.add(item):
            await learn_and_publish(batch, learner, predictor, progress, lr)


class DirectLearning:
    """The deterministic mode's outbox: a full batch is trained on before the agent takes its next step,
    so acting and learning never overlap and updates land in a fixed order."""

    def __init__(self, learner: LearnerClient, predictor: Predictor, progress: Progress, batch_envs: int,
                 lr: LrFactor):
        self.learner, self.predictor, self.progress, self.lr = learner, predictor, progress, lr
        self.batcher = SegmentBatcher(batch_envs)

    async def put(self, segment: Segment) -> None:
        for batch in self.batcher.add(segment):
            await learn_and_publish(batch, self.learner, self.predictor, self.progress, self.lr)
