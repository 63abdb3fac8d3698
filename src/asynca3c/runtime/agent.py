"""Agent coroutines: step a vector of environments with the shared policy and ship what they saw.

One loop serves both algorithms; what differs is how transitions become
messages. ``Agent`` turns them into n-step samples with the compiled kernel
(``SampleBatch``, the seed's A3C); ``SegmentAgent`` ships fixed-length
``Segment``s of ``[T, envs]`` steps whose targets the learner computes with
V-trace. The agent's inputs are a policy (something with ``async infer(obs)``)
and its outputs go to a queue (anything with ``async put``), so it can later
move out of process.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from asynca3c.core.actions import Actions
from asynca3c.core.envs import ObsEncoder
from asynca3c.core.messages import SampleBatch, Segment
from asynca3c.core.returns import NStepKernel
from asynca3c.core.rewards import TrainingReward
from asynca3c.errors import EnvFault
from asynca3c.runtime.faults import FaultPolicy, checked_reward, describe_exception, encode_checked
from asynca3c.runtime.progress import Progress
from asynca3c.runtime.work_threads import WorkThreads, in_thread


def _close_quietly(envs) -> None:
    """Close environments that faulted; their own errors in close are no longer of interest."""
    try:
        envs.close()
    except Exception:  # noqa: S110 - a broken env may fail to close; it is being replaced
        pass


class EpsilonSchedule:
    """Linear decay from ``start`` to ``end`` over ``steps`` environment steps (all agents)."""

    def __init__(self, start: float, end: float, steps: int):
        self.start, self.end, self.steps = start, end, steps

    def __call__(self, env_steps: int) -> float:
        if self.steps <= 0 or env_steps >= self.steps:
            return self.end
        return self.start + (self.end - self.start) * env_steps / self.steps


class Outbox(Protocol):
    """Where an agent's messages go: an ``asyncio.Queue``, or the deterministic mode's direct learner."""

    async def put(self, item: Any) -> None: ...


class _VectorAgent:
    """The acting loop shared by both kinds: infer, choose (epsilon mixed in), step, count episodes.
    A step that faults (see ``runtime.faults``) is never recorded: the policy stops the run, or the
    whole vector is replaced and its unfinished segment dropped."""

    def __init__(self, *, envs, encoder: ObsEncoder, policy, actions: Actions, queue: Outbox | None,
                 epsilon: EpsilonSchedule, progress: Progress, seed: int, reward: TrainingReward | None = None,
                 step_limit: int = 0, faults: FaultPolicy | None = None, make_envs: Callable[[], Any] | None = None,
                 name: str = "agent", work: WorkThreads | None = None):
        """``step_limit``: return once the run's step count reaches it (0: no limit); the deterministic
        mode stops at the exact step this way rather than when the budget monitor next looks.
        ``make_envs`` makes a replacement vector after a fault (without it every fault stops the run).
        ``work``: the run's threads for steps and rebuilds off the loop (default: asyncio's)."""
        self.envs, self.encode, self.policy, self.queue = envs, encoder, policy, queue
        self.step_limit = step_limit
        self.actions = actions
        self.reward = reward or TrainingReward()  # what the learner learns from
        self.num_envs = envs.num_envs
        self.epsilon, self.progress = epsilon, progress
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.stopping = False
        self.faults = faults or FaultPolicy(False, 0, progress)
        self.make_envs, self.name = make_envs, name
        # Pixel environments (an emulator stepping 16 games: milliseconds) step in a thread, off the loop;
        # ale-py's vector env releases the GIL while its threads emulate
        self.offload_step = encoder.spec.obs_kind == "image"
        self._env_call: asyncio.Future | None = None  # the call on the environments now in a thread (_on_envs)
        self._in_thread = in_thread(work)
        # A recurrent policy's state per env, entering the next row: zeroed at every (re)start and after
        # every autoreset step, exactly where the learner's unroll zeroes it. Width 0: feed-forward.
        self.state_size = int(getattr(policy, "recurrent", False) and policy.model.state_size)
        self.core_state = np.zeros((self.num_envs, self.state_size), np.float32)

    def stop(self) -> None:
        """Finish the current step, then return from ``run``."""
        self.stopping = True

    async def aclose(self) -> None:
        """Close the environments (also when ``run`` never started); closing twice is harmless."""
        self.envs.close()

    async def run(self) -> None:
        V = self.num_envs
        try:
            obs = await self._reset(self.seed)
            resetting = np.zeros(V, dtype=bool)  # this step is an autoreset step
            explored = np.zeros(V, dtype=bool)  # epsilon was > 0 at a step of this episode: not judged
            ep_ret = np.zeros(V)
            ep_len = np.zeros(V, dtype=np.int64)
            while not self.stopping and not (self.step_limit and self.progress.env_steps >= self.step_limit):
                if self.state_size:
                    params, version, next_state = await self.policy.infer_recurrent(obs, self.core_state)
                else:
                    params, version = await self.policy.infer(obs)
                eps = self.epsilon(self.progress.env_steps)
                actions, logp = self.actions.choose(params, eps, self.rng)
                live = ~resetting
                cause: Exception | None = None
                try:
                    if self.offload_step:
                        raw, rew, term, trunc, info = await self._on_envs(self.envs.step,
                                                                          self.actions.to_env(actions))
                    else:
                        raw, rew, term, trunc, info = self.envs.step(self.actions.to_env(actions))
                    rew = np.asarray(rew, dtype=np.float64).reshape(V)
                    term = np.asarray(term, dtype=bool).reshape(V)
                    trunc = np.asarray(trunc, dtype=bool).reshape(V)
                    next_obs, fault = encode_checked(self.encode, raw, V)
                    if fault is None:
                        trained, fault = checked_reward(rew, live, self.reward, next_obs)
                except Exception as exc:  # the env's own error, or what it returned: a fault
                    fault, cause = describe_exception(exc), exc
                if fault is not None:
                    obs = await self._replace(fault, cause)
                    resetting[:], explored[:], ep_ret[:], ep_len[:] = False, False, 0.0, 0
                    continue
                obs = next_obs
                if self.state_size:  # the row after an autoreset step is an episode's first
                    self.core_state = np.where(live[:, None], next_state, np.float32(0.0))
                message = self._record(actions, logp, version, trained, term, trunc, live, obs)
                self.progress.env_steps += int(live.sum())
                if eps > 0:
                    explored |= live
                ep_ret += np.where(live, rew, 0.0)
                ep_len += live
                done = (term | trunc) & live
                if "game_over" in info:  # episodic life (Atari): report whole games, not lives
                    done = np.asarray(info["game_over"], dtype=bool).reshape(V)
                if done.any():
                    for ret, length, judged in zip(ep_ret[done].tolist(), ep_len[done].tolist(),
                                                   (~explored[done]).tolist()):
                        self.progress.add_episode(ret, judged, length)
                    ep_ret[done] = 0.0
                    ep_len[done] = 0
                    explored[done] = False
                resetting = term | trunc
                if message is not None and self.queue is not None:
                    await self.queue.put(message)
        finally:
            if self._env_call is not None and not self._env_call.done():  # cancelled twice mid-call: let the
                await asyncio.wait([self._env_call])  # thread finish before its environments close under it
            self.envs.close()

    async def _reset(self, seed: int) -> np.ndarray:
        """Reset every env and start a new segment from their observations. A reset that faults is
        handled like a step that does (a loop, not a recursion: the fault policy bounds it)."""
        while True:
            try:
                if self.offload_step:  # 16 emulators' first reset takes seconds: off the loop, as steps
                    raw, _ = await self._on_envs(functools.partial(self.envs.reset, seed=seed))
                else:
                    raw, _ = self.envs.reset(seed=seed)
                obs, what = encode_checked(self.encode, raw, self.num_envs)
                cause = None
            except Exception as exc:
                what, cause = describe_exception(exc), exc
            if what is None:
                self.core_state = np.zeros((self.num_envs, self.state_size), np.float32)
                self._begin(obs)
                return obs
            await self._remake(what + " (in reset)", cause)
            seed = int(self.rng.integers(2**31))

    async def _replace(self, what: str, cause: BaseException | None = None) -> np.ndarray:
        """A fault: stop (the policy raises), or replace the vector and start over from a fresh seed's
        first observations; the unfinished segment is dropped."""
        await self._remake(what, cause)
        return await self._reset(int(self.rng.integers(2**31)))

    async def _remake(self, what: str, cause: BaseException | None) -> None:
        """Count the fault (the policy raises when the run must stop), close the vector and make a new one,
        off the loop; a factory that fails is one more fault."""
        make_envs = self.make_envs
        if make_envs is None and self.faults.restart:
            what += " (this agent cannot remake its environments)"
        while True:
            self.faults.record(f"{self.name} ({self.num_envs} x {self.encode.spec.env_id})", what, cause)
            if make_envs is None:
                raise EnvFault(f"{self.name}: {what}") from cause
            await self._on_envs(_close_quietly, self.envs)
            try:
                self.envs = await self._on_envs(make_envs)
                return
            except asyncio.CancelledError:  # a vector made after all must not outlive the run unclosed
                made = self._env_call
                if made is not None and made.done() and not made.cancelled() and made.exception() is None:
                    _close_quietly(made.result())
                raise
            except Exception as exc:
                what, cause = f"making a replacement failed: {describe_exception(exc)}", exc

    async def _on_envs(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a thread, as the one call on the environments in flight: a cancel waits for it
        to end (it cannot be stopped half-way), so ``run``'s finally never closes the vector under it."""
        self._env_call = asyncio.ensure_future(self._in_thread(fn, *args))
        try:
            return await asyncio.shield(self._env_call)
        except asyncio.CancelledError:
            await asyncio.wait([self._env_call])
            raise

    def _begin(self, obs: np.ndarray) -> None:
        """The first observations, before any step (and after a fault replaced the envs)."""
        raise NotImplementedError

    def _record(self, actions, logp, version: int, reward: np.ndarray, term: np.ndarray, trunc: np.ndarray,
                live: np.ndarray, obs: np.ndarray) -> SampleBatch | Segment | None:
        """One step of every env (``live``: not an autoreset step); a message to ship, if one is complete."""
        raise NotImplementedError


