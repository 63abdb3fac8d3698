"""What a run leaves behind: the run directory, checkpoints, TensorBoard events, curves and videos.

Beside the runtime: it imports the core, never the loop side, so tools that
only read runs (``asynca3c plot``, ``asynca3c eval``) need no event loop.
"""
