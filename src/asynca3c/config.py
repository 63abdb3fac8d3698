"""Hyperparameters: one frozen, validated dataclass and the named presets.

Each field's ``help`` metadata is the text ``asynca3c train --help`` shows, so
the documentation of a setting lives next to its default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from asynca3c.checks import MAX_KERNEL_ELEMENTS, MAX_N, check_gamma_n, check_kernel_size
from asynca3c.errors import ConfigError


def _f(default, help: str, **kw):
    if callable(default) and not isinstance(default, (int, float, str, bool)):
        return field(default_factory=default, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Config:
    """Everything a training run needs; defaults are tuned for CartPole-v1 on a 2-core CPU.

    The defaults learn with V-trace (``algorithm='vtrace'``): two agents of 64
    environments ship segments of 16 steps; the learner trains on batches of
    exactly 64 segment columns (1,024 samples), 2 epochs of 2 minibatches, Adam
    at lr 0.003, a clipped surrogate (0.2) on pi/mu, advantages normalized; a
    queue of 2 segments keeps acting at most a few batches ahead of learning.
    No epsilon and no entropy bonus: the stochastic policy explores, and every
    agent's episodes judge 'solved', so no evaluation agent is needed.
    Measured here (README, 10 seeds), CartPole-v1 is solved in a median 2.3 s
    and 183k steps, every seed confirmed, where the n-step defaults before
    them took 4.0 s and 1.24M steps in the same run.

    ``preset('seed')`` keeps the seed article's algorithm and constants
    (n-step windows, RMSprop, epsilon 0.4 to 0.15, eight agents of one env).
    ``preset('nstep')`` is the tuned n-step A3C: two agents of 256
    environments (an env step costs about the same for 1 as for 256
    numpy-vectorized ones), a short, low epsilon, rewards scaled by 0.1 with
    lr 0.003 and gradient-norm clipping at 0.5 (unscaled, CartPole's values
    reach 100 and the value loss's clipped gradient crowds out the policy's in
    the shared hidden layer), and an evaluation agent of 32 environments.
    """

    # --- environment
    env: str = _f("CartPole-v1", "gymnasium environment id")
    env_kwargs: dict = _f(dict, "keyword arguments for gym.make, as JSON (e.g. '{\"max_episode_steps\": 200}')")
    env_wrapper: str = _f("", "a named observation wrapper applied to every environment of the run: "
                              "'mask-velocity' keeps CartPole's cart position and pole angle and drops both "
                              "velocities, a memory task a feed-forward policy cannot solve ('': none)")
    seed: int = _f(0, "random seed for torch, numpy and the environments")
    # --- agents
    agents: int = _f(2, "agent coroutines that explore (each steps its own vector of environments)")
    envs_per_agent: int = _f(64, "environments in each exploring agent's vector")
    eval_envs: int = _f(0, "environments of the evaluation agent, which acts without epsilon; its "
                             "episodes decide 'solved' (0: no evaluation agent)")
    eval_agent_trains: bool = _f(True, "the evaluation agent's transitions are used for training too")
    epsilon_start: tuple = _f((0.0,), "epsilon at the start, one value or one per agent (comma-separated)")
    epsilon_end: tuple = _f((0.0,), "epsilon after epsilon_steps, one value or one per agent")
    epsilon_steps: int = _f(500_000, "environment steps (all agents together) over which epsilon decays linearly")
    # --- returns
    n_step: int = _f(8, "n of the n-step return")
    gamma: float = _f(0.99, "discount factor")
    reward_scale: float = _f(0.1, "rewards are multiplied by this before returns are computed (reported "
                                  "returns stay unscaled); keeps value targets small so the value loss does "
                                  "not crowd out the policy's gradient")
    reward_clip: float = _f(0.0, "training rewards are clipped to [-c, c] before reward_scale (Atari's "
                                 "settings use 1: scores differ by orders of magnitude between games); reported "
                                 "returns stay the environment's own (0: no clipping)")
    novelty_bonus: float = _f(0.0, "beta of a count-based exploration bonus: beta/sqrt(visits) is added to the "
                                   "(scaled) reward on arriving in a cell of a grid over the observation box; "
                                   "for sparse rewards such as MountainCar's; needs finite bounds (0: off)")
    novelty_bins: int = _f(16, "cells per observation dimension of the novelty bonus's grid")
    # --- learning algorithm
    algorithm: str = _f("vtrace", "'nstep': per-sample n-step windows, one gradient step per batch of whatever is "
                                 "queued (the seed's A3C); 'vtrace': fixed-length segments, V-trace targets "
                                 "corrected for policy lag, a fixed number of samples per batch and of gradient "
                                 "steps per sample (epochs x minibatches)")
    segment_length: int = _f(16, "vtrace: steps T per segment an agent ships (observations once, [T, envs])")
    batch_envs: int = _f(64, "vtrace: environment columns per learner batch (samples = segment_length x this)")
    epochs: int = _f(2, "vtrace: passes over each batch; targets and importance weights are recomputed with "
                        "the current network at every pass")
    minibatches: int = _f(2, "vtrace: gradient steps per pass (the batch's columns split evenly)")
    clip_ratio: float = _f(0.2, "vtrace: PPO-style clipped surrogate on pi/mu with this epsilon (0: the plain "
                                "V-trace policy gradient)")
    target_kl: float = _f(0.0, "vtrace: stop a batch's remaining gradient steps once its policy has moved this "
                               "far from where the batch began (approximate KL, checked before every step after "
                               "the first; 0: always take epochs x minibatches steps)")
    rho_bar: float = _f(1.0, "vtrace: truncation of the importance weights in the targets and the policy gradient")
    c_bar: float = _f(1.0, "vtrace: truncation of the trace-cutting weights c")
    importance_correction: bool = _f(True, "vtrace: weight targets and policy gradient by pi/mu (False: the "
                                           "uncorrected update, for comparison: targets as if on-policy, and the "
                                           "clipped ratio taken against the learner's policy before the batch, as "
                                           "PPO run without a lag correction)")
    normalize_advantages: bool = _f(True, "vtrace: normalize the advantages of each minibatch to mean 0, std 1")
    deterministic: bool = _f(False, "vtrace: one agent, acting and learning alternate (no overlap), updates in a "
                                    "fixed order: the same seed gives the same run (needs agents=1, eval_envs=0)")
    # --- optimization
    optimizer: str = _f("adam", "'rmsprop' (the seed's) or 'adam' (bias-corrected first steps)")
    max_nonfinite_steps: int = _f(10, "non-finite losses or gradients in a row that stop the run; each one is "
                                      "skipped (the weights stay as they were) and counted")
    optimizers: int = _f(2, "optimizer tasks feeding minimize steps to the learner's executor")
    learner: str = _f("process", "where minimize steps run: 'process' (one worker process with its own "
                                 "GIL), 'thread' (executor threads in this process) or 'ray' (a Ray actor, "
                                 "given a GPU when device is cuda; see ray and ray_address)")
    min_batch: int = _f(32, "smallest batch (samples) an optimizer trains on")
    max_batch: int = _f(4096, "largest batch (samples) one minimize step takes")
    queue_size: int = _f(2, "bound of the queue, in agent messages (segments, or n-step sample batches); agents "
                                "wait when it is full, which bounds the policy lag")
    lr: float = _f(0.003, "learning rate")
    lr_schedule: str = _f("constant", "'constant', or 'linear': lr falls linearly to 0 over the run's budget (by "
                                      "the larger spent fraction of seconds and steps; steps alone in the "
                                      "deterministic mode), so the policy the run ends with settles")
    rmsprop_alpha: float = _f(0.99, "RMSprop smoothing constant (decay)")
    rmsprop_eps: float = _f(1e-5, "RMSprop epsilon")
    value_coef: float = _f(0.5, "c_v: weight of the value loss")
    entropy_coef: float = _f(0.0, "c_e: weight of the entropy term (+ c_e * sum p log p)")
    max_grad_norm: float = _f(0.5, "clip the gradient norm to this value (0: no clipping)")
    hidden: tuple = _f((64,), "sizes of the shared hidden layers (comma-separated) of the 'mlp' encoder")
    separate_value: bool = _f(False, "the value head gets hidden layers of its own (of the sizes of hidden) "
                                     "instead of sharing the policy's; a feed-forward 'mlp' encoder only")
    encoder: str = _f("auto", "what turns observations into features: 'mlp' (the hidden layers), 'nature' (the "
                              "Nature DQN CNN: 3 convolutions, 512 features) or 'a3c' (the A3C paper's smaller "
                              "CNN: 2 convolutions, 256 features) over uint8 images scaled to [0, 1] inside the "
                              "network; 'auto': nature for image observations, mlp otherwise")
    normalize_obs: bool = _f(False, "map observation dimensions with finite Box bounds onto [-1, 1] inside "
                                    "the network")
    running_obs_norm: bool = _f(False, "normalize observation dimensions (those without finite bounds when "
                                       "normalize_obs is on, else all) by a running mean and variance, clipped "
                                       "to +-10: kept by the learner from the batches it trains on, shipped "
                                       "with the weights, saved in checkpoints (for MuJoCo's infinite bounds)")
    recurrent: str = _f("", "a recurrent core after the hidden layers: 'lstm' or 'gru' ('': feed-forward); "
                            "needs algorithm='vtrace' (the state travels with each segment)")
    core_size: int = _f(64, "width of the recurrent core's state (an LSTM holds two of these)")
    log_std_init: float = _f(0.0, "Box actions: the Gaussian's initial log standard deviation in the normalized "
                                  "action box (learned from there, held within [-5, 2])")
    # --- machinery
    shards: int = _f(0, "acting shards: worker processes that each run a share of the agents (exploring agent i "
                        "runs on shard i mod shards, the evaluation agent on shard 0) with their own event loop, "
                        "environments and acting copy of the weights, so acting uses more than one core "
                        "(0: every agent on the trainer's loop)")
    max_shard_restarts: int = _f(3, "shard process deaths (or silences past shard_timeout) survived within any "
                                    "10 minutes, all shards together: each restarts that shard with fresh "
                                    "environment seeds; one more stops the run")
    ray: bool = _f(False, "run the shards as Ray actors (on the Ray instance this process has, else the cluster at "
                          "ray_address or RAY_ADDRESS, else a new local one) instead of worker processes; needs "
                          "shards >= 1 and pip install 'asynca3c[ray]'")
    ray_address: str = _f("", "the Ray cluster to join with ray=True ('': RAY_ADDRESS, or a new local instance)")
    ray_cpus_per_shard: float = _f(1.0, "CPUs Ray reserves for each shard actor (ray=True)")
    shard_nice: int = _f(10, "niceness added to shard processes, so the learner and the trainer's loop get a core "
                             "first when they need one (acting waits on the learner's queue anyway; measured on "
                             "LunarLander-v3 with 2 shards on 2 cores: 7.5k steps/s at 10, 5.9k at 0); 0: the "
                             "same priority")
    shard_timeout: float = _f(30.0, "seconds a shard may send nothing (it reports every second) before it "
                                    "counts as hung and is restarted")
    weights_every: int = _f(1, "the learner ships new weights to the acting copy after at most this many updates "
                               "(its replies in between carry none): a pixel network's weights are megabytes; the "
                               "final evaluation and checkpoints always use the newest")
    device: str = _f("auto", "where minimize steps run: auto, cpu or cuda")
    torch_threads: int = _f(1, "torch intra-op threads (0: leave torch's setting alone)")
    work_nice: int = _f(10, "niceness added to the threads that run work beside the trainer's loop (a CNN's "
                            "forward passes, pixel env steps and their emulator threads, copies to the learner), "
                            "so the loop gets a core first and the host's loop lag stays low (Linux; per "
                            "thread); 0: the loop's priority")
    # --- faults
    env_faults: str = _f("auto", "what an environment fault (an exception, an async step past env_step_timeout, "
                                 "a non-finite or wrongly shaped observation, a non-finite reward) does: 'fail' "
                                 "stops the run naming the env, the fault and the step; 'restart' closes that "
                                 "environment (a gymnasium agent's whole vector), makes a new one with a fresh "
                                 "seed, drops its unfinished segment and counts it; 'auto': restart for async "
                                 "environments (env_factory), fail for gymnasium ids")
    max_env_faults_per_minute: int = _f(30, "env_faults='restart': faults within any 60 s that still stop the run")
    env_step_timeout: float = _f(30.0, "seconds an async environment's reset or step may take before it counts "
                                       "as a fault (0: wait forever)")
    max_learner_restarts: int = _f(2, "learner process deaths survived within any 10 minutes: each restarts it "
                                      "from the newest state the trainer holds (fetched every 10 s); one more "
                                      "stops the run")
    eval_max_episode_steps: int = _f(10_000, "steps after which a final-evaluation episode is cut off, for "
                                             "environments with no time limit of their own")
    # --- budget and stopping
    seconds: float = _f(30.0, "wall-clock budget in seconds (0: no limit)")
    steps: int = _f(0, "environment-step budget (0: no limit)")
    until_solved: bool = _f(False, "stop as soon as the environment counts as solved")
    solve_window: int = _f(100, "episodes played without epsilon (by any agent) averaged for 'solved'")
    reward_threshold: float = _f(float("nan"), "return that counts as solved (NaN: the env spec's reward_threshold)")
    final_eval_episodes: int = _f(100, "fresh episodes without epsilon that confirm the result at the end")
    log_interval: float = _f(1.0, "seconds between progress reports")
    save_every: float = _f(60.0, "seconds between checkpoints in the run directory (0: only the final one)")
    tensorboard: bool = _f(False, "also write TensorBoard event files to RUN_DIR/tensorboard")

    def __post_init__(self):
        def set_(name, value):
            object.__setattr__(self, name, value)

        for name in ("epsilon_start", "epsilon_end", "hidden"):
            value = getattr(self, name)
            set_(name, tuple(value) if isinstance(value, (list, tuple)) else (value,))
        set_("env_kwargs", dict(self.env_kwargs))
        self._validate()

    def _validate(self):
        def need(ok, name, allowed):
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not allowed: {allowed}")

        need(isinstance(self.env, str) and self.env, "env", "a gymnasium environment id")
        need(isinstance(self.env_kwargs, dict), "env_kwargs", "a mapping of keyword arguments")
        need(self.env_wrapper in ("", *ENV_WRAPPERS), "env_wrapper", f"'' (none) or {', '.join(ENV_WRAPPERS)}")
        steps = self.env_kwargs.get("max_episode_steps")
        need(steps is None or (_int(steps) and 1 <= steps <= MAX_STEPS_PER_EPISODE), "env_kwargs",
             f"max_episode_steps must be an integer in [1, {MAX_STEPS_PER_EPISODE}] (or absent)")
        for name, (low, high) in INT_RANGES.items():
            v = getattr(self, name)
            need(_int(v) and v >= low, name, f"an integer >= {low}")
            need(v <= high, name, f"an integer in [{low}, {high}]")
        for name, (bottom, open_bottom, top, shown) in NUMBER_RANGES.items():
            x = getattr(self, name)
            need(_num(x) and not (x <= bottom if open_bottom else x < bottom),  # NaN passes: the range refuses it
                 name, f"a number {'>' if open_bottom else '>='} {bottom:g}")
            need(x <= top, name, f"a number in {'(' if open_bottom else '['}{bottom:g}, {shown}]")
        need(_int(self.seed) and 0 <= self.seed <= MAX_SEED, "seed", f"an integer in [0, {MAX_SEED}]")
        need(self.max_batch >= self.min_batch, "max_batch", f"an integer >= min_batch ({self.min_batch})")
        try:
            check_gamma_n(self.gamma, self.n_step)
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None
        need(_num(self.rmsprop_alpha) and 0 <= self.rmsprop_alpha < 1, "rmsprop_alpha", "a number in [0, 1)")
        for name in ("epsilon_start", "epsilon_end"):
            v = getattr(self, name)
            need(all(_num(x) and 0 <= x <= 1 for x in v), name, "numbers in [0, 1]")
            need(len(v) in (1, self.agents), name, f"one value or one per agent ({self.agents})")
        self._validate_hidden(need)
        need(isinstance(self.device, str) and (self.device in ("auto", "cpu", "cuda") or
                                               self.device.startswith("cuda:")), "device", "auto, cpu, cuda or cuda:N")
        need(self.learner in ("process", "thread", "ray"), "learner", "process, thread or ray")
        need(self.algorithm in ("nstep", "vtrace"), "algorithm", "nstep or vtrace")
        need(self.optimizer in ("rmsprop", "adam"), "optimizer", "rmsprop or adam")
        need(self.lr_schedule in ("constant", "linear"), "lr_schedule", "constant or linear")
        if self.lr_schedule == "linear":
            need(self.steps > 0 if self.deterministic else (self.seconds > 0 or self.steps > 0), "lr_schedule",
                 "'linear' only with a budget to decay over: steps > 0 (in the deterministic mode) or seconds > 0; "
                 "or lr_schedule='constant'")
        need(self.env_faults in ("auto", "fail", "restart"), "env_faults", "auto, fail or restart")
        need(self.recurrent in ("", "lstm", "gru"), "recurrent", "'', lstm or gru")
        need(self.encoder in ENCODER_NAMES, "encoder", ", ".join(ENCODER_NAMES))
        need(not self.recurrent or self.algorithm == "vtrace", "recurrent",
             "only with algorithm='vtrace' (n-step windows carry no recurrent state)")
        need(not (self.separate_value and self.recurrent), "separate_value",
             f"False with recurrent={self.recurrent!r} (the value head reads the core's output)")
        need(self.minibatches <= self.batch_envs, "minibatches", f"an integer <= batch_envs ({self.batch_envs})")
        need(_num(self.clip_ratio) and 0 <= self.clip_ratio < 1, "clip_ratio", "a number in [0, 1)")
        need(_num(self.target_kl) and 0 <= self.target_kl < float("inf"), "target_kl", "a finite number >= 0 (0: off)")
        for name in ("rho_bar", "c_bar"):
            need(_num(getattr(self, name)) and 0 < getattr(self, name) < float("inf"), name, "a finite number > 0")
        self._validate_products(need)
        if self.shards:
            need(self.shards <= self.agents, "shards", f"an integer in [0, agents] ({self.agents}): each shard "
                 "runs at least one exploring agent")
            need(not self.deterministic, "shards", "0 with deterministic=True (acting and learning alternate on "
                 "one loop)")
            need(not self.novelty_bonus, "shards", "0 with novelty_bonus (its visit counts live on the "
                 "trainer's loop)")
        need(isinstance(self.ray, bool), "ray", "true or false")
        need(not self.ray or self.shards >= 1, "ray", "True only with shards >= 1 (the shards are what runs on Ray)")
        need(isinstance(self.ray_address, str), "ray_address", "a Ray address such as 'HOST:6379' or ''")
        if self.deterministic:
            need(self.algorithm == "vtrace", "deterministic", "only with algorithm='vtrace'")
            need(self.agents == 1, "deterministic", f"only with agents=1 (got {self.agents})")
            need(self.eval_envs == 0, "deterministic", f"only with eval_envs=0 (got {self.eval_envs}): the "
                 "agent's own episodes without epsilon are judged")
        need(_num(self.reward_threshold) and abs(self.reward_threshold) != float("inf"), "reward_threshold",
             "a finite number (NaN: the env spec's threshold)")
        need(not self.until_solved or self.eval_envs > 0 or 0 in self.epsilon_end, "until_solved",
             "only with episodes played without epsilon: an evaluation agent (eval_envs >= 1) or an agent "
             "whose epsilon_end is 0")

    def _validate_hidden(self, need) -> None:
        h = self.hidden
        need(h and all(_int(x) and x >= 1 for x in h), "hidden", "one or more integers >= 1")
        need(len(h) <= MAX_HIDDEN_LAYERS and all(x <= MAX_HIDDEN_WIDTH for x in h), "hidden",
             f"1 to {MAX_HIDDEN_LAYERS} integers in [1, {MAX_HIDDEN_WIDTH}]")
        need(all(a * b <= MAX_LAYER_WEIGHTS for a, b in zip(h, h[1:])), "hidden",
             f"widths whose neighbours' products are at most {MAX_LAYER_WEIGHTS} (weights of one layer)")

    def _validate_products(self, need) -> None:
        """Sizes that several settings allocate together (each factor is already capped)."""
        need(self.agents * self.envs_per_agent <= MAX_TOTAL_ENVS, "envs_per_agent",
             f"an integer in [1, {MAX_TOTAL_ENVS // self.agents}] with agents={self.agents} "
             f"(agents x envs_per_agent <= {MAX_TOTAL_ENVS})")
        need(self.segment_length * self.batch_envs <= MAX_BATCH_ELEMENTS, "batch_envs",
             f"an integer in [1, {MAX_BATCH_ELEMENTS // self.segment_length}] with segment_length="
             f"{self.segment_length} (segment_length x batch_envs <= {MAX_BATCH_ELEMENTS})")
        envs = max(self.envs_per_agent, self.eval_envs)  # the largest vector one agent steps
        if self.algorithm == "vtrace":
            need(self.segment_length * envs <= MAX_BATCH_ELEMENTS, "segment_length",
                 f"an integer in [1, {MAX_BATCH_ELEMENTS // envs}] with {envs} environments in an agent "
                 f"(segment_length x environments <= {MAX_BATCH_ELEMENTS})")
        else:
            try:
                check_kernel_size(envs, self.n_step)
            except ValueError:
                fits = MAX_KERNEL_ELEMENTS // envs  # the ring (n rounded up to a power of two) must fit
                top = min(MAX_N, 1 << (fits.bit_length() - 1))
                need(False, "n_step", f"an integer in [1, {top}] with {envs} environments in an agent (their "
                     f"n-step kernel holds environments x n rounded up to a power of two <= {MAX_KERNEL_ELEMENTS})")

    def epsilon(self, agent: int) -> tuple[float, float]:
        """(start, end) of the epsilon schedule of exploring agent ``agent``."""
        pick = lambda v: v[agent] if len(v) > 1 else v[0]  # noqa: E731
        return pick(self.epsilon_start), pick(self.epsilon_end)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


#: Caps on what the settings allocate or count. Integer settings: (smallest, largest) allowed.
MAX_COUNT = 1_000_000  # environments, episodes, queued messages
MAX_STEPS = 10**15  # step budgets
MAX_STEPS_PER_EPISODE = 10**9  # env_kwargs' max_episode_steps
#: Names env_wrapper allows; asynca3c.core.wrappers says what each does (the config layer imports no gymnasium).
ENV_WRAPPERS = ("mask-velocity",)
#: Names encoder allows: 'auto' and asynca3c.core.model.ENCODERS (a test keeps the two equal).
ENCODER_NAMES = ("auto", "mlp", "nature", "a3c")
INT_RANGES: dict[str, tuple[int, int]] = {
    "agents": (1, 1_024),
    "envs_per_agent": (1, MAX_COUNT),
    "eval_envs": (0, MAX_COUNT),
    "epsilon_steps": (0, MAX_STEPS),
    "n_step": (1, MAX_N),
    "novelty_bins": (1, 65_536),
    "segment_length": (1, 10_000),
    "batch_envs": (1, MAX_COUNT),
    "epochs": (1, 10_000),
    "minibatches": (1, 10_000),
    "max_nonfinite_steps": (1, MAX_COUNT),
    "optimizers": (1, 10_000),
    "weights_every": (1, 10_000),
    "min_batch": (1, 10_000_000),
    "max_batch": (1, 10_000_000),
    "queue_size": (1, MAX_COUNT),
    "torch_threads": (0, 1_024),
    "max_env_faults_per_minute": (0, MAX_COUNT),
    "max_learner_restarts": (0, 10_000),
    "shards": (0, 1_024),
    "max_shard_restarts": (0, 10_000),
    "shard_nice": (0, 19),
    "work_nice": (0, 19),
    "core_size": (1, 16_384),
    "eval_max_episode_steps": (1, MAX_STEPS_PER_EPISODE),
    "steps": (0, MAX_STEPS),
    "solve_window": (1, MAX_COUNT),
    "final_eval_episodes": (0, MAX_COUNT),
}
#: Number settings: (low, low excluded, high, high as shown); every one must be finite.
NUMBER_RANGES: dict[str, tuple[float, bool, float, str]] = {
    "lr": (0, True, 1.0, "1"),
    "rmsprop_eps": (0, True, 1.0, "1"),
    "reward_scale": (0, True, 1e6, "1e6"),
    "reward_clip": (0, False, 1e6, "1e6"),
    "novelty_bonus": (0, False, 1e6, "1e6"),
    "value_coef": (0, False, 1e6, "1e6"),
    "entropy_coef": (0, False, 1e6, "1e6"),
    "max_grad_norm": (0, False, 1e6, "1e6"),
    "log_std_init": (-5.0, False, 2.0, "2"),
    "env_step_timeout": (0, False, 1e9, "1e9"),
    "shard_timeout": (0, True, 1e9, "1e9"),
    "ray_cpus_per_shard": (0, False, 1e6, "1e6"),
    "seconds": (0, False, 1e9, "1e9"),
    "save_every": (0, False, 1e9, "1e9"),
    "log_interval": (0, True, 1e9, "1e9"),
}
MAX_SEED = 2**32 - 1
MAX_HIDDEN_LAYERS = 64
MAX_HIDDEN_WIDTH = 65_536
MAX_LAYER_WEIGHTS = 2**28  # hidden[i] x hidden[i + 1]
MAX_TOTAL_ENVS = 1_000_000  # agents x envs_per_agent
MAX_BATCH_ELEMENTS = 10_000_000  # segment_length x batch_envs, and x an agent's environments


#: The seed article's constants (its table), with our machinery.
SEED_PRESET = dict(
    agents=8, envs_per_agent=1, optimizers=2, n_step=8, gamma=0.99, epsilon_start=(0.4,),
    epsilon_end=(0.15,), epsilon_steps=75_000, min_batch=32, lr=0.005, value_coef=0.5,
    entropy_coef=0.01, hidden=(16,), max_grad_norm=0.0, reward_scale=1.0, algorithm="nstep", optimizer="rmsprop",
    eval_envs=32, queue_size=64,
)

#: The tuned n-step A3C that was the default before V-trace. Its exploring agents keep epsilon 0.01 so that,
#: as when it was tuned, only the evaluation agent's episodes judge 'solved': with epsilon decaying to 0 they
#: counted too, and the window, refilled by 512 environments in a fraction of a second, called 2 of 10 seeds
#: solved that 100 fresh episodes did not confirm.
NSTEP_PRESET = dict(
    algorithm="nstep", agents=2, envs_per_agent=256, eval_envs=32, epsilon_start=(0.1,), epsilon_end=(0.01,),
    queue_size=64, optimizer="rmsprop", lr=0.003, entropy_coef=0.01, hidden=(16,), reward_scale=0.1,
)

PRESETS: dict[str, dict[str, Any]] = {"default": {}, "seed": SEED_PRESET, "nstep": NSTEP_PRESET}


def preset(name: str, **overrides) -> Config:
    """Config of a named preset with some fields changed."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is not allowed: one of {', '.join(PRESETS)}")
    return Config(**{**PRESETS[name], **overrides})
