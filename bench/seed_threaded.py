"""The seed article's threaded A3C, in torch, as a baseline for the benchmarks.

Written here from the article's description so that a comparison isolates the
machinery: agent threads that each call ``predict`` once per step and sleep
``THREAD_DELAY`` (1 ms) after it, a training queue guarded by a lock, optimizer
threads that take the whole queue once it holds ``MIN_BATCH`` samples, the
NONE_STATE trick for terminal bootstraps (a zero observation whose value is
masked out), the seed's incremental n-step return ``R = (R - r0) / gamma``
and its constants (8 agents, 2 optimizers, n=8, gamma .99, epsilon .4 to .15
over 75k steps, lr .005 RMSprop, c_v .5, c_e .01, 16 hidden units). Like the
seed, it ignores truncation (a time-limit end is treated as terminal) and
bootstraps every window with gamma**n. One change: the seed's TensorFlow
minimize could run from two threads at once; torch's autograd cannot, so the
two optimizer threads take a model lock around forward, backward and step.

    python bench/seed_threaded.py --seconds 30 [--latency 0.002 --agents 256]

``run(...)`` returns a dict with the same figures as ``asynca3c``'s summary
(env_steps, steps_per_second, episodes, updates, solved, solved_after_seconds,
eval_window_mean_return, ...). With ``latency`` > 0 every environment step
first sleeps that long, standing in for a simulator behind a network call.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import deque

import gymnasium as gym
import numpy as np
import torch
from latency_env import LatencyCartPole

from asynca3c.core.model import ActorCritic

SEED = dict(agents=8, optimizers=2, n_step=8, gamma=0.99, eps_start=0.4, eps_stop=0.15, eps_steps=75_000,
            min_batch=32, lr=0.005, value_coef=0.5, entropy_coef=0.01, hidden=16, thread_delay=0.001)


class Brain:
    """The shared network, its training queue (with a lock) and the minimize step."""

    def __init__(self, obs_dim: int, n_actions: int, c: dict):
        self.c = c
        self.model = ActorCritic(obs_dim, n_actions, (c["hidden"],))
        self.optimizer = torch.optim.RMSprop(self.model.parameters(), lr=c["lr"], alpha=0.99)
        self.queue: list[list] = [[], [], [], [], []]  # s, a, r, s_, s_mask
        self.lock_queue = threading.Lock()
        self.lock_model = threading.Lock()
        self.updates = 0
        self.obs_dim = obs_dim

    def predict_p(self, s: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits, _ = self.model(torch.as_tensor(s, dtype=torch.float32).reshape(1, -1))
            return torch.softmax(logits, -1)[0].numpy()

    def train_push(self, s, a, r, s_) -> None:
        with self.lock_queue:
            q = self.queue
            q[0].append(s)
            q[1].append(a)
            q[2].append(r)
            if s_ is None:  # NONE_STATE: a zero observation, its value masked out
                q[3].append(np.zeros(self.obs_dim, np.float32))
                q[4].append(0.0)
            else:
                q[3].append(s_)
                q[4].append(1.0)

    def optimize(self) -> None:
        if len(self.queue[0]) < self.c["min_batch"]:
            time.sleep(0)  # yield
            return
        with self.lock_queue:
            if len(self.queue[0]) < self.c["min_batch"]:  # another thread took it
                return
            s, a, r, s_, mask = self.queue
            self.queue = [[], [], [], [], []]
        s = torch.as_tensor(np.array(s), dtype=torch.float32)
        s_ = torch.as_tensor(np.array(s_), dtype=torch.float32)
        a = torch.as_tensor(a)
        r = torch.as_tensor(r, dtype=torch.float32)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        with self.lock_model:  # torch's autograd cannot interleave two minimize steps on one model
            self._minimize(s, a, r, s_, mask)

    def _minimize(self, s, a, r, s_, mask) -> None:
        c = self.c
        with torch.no_grad():
            _, v_ = self.model(s_)
        target = r + c["gamma"] ** c["n_step"] * v_ * mask
        logits, v = self.model(s)
        logp_all = torch.log_softmax(logits, -1)
        adv = target - v
        logp = logp_all.gather(1, a.unsqueeze(1)).squeeze(1)
        loss = (-(logp * adv.detach()) + c["value_coef"] * adv.pow(2)
                + c["entropy_coef"] * (logp_all.exp() * logp_all).sum(-1)).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1


class Agent:
    """The seed's agent: epsilon-greedy over the policy, n-step memory with the incremental R."""

    def __init__(self, brain: Brain, n_actions: int, c: dict, counter: list, eps_start: float, eps_end: float):
        self.brain, self.n_actions, self.c, self.counter = brain, n_actions, c, counter
        self.eps_start, self.eps_end = eps_start, eps_end
        self.memory: list = []
        self.R = 0.0

    def epsilon(self) -> float:
        steps = self.counter[0]
        if steps >= self.c["eps_steps"]:
            return self.eps_end
        return self.eps_start + steps * (self.eps_end - self.eps_start) / self.c["eps_steps"]

    def act(self, s) -> int:
        eps = self.epsilon()
        if random.random() < eps:
            return random.randint(0, self.n_actions - 1)
        p = self.brain.predict_p(s)
        return int(np.random.choice(self.n_actions, p=p / p.sum()))

    def train(self, s, a, r, s_) -> None:
        c = self.c
        n, gamma, gamma_n = c["n_step"], c["gamma"], c["gamma"] ** c["n_step"]

        def get_sample(memory, k):
            s0, a0, _, _ = memory[0]
            _, _, _, sk = memory[k - 1]
            return s0, a0, self.R, sk

        self.memory.append((s, a, r, s_))
        self.R = (self.R + r * gamma_n) / gamma
        if s_ is None:
            while len(self.memory) > 0:
                k = len(self.memory)
                self.brain.train_push(*get_sample(self.memory, k))
                self.R = (self.R - self.memory[0][2]) / gamma
                self.memory.pop(0)
            self.R = 0.0
        if len(self.memory) >= n:
            self.brain.train_push(*get_sample(self.memory, n))
            self.R = self.R - self.memory[0][2]
            self.memory.pop(0)


