"""One training run, wired: the acting copy and its predictor, the learner client, the queue, the
progress counters and the agents; and the coroutine that trains them until stopped.

``Trainer`` owns the lifecycle a host sees (start, stop, errors, ``act``,
``metrics``); a ``TrainingRun`` is what it starts. Everything that is built here
is built before the clock starts, off the event loop (the constructor and the
vector envs run in a thread), and everything the run owns is released by
``aclose``. After training, every phase is bounded: the checkpoint, then
``model.pt`` and ``summary.json``, then a final evaluation whose episodes are
cut off at ``eval_max_episode_steps`` and which a late stop request cuts short.
When a run fails, the newest learner state it can reach is still checkpointed.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import pickle
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from asynca3c.config import Config
from asynca3c.core.actions import Actions
from asynca3c.core.actions import for_spec as actions_for
from asynca3c.core.envs import EnvSpec, ObsEncoder
from asynca3c.core.evaluation import EvalResult
from asynca3c.core.messages import MetricsRow
from asynca3c.core.model import ActorCritic, cnn_too_small, describe_network
from asynca3c.core.rewards import NoveltyBonus, TrainingReward
from asynca3c.errors import Asynca3cError, ConfigError, LearnerError
from asynca3c.outputs import checkpoint
from asynca3c.outputs.run_dir import RunDirectory
from asynca3c.runtime.acting import AnyAgent, agent_seeds, make_agents
from asynca3c.runtime.agent import Agent, Outbox
from asynca3c.runtime.env_sources import EnvSource
from asynca3c.runtime.faults import FaultPolicy, describe_exception, first_error
from asynca3c.runtime.learner_client import LearnerClient, make_learner
from asynca3c.runtime.looplag import LoopLag
from asynca3c.runtime.metrics import MetricsHub
from asynca3c.runtime.predictor import Predictor
from asynca3c.runtime.progress import Progress
from asynca3c.runtime.shard import ShardSpec
from asynca3c.runtime.shard_client import ProcessShard, RestartBudget, ShardClient
from asynca3c.runtime.shard_frames import FrameRing, segment_frame_bytes
from asynca3c.runtime.shard_weights import WeightsBoard
from asynca3c.runtime.updates import STOP, DirectLearning, lr_factor, segment_update_task, update_task
from asynca3c.runtime.work_threads import WorkThreads


@dataclass
class TrainResult:
    """What a run reached; ``summary.json`` holds these fields."""

    env: str
    seed: int
    device: str
    seconds: float
    env_steps: int
    steps_per_second: float
    episodes: int
    updates: int
    solved: bool
    solved_after_seconds: float | None
    solved_after_steps: int | None
    reward_threshold: float | None
    eval_window_mean_return: float
    eval_mean_return: float
    eval_std_return: float
    eval_episodes: int
    policy_lag_mean: float
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    stop_reason: str
    env_faults: int
    learner_restarts: int
    shard_restarts: int
    nonfinite_steps: int
    config: dict = field(repr=False)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


class StopRequest:
    """The first reason given to stop a run wins; the run's main task waits on it. A request that comes
    after training ended (``ended``) cuts the final evaluation short instead."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason = "budget"
        self.ended = False
        self.cut_short = asyncio.Event()
        self._late = False  # asked again while the run was still draining

    def __call__(self, reason: str = "requested") -> None:
        """A request from outside (a host, a signal): a second one also cuts the evaluation short."""
        if not self.event.is_set():
            self.reason = reason
            self.event.set()
        elif self.ended:
            self.cut_short.set()
        else:
            self._late = True

    def reached(self, reason: str) -> None:
        """The run's own end (its budget, solved): the first reason wins, repeats change nothing."""
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def end_training(self) -> None:
        """Training is over; a request made since the first one (during the drain) cuts the evaluation."""
        self.ended = True
        if self._late:
            self.cut_short.set()


#: Seconds between fetches of the learner's state, which a restarted learner process starts from.
HOLD_EVERY = 10.0
#: Longest wait for the learner's state when saving (a learner restart takes a few seconds).
SAVE_TIMEOUT = 60.0