class Agent(_VectorAgent):
    """n-step samples from the compiled kernel: rings hold each env's last n+1 steps."""

    def __init__(self, *, n_step: int, gamma: float, **kw):
        super().__init__(**kw)
        self.n_step, self.gamma = n_step, gamma  # the kernel is made by _begin, at every (re)start

    def _begin(self, obs: np.ndarray) -> None:
        """Fresh rings and kernel: after a fault the windows of the replaced envs are dropped."""
        self.kernel = NStepKernel(self.num_envs, self.n_step, self.gamma)
        self._u = 0
        R, V = self.kernel.n + 1, self.num_envs
        self.obs_ring = np.empty((R, V, *obs.shape[1:]), dtype=obs.dtype)
        self.act_ring = np.zeros((R, V, *self.actions.shape), dtype=self.actions.dtype)
        self.logp_ring = np.zeros((R, V), dtype=np.float32)
        self.ver_ring = np.zeros(R, dtype=np.int64)
        self.obs_ring[0] = obs

    def _record(self, actions, logp, version, reward, term, trunc, live, obs) -> SampleBatch | None:
        R, u = self.kernel.n + 1, self._u
        slot = u % R
        self.act_ring[slot], self.logp_ring[slot], self.ver_ring[slot] = actions, logp, version
        self.obs_ring[(u + 1) % R] = obs
        count = self.kernel.push(reward, term, trunc, live)
        self._u = u + 1
        if not count:
            return None
        k = self.kernel
        env, start, boot = k.env[:count], k.start[:count] % R, k.boot[:count] % R
        return SampleBatch(obs=self.obs_ring[start, env], action=self.act_ring[start, env],
                           ret=k.returns[:count].astype(np.float32), discount=k.discounts[:count].astype(np.float32),
                           boot_obs=self.obs_ring[boot, env], version=self.ver_ring[start],
                           behaviour_logp=self.logp_ring[start, env])


