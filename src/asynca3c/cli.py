"""The ``asynca3c`` command: the only module that parses argv or picks uvloop.

``asynca3c train`` has one flag per Config field, generated from the dataclass
so a new field can never be forgotten here; its ``help`` metadata is the text
``--help`` shows.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from asynca3c.checkpoint import CheckpointError
from asynca3c.config import PRESETS, Config, ConfigError
from asynca3c.curves import CurveError
from asynca3c.envs import EnvError
from asynca3c.video import VideoError

#: Exit status when a run was stopped by Ctrl-C / SIGTERM (after writing its results and checkpoint).
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments: one line naming the problem (``--help`` has the usage), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _tuple_of(kind):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"key\": 1}}', got {text!r}")
    return value


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Config()
    group = parser.add_argument_group("configuration (defaults shown are the 'default' preset's)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else json.dumps(default) \
            if isinstance(default, dict) else default
        help_ = f"{f.metadata['help']} (default: {shown})"
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_}
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, tuple):
            kind = float if f.name.startswith("epsilon") else int
            group.add_argument(flag, type=_tuple_of(kind), metavar="V[,V...]", **kw)
        elif isinstance(default, dict):
            group.add_argument(flag, type=_json_object, metavar="JSON", **kw)
        elif f.name == "device":
            group.add_argument(flag, metavar="auto|cpu|cuda", **kw)
        elif f.name == "learner":
            group.add_argument(flag, choices=["process", "thread"], **kw)
        else:
            group.add_argument(flag, type=type(default), **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="asynca3c", description="Asynchronous advantage actor-critic "
                                     "on asyncio, uvloop, torch and a Cython return kernel.")
    sub = parser.add_subparsers(parser_class=OneLineErrorParser, dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train an agent on a gymnasium environment",
                           description="Train A3C on a gymnasium environment until the budget is spent "
                                       "(or it is solved, with --until-solved).")
    train.add_argument("--preset", choices=sorted(PRESETS), default="default",
                       help="starting values for every field; flags override them (default: default)")
    train.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="settings file, TOML (.toml) or YAML (.yaml/.yml, needs: pip install pyyaml), laid "
                            "out like rl-baselines3-zoo's: an optional [default] table and a table per environment "
                            "id (e.g. [\"CartPole-v1\"]), each mapping field names (the flags below with _ for -) "
                            "to values. Precedence, lowest first: --preset, the file's [default], the file's "
                            "table for the environment (--env, else env in [default]), the flags given here. "
                            "Without --config, --preset default applies the tuned settings shipped with asynca3c "
                            "(asynca3c/hyperparams.toml) the same way; --config FILE replaces them and --preset "
                            "seed never uses them. The resolved settings are written to RUN_DIR/config.json")
    train.add_argument("--run-dir", type=Path, default=None,
                       help="where config.json, model.pt, summary.json and progress.csv go "
                            "(default: runs/ENV-TIMESTAMP)")
    train.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                       help="continue the run in RUN_DIR (or from a checkpoint file): its config, weights, "
                            "optimizer state, counters and random states; flags given here override its "
                            "config, and budgets count the whole run")
    train.add_argument("--quiet", action="store_true", help="print only the summary")
    _add_config_flags(train)

    plot = sub.add_parser("plot", help="draw learning curves of run directories to a PNG",
                          description="Draw evaluation return against wall-clock seconds from the progress.csv "
                                      "of run directories. A directory of run directories (several seeds) "
                                      "is drawn as one line: the median, with the 25th-75th percentile shaded.")
    plot.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                      help="a run directory, or a directory whose subdirectories are runs")
    plot.add_argument("-o", "--output", type=Path, default=Path("curves.png"),
                      help="the PNG to write (default: curves.png)")
    plot.add_argument("--label", action="append", default=None, metavar="NAME",
                      help="legend name per RUN_DIR, in order (repeat once per RUN_DIR; default: directory names)")
    plot.add_argument("--title", default="", help="title of the chart")

    ev = sub.add_parser("eval", help="play a trained policy: return statistics, optionally a video",
                        description="Play fresh episodes with a trained policy (no epsilon) and print the mean, "
                                    "std, min and max return; --video records episodes to .mp4 or .gif.")
    ev.add_argument("source", type=Path, metavar="RUN_DIR_OR_CHECKPOINT",
                    help="a run directory (its checkpoint.pt) or a checkpoint file")
    ev.add_argument("--episodes", type=int, default=100, help="episodes to play (default: 100)")
    ev.add_argument("--deterministic", action="store_true",
                    help="always take the most likely action (default: sample from the policy)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: 0)")
    ev.add_argument("--video", type=Path, default=None, metavar="PATH.mp4|PATH.gif",
                    help="also record episodes to this file (needs: pip install 'asynca3c[video]')")
    ev.add_argument("--video-episodes", type=int, default=1, help="episodes in the video (default: 1)")

    check = sub.add_parser("check-env", help="check a gymnasium environment and whether asynca3c can train on it",
                           description="Run gymnasium's env checker on ENV_ID (its unwrapped env), print its "
                                       "warnings, then say whether asynca3c supports the environment's spaces. "
                                       "Exit status 0: checker passed and supported; 1: checker failed or not "
                                       "supported; 2: unknown environment id or bad arguments.")
    check.add_argument("env_id", metavar="ENV_ID", help="gymnasium environment id, e.g. CartPole-v1")
    check.add_argument("--env-kwargs", type=_json_object, default={}, metavar="JSON",
                       help="keyword arguments for gym.make, as JSON (e.g. '{\"max_episode_steps\": 200}')")
    check.add_argument("--skip-render-check", action="store_true",
                       help="skip the checker's render check, which makes the env in each of its render modes "
                            "('human' opens a window)")

    bench = sub.add_parser("bench", help="microbenchmarks")
    bench_sub = bench.add_subparsers(parser_class=OneLineErrorParser, dest="bench", required=True, metavar="BENCHMARK")
    bench_sub.add_parser("returns", help="the n-step return kernel against Python and numpy "
                         "(options: asynca3c bench returns --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "returns"]:  # its own parser, shared with bench/bench_returns.py
        from asynca3c.bench_returns import main as bench_returns

        return bench_returns(argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return {"plot": _plot, "eval": _eval, "train": _train, "check-env": _check_env}[args.command](args)
    except (ConfigError, EnvError, CurveError, CheckpointError, VideoError) as e:
        print(f"asynca3c: error: {e}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    from asynca3c import checkpoint, config_files
    from asynca3c.trainer import Trainer, run_on_uvloop

    fields = {f.name for f in dataclasses.fields(Config)}
    flags = {k: v for k, v in vars(args).items() if k in fields}
    saved = None
    if args.resume is not None:
        if args.preset != "default":
            raise ConfigError("--preset does not combine with --resume: the run's own config is the start")
        if args.config is not None:
            raise ConfigError("--config does not combine with --resume: the run's own config is the start")
        saved = checkpoint.load(args.resume)  # read once: its config here, the rest in the Trainer
        config = Config.from_dict(saved["config"]).replace(**flags)
        file = checkpoint.checkpoint_path(args.resume)
        run_dir = args.run_dir or file.parent
        how = f"resuming from {args.resume}"
    else:
        sources = config_files.layers(args.preset, flags, args.config)
        config = config_files.build(sources)
        how = " + ".join(label for label, values in sources[:-1] if values or label.startswith("preset "))
        run_dir = args.run_dir or Path("runs") / f"{config.env}-{time.strftime('%Y%m%d-%H%M%S')}"
    report = (lambda row: None) if args.quiet else _print_progress

    async def run():
        trainer = Trainer(config, run_dir=run_dir, on_progress=report, resume_from=saved)
        loop = asyncio.get_running_loop()
        stopped_by: list[signal.Signals] = []

        def on_signal(sig: signal.Signals):
            if stopped_by and sig == signal.SIGINT:  # second Ctrl-C: stop now, only the last checkpoint remains
                raise KeyboardInterrupt
            if not stopped_by:
                stopped_by.append(sig)
                print(f"\n{sig.name}: stopping (the queue drains, a checkpoint and the results are written; "
                      "Ctrl-C again to abort)", file=sys.stderr, flush=True)
                trainer.request_stop("interrupted" if sig == signal.SIGINT else "terminated")

        for sig in EXIT_STATUS:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await trainer.run(), stopped_by
        finally:
            for sig in EXIT_STATUS:
                loop.remove_signal_handler(sig)

    if not args.quiet:
        print(f"training {config.env} ({how}, seed {config.seed}); run dir {run_dir}", flush=True)
    result, stopped_by = run_on_uvloop(run())
    _print_summary(result.to_dict(), run_dir)
    return EXIT_STATUS[stopped_by[0]] if stopped_by else 0


def _check_env(args: argparse.Namespace) -> int:
    """gymnasium's checker, then asynca3c's own verdict (inspect_env), so both kinds of problem show at once."""
    import warnings

    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    from asynca3c.envs import inspect_env

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # the render check draws off-screen, no window
    with warnings.catch_warnings(record=True) as caught:  # recorded here, even where warnings are errors
        warnings.simplefilter("always")
        try:
            env = gym.make(args.env_id, **args.env_kwargs)
        except TypeError as e:
            raise EnvError(f"bad keyword arguments {args.env_kwargs!r} for {args.env_id!r}: {_one_line(e)}") from None
        except gym.error.Error as e:  # unknown id, missing dependency
            raise EnvError(f"cannot make {args.env_id!r}: {_one_line(e)}") from None
        except Exception as e:  # whatever the env's constructor raises
            raise EnvError(f"cannot make {args.env_id!r}: {type(e).__name__}: {_one_line(e)}") from None
        spaces = f"observation {env.observation_space}, action {env.action_space}"
        try:
            check_env(env.unwrapped, skip_render_check=args.skip_render_check)
            failure = None
        except Exception as e:  # the checker's findings are assertions and whatever the env raises
            failure = f"{type(e).__name__}: {_one_line(e)}"
        finally:
            env.close()
        try:
            inspect_env(args.env_id, args.env_kwargs)
            unsupported = None
        except EnvError as e:
            unsupported = _one_line(e)
    for w in caught:
        print(f"warning: {w.category.__name__}: {_one_line(w.message).removeprefix('WARN: ')}")
    print(f"{args.env_id}: gymnasium's env checker " + (f"failed: {failure}" if failure else "passed"))
    print(f"not supported: {unsupported}" if unsupported else f"supported: {spaces}")
    return 1 if failure or unsupported else 0


def _one_line(x) -> str:
    """A message on one line, without the colour codes gymnasium's warnings carry."""
    return re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(x).split()))


