"""stable-baselines3's A2C and PPO as baselines, with rl-zoo's published CartPole-v1 settings.

Judged like asynca3c: SB3's agents act from their own stochastic policy (there
is no epsilon), so every training episode counts toward the rolling window of
the last 100 episodes; a run is solved when that window's mean reaches the
environment's reward threshold. The clock starts when ``learn`` starts (model
and environment construction are outside it, as for asynca3c). Each run keeps
rl-zoo's own step budget (``n_timesteps``, which also scales its linear
schedules) besides the wall-clock cap. Torch's thread count is left as SB3's
users get it.

Settings (rl-baselines3-zoo ``hyperparams/a2c.yml`` and ``ppo.yml``, CartPole-v1):
A2C: 8 envs, 5e5 steps, ent_coef 0, else SB3 defaults. PPO: 8 envs, 1e5 steps,
n_steps 32, batch 256, gae_lambda .8, gamma .98, 20 epochs, ent_coef 0,
learning rate linear from 1e-3, clip range linear from 0.2.
"""

from __future__ import annotations

import time
from collections import deque


def _linear(start: float):
    return lambda progress_remaining: progress_remaining * start


ZOO = {
    "a2c": {"n_envs": 8, "n_timesteps": 500_000, "kwargs": {"ent_coef": 0.0}},
    "ppo": {"n_envs": 8, "n_timesteps": 100_000,
            "kwargs": {"n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
                       "ent_coef": 0.0, "learning_rate": _linear(1e-3), "clip_range": _linear(0.2)}},
}


def available() -> bool:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


def run(algo: str, env_id: str = "CartPole-v1", seconds: float = 60.0, *, seed: int = 0, device: str = "cpu",
        until_solved: bool = True, window: int = 100, log_interval: float = 1.0, on_progress=None,
        zoo: dict | None = None, threshold: float | None = None, wrap=None) -> dict:
    """Train SB3's ``algo`` ('a2c', 'ppo', or sb3-contrib's 'recurrentppo') with rl-zoo's settings (``zoo``:
    an entry like ``ZOO``'s, which may add ``normalize`` (VecNormalize with the algorithm's gamma) and
    ``policy`` (policy_kwargs); default ``ZOO[algo]``); ``wrap`` wraps each env; ``threshold`` replaces the
    env spec's. Figures as asynca3c's summary has them."""
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    if zoo is None and algo not in ZOO:
        raise ValueError(f"algo={algo!r} is not allowed: one of {', '.join(ZOO)}")
    zoo = zoo or ZOO[algo]
    env = make_vec_env(env_id, n_envs=zoo["n_envs"], seed=seed, wrapper_class=wrap)
    if threshold is None:
        threshold = env.envs[0].spec.reward_threshold if env.envs[0].spec is not None else None
    if zoo.get("normalize"):  # rl-zoo's normalize: true, with the algorithm's gamma for the returns
        env = VecNormalize(env, gamma=zoo["kwargs"].get("gamma", 0.99))
    if algo == "recurrentppo":
        from sb3_contrib import RecurrentPPO
        algo_class, policy = RecurrentPPO, "MlpLstmPolicy"
    else:
        algo_class, policy = {"a2c": A2C, "ppo": PPO}[algo], "MlpPolicy"
    extra = {"policy_kwargs": zoo["policy"]} if "policy" in zoo else {}
    model = algo_class(policy, env, seed=seed, device=device, verbose=0, **extra, **zoo["kwargs"])
    returns: deque[float] = deque(maxlen=window)
    state = {"episodes": 0, "solved": None, "stop_reason": "steps", "t0": 0.0, "next_log": log_interval}

    def window_mean() -> float:
        return sum(returns) / len(returns) if returns else float("nan")

    class Judge(BaseCallback):
        """Counts finished episodes, applies the solve rule and the wall-clock cap, reports progress."""

        def _on_training_start(self) -> None:
            state["t0"] = time.perf_counter()

        def _on_step(self) -> bool:
            elapsed = time.perf_counter() - state["t0"]
            for info in self.locals["infos"]:
                episode = info.get("episode")
                if episode is not None:
                    state["episodes"] += 1
                    returns.append(float(episode["r"]))
            if (state["solved"] is None and threshold is not None and len(returns) == window
                    and window_mean() >= threshold):
                state["solved"] = (elapsed, self.num_timesteps)
                if until_solved:
                    state["stop_reason"] = "solved"
                    return False
            if on_progress is not None and elapsed >= state["next_log"]:
                state["next_log"] += log_interval
                on_progress({"seconds": elapsed, "env_steps": self.num_timesteps,
                             "steps_per_second": self.num_timesteps / elapsed, "episodes": state["episodes"],
                             "eval_return_mean": window_mean()})
            if elapsed >= seconds:
                state["stop_reason"] = "seconds"
                return False
            return True

    model.learn(total_timesteps=zoo["n_timesteps"], callback=Judge())
    elapsed = time.perf_counter() - state["t0"]
    env.close()
    solved = state["solved"]
    return {
        "system": f"sb3-{algo}", "env": env_id, "seed": seed, "device": str(model.device), "seconds": elapsed,
        "env_steps": model.num_timesteps, "steps_per_second": model.num_timesteps / elapsed,
        "episodes": state["episodes"], "updates": model._n_updates, "solved": solved is not None,
        "solved_after_seconds": solved[0] if solved else None, "solved_after_steps": solved[1] if solved else None,
        "reward_threshold": threshold, "eval_window_mean_return": window_mean(), "stop_reason": state["stop_reason"],
        "model": model,
    }


def policy_fn(model):
    """The trained SB3 model as a batch policy (stochastic, as it acted while training)."""
    return lambda obs: model.predict(obs, deterministic=False)[0]
