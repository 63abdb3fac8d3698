"""A CNN predictor runs its forward pass in a thread: callers of a pass that never ends normally still get
an answer, and weights never change under a pass that is still running."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

from asynca3c.core.actions import DiscreteActions
from asynca3c.core.model import ActorCritic
from asynca3c.runtime.predictor import Predictor

OBS = np.zeros((1, 1, 36, 36), np.uint8)


def held_predictor():
    """A predictor whose forward pass waits for ``release`` (set it to let the pass end), recording whether
    the weights it reads changed while it ran."""
    predictor = Predictor(ActorCritic(36 * 36, 3, encoder="a3c", obs_shape=(1, 36, 36)), DiscreteActions(3))
    assert predictor.offload
    release, seen = threading.Event(), {}
    compute = predictor._compute

    def held(batch):
        first = next(predictor.model.parameters())
        before = first.detach().clone()
        release.wait(10)
        seen["changed_under_the_pass"] = not torch.equal(before, first.detach())
        return compute(batch)

    predictor._compute = held
    return predictor, release, seen


async def pass_started(predictor: Predictor):
    for _ in range(500):
        if predictor._computing:
            return
        await asyncio.sleep(0.01)
    pytest.fail("the forward pass never started")


def test_a_caller_of_a_pass_in_flight_gets_the_failure_when_the_predictor_stops():
    async def main():
        predictor, release, _ = held_predictor()
        task = asyncio.create_task(predictor.run())
        caller = asyncio.create_task(predictor.infer(OBS))  # e.g. Trainer.act() from the host
        await pass_started(predictor)
        predictor.fail(RuntimeError("the trainer closed"))  # what Trainer.aclose does, then cancels
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        release.set()
        with pytest.raises(RuntimeError, match="the trainer closed"):
            await asyncio.wait_for(caller, 5)

    asyncio.run(main())


def test_a_cancelled_pass_in_flight_cancels_its_callers():
    async def main():
        predictor, release, _ = held_predictor()
        task = asyncio.create_task(predictor.run())
        caller = asyncio.create_task(predictor.infer(OBS))
        await pass_started(predictor)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, 5)

    asyncio.run(main())


@pytest.mark.parametrize("how", ["set_weights", "adopt_state"])
@pytest.mark.parametrize("cancelled", [False, True])
def test_weights_that_arrive_during_a_pass_are_adopted_only_after_it(how, cancelled):
    async def main():
        predictor, release, seen = held_predictor()
        task = asyncio.create_task(predictor.run())
        caller = asyncio.create_task(predictor.infer(OBS))
        await pass_started(predictor)
        if how == "set_weights":
            predictor.set_weights([torch.ones_like(t) for t in predictor.model.shipped()], 5)
        else:
            state = {k: torch.ones_like(v) for k, v in predictor.model.state_dict().items()}
            predictor.adopt_state(state, 5)
        assert predictor.version == 0  # deferred
        if cancelled:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert predictor.version == 0  # the thread is still in its pass
            release.set()
            await asyncio.gather(caller, return_exceptions=True)
            for _ in range(500):
                if predictor.version == 5:
                    break
                await asyncio.sleep(0.01)
        else:
            settled = asyncio.create_task(predictor.settle())
            await asyncio.sleep(0.05)
            assert not settled.done()  # the weights still wait for the pass
            release.set()
            _, version = await asyncio.wait_for(caller, 5)
            assert version == 0  # answered with the weights the pass used
            await asyncio.wait_for(settled, 5)
            assert predictor.version == 5
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert seen == {"changed_under_the_pass": False}
        assert predictor.version == 5
        assert all((p == 1).all() for p in predictor.model.parameters())

    asyncio.run(main())
