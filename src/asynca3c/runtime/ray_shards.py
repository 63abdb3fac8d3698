"""Acting shards as Ray actors (``ray=True``): the same ``Shard`` as a worker process runs, on any node of
a Ray cluster.

``ShardActor`` is an async actor: the shard's agents and predictor run on the
actor's event loop, and the trainer pulls what they shipped with ``frames``
(which answers with a report after a second of nothing, so silence still
means a hang). Weights go into the object store once per version, whatever
the number of shards, and each actor gets that object's reference. Segments
come back as numpy arrays. The trainer awaits every call from its own loop;
nothing blocks it on ``ray.get``.

Ray is imported only when a run asks for it (``pip install 'asynca3c[ray]'``).
A run joins the Ray instance that is already initialized in its process, else
the cluster at ``ray_address`` (or ``RAY_ADDRESS``), else starts a local one.
Every node needs asynca3c installed, and an ``env_factory`` must be importable
there (or defined where cloudpickle takes it by value).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import traceback
from typing import Any

import numpy as np

from asynca3c.errors import ConfigError
from asynca3c.runtime.shard import Shard, ShardReport, ShardSpec
from asynca3c.runtime.shard_client import START_TIMEOUT, ShardClient, ShardDied
from asynca3c.runtime.wire import portable

#: Seconds ``frames`` waits for a message before it answers with a report.
BEAT = 1.0
#: Messages a shard actor holds for the trainer before its agents wait.
OUTBOX = 4
#: Most frames one ``frames`` call returns.
MAX_FRAMES = 64


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("ray=True needs the ray package: pip install 'asynca3c[ray]'") from None
    return ray


def connect(address: str) -> None:
    """Join the Ray instance this process already has, else the cluster at ``address`` (or RAY_ADDRESS),
    else start a local one. Blocks for seconds: call it off the loop."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=True)


_REMOTE: dict[type, Any] = {}


def remote_class(cls: type):
    """``ray.remote(cls)``, made once per class (not at every restart)."""
    if cls not in _REMOTE:
        _REMOTE[cls] = import_ray().remote(cls)
    return _REMOTE[cls]


class ShardActor:
    """One ``Shard`` inside a Ray actor (made remote by ``RayShard``)."""

    def __init__(self) -> None:
        self._shard: Shard | None = None
        self._out: asyncio.Queue = asyncio.Queue(OUTBOX)
        self._drive: asyncio.Task | None = None

    async def start(self, spec: ShardSpec) -> dict[str, Any]:
        """Build the shard and its agents, start acting; where it runs."""
        import ray

        shard = self._shard = Shard(spec, self._ship)
        await shard.start()
        self._drive = asyncio.get_running_loop().create_task(self._run(shard))
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    async def _ship(self, message: Any, report: ShardReport) -> None:
        await self._out.put(("msg", message, report))

    async def _run(self, shard: Shard) -> None:
        final: tuple
        try:
            await shard.run()
            final = ("stopped", shard.take_report())
        except Exception as exc:
            final = ("error", portable(exc), traceback.format_exc(), shard.take_report())
        finally:
            await shard.aclose()
        await self._out.put(final)

    async def frames(self) -> list[tuple]:
        """What the agents shipped since the last call (at least one frame): their messages, or a report
        when nothing came within ``BEAT`` seconds."""
        assert self._shard is not None, "start() first"
        try:
            first = await asyncio.wait_for(self._out.get(), BEAT)
        except TimeoutError:
            return [("report", self._shard.take_report())]
        out = [first]
        while not self._out.empty() and len(out) < MAX_FRAMES:
            out.append(self._out.get_nowait())
        return out

    async def set_weights(self, weights: list[np.ndarray], version: int) -> None:
        assert self._shard is not None, "start() first"
        self._shard.set_weights([writable(w) for w in weights], version)

    async def stop(self) -> None:
        if self._shard is not None:
            self._shard.stop()


class WeightsStore:
    """The newest weights in Ray's object store, put once per version for all shards."""

    def __init__(self) -> None:
        self._version = -1
        self._ref: Any = None

    def ref(self, version: int, weights: list[np.ndarray]):
        if version != self._version:
            self._ref, self._version = import_ray().put(weights), version
        return self._ref


class RayShard(ShardClient):
    """An acting shard as a Ray actor, restarted (as a new actor, with fresh seeds) when it dies."""

    kind = "Ray actor"

    def __init__(self, *args, options: dict[str, Any], store: WeightsStore, **kw):
        """``options``: Ray actor options (``num_cpus``, a scheduling strategy)."""
        super().__init__(*args, **kw)
        self._options, self._store = options, store
        self._actor: Any = None
        self.pid: int | None = None
        self.node: str | None = None

    async def _spawn(self, spec: ShardSpec) -> None:
        ray = import_ray()
        self._actor = remote_class(ShardActor).options(**self._options).remote()
        try:
            async with asyncio.timeout(START_TIMEOUT):
                info = await self._actor.start.remote(spec)
        except TimeoutError:
            await self._kill()
            raise ShardDied(f"was not ready within {START_TIMEOUT:.0f} s") from None
        except ray.exceptions.RayActorError as e:
            raise ShardDied(f"died before it was ready ({short_error(e)})") from None
        except ray.exceptions.RayTaskError as e:
            raise self._remote_error(e.as_instanceof_cause(), "") from None
        self.pid, self.node = info["pid"], info["node"]

    async def _next_frames(self) -> list[tuple]:
        ray = import_ray()
        try:
            frames = await self._actor.frames.remote()
        except ray.exceptions.RayActorError as e:
            raise ShardDied(f"died ({short_error(e)})") from None
        except ray.exceptions.RayTaskError as e:  # a bug in the actor's own method: the run stops with it
            raise e.as_instanceof_cause() from None
        for frame in frames:
            if frame[0] == "msg":
                message = frame[1]
                for f in dataclasses.fields(message):
                    setattr(message, f.name, writable(getattr(message, f.name)))
        return frames

    async def _send_weights(self, version: int, weights: list[np.ndarray]) -> bool:
        ray = import_ray()
        try:
            await self._actor.set_weights.remote(self._store.ref(version, weights), version)
        except ray.exceptions.RayActorError:
            return False
        return True

    def _send_stop(self) -> None:
        if self._actor is not None:
            self._actor.stop.remote()

    async def _kill(self) -> None:
        if self._actor is not None:
            import_ray().kill(self._actor, no_restart=True)

    async def _release(self) -> None:
        await self._kill()
        self._actor, self.pid, self.node = None, None, None


def writable(array: np.ndarray) -> np.ndarray:
    """``array``, copied if it is read-only: arrays from Ray's object store are, and torch warns about
    (and must not write into) such memory."""
    return array if array.flags.writeable else array.copy()


def short_error(error: BaseException) -> str:
    """The first line of a Ray error, which can run to pages."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
