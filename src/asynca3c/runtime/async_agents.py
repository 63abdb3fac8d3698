"""Agents for asynchronous environments: ``reset`` and ``step`` are coroutines.

A simulator behind a network call spends its step time waiting, so each such
environment gets its own coroutine: while one awaits its environment the
others act. The coroutines of a group ask the predictor for one action each
(drawn inside its batch, see ``Predictor.choose``) and stage what they
recorded until a batch is worth queueing: n-step samples from one shared
kernel (``push_one``), or one segment column per env (vtrace).

An async environment has ``observation_space``, ``action_space``,
``async reset(seed=None) -> (obs, info)``, ``async step(action) -> (obs,
reward, terminated, truncated, info)`` and optionally ``close()`` (plain or
coroutine) and ``spec.reward_threshold``. It ends its own episodes (no
TimeLimit wrapper is added).

Environments behind network calls fail in ways gymnasium's do not: each
``reset`` and ``step`` is bounded by ``env_step_timeout``, and an env that
raises, hangs or answers with unusable numbers is a fault (``runtime.faults``):
by default it is closed and replaced by a new one from the factory. A stop
lets the steps in flight finish for a short grace, then cancels them.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from asynca3c.core.envs import ObsEncoder
from asynca3c.core.messages import SampleBatch, Segment
from asynca3c.core.returns import NStepKernel
from asynca3c.core.rewards import TrainingReward
from asynca3c.errors import EnvFault
from asynca3c.runtime.agent import EpsilonSchedule
from asynca3c.runtime.faults import FaultPolicy, checked_reward, describe_exception, encode_checked
from asynca3c.runtime.predictor import Predictor
from asynca3c.runtime.progress import Progress

_ONE = np.ones(1, dtype=bool)  # a single env's step is always live

#: Longest wait for async steps in flight once a run stops (env_step_timeout when shorter); then they are
#: cancelled and their transitions dropped.
STOP_GRACE = 5.0


async def bounded(awaitable, seconds: float):
    """``await awaitable``, raising TimeoutError after ``seconds`` (0: no bound)."""
    if not seconds:
        return await awaitable
    async with asyncio.timeout(seconds):
        return await awaitable


async def close_env(env, seconds: float) -> None:
    """Close one env (plain or coroutine ``close``), bounded; its errors are not the run's concern."""
    close = getattr(env, "close", None)
    if close is None:
        return
    try:
        result = close()
        if inspect.isawaitable(result):
            await bounded(result, seconds or STOP_GRACE)
    except Exception:  # noqa: S110 - closing a faulty or finished env; nothing to recover
        pass