class SegmentAgent(_VectorAgent):
    """Fixed-length segments of ``[T, envs]`` steps; consecutive segments share their boundary observation."""

    def __init__(self, *, segment_length: int, **kw):
        super().__init__(**kw)
        self.T = segment_length

    def _begin(self, obs: np.ndarray) -> None:
        """A new segment whose first row is ``obs`` (the run's first observations, or the last row of the
        segment just shipped)."""
        self.seg = Segment.empty(self.T, self.num_envs, obs.shape[1:], self.actions.shape, self.actions.dtype,
                                 self.state_size, obs.dtype)
        self.seg.obs[0] = obs
        self.seg.state0[0] = self.core_state
        self._t = 0

    def _record(self, actions, logp, version, reward, term, trunc, live, obs) -> Segment | None:
        t, seg = self._t, self.seg
        seg.action[t], seg.behaviour_logp[t], seg.version[t] = actions, logp, version
        seg.reward[t] = np.where(live, reward, 0.0)
        seg.terminated[t], seg.truncated[t], seg.valid[t] = term & live, trunc & live, live
        seg.obs[t + 1] = obs
        self._t = t + 1
        if self._t < self.T:
            return None
        self._begin(obs)
        return seg


__all__ = ["Agent", "EpsilonSchedule", "Outbox", "SegmentAgent"]
