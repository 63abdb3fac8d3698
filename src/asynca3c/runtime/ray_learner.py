"""The learner as a Ray actor (``learner='ray'``), with ``num_gpus=1`` when the device is CUDA.

``LearnerActor`` answers the same requests as the learner's worker process
(``learner_worker.answer``), one at a time; ``RayLearnerWorker`` is the
trainer's handle on it and stands where a worker process would inside
``RestartingLearner``: an actor that dies is a ``LearnerDied``, and a new one
starts from the newest held state. Every call is awaited from the trainer's
loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch

from asynca3c.config import Config
from asynca3c.core.learner import Learner, LearnerSpec
from asynca3c.core.model import ActorCritic
from asynca3c.errors import LearnerError
from asynca3c.runtime.learner_client import LearnerDied, RestartingLearner
from asynca3c.runtime.learner_worker import answer
from asynca3c.runtime.ray_shards import connect, import_ray, remote_class, short_error, writable

#: Longest wait for the learner actor to be placed and built.
START_TIMEOUT = 120.0


class LearnerActor:
    """A ``Learner`` inside a Ray actor (made remote by ``RayLearnerWorker``)."""

    def __init__(self) -> None:
        self._learner: Learner | None = None

    def pid(self) -> int:
        return os.getpid()

    def request(self, op: str, arg) -> Any:
        self._learner, reply = answer(self._learner, op, arg)
        return reply


class RayLearnerWorker:
    """One learner actor; ``_request`` raises ``LearnerDied`` once it is gone."""

    def __init__(self, spec: LearnerSpec, address: str, gpus: float):
        self._spec, self._address, self._gpus = spec, address, gpus
        self._actor: Any = None
        self.pid: int | None = None

    async def start(self) -> None:
        await asyncio.to_thread(connect, self._address)
        ray = import_ray()
        self._actor = remote_class(LearnerActor).options(num_cpus=1, num_gpus=self._gpus).remote()
        try:
            async with asyncio.timeout(START_TIMEOUT):
                self.pid = await self._actor.pid.remote()
                await self._request("init", self._spec)
        except TimeoutError:
            raise LearnerError(f"the learner's Ray actor was not placed and built within {START_TIMEOUT:.0f} s "
                               f"(it asks for 1 CPU and {self._gpus:g} GPUs: does the cluster have them free?)"
                               ) from None
        except ray.exceptions.RayActorError as e:
            raise LearnerDied(short_error(e), "Ray actor") from None

    async def _request(self, op: str, arg):
        ray = import_ray()
        if self._actor is None:
            raise LearnerDied("closed", "Ray actor")
        try:
            reply = await self._actor.request.remote(op, arg)
            if op in ("step", "learn"):  # weights from the object store are read-only
                stats, weights = reply
                reply = (stats, None if weights is None else [writable(w) for w in weights])  # None: weights_every
            return reply
        except ray.exceptions.RayActorError as e:
            raise LearnerDied(short_error(e), "Ray actor") from None
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None

    async def aclose(self) -> None:
        actor, self._actor = self._actor, None
        if actor is not None:
            import_ray().kill(actor, no_restart=True)


def make_ray_learner(model: ActorCritic, config: Config, device: torch.device,
                     on_restart: Callable[[], None] = lambda: None) -> RestartingLearner:
    """The learner as a Ray actor (one GPU when ``device`` is CUDA), restarted when it dies."""
    gpus = 1.0 if device.type == "cuda" else 0.0
    spec = LearnerSpec.of(model, config, device)
    if gpus:  # the actor sees only the GPU Ray gave it, as cuda:0, whichever index the trainer named
        spec = dataclasses.replace(spec, device="cuda")
    return RestartingLearner(spec, config.max_learner_restarts, on_restart,
                             make_worker=lambda spec: RayLearnerWorker(spec, config.ray_address, gpus))