class AsyncEnvs:
    """The environments of one group; ``aclose`` closes each once (plain or coroutine ``close``, bounded)."""

    def __init__(self, envs: list, close_timeout: float = STOP_GRACE):
        self.envs = envs
        self.num_envs = len(envs)
        self.close_timeout = close_timeout
        self._closed = False

    async def aclose(self) -> None:
        """All at once, each bounded: envs hung in ``close`` cost one grace, not one each."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(close_env(env, self.close_timeout) for env in self.envs))


class _NStepRecorder:
    """n-step samples from one kernel shared by the group (``push_one``): a ring per env holds its last
    steps, enough for any open window and its bootstrap."""

    def __init__(self, num_envs: int, n_step: int, gamma: float, action_dtype):
        self.kernel = NStepKernel(num_envs, n_step, gamma)
        self.R = n_step + 2
        self.action_dtype = action_dtype
        # history[i][(kernel step + offset) % R] = (obs row, action, behaviour log-prob, version)
        self.history: list[list] = [[None] * self.R for _ in range(num_envs)]
        self.offset = [0] * num_envs  # +1 per episode: the reset observation takes a slot of its own
        self.t = [0] * num_envs  # kernel step + offset of the current observation

    def begin(self, i: int, obs: np.ndarray) -> None:
        self.history[i][self.t[i] % self.R] = (obs, None, None, None)

    def step(self, i, obs, action, logp, version, reward, terminated, truncated, next_obs, state=None) -> list:
        """``state`` is ignored: n-step windows carry no recurrent state (the config refuses the pair)."""
        R, h, t = self.R, self.history[i], self.t[i]
        h[t % R] = (obs, action, logp, version)
        h[(t + 1) % R] = (next_obs, None, None, None)
        self.t[i] = t + 1
        count = self.kernel.push_one(i, reward, terminated, truncated)
        k, off = self.kernel, self.offset[i]
        out = []
        for start, boot, ret, disc in zip(k.start[:count].tolist(), k.boot[:count].tolist(),
                                          k.returns[:count].tolist(), k.discounts[:count].tolist(), strict=True):
            o, a, lp, v = h[(start + off) % R]
            out.append((o, a, ret, disc, h[(boot + off) % R][0], v, lp))
        return out

    def reset(self, i: int, obs: np.ndarray) -> list:
        """The reset observation takes a slot of its own; nothing is complete yet."""
        self.offset[i] += 1
        self.t[i] += 1
        self.begin(i, obs)
        return []

    def restart(self, i: int, obs: np.ndarray) -> None:
        """Env ``i`` was replaced: its open window is dropped and ``obs`` starts anew."""
        self.kernel.drop(i)
        self.reset(i, obs)

    def message(self, staged: list) -> SampleBatch:
        obs, action, ret, disc, boot, version, logp = zip(*staged, strict=True)
        return SampleBatch(
            obs=np.concatenate(obs), action=np.array(action, self.action_dtype), ret=np.array(ret, np.float32),
            discount=np.array(disc, np.float32), boot_obs=np.concatenate(boot),
            version=np.array(version, np.int64), behaviour_logp=np.array(logp, np.float32))


class _SegmentRecorder:
    """Segments of T steps, one column per env; an env's episode end is followed by an invalid step
    whose next observation is the reset one, exactly the layout a NEXT_STEP-autoreset vector env gives
    (see ``Segment``), so the learner treats both kinds alike. A recurrent policy's state entering a
    segment's first row is its ``state0``: zeros at a (re)start and after an invalid step, else the state
    the last action left."""

    def __init__(self, num_envs: int, T: int, action_shape: tuple, action_dtype, state_size: int = 0):
        self.T, self.action_shape, self.action_dtype = T, action_shape, action_dtype
        self.state_size = state_size
        self.segs: dict[int, Segment] = {}  # env -> the segment it is filling (from begin on)
        self.t = [0] * num_envs
        self.version = [0] * num_envs  # the last version that acted: what an invalid step is tagged with

    def begin(self, i: int, obs: np.ndarray, state: np.ndarray | None = None) -> None:
        """A new segment of env ``i`` from row ``obs``, entered with ``state`` [1, S] (None: zeros)."""
        self.segs[i] = Segment.empty(self.T, 1, obs.shape[1:], self.action_shape, self.action_dtype,
                                     self.state_size, obs.dtype)
        self.segs[i].obs[0] = obs
        if state is not None and self.state_size:
            self.segs[i].state0[0] = state
        self.t[i] = 0

    def _put(self, i: int, next_obs: np.ndarray, valid: bool, action=0, logp=0.0, reward=0.0,
             terminated=False, truncated=False, state: np.ndarray | None = None) -> list[Segment]:
        seg, t = self.segs[i], self.t[i]
        seg.action[t], seg.behaviour_logp[t], seg.version[t] = action, logp, self.version[i]
        seg.reward[t], seg.terminated[t], seg.truncated[t], seg.valid[t] = reward, terminated, truncated, valid
        seg.obs[t + 1] = next_obs
        self.t[i] = t + 1
        if self.t[i] < self.T:
            return []
        self.begin(i, next_obs, state)
        return [seg]

    def restart(self, i: int, obs: np.ndarray) -> None:
        """Env ``i`` was replaced: its partial segment is dropped and ``obs`` starts a new one."""
        self.begin(i, obs)

    def step(self, i, obs, action, logp, version, reward, terminated, truncated, next_obs,
             state: np.ndarray | None = None) -> list[Segment]:
        """One valid step; ``state``: the recurrent state the action left (entering ``next_obs``)."""
        self.version[i] = version
        return self._put(i, next_obs, True, action, logp, reward, terminated, truncated, state)

    def reset(self, i: int, obs: np.ndarray) -> list[Segment]:
        """The invalid step between episodes: no action taken, no reward, the reset observation next (entered
        with a zero state)."""
        return self._put(i, obs, False)

    def message(self, staged: list) -> Segment:
        return Segment.concat(staged)


class AsyncEnvAgents:
    """One coroutine per async environment; together they act like one agent of the trainer. They ship
    n-step samples, or segments of ``segment_length`` steps when that is set (vtrace)."""

    def __init__(self, *, envs: list, encoder: ObsEncoder, policy: Predictor, queue: asyncio.Queue | None,
                 n_step: int, gamma: float, epsilon: EpsilonSchedule, progress: Progress, seed: int,
                 reward: TrainingReward | None = None, segment_length: int | None = None,
                 faults: FaultPolicy | None = None, make_env: Callable[[], Any] | None = None,
                 step_timeout: float = 0.0, name: str = "agent"):
        """``make_env`` replaces an env after a fault (without it every fault stops the run);
        ``step_timeout``: seconds a ``reset`` or ``step`` may take (0: no bound)."""
        self.envs = AsyncEnvs(envs, min(step_timeout, STOP_GRACE) if step_timeout else STOP_GRACE)
        self.reward = reward or TrainingReward()  # what the learner learns from
        self.encode, self.policy, self.queue = encoder, policy, queue
        actions = policy.actions
        # a recurrent policy's state per env is kept by its coroutine (zeros at each episode's start)
        self.state_size = int(getattr(policy, "recurrent", False) and policy.model.state_size)
        self.recorder: _NStepRecorder | _SegmentRecorder
        if segment_length is None:
            self.recorder = _NStepRecorder(len(envs), n_step, gamma, actions.dtype)
            self.batch = max(32, min(256, 8 * len(envs)))  # samples per queued batch: bigger groups, bigger batches
        else:
            self.recorder = _SegmentRecorder(len(envs), segment_length, actions.shape, actions.dtype,
                                             self.state_size)
            self.batch = len(envs)  # env columns per queued segment
        self.epsilon, self.progress = epsilon, progress
        self.seed = seed
        self.faults = faults or FaultPolicy(False, 0, progress)
        self.make_env, self.step_timeout, self.name = make_env, step_timeout, name
        self.rng = np.random.default_rng(seed)  # seeds of replacement envs
        self.stopping = False
        self._stopped = asyncio.Event()
        self._staged: list = []

    def stop(self) -> None:
        """Every coroutine finishes its current step (or is cancelled after a short grace), then ``run``
        returns."""
        self.stopping = True
        self._stopped.set()

    async def aclose(self) -> None:
        """Close the environments (also when ``run`` never started); closing twice is harmless."""
        await self.envs.aclose()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                drives = [tg.create_task(self._drive(i), name=f"asynca3c-async-env-{i}")
                          for i in range(self.envs.num_envs)]
                tg.create_task(self._cut_off(drives), name="asynca3c-async-env-stop")
            await self._flush()
        finally:
            await self.envs.aclose()

    async def _cut_off(self, drives: list[asyncio.Task]) -> None:
        """Once stopped, give the steps in flight a grace, then cancel what still waits (a hung env)."""
        await self._stopped.wait()
        grace = min(self.step_timeout, STOP_GRACE) if self.step_timeout else STOP_GRACE
        _, late = await asyncio.wait(drives, timeout=grace)
        for task in late:
            task.cancel()

    async def _reset_checked(self, i: int, seed: int | None) -> tuple[np.ndarray | None, str | None, Exception | None]:
        """Reset env ``i``: its observation row, or why it faulted (and the env's exception)."""
        try:
            raw, _ = await bounded(self.envs.envs[i].reset(seed=seed), self.step_timeout)
            obs, what = encode_checked(self.encode, _rows(raw), 1)
            return obs, (what + " (in reset)" if what else None), None
        except Exception as exc:
            return None, describe_exception(exc) + " (in reset)", exc

    async def _start(self, i: int, seed: int | None, replacing: bool) -> np.ndarray:
        """Reset env ``i`` and begin recording from its observation; a reset that faults is handled like a
        step that does (a loop, not a recursion: the fault policy bounds it)."""
        while True:
            obs, what, cause = await self._reset_checked(i, seed)
            if what is None and obs is not None:
                if replacing:
                    self.recorder.restart(i, obs)
                else:
                    self.recorder.begin(i, obs)
                return obs
            await self._remake(i, what or "no observation", cause)
            seed, replacing = int(self.rng.integers(2**31)), True

    async def _replace(self, i: int, what: str, cause: BaseException | None = None) -> np.ndarray:
        """A fault of env ``i``: stop (the policy raises), or replace it and start over from a fresh seed;
        its partial segment is dropped."""
        await self._remake(i, what, cause)
        return await self._start(i, int(self.rng.integers(2**31)), replacing=True)

    async def _remake(self, i: int, what: str, cause: BaseException | None) -> None:
        """Count the fault (the policy raises when the run must stop), close env ``i``, make a new one; a
        factory that fails is one more fault."""
        where = f"{self.name}, async env {i} ({self.encode.spec.env_id})"
        make_env = self.make_env
        if make_env is None and self.faults.restart:
            what += " (this agent cannot remake its environments)"
        while True:
            self.faults.record(where, what, cause)
            if make_env is None:
                raise EnvFault(f"{where}: {what}") from cause
            await close_env(self.envs.envs[i], STOP_GRACE)
            try:
                self.envs.envs[i] = make_env()
                return
            except Exception as exc:
                what, cause = f"making a replacement failed: {describe_exception(exc)}", exc

    async def _drive(self, i: int) -> None:
        """Step one environment: act, await its step, record the transition, stage what is complete."""
        progress, rec, timeout = self.progress, self.recorder, self.step_timeout
        obs = await self._start(i, self.seed + i, replacing=False)
        ep_ret, ep_len, explored = 0.0, 0, False  # explored: epsilon > 0 at a step, so the episode is not judged
        state: np.ndarray | None = None  # a recurrent policy's, entering obs (None: an episode's start, zeros)
        while not self.stopping:
            eps = self.epsilon(progress.env_steps)
            explored |= eps > 0
            action, logp, version, next_state = await self.policy.choose(obs, eps, state)
            cause: Exception | None = None
            try:
                raw, reward, terminated, truncated, _ = await bounded(
                    self.envs.envs[i].step(self.policy.actions.to_env(action)), timeout)
                reward, terminated, truncated = float(reward), bool(terminated), bool(truncated)
                next_obs, fault = encode_checked(self.encode, _rows(raw), 1)
                if fault is None:
                    scaled, fault = checked_reward(np.array([reward]), _ONE, self.reward, next_obs)
                    trained = float(scaled[0])
            except Exception as exc:  # the env's own error, its timeout, or what it returned: a fault
                fault, cause = describe_exception(exc), exc
            if fault is not None:
                obs = await self._replace(i, fault, cause)
                ep_ret, ep_len, explored, state = 0.0, 0, False, None
                continue
            if next_state is not None:  # a row of the predictor's batch: copied, so the batch can go
                state = next_state.copy()
            self._staged += rec.step(i, obs, action, logp, version, trained, terminated, truncated, next_obs, state)
            obs = next_obs
            progress.env_steps += 1
            ep_ret += reward
            ep_len += 1
            if terminated or truncated:
                progress.add_episode(ep_ret, not explored, ep_len)
                ep_ret, ep_len, explored, state = 0.0, 0, False, None
                obs = await self._next_episode(i)
            if len(self._staged) >= self.batch:
                await self._flush()

    async def _next_episode(self, i: int) -> np.ndarray:
        """Reset env ``i`` after an episode end: its invalid step between episodes is recorded."""
        obs, what, cause = await self._reset_checked(i, None)
        if what is not None or obs is None:
            return await self._replace(i, what or "no observation", cause)
        self._staged += self.recorder.reset(i, obs)
        return obs

    async def _flush(self) -> None:
        staged, self._staged = self._staged, []
        if staged and self.queue is not None:
            await self.queue.put(self.recorder.message(staged))


def _rows(raw):
    """One observation as a batch of one, for the encoder."""
    return np.asarray(raw)[None] if not np.isscalar(raw) else np.array([raw])


async def evaluate_async_envs(make_env: Callable[[], Any], policy: Predictor, encoder: ObsEncoder,
                              episodes: int, seed: int, returns: list[float], *, max_steps: int = 0,
                              step_timeout: float = 0.0, on_fault: Callable[[str], None] | None = None) -> None:
    """Play ``episodes`` fresh episodes without epsilon, each on its own env, concurrently, appending each
    return as its episode ends (a cancelled evaluation keeps those). An episode is cut off after
    ``max_steps`` steps (0: never). One whose env faults (raises, times out, unusable numbers) is left
    out and reported to ``on_fault`` (without it, the fault is raised); errors of the policy are raised."""

    async def env_call(env, awaitable, what: str):
        try:
            raw, *rest = await bounded(awaitable, step_timeout)
            obs, fault = encode_checked(encoder, _rows(raw), 1)
            rest = [float(rest[0]), bool(rest[1] or rest[2])] if rest[1:] else rest
        except Exception as exc:
            raise _EpisodeFault(f"{what}: {describe_exception(exc)}") from exc
        if fault is not None:
            raise _EpisodeFault(f"{what}: {fault}")
        return obs, rest

    async def episode(j: int) -> None:
        env = make_env()
        try:
            obs, _ = await env_call(env, env.reset(seed=seed + j), f"evaluation episode {j}, reset")
            total, done, steps, state = 0.0, False, 0, None
            while not done and not (max_steps and steps >= max_steps):
                action, _, _, state = await policy.choose(obs, 0.0, state)
                obs, (reward, done) = await env_call(env, env.step(policy.actions.to_env(action)),
                                                     f"evaluation episode {j}, step {steps}")
                total += reward
                steps += 1
            returns.append(total)
        except _EpisodeFault as fault:
            if on_fault is None:
                raise EnvFault(str(fault)) from fault.__cause__
            on_fault(str(fault))
        finally:
            await close_env(env, step_timeout)

    try:
        async with asyncio.TaskGroup() as tg:  # a failure cancels the other episodes
            for j in range(episodes):
                tg.create_task(episode(j))
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None


class _EpisodeFault(Exception):
    """An evaluation episode's environment faulted; the message says where and how."""