def _plot(args: argparse.Namespace) -> int:
    from asynca3c.curves import plot_run_dirs

    out = plot_run_dirs(args.runs, args.output, labels=args.label, title=args.title)
    print(f"wrote {out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from asynca3c.checkpoint import load_policy
    from asynca3c.envs import inspect_env
    from asynca3c.evaluation import evaluate, model_policy
    from asynca3c.video import check_path, record

    for name in ("episodes", "video_episodes"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)} is not allowed: an integer >= 1")
    if args.video is not None:
        check_path(args.video)
    model, env_id, env_kwargs = load_policy(args.source)
    result = evaluate(model, env_id, args.episodes, env_kwargs=env_kwargs, seed=args.seed,
                      deterministic=args.deterministic)
    st = result.stats()
    how = "most likely action" if args.deterministic else "actions sampled from the policy"
    print(f"{env_id}: mean {st['mean']:.2f}, std {st['std']:.2f}, min {st['min']:.1f}, max {st['max']:.1f} "
          f"over {args.episodes} episodes ({how})")
    if args.video is not None:
        policy = model_policy(model, inspect_env(env_id, env_kwargs), args.deterministic,
                              np.random.default_rng(args.seed))
        path, returns = record(policy, env_id, args.video, episodes=args.video_episodes, env_kwargs=env_kwargs,
                               seed=args.seed)
        print(f"wrote {path} ({len(returns)} episode(s), returns {', '.join(f'{r:g}' for r in returns)})")
    return 0


