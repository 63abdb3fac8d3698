"""The actor-critic network and the seed's A3C loss; plain torch, no asyncio."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: Bounds of a Gaussian policy's log standard deviation (in the normalized action box [-1, 1]):
#: below, exploration has died and log-probabilities explode; above, actions are noise.
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
#: Recurrent cores a policy can have ("": none, feed-forward).
CORES = ("", "lstm", "gru")
#: Running-normalized observations are clipped to this many standard deviations.
OBS_CLIP = 10.0
#: What turns observations into features: hidden layers over the flattened observation, or a CNN over uint8
#: images [C, H, W] ('nature': the Nature DQN network, 512 features; 'a3c': the A3C paper's smaller one, 256).
ENCODERS = ("mlp", "nature", "a3c")
#: Each CNN: (out channels, kernel, stride) per convolution, then the width of its fully connected layer.
CNN_LAYERS: dict[str, tuple[tuple[tuple[int, int, int], ...], int]] = {
    "nature": (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),
    "a3c": (((16, 8, 4), (32, 4, 2)), 256),
}


def cnn_encoder(kind: str, obs_shape: tuple[int, ...]) -> tuple[nn.Sequential, int]:
    """The convolutional body of ``kind`` for images of ``obs_shape`` (C, H, W), ending in its fully
    connected layer; and that layer's width. ConvNets need at least the kernel's size at every layer:
    a ValueError names the smallest image that fits."""
    too_small = cnn_too_small(kind, obs_shape)
    if too_small:
        raise ValueError(too_small)
    convs, width = CNN_LAYERS[kind]
    channels, h, w = (int(x) for x in obs_shape)
    layers: list[nn.Module] = []
    for out, kernel, stride in convs:
        layers += [nn.Conv2d(channels, out, kernel, stride), nn.ReLU()]
        channels, h, w = out, (h - kernel) // stride + 1, (w - kernel) // stride + 1
    layers += [nn.Flatten(), nn.Linear(channels * h * w, width), nn.ReLU()]
    return nn.Sequential(*layers), width


def cnn_too_small(kind: str, obs_shape: tuple[int, ...]) -> str:
    """Why images of ``obs_shape`` (C, H, W) are too small for the ``kind`` CNN ('' when they fit)."""
    _, h, w = (int(x) for x in obs_shape)
    for _, kernel, stride in CNN_LAYERS[kind][0]:
        if h < kernel or w < kernel:
            side = smallest_side(kind)
            return (f"images of shape {tuple(obs_shape)} are too small for the {kind!r} CNN (a {kernel}x{kernel} "
                    f"convolution meets {h}x{w}); use images of at least {side}x{side}, or encoder='mlp'")
        h, w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    return ""


def smallest_side(kind: str) -> int:
    """The smallest image side the ``kind`` CNN takes (36 for Nature, 20 for the A3C paper's)."""
    side = 1
    for _, kernel, stride in reversed(CNN_LAYERS[kind][0]):
        side = (side - 1) * stride + kernel  # the input that leaves ``side`` after this convolution
    return side


def _mlp(width: int, hidden: tuple[int, ...]) -> tuple[nn.Sequential, int]:
    """Linear layers of ``hidden``'s sizes with ReLUs after each, and their output width."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers), width


def _orthogonal(module: nn.Module, gain: float) -> None:
    """Orthogonal weights and zero biases for every linear and convolutional layer of ``module`` (the
    initialization A2C/PPO's Atari networks use: gain sqrt(2) under ReLU, 0.01 for the policy, 1 for the value)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(layer.weight, gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ActorCritic(nn.Module):
    """Shared hidden layers, an optional recurrent core, a policy head and a linear value head.

    ``separate_value`` (feed-forward MLPs only) gives the value head hidden
    layers of its own, of the same sizes, so the value loss no longer shapes
    the policy's features (SB3's default for MLP policies).

    Discrete actions: the policy head gives logits of a softmax. Continuous
    (Box) actions: it gives the mean of a diagonal Gaussian, squashed into
    [-1, 1] by tanh (the action box, normalized; an unbounded mean drifted far
    outside the box, where clipping hides every difference between actions),
    whose log standard deviation is a learned, state-independent parameter
    held within [LOG_STD_MIN, LOG_STD_MAX];
    ``forward`` then returns ``[mean | log_std]`` so both kinds travel as one tensor.

    A recurrent core (``core='lstm'`` or ``'gru'``) sits between the hidden
    layers and the heads. Its state is one float tensor ``[B, state_size]``
    (an LSTM's ``h | c``), so it travels through numpy and segments like any
    other column. ``step`` advances it by one observation; ``unroll`` replays
    a ``[L, E]`` block of observations from a start state, zeroing the state
    wherever an episode began, exactly as the agents did when acting.
    """

    obs_center: torch.Tensor  # registered buffers
    obs_scale: torch.Tensor
    obs_count: torch.Tensor
    obs_mean: torch.Tensor
    obs_var: torch.Tensor
    obs_running: torch.Tensor

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...] = (16,), continuous: bool = False,
                 obs_bounds: tuple | None = None, core: str = "", core_size: int = 64, running_norm: bool = False,
                 log_std_init: float = 0.0, encoder: str = "mlp", obs_shape: tuple[int, ...] = (),
                 separate_value: bool = False):
        """``obs_bounds``: (low, high) of a Box observation space; dimensions with finite bounds are
        mapped onto [-1, 1] before the first layer (a velocity within +-0.07 is otherwise invisible).
        ``running_norm``: the other dimensions (all of them without ``obs_bounds``) are normalized by a
        running mean and variance that ``update_obs_stats`` keeps; being buffers, the statistics are
        saved with the weights and shipped with them to the acting copy.
        ``encoder``: 'mlp' (``hidden`` layers), or a CNN over uint8 images of ``obs_shape`` (C, H, W), scaled
        to [0, 1] inside the network so frames travel as bytes; ``hidden`` is not used then."""
        super().__init__()
        if core not in CORES:
            raise ValueError(f"core {core!r} is not allowed: choose one of {CORES}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder {encoder!r} is not allowed: choose one of {ENCODERS}")
        self.encoder, self.obs_shape = encoder, tuple(int(x) for x in obs_shape)
        if encoder != "mlp" and (len(self.obs_shape) != 3 or int(np.prod(self.obs_shape)) != obs_dim):
            raise ValueError(f"encoder {encoder!r} needs obs_shape (C, H, W) of {obs_dim} values, not {obs_shape!r}")
        if encoder != "mlp" and (running_norm or obs_bounds is not None):
            raise ValueError(f"encoder {encoder!r} scales pixels to [0, 1] itself: no obs_bounds or running_norm")
        if separate_value and (encoder != "mlp" or core):
            raise ValueError(f"separate_value needs a feed-forward MLP, not encoder {encoder!r} with core {core!r}: "
                             "only an MLP's hidden layers can be given to the value head; turn it off")
        norm_dim = obs_dim if encoder == "mlp" else 0  # a CNN needs no per-dimension normalization
        center, scale = torch.zeros(norm_dim), torch.ones(norm_dim)
        bounded = torch.zeros(obs_dim, dtype=torch.bool)
        if obs_bounds is not None:
            low, high = (torch.as_tensor(b, dtype=torch.float32).reshape(-1) for b in obs_bounds)
            bounded = torch.isfinite(low) & torch.isfinite(high) & (high > low)
            center[bounded] = (high[bounded] + low[bounded]) / 2
            scale[bounded] = 2 / (high[bounded] - low[bounded])
        self.register_buffer("obs_center", center)
        self.register_buffer("obs_scale", scale)
        self.running_norm = running_norm
        if running_norm:  # float64: counts reach millions, and a variance of sums loses float32's precision
            self.register_buffer("obs_count", torch.zeros((), dtype=torch.float64))
            self.register_buffer("obs_mean", torch.zeros(obs_dim, dtype=torch.float64))
            self.register_buffer("obs_var", torch.ones(obs_dim, dtype=torch.float64))
            self.register_buffer("obs_running", ~bounded)  # the dimensions normalized this way
        self.value_body: nn.Sequential | None = None
        if encoder == "mlp":
            self.body, width = _mlp(obs_dim, hidden)
            if separate_value:
                self.value_body = _mlp(obs_dim, hidden)[0]
        else:
            self.body, width = cnn_encoder(encoder, self.obs_shape)
        self.core_kind, self.core_size = core, core_size if core else 0
        if core == "lstm":
            self.core: nn.LSTMCell | nn.GRUCell | None = nn.LSTMCell(width, core_size)
        elif core == "gru":
            self.core = nn.GRUCell(width, core_size)
        else:
            self.core = None
        if self.core is not None:
            width = core_size
        self.policy = nn.Linear(width, n_actions)
        self.value = nn.Linear(width, 1)
        if continuous:
            self.log_std = nn.Parameter(torch.full((n_actions,), float(log_std_init)))
        if encoder != "mlp":
            _orthogonal(self.body, math.sqrt(2))
            _orthogonal(self.policy, 0.01)
            _orthogonal(self.value, 1.0)
        self.obs_dim, self.n_actions, self.hidden, self.continuous = obs_dim, n_actions, tuple(hidden), continuous
        self.separate_value = separate_value
        self.channels_last = False

    def use_channels_last(self) -> ActorCritic:
        """Keep a CNN's convolutions in channels-last memory order (the layout oneDNN's CPU kernels prefer:
        measured here, Nature-CNN training 658 -> 856 samples/s on one thread); a no-op for an MLP. Shapes,
        state dicts and results do not change."""
        if self.encoder != "mlp":
            self.body.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.channels_last = True
        return self

    @property
    def state_size(self) -> int:
        """Width of the recurrent state (0: feed-forward)."""
        return 2 * self.core_size if self.core_kind == "lstm" else self.core_size

    def initial_state(self, batch: int) -> torch.Tensor:
        """The state at an episode's start: zeros ``[batch, state_size]``."""
        return torch.zeros(batch, self.state_size)

    def shipped(self) -> list[torch.Tensor]:
        """What the acting copy needs from the learner's network: the parameters, then the observation
        normalization the forward pass applies (running statistics change it as the learner trains)."""
        return [*self.parameters(), self.obs_center, self.obs_scale]

    @torch.no_grad()
    def update_obs_stats(self, obs: torch.Tensor) -> None:
        """Fold a batch of observation rows [N, obs_dim] into the running mean and variance (the
        parallel-variance formula; a no-op without ``running_norm``)."""
        if not self.running_norm or not len(obs):
            return
        x = obs.detach().to(torch.float64)
        n, count = float(len(x)), float(self.obs_count)
        mean, var = x.mean(0), x.var(0, unbiased=False)
        total = count + n
        delta = mean - self.obs_mean
        self.obs_var.copy_((self.obs_var * count + var * n + delta.pow(2) * count * n / total) / total)
        self.obs_mean.add_(delta * n / total)
        self.obs_count.fill_(total)
        dims = self.obs_running
        self.obs_center[dims] = self.obs_mean[dims].float()
        self.obs_scale[dims] = (self.obs_var[dims] + 1e-8).rsqrt().float()

    @torch.no_grad()
    def keep_in_bounds(self) -> None:
        """Clamp the Gaussian's log-std parameter itself after an optimizer step: clamped only in
        ``forward``, a parameter past a bound gets no gradient and would stay there for good."""
        if self.continuous:
            self.log_std.clamp_(LOG_STD_MIN, LOG_STD_MAX)

    def _inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """What the encoder reads from observation rows (any leading batch axis: rows of obs_dim, or images
        [B, C, H, W]): normalized rows, or images scaled to [0, 1]."""
        if self.encoder != "mlp":
            x = obs.reshape(-1, *self.obs_shape).to(torch.float32) * (1.0 / 255.0)
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        x = (obs.reshape(len(obs), self.obs_dim).to(torch.float32) - self.obs_center) * self.obs_scale
        return x.clamp(-OBS_CLIP, OBS_CLIP) if self.running_norm else x

    def _feed_forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy output, values) of a network without a core."""
        x = self._inputs(obs)
        h = self.body(x)
        return self._heads(h, h if self.value_body is None else self.value_body(x))

    def _heads(self, h: torch.Tensor, h_value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.policy(h)
        if self.continuous:
            log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
            out = torch.cat([torch.tanh(out), log_std.expand_as(out)], dim=-1)
        return out, self.value(h_value).squeeze(-1)

    def _advance(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the core: (its output, the new state)."""
        if isinstance(self.core, nn.LSTMCell):
            h, c = state.chunk(2, dim=-1)
            h, c = self._lstm(self._lstm_input(x), h, c)
            return h, torch.cat([h, c], dim=-1)
        assert self.core is not None
        h = self.core(x, state)
        return h, h

    def _lstm_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input's share of the LSTM's gates, for any number of rows at once (one matmul for a whole
        unroll instead of one per step)."""
        core = self.core
        assert isinstance(core, nn.LSTMCell)
        return F.linear(x, core.weight_ih, core.bias_ih + core.bias_hh)

    def _lstm(self, gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """nn.LSTMCell's step (same parameters, same gate order i, f, g, o) in fewer, larger operations: the
        unroll is a Python loop, and on a CPU its cost is the number of operations, not their size."""
        core = self.core
        assert isinstance(core, nn.LSTMCell)
        gates = torch.addmm(gates_x, h, core.weight_hh.t())
        s, t = torch.sigmoid(gates), torch.tanh(gates)
        i, f, _, o = s.chunk(4, dim=-1)
        g = t.chunk(4, dim=-1)[2]
        c = torch.addcmul(f * c, i, g)
        return o * torch.tanh(c), c

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy output [B, A] (logits) or [B, 2A] (mean | log_std), values [B]); feed-forward only."""
        if self.core is not None:
            raise TypeError("a recurrent network acts with step(obs, state) and learns with unroll(...)")
        return self._feed_forward(obs)

    def step(self, obs: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor | None]:
        """One observation per row from ``state`` [B, state_size]: (policy output, values, new state).
        A feed-forward network ignores the state and returns None for it."""
        if self.core is None:
            out, values = self._feed_forward(obs)
            return out, values, None
        if state is None:
            state = self.initial_state(len(obs)).to(obs.device)
        h, new_state = self._advance(self.body(self._inputs(obs)), state)
        out, values = self._heads(h, h)
        return out, values, new_state

    def unroll(self, obs: torch.Tensor, state0: torch.Tensor | None, valid: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and values of ``obs`` [L, E, obs_dim], flattened to [L*E, ...] in (step, env) order.

        A recurrent core starts from ``state0`` [E, state_size] and carries its
        state from row t-1 to row t unless step t-1 was not valid (an autoreset
        step): the row after one is an episode's first, which starts from zeros.
        ``valid`` is [>= L-1, E]. Gradients flow through the whole block
        (truncated backpropagation through time).
        """
        L, E = obs.shape[:2]
        if self.core is None:
            return self._feed_forward(obs.reshape(L * E, *obs.shape[2:]))
        x = self.body(self._inputs(obs.reshape(L * E, *obs.shape[2:])))
        assert state0 is not None and valid is not None
        # Steps after which some env starts an episode, found once on the host (not one sync per step).
        resets = (~valid[:L - 1]).any(dim=1).tolist() if L > 1 else []
        keep = valid.to(x.dtype).unsqueeze(-1)
        outputs = []
        if isinstance(self.core, nn.LSTMCell):
            gates_x = self._lstm_input(x).view(L, E, -1)
            h, c = state0.chunk(2, dim=-1)
            for t in range(L):
                if t and resets[t - 1]:
                    h, c = h * keep[t - 1], c * keep[t - 1]
                h, c = self._lstm(gates_x[t], h, c)
                outputs.append(h)
        else:
            x, state = x.view(L, E, -1), state0
            for t in range(L):
                if t and resets[t - 1]:
                    state = state * keep[t - 1]
                h, state = self._advance(x[t], state)
                outputs.append(h)
        h = torch.cat(outputs)
        return self._heads(h, h)

    def action_params(self, out: torch.Tensor) -> torch.Tensor:
        """What agents sample from: probabilities, or ``[mean | std]``."""
        if self.continuous:
            mean, log_std = out.chunk(2, dim=-1)
            return torch.cat([mean, log_std.exp()], dim=-1)
        return torch.softmax(out, dim=-1)

    def log_prob_entropy(self, out: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) [B] and the policy's entropy [B] (differential entropy for a Gaussian); a Gaussian's
        log-density is of the unclipped action, the one sampled."""
        if self.continuous:
            mean, log_std = out.chunk(2, dim=-1)
            z = (actions - mean) * torch.exp(-log_std)
            logp = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            entropy = (log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)
            return logp, entropy
        logp_all = F.log_softmax(out, dim=-1)
        logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return logp, -(logp_all.exp() * logp_all).sum(-1)


def describe_network(model: ActorCritic) -> dict:
    """The shape of ``model`` as plain values (checkpoints, the learner worker): ``build_network`` rebuilds it."""
    return {"obs_dim": model.obs_dim, "n_actions": model.n_actions, "hidden": list(model.hidden),
            "continuous": model.continuous, "core": model.core_kind, "core_size": model.core_size,
            "running_norm": model.running_norm, "encoder": model.encoder, "obs_shape": list(model.obs_shape),
            "separate_value": model.separate_value}


def build_network(network: dict, device: str | torch.device = "cpu") -> ActorCritic:
    """A fresh network of the shape ``network`` describes (entries of older checkpoints that lack the
    recurrent core, running normalization or encoder mean none of them: an MLP); its buffers and weights come
    from a state dict."""
    with torch.device(device):
        return ActorCritic(int(network["obs_dim"]), int(network["n_actions"]), tuple(network["hidden"]),
                           bool(network.get("continuous", False)), core=str(network.get("core", "")),
                           core_size=int(network.get("core_size") or 64),
                           running_norm=bool(network.get("running_norm", False)),
                           encoder=str(network.get("encoder", "mlp")),
                           obs_shape=tuple(network.get("obs_shape") or ()),
                           separate_value=bool(network.get("separate_value", False)))


@dataclass
class LossTerms:
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor  # mean policy entropy H


def a3c_loss(
    logp: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    targets: torch.Tensor,
    value_coef: float,
    entropy_coef: float,
) -> LossTerms:
    """The seed's loss, averaged over the batch.

    ``-log pi(a|s) * A`` with the advantage ``A = target - V(s)`` held constant,
    plus ``c_v * A**2`` (this term trains the critic), minus ``c_e * H`` (for a
    softmax, ``+ c_e * sum(p log p)``: minimizing it maximizes entropy).
    ``targets`` must carry no gradient.
    """
    advantage = targets - values
    policy = -(logp * advantage.detach()).mean()
    value = advantage.pow(2).mean()
    mean_entropy = entropy.mean()
    total = policy + value_coef * value - entropy_coef * mean_entropy
    return LossTerms(total, policy.detach(), value.detach(), mean_entropy.detach())