def _make_env(env_id: str, latency: float):
    if latency > 0:
        return LatencyCartPole(latency=latency)
    return gym.make(env_id)


def run(env_id: str = "CartPole-v1", seconds: float = 30.0, *, latency: float = 0.0, agents: int | None = None,
        seed: int = 0, until_solved: bool = False, window: int = 100, eval_agents: int = 1,
        on_progress=None, log_interval: float = 1.0) -> dict:
    """Train for ``seconds`` (or until solved); the seed's threads, this file's figures."""
    c = dict(SEED)
    if agents is not None:
        c["agents"] = agents
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    probe = _make_env(env_id, latency)
    obs_dim = int(np.prod(probe.observation_space.shape))
    n_actions = int(probe.action_space.n)
    threshold = probe.spec.reward_threshold if probe.spec is not None else None
    brain = Brain(obs_dim, n_actions, c)
    counter = [0]  # env steps, all threads
    stop = threading.Event()
    eval_returns: deque[float] = deque(maxlen=window)
    solved: list[float | int] = []
    episodes = [0]
    t0 = time.perf_counter()

    def agent_thread(i: int, evaluation: bool) -> None:
        env = _make_env(env_id, latency)
        eps = (0.0, 0.0) if evaluation else (c["eps_start"], c["eps_stop"])
        agent = Agent(brain, n_actions, c, counter, *eps)
        s, _ = env.reset(seed=seed * 1000 + i) if latency <= 0 else env.reset_now(seed * 1000 + i)
        s = np.asarray(s, np.float32)
        total = 0.0
        while not stop.is_set():
            time.sleep(c["thread_delay"])
            a = agent.act(s)
            if latency > 0:
                time.sleep(latency)
                s_, r, term, trunc, _ = env.step_now(a)
            else:
                s_, r, term, trunc, _ = env.step(a)
            s_ = np.asarray(s_, np.float32)
            done = term or trunc
            agent.train(s, a, r, None if done else s_)
            counter[0] += 1
            total += r
            s = s_
            if done:
                episodes[0] += 1
                if evaluation:
                    eval_returns.append(total)
                    if (not solved and threshold is not None and len(eval_returns) == window
                            and np.mean(eval_returns) >= threshold):
                        solved.extend([time.perf_counter() - t0, counter[0]])
                        if until_solved:
                            stop.set()
                total = 0.0
                s, _ = env.reset() if latency <= 0 else env.reset_now()
                s = np.asarray(s, np.float32)

    def optimizer_thread() -> None:
        while not stop.is_set():
            brain.optimize()

    threads = [threading.Thread(target=agent_thread, args=(i, False), daemon=True) for i in range(c["agents"])]
    threads += [threading.Thread(target=agent_thread, args=(c["agents"] + j, True), daemon=True)
                for j in range(eval_agents)]
    threads += [threading.Thread(target=optimizer_thread, daemon=True) for _ in range(c["optimizers"])]
    for t in threads:
        t.start()
    next_log = log_interval
    while not stop.is_set():
        time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            stop.set()
        if on_progress is not None and elapsed >= next_log:
            next_log += log_interval
            on_progress({"seconds": elapsed, "env_steps": counter[0],
                         "eval_return_mean": float(np.mean(eval_returns)) if eval_returns else float("nan")})
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {
        "system": "seed-threaded", "env": env_id, "seed": seed, "seconds": elapsed, "env_steps": counter[0],
        "steps_per_second": counter[0] / elapsed, "episodes": episodes[0], "updates": brain.updates,
        "solved": bool(solved), "solved_after_seconds": solved[0] if solved else None,
        "solved_after_steps": solved[1] if solved else None, "reward_threshold": threshold,
        "eval_window_mean_return": float(np.mean(eval_returns)) if eval_returns else None,
        "model": brain.model, "agents": c["agents"], "latency": latency,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="the seed article's threaded A3C (torch), as a baseline")
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--agents", type=int, default=None, help="agent threads (default: the seed's 8)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds each env step sleeps first")
    p.add_argument("--until-solved", action="store_true")
    args = p.parse_args(argv)
    r = run(args.env, args.seconds, latency=args.latency, agents=args.agents, seed=args.seed,
            until_solved=args.until_solved)
    r.pop("model")
    print(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


