"""Recording a policy as a video (.mp4 or .gif): the seed ends by watching its agent play.

Frames come from the environment's ``render_mode="rgb_array"`` (classic-control
environments draw with pygame: ``pip install 'asynca3c[video]'``); imageio
writes them (ffmpeg for .mp4, Pillow for .gif).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from asynca3c.core.envs import make_env
from asynca3c.core.evaluation import PolicyFn
from asynca3c.errors import EnvError, VideoError

FORMATS = (".mp4", ".gif")



def record(policy: PolicyFn, env_id: str, path: str | os.PathLike, *, episodes: int = 1,
           env_kwargs: dict | None = None, seed: int = 0, fps: int | None = None,
           env_wrapper: str = "") -> tuple[Path, list[float]]:
    """Play ``episodes`` episodes with ``policy`` (a batch policy, given batches of one) and write them;
    the policy sees ``env_wrapper``'s observations, the video shows the whole environment.

    Returns the file written and the episodes' returns.
    """
    path = check_path(path)
    import imageio.v2 as imageio

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws off-screen; no display needed
    try:
        env = make_env(env_id, env_kwargs, wrapper=env_wrapper, render_mode="rgb_array")
    except EnvError as e:
        raise VideoError(f"{env_id} cannot render here: {e}") from None
    fps = fps or int(env.metadata.get("render_fps") or 30)
    frames: list[npt.ArrayLike] = []  # what imageio's mimsave takes
    returns: list[float] = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            if callable(reset := getattr(policy, "reset", None)):  # a recurrent policy's new episode
                reset()
            frames.append(_frame(env))
            total, done = 0.0, False
            while not done:
                action = np.asarray(policy(np.asarray(obs)[None]))[0]
                obs, reward, term, trunc, _ = env.step(action)
                total += float(reward)
                done = term or trunc
                frames.append(_frame(env))
            returns.append(total)
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    else:
        try:
            imageio.mimsave(path, frames, fps=fps, codec="libx264", macro_block_size=2)
        except (ImportError, RuntimeError, ValueError) as e:  # no ffmpeg backend
            raise VideoError(f"writing {path.name} needs ffmpeg (pip install imageio-ffmpeg) or use .gif: "
                             f"{str(e).splitlines()[0]}") from None
    return path, returns


def check_path(path: str | os.PathLike) -> Path:
    """Refuse an unknown format or missing imageio before any episode is played."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise VideoError(f"video path {str(path)!r} is not allowed: it must end in {' or '.join(FORMATS)}")
    try:
        import imageio.v2  # noqa: F401
    except ImportError:
        raise VideoError("recording needs imageio: pip install 'asynca3c[video]'") from None
    return path


def _frame(env) -> np.ndarray:
    frame = env.render()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise VideoError(f"{env.spec.id if env.spec else env} rendered {type(frame).__name__}, not an RGB image")
    return frame
