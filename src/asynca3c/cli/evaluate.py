"""``asynca3c eval``: play a trained policy's fresh episodes; optionally record a video."""

from __future__ import annotations

import argparse
from pathlib import Path

from asynca3c.errors import ConfigError


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="play a trained policy: return statistics, optionally a video",
                        description="Play fresh episodes with a trained policy (no epsilon) and print the mean, "
                                    "std, min and max return; --video records episodes to .mp4 or .gif.")
    ev.add_argument("source", type=Path, metavar="RUN_DIR_OR_CHECKPOINT",
                    help="a run directory (its checkpoint.pt) or a checkpoint file")
    ev.add_argument("--episodes", type=int, default=100, help="episodes to play (default: 100)")
    ev.add_argument("--deterministic", action="store_true",
                    help="always take the most likely action (default: sample from the policy)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: 0)")
    ev.add_argument("--max-steps", type=int, default=10_000,
                    help="cut off episodes after this many steps, for environments without a time limit of "
                         "their own (default: 10000)")
    ev.add_argument("--video", type=Path, default=None, metavar="PATH.mp4|PATH.gif",
                    help="also record episodes to this file (needs: pip install 'asynca3c[video]')")
    ev.add_argument("--video-episodes", type=int, default=1, help="episodes in the video (default: 1)")
    ev.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from asynca3c.core.envs import inspect_env
    from asynca3c.core.evaluation import evaluate, model_policy
    from asynca3c.outputs.checkpoint import load_policy_env
    from asynca3c.outputs.video import check_path, record

    for name, high in (("episodes", 10**6), ("video_episodes", 1_000), ("max_steps", 10**9)):
        if not 1 <= getattr(args, name) <= high:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)} is not allowed: an integer in "
                              f"[1, {high:,}]")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed {args.seed} is not allowed: an integer in [0, 2**32 - 1]")
    if args.video is not None:
        check_path(args.video)
    model, env_id, env_kwargs, wrapper = load_policy_env(args.source)
    result = evaluate(model, env_id, args.episodes, env_kwargs=env_kwargs, seed=args.seed,
                      deterministic=args.deterministic, max_steps=args.max_steps, env_wrapper=wrapper)
    st = result.stats()
    how = "most likely action" if args.deterministic else "actions sampled from the policy"
    print(f"{env_id}: mean {st['mean']:.2f}, std {st['std']:.2f}, min {st['min']:.1f}, max {st['max']:.1f} "
          f"over {args.episodes} episodes ({how})")
    if args.video is not None:
        policy = model_policy(model, inspect_env(env_id, env_kwargs, wrapper=wrapper), args.deterministic,
                              np.random.default_rng(args.seed))
        path, returns = record(policy, env_id, args.video, episodes=args.video_episodes, env_kwargs=env_kwargs,
                               seed=args.seed, env_wrapper=wrapper)
        print(f"wrote {path} ({len(returns)} episode(s), returns {', '.join(f'{r:g}' for r in returns)})")
    return 0
