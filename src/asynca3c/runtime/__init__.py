"""The event-loop side: everything that schedules, nothing that computes.

``trainer`` (the lifecycle a host sees) starts a ``run`` (one run's wiring).
Agents (``agent``, ``async_agents``) step environments from an ``env_sources``
object and ask the ``predictor`` for actions; ``updates`` tasks hand sample
batches to the learner through ``learner_client`` (the ``learner_worker``
process speaks the ``wire`` format); ``progress``, ``metrics`` and ``looplag``
keep the figures; ``uvloop_runner`` gives synchronous callers a loop.
"""
