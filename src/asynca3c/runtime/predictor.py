"""Batched inference: one forward pass answers every agent that is waiting.

Per-agent ``predict`` calls were the main cost of the seed's design; a small
MLP costs about the same for 1 row as for hundreds, so the predictor gathers
the observations of all agents that are ready and runs one forward for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np
import torch

from asynca3c.core.actions import DiscreteActions, GaussianActions
from asynca3c.core.model import ActorCritic
from asynca3c.errors import LearnerError
from asynca3c.runtime.work_threads import WorkThreads, in_thread


class Predictor:
    """Holds the acting copy of the network (CPU) and answers ``infer`` requests.

    A CNN's forward pass takes milliseconds (the Nature CNN: about 10 ms for 32
    frames on one core), so for a CNN it runs in a worker thread (torch releases
    the GIL in its kernels) and the loop stays responsive meanwhile; new weights
    that arrive during such a pass are adopted right after it, never under it.
    """

    def __init__(self, model: ActorCritic, actions: DiscreteActions | GaussianActions, seed: int = 0,
                 offload: bool | None = None, work: WorkThreads | None = None):
        """``offload``: run forward passes off the loop (default: for a CNN), in ``work``'s threads
        (default: asyncio's)."""
        self.offload = getattr(model, "encoder", "mlp") != "mlp" if offload is None else offload
        self._in_thread = in_thread(work)
        self._computing = False  # a forward pass is reading the weights in a thread
        self._deferred: tuple[int, Callable[[], None]] | None = None  # the newest weights, adopted after it
        self.model = model.eval()
        self.actions = actions
        self.version = 0
        # (observation rows, future, epsilon, recurrent state rows or None): epsilon None asks for
        # probabilities, a number for one action
        self._pending: list[tuple[np.ndarray, asyncio.Future, float | None, np.ndarray | None]] = []
        self._inflight: list[tuple[np.ndarray, asyncio.Future, float | None, np.ndarray | None]] = []
        self.recurrent = model.state_size > 0
        self.rng = np.random.default_rng(seed)
        self._wake = asyncio.Event()
        self._pass_ended = asyncio.Event()  # set as each forward pass in a thread ends (``settle`` waits on it)
        self._failed: BaseException | None = None
        self._watchers: list[asyncio.Event] = []

    def watch(self) -> asyncio.Event:
        """An event set whenever newer weights are adopted (the watcher clears it): how acting shards
        learn that there is a version to send on."""
        event = asyncio.Event()
        self._watchers.append(event)
        return event

    def unwatch(self, event: asyncio.Event) -> None:
        if event in self._watchers:
            self._watchers.remove(event)

    def fail(self, exc: BaseException) -> None:
        """Answer every waiting and every later request with ``exc`` (the run ended or broke)."""
        self._failed = exc
        pending, self._pending = self._inflight + self._pending, []
        for _, fut, _, _ in pending:
            if not fut.done():
                fut.set_exception(exc)

    def set_weights(self, weights: Sequence[torch.Tensor | np.ndarray] | None, version: int) -> None:
        """Adopt a finished snapshot; older snapshots arriving late, and replies without weights
        (``weights_every``), are ignored."""
        if weights is None or version <= self.version:
            return
        if self._computing:  # a forward pass is reading the weights in a thread: adopt these after it
            if self._deferred is None or version > self._deferred[0]:
                self._deferred = (version, lambda: self.set_weights(weights, version))
            return
        tensors = [torch.as_tensor(w) for w in weights]
        with torch.no_grad():
            torch._foreach_copy_(self.model.shipped(), tensors)
        self.version = version
        for event in self._watchers:
            event.set()

    def adopt_state(self, model_state: dict, version: int) -> None:
        """Adopt the learner's whole network state (``Learner.state()['model']``) as policy ``version``: the
        newest weights when replies skip them (``weights_every``)."""
        if version < self.version:
            return
        if self._computing:  # as in set_weights: never under a forward pass
            if self._deferred is None or version >= self._deferred[0]:
                self._deferred = (version, lambda: self.adopt_state(model_state, version))
            return
        self._deferred = None
        self.model.load_state_dict(model_state)
        self.version = version
        for event in self._watchers:
            event.set()

    async def infer(self, obs: np.ndarray) -> tuple[np.ndarray, int]:
        """Policy parameters per row (probabilities, or Gaussian ``[mean | std]``) and the policy version."""
        params, version, _ = await self._request(obs, None, None)
        return params, version

    async def infer_recurrent(self, obs: np.ndarray, state: np.ndarray | None
                              ) -> tuple[np.ndarray, int, np.ndarray | None]:
        """``infer`` for a recurrent policy: each row also gives its state [rows, state_size] (None: an
        episode's start) and gets the next one back, batched with every other request. A feed-forward
        policy ignores the state and gives None."""
        return await self._request(obs, None, state)

    async def choose(self, row: np.ndarray, epsilon: float,
                     state: np.ndarray | None = None) -> tuple[int | list[float], float, int, np.ndarray | None]:
        """One action for one observation row [1, obs_dim], drawn in the batch (cheaper than
        sampling per caller): (action, its log-probability under the behaviour policy (epsilon
        included), policy version, the next recurrent state (None for a feed-forward policy))."""
        return await self._request(row, epsilon, state)

    async def _request(self, obs: np.ndarray, epsilon: float | None, state: np.ndarray | None):
        if self._failed is not None:
            raise self._failed
        if self.recurrent and state is None:
            state = np.zeros((len(obs), self.model.state_size), np.float32)  # an episode's start
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((obs, fut, epsilon, state))
        self._wake.set()
        return await fut

    async def run(self) -> None:
        """Serve requests until cancelled."""
        try:
            while True:
                await self._wake.wait()
                # Yield until no more requests arrive, so every ready agent joins this batch.
                seen = -1
                while seen != len(self._pending):
                    seen = len(self._pending)
                    await asyncio.sleep(0)
                self._wake.clear()
                batch, self._pending = self._pending, []
                batch = [r for r in batch if not r[1].done()]
                if self.offload and batch:
                    self._computing, self._inflight = True, batch
                    forward = asyncio.ensure_future(self._in_thread(self._compute, batch))
                    try:
                        computed = await asyncio.shield(forward)
                    except asyncio.CancelledError:  # the thread still reads the weights: swap them after it
                        forward.add_done_callback(lambda _: self._end_pass())
                        raise
                    try:
                        self._answer(batch, computed)  # tagged with the version the pass used
                    finally:
                        self._end_pass()
                    self._inflight = []  # answered (if _answer raised, run's finally cancels them)
                else:
                    self._answer(batch)
        finally:
            for _, fut, _, _ in self._inflight + self._pending:
                fut.cancel()
            self._inflight = []

    async def settle(self) -> None:
        """Return once weights that wait for a forward pass in a thread have been adopted: then nothing
        writes the model until the next ``set_weights`` (the final evaluation reads it from a thread)."""
        while self._deferred is not None:
            self._pass_ended.clear()
            await self._pass_ended.wait()

    def _end_pass(self) -> None:
        """A forward pass in a thread ended: adopt the weights that arrived meanwhile."""
        self._computing = False
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            deferred[1]()
        self._pass_ended.set()

    def _compute(self, batch: list[tuple[np.ndarray, asyncio.Future, float | None, np.ndarray | None]]
                 ) -> tuple[np.ndarray, np.ndarray | None] | BaseException:
        """The forward pass for ``batch``: (action parameters, next states or None), or the error it met.
        Touches no future, so it can run in a thread."""
        try:
            obs = np.concatenate([r[0] for r in batch]) if len(batch) > 1 else batch[0][0]
            state = None
            if self.recurrent:
                state = torch.from_numpy(np.concatenate([r[3] for r in batch]) if len(batch) > 1 else batch[0][3])
            with torch.inference_mode():
                out, _, next_state = self.model.step(torch.from_numpy(obs), state)
                probs = self.model.action_params(out).numpy()
                states = None if next_state is None else next_state.numpy()
            if not np.isfinite(probs).all():  # observations are checked before they get here: the network's fault
                raise LearnerError(f"the network (policy version {self.version}) gave non-finite action "
                                   "parameters for finite observations; lower lr or reward_scale")
        except Exception as exc:
            return exc
        return probs, states

    def _answer(self, batch: list[tuple[np.ndarray, asyncio.Future, float | None, np.ndarray | None]],
                computed: tuple[np.ndarray, np.ndarray | None] | BaseException | None = None) -> None:
        """Resolve the batch's futures with ``computed`` (the forward pass, run now when None)."""
        if not batch:
            return
        if computed is None:
            computed = self._compute(batch)
        if isinstance(computed, BaseException):
            for _, fut, _, _ in batch:
                if not fut.done():
                    fut.set_exception(computed)
            self.fail(computed)  # every later request gets the same error instead of waiting forever
            return
        probs, states = computed
        rows = np.fromiter((len(r[0]) for r in batch), np.int64, len(batch))
        offsets = np.cumsum(rows) - rows
        chooser = np.fromiter((r[2] is not None for r in batch), bool, len(batch))
        if chooser.any():
            idx = offsets[chooser]
            eps = np.fromiter((r[2] for r in batch if r[2] is not None), np.float64, len(idx))
            actions, logp = self.actions.choose(probs[idx], eps, self.rng)
            choices = iter(zip(actions.tolist(), logp.tolist(), strict=True))
        version = self.version
        for (o, fut, epsilon, _), i in zip(batch, offsets.tolist(), strict=True):
            rows_state = None if states is None else states[i:i + len(o)]
            if epsilon is None:
                result: tuple = (probs[i:i + len(o)], version, rows_state)
            else:
                action, p = next(choices)
                result = (action, p, version, rows_state)
            if not fut.done():  # its caller may have gone while the pass ran off the loop
                fut.set_result(result)