def _fmt(x, spec=".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _print_progress(row: dict) -> None:
    print(f"[{row['seconds']:7.1f}s] steps {row['env_steps']:>10,}  steps/s {row['steps_per_second']:>9,.0f}  "
          f"episodes {row['episodes']:>7,}  updates {row['updates']:>6,}  "
          f"eval return {_fmt(row['eval_return_mean']):>6}  lag {_fmt(row['policy_lag_mean'], '.2f')}",
          flush=True)


def _print_summary(s: dict, run_dir: Path) -> None:
    solved = (f"yes, after {_fmt(s['solved_after_seconds'], '.2f')} s and {s['solved_after_steps']:,} steps"
              if s["solved"] else "no")
    print(f"\n{s['env']}: {s['env_steps']:,} steps in {s['seconds']:.2f} s ({s['steps_per_second']:,.0f} steps/s), "
          f"{s['episodes']:,} episodes, {s['updates']:,} updates, stopped by {s['stop_reason']}")
    print(f"solved (mean of the last {s['config']['solve_window']} episodes without epsilon >= "
          f"{_fmt(s['reward_threshold'])}): {solved}")
    print(f"evaluation: {_fmt(s['eval_mean_return'])} +- {_fmt(s['eval_std_return'])} over "
          f"{s['eval_episodes']} fresh episodes; mean policy lag {_fmt(s['policy_lag_mean'], '.2f')} updates")
    print(f"event-loop lag: p99 {_fmt(s['loop_lag_p99_ms'], '.2f')} ms, max {_fmt(s['loop_lag_max_ms'], '.1f')} ms")
    print(f"wrote {run_dir}/config.json, model.pt, checkpoint.pt, summary.json, progress.csv")


if __name__ == "__main__":
    raise SystemExit(main())