def encoder_for(cfg: Config, spec: EnvSpec) -> str:
    """The encoder ``cfg.encoder`` asks for, resolved against the observations: 'auto' is the Nature CNN for
    images it fits and the MLP otherwise (a small uint8 grid); a CNN over observations that are not images, or
    settings a CNN does not use, are refused naming both."""
    image = spec.obs_kind == "image"
    encoder = cfg.encoder
    if encoder == "auto":
        encoder = "nature" if image and not cnn_too_small("nature", spec.obs_shape) else "mlp"
    if encoder != "mlp" and not image:
        raise ConfigError(f"encoder={cfg.encoder!r} is not allowed for {spec.env_id!r}: a CNN needs image "
                          f"observations (a uint8 Box of shape (H, W), (H, W, C) or (C, H, W)), and it has "
                          f"{spec.obs_kind} observations of {spec.obs_dim} values; use encoder='mlp' or 'auto'")
    if encoder != "mlp" and (cfg.normalize_obs or cfg.running_obs_norm):
        raise ConfigError(f"normalize_obs and running_obs_norm are not allowed with encoder={encoder!r}: the CNN "
                          "scales pixels to [0, 1] itself; turn them off")
    return encoder


def new_network(cfg: Config, spec: EnvSpec, continuous: bool) -> ActorCritic:
    """The run's network before training: its encoder, core and heads for ``spec``'s spaces."""
    encoder = encoder_for(cfg, spec)
    bounds = (spec.obs_low, spec.obs_high) if cfg.normalize_obs and spec.obs_low else None
    if cfg.normalize_obs and spec.obs_kind == "image":  # uint8 pixels under an MLP: their range is 0-255
        bounds = ((0.0,) * spec.obs_dim, (255.0,) * spec.obs_dim)
    try:
        return ActorCritic(spec.obs_dim, spec.n_actions, cfg.hidden, continuous, bounds, core=cfg.recurrent,
                           core_size=cfg.core_size, running_norm=cfg.running_obs_norm,
                           log_std_init=cfg.log_std_init, encoder=encoder, obs_shape=spec.obs_shape,
                           separate_value=cfg.separate_value)
    except ValueError as e:  # the network's own refusals: an image too small for the CNN, a separate value there
        raise ConfigError(f"encoder={encoder!r}: {e}") from None


