"""Batched inference: one forward pass answers every agent that is waiting.

Per-agent ``predict`` calls were the main cost of the seed's design; a small
MLP costs about the same for 1 row as for hundreds, so the predictor gathers
the observations of all agents that are ready and runs one forward for them.
"""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from asynca3c.model import ActorCritic


class Predictor:
    """Holds the acting copy of the network (CPU) and answers ``infer`` requests."""

    def __init__(self, model: ActorCritic):
        self.model = model.eval()
        self.version = 0
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self.forward_passes = 0
        self.rows = 0

    def set_weights(self, weights: list[torch.Tensor | np.ndarray], version: int) -> None:
        """Adopt a finished snapshot; older snapshots arriving late are ignored."""
        if version <= self.version:
            return
        tensors = [torch.as_tensor(w) for w in weights]
        with torch.no_grad():
            torch._foreach_copy_(list(self.model.parameters()), tensors)
        self.version = version

    async def infer(self, obs: np.ndarray) -> tuple[np.ndarray, int]:
        """Action probabilities [len(obs), n_actions] and the policy version that gave them."""
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((obs, fut))
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
                self._answer([(o, f) for o, f in batch if not f.done()])
        finally:
            for _, fut in self._pending:
                fut.cancel()

    def _answer(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        if not batch:
            return
        try:
            obs = np.concatenate([o for o, _ in batch]) if len(batch) > 1 else batch[0][0]
            with torch.inference_mode():
                logits, _ = self.model(torch.from_numpy(obs))
                probs = torch.softmax(logits, dim=-1).numpy()
        except Exception as exc:
            for _, fut in batch:
                fut.set_exception(exc)
            raise
        self.forward_passes += 1
        self.rows += len(obs)
        i = 0
        for o, fut in batch:
            fut.set_result((probs[i:i + len(o)], self.version))
            i += len(o)
