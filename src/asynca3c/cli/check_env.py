"""``asynca3c check-env``: gymnasium's env checker, then whether asynca3c can train on the env.
Imports no torch."""

from __future__ import annotations

import argparse
import os

from asynca3c.cli.common import json_object, one_line
from asynca3c.errors import EnvError


def add_parser(sub) -> None:
    check = sub.add_parser("check-env", help="check a gymnasium environment and whether asynca3c can train on it",
                           description="Run gymnasium's env checker on ENV_ID (its unwrapped env), print its "
                                       "warnings, then say whether asynca3c supports the environment's spaces. "
                                       "Exit status 0: checker passed and supported; 1: checker failed or not "
                                       "supported; 2: unknown environment id or bad arguments.")
    check.add_argument("env_id", metavar="ENV_ID", help="gymnasium environment id, e.g. CartPole-v1")
    check.add_argument("--env-kwargs", type=json_object, default={}, metavar="JSON",
                       help="keyword arguments for gym.make, as JSON (e.g. '{\"max_episode_steps\": 200}')")
    check.add_argument("--env-wrapper", default="", metavar="NAME",
                       help="also check that this observation wrapper (train's --env-wrapper) fits the env")
    check.add_argument("--skip-render-check", action="store_true",
                       help="skip the checker's render check, which makes the env in each of its render modes "
                            "('human' opens a window)")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """gymnasium's checker, then asynca3c's own verdict (inspect_env), so both kinds of problem show at once."""
    import warnings

    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    from asynca3c.core.atari import VECTOR_ONLY, is_atari, make_atari_env
    from asynca3c.core.envs import inspect_env
    from asynca3c.core.wrappers import check_name

    check_name(args.env_wrapper)  # a bad name is a usage error (status 2), before the checker runs

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # the render check draws off-screen, no window
    with warnings.catch_warnings(record=True) as caught:  # recorded here, even where warnings are errors
        warnings.simplefilter("always")
        try:  # an Atari id is checked as it trains: with the standard preprocessing
            env = (make_atari_env(args.env_id, **{k: v for k, v in args.env_kwargs.items() if k not in VECTOR_ONLY})
                   if is_atari(args.env_id)
                   else gym.make(args.env_id, **args.env_kwargs))
        except TypeError as e:
            raise EnvError(f"bad keyword arguments {args.env_kwargs!r} for {args.env_id!r}: {one_line(e)}") from None
        except gym.error.Error as e:  # unknown id, missing dependency
            raise EnvError(f"cannot make {args.env_id!r}: {one_line(e)}") from None
        except Exception as e:  # whatever the env's constructor raises
            raise EnvError(f"cannot make {args.env_id!r}: {type(e).__name__}: {one_line(e)}") from None
        spaces = f"observation {env.observation_space}, action {env.action_space}"
        try:
            check_env(env.unwrapped, skip_render_check=args.skip_render_check)
            failure = None
        except Exception as e:  # the checker's findings are assertions and whatever the env raises
            failure = f"{type(e).__name__}: {one_line(e)}"
        finally:
            env.close()
        try:
            spec = inspect_env(args.env_id, args.env_kwargs, wrapper=args.env_wrapper)
            unsupported = None
            if args.env_wrapper:
                spaces += f"; with {args.env_wrapper}: {spec.obs_dim} observation dimensions"
            if spec.obs_kind == "image":
                spaces += (f"; trained from uint8 images of (C, H, W) = {spec.obs_shape} through a CNN (encoder "
                           "'auto': the Nature CNN)")
        except EnvError as e:
            unsupported = one_line(e)
    for w in caught:
        print(f"warning: {w.category.__name__}: {one_line(w.message).removeprefix('WARN: ')}")
    print(f"{args.env_id}: gymnasium's env checker " + (f"failed: {failure}" if failure else "passed"))
    print(f"not supported: {unsupported}" if unsupported else f"supported: {spaces}")
    return 1 if failure or unsupported else 0