class TrainingRun:
    """The parts of one run and the coroutine (``train``) that drives them."""

    def __init__(self, config: Config, source: EnvSource, spec: EnvSpec, device: torch.device, *,
                 threshold: float | None, stop: StopRequest, metrics: MetricsHub, loop_lag: LoopLag,
                 run_dir: RunDirectory | None, resume: dict | None):
        cfg = self.config = config
        self.source, self.spec, self.device, self.threshold = source, spec, device, threshold
        self.stop, self.metrics, self.loop_lag, self.run_dir, self.resume = stop, metrics, loop_lag, run_dir, resume
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.actions: Actions = actions_for(spec)
        self.encode = ObsEncoder(spec)
        self.novelty = (NoveltyBonus.for_spec(spec, cfg.novelty_bins, cfg.novelty_bonus, seed=cfg.seed)
                        if cfg.novelty_bonus else None)
        model = new_network(cfg, spec, self.actions.continuous)
        if resume is not None:
            checkpoint.load_weights(model, resume["model"])
        # forward passes, env steps and copies off the loop run here, below the loop's priority
        self.work = WorkThreads(cfg.work_nice)
        self.predictor = Predictor(copy.deepcopy(model), self.actions, seed=cfg.seed + 7, work=self.work)
        self.progress = Progress(cfg.solve_window, threshold,
                                 on_solved=(lambda: stop.reached("solved")) if cfg.until_solved else None)
        self.lr = lr_factor(cfg.lr_schedule, self.progress, 0.0 if cfg.deterministic else cfg.seconds, cfg.steps)
        self.learner: LearnerClient
        if cfg.learner == "ray":
            from asynca3c.runtime.ray_learner import make_ray_learner

            self.learner = make_ray_learner(model, cfg, device, on_restart=self._count_restart)
        else:
            self.learner = make_learner(model, cfg, device, on_restart=self._count_restart, work=self.work)
        self.queue: asyncio.Queue = asyncio.Queue(cfg.queue_size)
        restart = cfg.env_faults == "restart" or (cfg.env_faults == "auto" and source.restarts_by_default)
        self.faults = FaultPolicy(restart, cfg.max_env_faults_per_minute, self.progress)
        if resume is not None:
            self.progress.restore(resume["counters"])
            self.predictor.version = int(resume["version"])
        self.agents: list[AnyAgent | ShardClient] = []
        # what process shards and the trainer exchange through shared memory: segments' frames, weights
        self.shard_frames: FrameRing | None = None
        self.shard_weights: WeightsBoard | None = None
        self._save_lock = threading.Lock()

    async def start(self) -> None:
        """Start the learner (outside the clock: a worker process imports torch) and make the agents.
        On failure the caller's ``aclose`` releases what was made."""
        resume = self.resume
        if self.config.torch_threads:  # torch's thread count is per thread: the loop's forward passes too
            torch.set_num_threads(self.config.torch_threads)
        await self.learner.start()
        if resume is not None:
            await self.learner.load({k: resume[k] for k in ("model", "optimizer", "version")})
        if self.config.shards:
            await self._start_shards()
        else:
            # made in a work thread, environments' own threads (ale-py's emulators) inherit its priority
            agents = await self.work.run(self._make_agents) if self.source.blocking_setup \
                else self._make_agents()
            self.agents = list(agents)
        if resume is not None:
            self._restore_rng(resume["rng"])
            if self.novelty is not None and "novelty_counts" in resume:
                self.novelty.restore(resume["novelty_counts"].numpy())

    async def aclose(self) -> None:
        """Release the learner (its worker process or threads), every agent's environments, then the work
        threads."""
        try:
            await self.learner.aclose()
        finally:
            try:
                for agent in self.agents:
                    await agent.aclose()
            finally:
                for shared in (self.shard_frames, self.shard_weights):
                    if shared is not None:
                        shared.close()
                await self.work.aclose()

    def row(self) -> MetricsRow:
        """The current progress row."""
        return {**self.progress.row(), "queue_depth": self.queue.qsize(),
                "loop_lag_p99_ms": self.loop_lag.p99_ms(), "loop_lag_max_ms": self.loop_lag.max_ms}

    async def train(self) -> TrainResult:
        """Act and learn until stopped; then drain, checkpoint, evaluate, write the run directory."""
        cfg, progress, queue = self.config, self.progress, self.queue
        progress.start = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as tg:
                agent_tasks = [tg.create_task(self._act(a), name=f"asynca3c-agent-{i}")
                               for i, a in enumerate(self.agents)]
                updates = [] if cfg.deterministic else [
                    tg.create_task(self._update_task(), name=f"asynca3c-optimizer-{i}") for i in range(cfg.optimizers)]
                monitor = tg.create_task(self._monitor(), name="asynca3c-monitor")
                await self.stop.event.wait()
                for a in self.agents:
                    a.stop()
                await asyncio.gather(*agent_tasks)
                for _ in updates:
                    await queue.put(STOP)
                await asyncio.gather(*updates)
                if cfg.weights_every > 1:  # the last replies may have carried no weights
                    newest = await self.learner.state()
                    self.predictor.adopt_state(newest["model"], int(newest["version"]))
                    await self.predictor.settle()  # not under the final evaluation, which reads the model
                seconds = progress.elapsed()
                monitor.cancel()
        except BaseExceptionGroup as group:
            # The first failure (an env fault, a dead learner) is the error the caller sees; any others
            # (two update tasks can fail on the same bad numbers) ride along as notes.
            error = first_error(group)
            if error is None:
                raise
            await self._rescue(error)
            raise error from None
        self.stop.end_training()
        row = self._emit()
        state = None
        if self.run_dir is not None:  # before the final evaluation: a SIGTERM grace period is short
            try:
                state = await self._save_checkpoint()
            except Exception as error:  # the learner died for good, or the disk is full: save what we can
                await self._rescue(error)
                raise
        result = TrainResult(
            env=cfg.env, seed=cfg.seed, device=str(self.device), seconds=seconds,
            env_steps=progress.env_steps, steps_per_second=progress.env_steps / seconds if seconds else 0.0,
            episodes=progress.episodes, updates=progress.updates, solved=progress.solved,
            solved_after_seconds=progress.solved_after_seconds, solved_after_steps=progress.solved_after_steps,
            reward_threshold=self.threshold, eval_window_mean_return=progress.eval_mean(),
            eval_mean_return=math.nan, eval_std_return=math.nan, eval_episodes=0,
            policy_lag_mean=progress.policy_lag_mean(),
            loop_lag_p99_ms=row["loop_lag_p99_ms"], loop_lag_max_ms=row["loop_lag_max_ms"],
            stop_reason=self.stop.reason, env_faults=progress.env_faults,
            learner_restarts=progress.learner_restarts, shard_restarts=progress.shard_restarts,
            nonfinite_steps=progress.nonfinite_steps,
            config=cfg.to_dict(),
        )
        run_dir = self.run_dir
        if run_dir is not None and state is not None:  # written now, so an abort during evaluation keeps them
            await asyncio.to_thread(run_dir.write_model, cfg, state["model"], self.network())
            await asyncio.to_thread(run_dir.write_summary, result.to_dict())
        returns = await self._final_evaluation()
        if returns:
            final = EvalResult(returns)
            result.eval_mean_return, result.eval_std_return = final.mean, final.std
            result.eval_episodes = len(returns)
        result.env_faults = progress.env_faults
        if run_dir is not None and state is not None and cfg.final_eval_episodes:
            await asyncio.to_thread(run_dir.write_summary, result.to_dict())
        return result

    async def _final_evaluation(self) -> list[float]:
        """Returns of fresh episodes without epsilon, with the last published weights: each episode cut
        off at ``eval_max_episode_steps``, the whole cut short by a stop request that comes now (the
        episodes that ended still count). An environment fault here is handled as during training."""
        cfg = self.config
        returns: list[float] = []
        if not cfg.final_eval_episodes:
            return returns
        play = asyncio.ensure_future(self.source.evaluate(
            self.predictor, cfg.final_eval_episodes, cfg.seed + 1_000_003, returns,
            max_steps=cfg.eval_max_episode_steps, step_timeout=cfg.env_step_timeout,
            on_fault=lambda what: self.faults.record("the final evaluation", what)))
        cut = asyncio.ensure_future(self.stop.cut_short.wait())
        try:
            await asyncio.wait([play, cut], return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
            if not play.done():
                play.cancel()
                await asyncio.wait([play])
        error = None if play.cancelled() else play.exception()
        if isinstance(error, Asynca3cError):  # an EnvFault the policy already counted, or the predictor failed
            raise error
        if error is not None:
            self.faults.record("the final evaluation", describe_exception(error), error)
        return returns

    async def _rescue(self, error: BaseException) -> None:
        """A failed run still leaves a loadable checkpoint: of the learner's state if it answers, else of
        the newest state held for a learner restart. Says where on ``error``."""
        if self.run_dir is None:
            return
        state: dict | None
        try:
            async with asyncio.timeout(10.0):
                state = await self.learner.state()
        except Exception:
            state = getattr(self.learner, "held_state", None)
        if state is None:
            return
        path = self.run_dir.path / checkpoint.CHECKPOINT_FILE
        try:
            await self._save_checkpoint(state)
        except Exception as e:
            error.add_note(f"saving a checkpoint failed too: {describe_exception(e)}")
            return
        error.add_note(f"the newest learner state (policy version {state['version']}) is saved in {path}")

    async def _act(self, agent: AnyAgent | ShardClient) -> None:
        await agent.run()
        if self.config.deterministic:  # its agent stopped at the step budget: the run ends there
            self.stop.reached("steps")

    def _update_task(self):
        cfg = self.config
        if cfg.algorithm == "vtrace":
            return segment_update_task(self.queue, self.learner, self.predictor, self.progress, cfg.batch_envs,
                                       self.lr)
        return update_task(self.queue, self.learner, self.predictor, self.progress, cfg.min_batch, cfg.max_batch,
                           self.lr)

    def _make_agents(self) -> list[AnyAgent]:
        """The exploring agents (epsilon per agent) and the evaluation agent (no epsilon), on this loop."""
        cfg, progress = self.config, self.progress
        seeds = agent_seeds(cfg, progress.env_steps)
        outbox: Outbox = (DirectLearning(self.learner, self.predictor, progress, cfg.batch_envs, self.lr)
                          if cfg.deterministic else self.queue)
        extra = {"step_limit": cfg.steps} if cfg.deterministic else {}
        return make_agents(cfg, self.source, actions=self.actions, encoder=self.encode, policy=self.predictor,
                           progress=progress, faults=self.faults,
                           reward=TrainingReward(cfg.reward_scale, self.novelty, cfg.reward_clip), outbox=outbox,
                           indices=range(cfg.agents), seeds=seeds[:-1], eval_seed=int(seeds[-1]), work=self.work,
                           **extra)

    async def _start_shards(self) -> None:
        """The acting shards, each ready with its agents (outside the clock); on failure the caller's
        ``aclose`` releases the ones that started."""
        cfg = self.config
        self._check_shippable()
        budget = RestartBudget(cfg.max_shard_restarts, self.progress)
        common: dict[str, Any] = dict(queue=self.queue, progress=self.progress, predictor=self.predictor, budget=budget,
                                      timeout=cfg.shard_timeout, turns=asyncio.Lock())
        shards: list[ShardClient]
        if cfg.ray:
            from asynca3c.runtime import ray_shards

            await asyncio.to_thread(ray_shards.connect, cfg.ray_address)
            store = ray_shards.WeightsStore()
            options = {"num_cpus": cfg.ray_cpus_per_shard}
            shards = [ray_shards.RayShard(i, functools.partial(self._shard_spec, i), options=options, store=store,
                                          **common) for i in range(cfg.shards)]
        else:
            # segments of tens of MB whose pages are reserved when made: off the loop
            self.shard_frames = await asyncio.to_thread(self._frame_ring)
            self.shard_weights = await asyncio.to_thread(
                WeightsBoard.for_weights, cfg.shards, [t.detach().numpy() for t in self.predictor.model.shipped()])
            shards = [ProcessShard(i, functools.partial(self._shard_spec, i), frames=self.shard_frames,
                                   weights=self.shard_weights, **common) for i in range(cfg.shards)]
        self.agents = list(shards)
        for shard in shards:  # one at a time: shards importing torch at once starve the host's loop of a core
            await shard.start()

    def _frame_ring(self) -> FrameRing | None:
        """Where process shards put their segments' frames: a shared-memory ring for images, when segments
        are what agents ship; None (the pipe) otherwise."""
        cfg, spec = self.config, self.spec
        if cfg.algorithm != "vtrace" or spec.obs_kind != "image":
            return None
        size = segment_frame_bytes(cfg.segment_length, cfg.envs_per_agent, spec.obs_shape, np.uint8)
        return FrameRing.for_shards(cfg.shards, size)

    def _check_shippable(self) -> None:
        """Shards rebuild the environment source in a new process: it must pickle, by reference to a module
        that process can import."""
        if self.config.ray:  # cloudpickle: what a node cannot import travels by value
            from asynca3c.runtime.ray_shards import import_ray

            try:
                import_ray().cloudpickle.dumps(self.source)
            except Exception as e:
                raise ConfigError(f"ray=True needs an env_factory that cloudpickle can take ({type(e).__name__}: "
                                  f"{e})") from None
            return
        factory = getattr(self.source, "factory", None)
        while isinstance(factory, functools.partial):  # a partial pickles by its function's reference
            factory = factory.func
        module = getattr(factory, "__module__", None) or type(factory).__module__
        if factory is not None and module == "__main__":
            raise ConfigError(f"shards={self.config.shards} cannot run an env_factory defined in __main__: a "
                              "shard process cannot import it; define it in a module, or use shards=0")
        try:
            pickle.dumps(self.source)
        except Exception as e:
            raise ConfigError(f"shards={self.config.shards} needs an env_factory that pickles (a module-level "
                              f"function or class; {type(e).__name__}: {e}); or use shards=0") from None

    def _shard_spec(self, index: int, restarts: int) -> ShardSpec:
        """What shard ``index`` starts from: its agents (exploring agent i runs on shard i mod shards, the
        evaluation agent on shard 0), their seeds (fresh after each restart) and the current weights."""
        cfg, model = self.config, self.predictor.model
        indices = list(range(index, cfg.agents, cfg.shards))
        seeds = agent_seeds(cfg, self.progress.env_steps, index, restarts)
        return ShardSpec(config=cfg.to_dict(), source=self.source, env_spec=self.spec,
                         network=describe_network(model),
                         weights={k: v.detach().clone() for k, v in model.state_dict().items()},
                         version=self.predictor.version, index=index, agents=indices,
                         seeds=[seeds[i] for i in indices], eval_seed=seeds[-1] if index == 0 else None,
                         start_steps=self.progress.env_steps // cfg.shards,
                         frames=None if self.shard_frames is None else self.shard_frames.grant(index))

    async def _monitor(self) -> None:
        """Enforce the budget, report progress every ``log_interval`` seconds, checkpoint every ``save_every``."""
        cfg, progress = self.config, self.progress
        next_report = progress.elapsed() + cfg.log_interval  # a resumed run's clock starts where it stopped
        next_save = progress.elapsed() + cfg.save_every
        next_hold = progress.elapsed() + HOLD_EVERY
        hold = getattr(self.learner, "hold", None)  # a learner process that can be restarted from it
        while True:
            await asyncio.sleep(min(0.02, cfg.log_interval))
            t = progress.elapsed()
            if cfg.seconds and t >= cfg.seconds:
                self.stop.reached("seconds")
            if cfg.steps and progress.env_steps >= cfg.steps:
                self.stop.reached("steps")
            if t >= next_report:
                next_report += cfg.log_interval
                self._emit()
            if cfg.save_every and self.run_dir is not None and t >= next_save:
                await self._save_checkpoint()
                next_save = progress.elapsed() + cfg.save_every
                next_hold = progress.elapsed() + HOLD_EVERY
            elif hold is not None and t >= next_hold:
                hold(await self.learner.state())
                next_hold = progress.elapsed() + HOLD_EVERY

    def _emit(self) -> MetricsRow:
        row = self.row()
        self.metrics.emit(row)
        return row

    def network(self) -> dict:
        """What rebuilds the network: its shape and the environment it acts in."""
        wrapper = {"env_wrapper": self.config.env_wrapper} if self.config.env_wrapper else {}  # eval replays it
        return {"env": self.config.env, **wrapper, **describe_network(self.predictor.model)}

    def _count_restart(self) -> None:
        self.progress.learner_restarts += 1

    async def _save_checkpoint(self, state: dict | None = None) -> dict:
        """The run's state to RUN_DIR/checkpoint.pt, atomically (serialized in a thread, off the loop);
        returns the learner state it saved (fetched now unless given)."""
        assert self.run_dir is not None
        if state is None:
            try:
                async with asyncio.timeout(SAVE_TIMEOUT):  # a learner restart takes seconds; a hang, forever
                    state = await self.learner.state()
            except TimeoutError:
                raise LearnerError(f"the learner did not hand over its state within {SAVE_TIMEOUT:.0f} s") from None
            if (hold := getattr(self.learner, "hold", None)) is not None:
                hold(state)
        payload = {
            **state, "config": self.config.to_dict(), "counters": self.progress.state(),
            "network": self.network(),
            "rng": {"torch": torch.get_rng_state(), "predictor": checkpoint.numpy_rng_state(self.predictor.rng),
                    "agents": [checkpoint.numpy_rng_state(a.rng) for a in self._rng_agents()]},
        }
        if self.novelty is not None:
            payload["novelty_counts"] = torch.from_numpy(self.novelty.state())
        await asyncio.to_thread(self._write_checkpoint, self.run_dir.path / checkpoint.CHECKPOINT_FILE, payload)
        return state

    def _write_checkpoint(self, path, payload: dict) -> None:
        """One save at a time: a cancelled periodic save may still be writing in its thread when the final
        one starts, and must neither have its temporary file removed nor land after the newer state."""
        with self._save_lock:
            checkpoint.save(path, payload)

    def _rng_agents(self) -> list[Agent]:
        """The agents that draw their own random numbers (async-env groups draw through the predictor)."""
        return [a for a in self.agents if isinstance(a, Agent)]

    def _restore_rng(self, rng: dict) -> None:
        torch.set_rng_state(rng["torch"])
        checkpoint.set_numpy_rng_state(self.predictor.rng, rng["predictor"])
        # A run resumed with another number of agents keeps what fits.
        for agent, state in zip(self._rng_agents(), rng["agents"]):
            checkpoint.set_numpy_rng_state(agent.rng, state)
