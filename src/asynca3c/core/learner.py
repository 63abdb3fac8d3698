"""The minimize step: one locked, synchronous update of the shared network (n-step samples), or a
fixed number of them over a batch of segments with V-trace targets.

Plain torch, no asyncio: the runtime's learner client decides where it runs
(a worker process or executor threads). The lock serializes updates so two steps never
interleave a backward pass with another's parameter write; the loop-side
acting copy only ever receives whole, finished weight snapshots.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from asynca3c.config import Config
from asynca3c.core.messages import SampleBatch, Segment, StepStats
from asynca3c.core.model import ActorCritic, a3c_loss, build_network, describe_network
from asynca3c.core.vtrace import vtrace
from asynca3c.errors import LearnerError


class Learner:
    """Owns the trained network and its optimizer state on ``device``."""

    def __init__(self, model: ActorCritic, config: Config, device: torch.device):
        self.device = device
        self.model = model.to(device).use_channels_last()
        self.config = config
        if config.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                self.model.parameters(), lr=config.lr, eps=config.rmsprop_eps)
        else:
            self.optimizer = torch.optim.RMSprop(
                self.model.parameters(), lr=config.lr, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps)
        self.lock = threading.Lock()
        self.version = 0
        self.nonfinite_in_a_row = 0
        self.unshipped = 0  # updates whose weights no reply has carried yet (Config.weights_every)
        # the weights a step returns are copies; a worker that ships (or drops) them before its next step
        # turns this off and gets the CPU model's own tensors (a Nature CNN: 6.7 MB less copied per update)
        self.copy_weights = True

    def cpu_weights(self) -> list[torch.Tensor]:
        """What the acting network needs (``ActorCritic.shipped``) on the CPU: copies, or with
        ``copy_weights`` off the tensors themselves where the model is on the CPU (valid until the next step)."""
        return [p.detach().to("cpu", copy=self.copy_weights) for p in self.model.shipped()]

    def state(self) -> dict:
        """Model and optimizer state plus the version, as CPU tensors (safe to save)."""
        with self.lock:
            return {"model": _to_cpu(self.model.state_dict()), "optimizer": _to_cpu(self.optimizer.state_dict()),
                    "version": self.version}

    def load(self, state: dict) -> None:
        with self.lock:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.version = int(state["version"])

    def _apply(self, total: torch.Tensor) -> tuple[float, bool]:
        """Backward and one optimizer step: a new policy version. A non-finite loss or gradient skips
        the step instead (weights and optimizer state stay as they were) and is counted; too many in a
        row stop the run. Returns (gradient norm, whether the step was taken)."""
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = math.nan
        if bool(torch.isfinite(total)):
            total.backward()
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
            if math.isfinite(grad_norm):
                self.optimizer.step()
                self.model.keep_in_bounds()
                self.version += 1
                self.nonfinite_in_a_row = 0
                return grad_norm, True
            self.optimizer.zero_grad(set_to_none=True)
        self._skip(f"loss {float(total.detach())!r}, gradient norm {grad_norm!r}")
        return grad_norm, False

    def one_pass(self) -> bool:
        """Whether ``learn`` takes one gradient step per batch on all of it (epochs = minibatches = 1)."""
        return self.config.epochs == 1 and self.config.minibatches == 1

    def _set_lr(self, factor: float) -> None:
        """The configured lr times ``factor`` (the schedule's, in [0, 1]) for the steps that follow."""
        if not (isinstance(factor, (int, float)) and 0.0 <= factor <= 1.0):
            raise ValueError(f"lr factor {factor!r} is not a number in [0, 1]")
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * factor

    def _skip(self, what: str) -> None:
        """Count a step not taken for non-finite numbers; too many in a row end the run."""
        self.nonfinite_in_a_row += 1
        if self.nonfinite_in_a_row >= self.config.max_nonfinite_steps:
            raise LearnerError(
                f"{self.nonfinite_in_a_row} non-finite losses or gradients in a row (last: {what}); the weights "
                f"of policy version {self.version}, the last good one, were kept: lower lr or reward_scale, or "
                "look for non-finite rewards or observations")

    def step(self, batch: SampleBatch, lr_factor: float = 1.0) -> tuple[StepStats, list[torch.Tensor]]:
        """One minimize step on ``batch`` of n-step samples at ``lr_factor`` times the configured lr;
        returns its stats and the new weights."""
        cfg, dev = self.config, self.device
        with self.lock:
            self._set_lr(lr_factor)
            b = len(batch)
            obs = torch.from_numpy(np.concatenate([batch.obs, batch.boot_obs])).to(dev)
            if lr_factor > 0:  # a step at lr 0 (a schedule's end) changes nothing, the normalizer included
                self.model.update_obs_stats(obs[:b])
            ret = torch.from_numpy(batch.ret).to(dev)
            discount = torch.from_numpy(batch.discount).to(dev)
            actions = torch.from_numpy(batch.action).to(dev)
            out, values = self.model(obs)
            # Bootstrap from V(s_n) of the current network, as the seed does; no gradient.
            targets = ret + discount * values[b:].detach()
            logp, entropy = self.model.log_prob_entropy(out[:b], actions)
            loss = a3c_loss(logp, entropy, values[:b], targets, cfg.value_coef, cfg.entropy_coef)
            lag = self.version - batch.version
            grad_norm, stepped = self._apply(loss.total)
            policy_loss, value_loss, entropy_mean = torch.stack([loss.policy, loss.value, loss.entropy]).tolist()
            stats = StepStats(self.version, b, policy_loss, value_loss, entropy_mean, grad_norm,
                              lag_sum=float(lag.sum()), steps=int(stepped), nonfinite=int(not stepped),
                              lag_max=float(lag.max()))
            return stats, self.cpu_weights()

    def learn(self, seg: Segment, lr_factor: float = 1.0) -> tuple[StepStats, list[torch.Tensor]]:
        """``epochs`` passes of ``minibatches`` gradient steps over a batch of segments, with V-trace
        targets and importance weights recomputed by the current network before every pass; at
        ``lr_factor`` times the configured lr."""
        cfg, dev = self.config, self.device
        with self.lock:
            self._set_lr(lr_factor)
            T, E = seg.reward.shape
            obs = torch.from_numpy(seg.obs).to(dev)
            if lr_factor > 0:  # a step at lr 0 (a schedule's end) changes nothing, the normalizer included
                self.model.update_obs_stats(obs[:T].reshape(T * E, -1))  # row T is the next segment's row 0
            actions = torch.from_numpy(seg.action).to(dev)
            mu = torch.from_numpy(seg.behaviour_logp).to(dev)
            valid = torch.from_numpy(seg.valid).to(dev)
            state0 = torch.from_numpy(seg.state0[0]).to(dev)
            weight = valid.float()
            rng = np.random.default_rng(self.version)  # the column order: varied, and reproducible
            sums = np.zeros(4)  # policy loss, value loss, entropy, gradient norm (over the steps taken)
            steps = skipped = trained = 0
            lag_sum, lag_max = 0.0, -math.inf
            rho_stats = (math.nan, math.nan, math.nan)
            start_logp = mu
            moved_too_far = False  # target_kl: the policy has moved far enough for this batch
            attempted = 0  # minibatch steps tried so far on this batch (the first is never stopped)
            # One pass of one minibatch (each sample learned from once): the forward pass that gives the targets
            # is also the one trained, so the batch goes through the network once instead of twice.
            single = self.one_pass()
            for epoch in range(cfg.epochs):
                if moved_too_far:
                    break
                with torch.set_grad_enabled(single):
                    out, values_grad = self.model.unroll(obs, state0, valid)
                    logp_grad, ent_all = self.model.log_prob_entropy(out[:T * E],
                                                                     actions.reshape(T * E, *actions.shape[2:]))
                values, logp = values_grad.detach(), logp_grad.detach()
                log_rho = torch.where(valid, (logp.view(T, E) - mu).clamp(-20.0, 20.0), 0.0)
                if not (bool(torch.isfinite(values).all()) and bool(torch.isfinite(log_rho).all())):
                    for _ in range(cfg.minibatches):  # no targets this pass: each of its steps is skipped
                        self._skip("non-finite values or log-probabilities from the network")
                    skipped += cfg.minibatches
                    continue
                log_rho_np = log_rho.double().cpu().numpy()
                if epoch == 0:  # the lag the data really has, corrected for or not
                    rho_stats = _rho_figures(log_rho_np[seg.valid], cfg.rho_bar)
                    # the uncorrected update clips against the learner's policy before this batch, as PPO
                    # run asynchronously without a correction would
                    start_logp = logp.view(T, E)
                if not cfg.importance_correction:  # the uncorrected update: as if mu were pi
                    log_rho_np = np.zeros_like(log_rho_np)
                vt = vtrace(values.view(T + 1, E).double().cpu().numpy(), seg.reward, log_rho_np, seg.terminated,
                            seg.truncated, seg.valid, gamma=cfg.gamma, rho_bar=cfg.rho_bar, c_bar=cfg.c_bar)
                vs = torch.from_numpy(vt.vs).float().to(dev)
                adv = torch.from_numpy(vt.advantages).float().to(dev)
                if cfg.clip_ratio:  # the surrogate applies its own ratio: take the advantage without rho
                    rho = torch.from_numpy(np.minimum(cfg.rho_bar, np.exp(log_rho_np))).float().to(dev)
                    adv = adv / rho
                for cols in [np.arange(E)] if single else np.array_split(rng.permutation(E), cfg.minibatches):
                    idx = torch.from_numpy(cols).to(dev)
                    w = weight[:, idx]
                    count = w.sum().clamp(min=1.0)
                    if single:
                        lp, v, ent = logp_grad.view(T, E), values_grad[:T * E].view(T, E), ent_all.view(T, E)
                    else:
                        o, v = self.model.unroll(obs[:T, idx], state0[idx], valid[:, idx])
                        lp, ent = self.model.log_prob_entropy(o, actions[:, idx].reshape(T * len(cols),
                                                                                         *actions.shape[2:]))
                        lp, v, ent = lp.view(T, -1), v.view(T, -1), ent.view(T, -1)
                    if cfg.target_kl and attempted and \
                            _approx_kl(lp.detach() - start_logp[:, idx], valid[:, idx], count) > cfg.target_kl:
                        moved_too_far = True
                        break
                    attempted += 1
                    trained += int(seg.valid[:, cols].sum())  # this pass has targets: these samples are trained on
                    a = adv[:, idx]
                    if cfg.normalize_advantages:
                        mean = (a * w).sum() / count
                        std = (((a - mean) ** 2 * w).sum() / count).sqrt()
                        a = (a - mean) / (std + 1e-8)
                    if cfg.clip_ratio:
                        behaviour = mu[:, idx] if cfg.importance_correction else start_logp[:, idx]
                        ratio = torch.exp((lp - behaviour).clamp(-20.0, 20.0))
                        clipped = ratio.clamp(1 - cfg.clip_ratio, 1 + cfg.clip_ratio)
                        pg = -torch.minimum(ratio * a, clipped * a)
                    else:
                        pg = -lp * a
                    policy = (pg * w).sum() / count
                    value = ((vs[:, idx] - v) ** 2 * w).sum() / count
                    entropy = (ent * w).sum() / count
                    total = policy + cfg.value_coef * value - cfg.entropy_coef * entropy
                    lag = (self.version - seg.version[:, cols])[seg.valid[:, cols]]
                    if lag.size:
                        lag_sum += float(lag.sum())
                        lag_max = max(lag_max, float(lag.max()))
                    grad_norm, stepped = self._apply(total)
                    if stepped:
                        steps += 1
                        sums += [float(policy.detach()), float(value.detach()), float(entropy.detach()), grad_norm]
                    else:
                        skipped += 1
            means = sums / steps if steps else np.full(4, math.nan)
            policy_loss, value_loss, entropy_mean, grad_norm = means.tolist()
            stats = StepStats(self.version, trained, policy_loss, value_loss, entropy_mean, grad_norm,
                              lag_sum=lag_sum, steps=steps,
                              nonfinite=skipped, lag_max=lag_max if math.isfinite(lag_max) else math.nan,
                              rho_mean=rho_stats[0], rho_clipped=rho_stats[1], kl=rho_stats[2])
            return stats, self.cpu_weights()


def _approx_kl(log_ratio: torch.Tensor, valid: torch.Tensor, count: torch.Tensor) -> float:
    """KL(old || new) estimated from log(new/old) as the mean of (r - 1) - log r over the valid steps
    (Schulman's estimator, as PPO implementations use for early stopping): never negative, and exact in
    expectation on the old policy's own samples; on actions of lagging actors it is skewed by their lag.
    Invalid steps count as 0 whatever the network made of them."""
    log_r = torch.where(valid, log_ratio.clamp(-20.0, 20.0), 0.0)
    return float(((torch.exp(log_r) - 1) - log_r).sum() / count)


def _rho_figures(log_rho: np.ndarray, rho_bar: float) -> tuple[float, float, float]:
    """Mean pi/mu, the fraction above rho_bar, and KL(mu || pi) estimated as mean((rho - 1) - log rho)."""
    if not log_rho.size:
        return math.nan, math.nan, math.nan
    rho = np.exp(log_rho)
    return float(rho.mean()), float((rho > rho_bar).mean()), float(((rho - 1) - log_rho).mean())


def _to_cpu(obj):
    """A copy of a (nested) state dict with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


@dataclass(frozen=True)
class LearnerSpec:
    """Everything that builds a Learner, as plain picklable values: it crosses the pipe to the worker."""

    config: dict
    network: dict  # describe_network's
    weights: dict  # the initial state dict, CPU tensors
    device: str

    @classmethod
    def of(cls, model: ActorCritic, config: Config, device: torch.device) -> LearnerSpec:
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return cls(config.to_dict(), describe_network(model), weights, str(device))

    def build(self) -> Learner:
        """The Learner, in whichever process calls this."""
        cfg = Config.from_dict(self.config)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        model = build_network(self.network)
        model.load_state_dict(self.weights)
        return Learner(model, cfg, torch.device(self.device))
