"""The synchronous core: no asyncio, no CLI, no outputs.

The compiled return kernels with their validating wrappers and Python twins
(``returns``), environments and observation encoding (``envs``), action
distributions (``actions``), reward shaping (``rewards``), the messages that
cross process boundaries (``messages``), the network (``model``), the minimize
step (``learner``) and plain evaluation episodes (``evaluation``). Code that
runs in other processes (the learner worker, later acting shards) imports this
layer and nothing above it.
"""
