"""``asynca3c train``: one flag per Config field, generated from the dataclass so a new field can
never be forgotten here; its ``help`` metadata is the text ``--help`` shows. Torch and the loop
side are imported only when a run starts."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from asynca3c.cli.common import json_object, tuple_of
from asynca3c.config import PRESETS, Config
from asynca3c.errors import ConfigError

if TYPE_CHECKING:
    from asynca3c.core.messages import MetricsRow

#: Exit status when a run was stopped by Ctrl-C / SIGTERM (after writing its results and checkpoint).
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


def add_parser(sub) -> None:
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
    train.add_argument("--overwrite", action="store_true",
                       help="the run directory may hold another run: its files are removed first (without this, "
                            "or --resume, such a directory is refused)")
    train.add_argument("--quiet", action="store_true", help="print only the summary")
    _add_config_flags(train)
    train.set_defaults(run=run)


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
            group.add_argument(flag, type=tuple_of(kind), metavar="V[,V...]", **kw)
        elif isinstance(default, dict):
            group.add_argument(flag, type=json_object, metavar="JSON", **kw)
        elif f.name == "device":
            group.add_argument(flag, metavar="auto|cpu|cuda", **kw)
        elif f.name == "learner":
            group.add_argument(flag, choices=["process", "thread", "ray"], **kw)
        else:
            group.add_argument(flag, type=type(default), **kw)


def run(args: argparse.Namespace) -> int:
    from asynca3c import config_files
    from asynca3c.outputs import checkpoint
    from asynca3c.runtime.trainer import Trainer
    from asynca3c.runtime.uvloop_runner import run_on_uvloop

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

    stopped_by: list[signal.Signals] = []
    aborted: list[bool] = []

    async def session():
        trainer = Trainer(config, run_dir=run_dir, on_progress=report, resume_from=saved, overwrite=args.overwrite)
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None  # run_on_uvloop runs this as a task

        def on_signal(sig: signal.Signals):
            if aborted:
                return
            if stopped_by and sig == signal.SIGINT:  # second Ctrl-C: stop now, only the last checkpoint remains
                aborted.append(True)
                print(f"SIGINT again: aborting now; {run_dir} keeps what was written last", file=sys.stderr,
                      flush=True)
                me.cancel()
                return
            if not stopped_by:
                stopped_by.append(sig)
                print(f"\n{sig.name}: stopping (the queue drains, a checkpoint and the results are written; "
                      "Ctrl-C again to abort)", file=sys.stderr, flush=True)
            trainer.request_stop("interrupted" if sig == signal.SIGINT else "terminated")  # later: ends evaluation

        for sig in EXIT_STATUS:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await trainer.run()
        finally:
            for sig in EXIT_STATUS:
                loop.remove_signal_handler(sig)

    if not args.quiet:
        print(f"training {config.env} ({how}, seed {config.seed}); run dir {run_dir}", flush=True)
    try:
        result = run_on_uvloop(session())
    except asyncio.CancelledError:
        if not aborted:
            raise
        return EXIT_STATUS[signal.SIGINT]
    _print_summary(result.to_dict(), run_dir)
    return EXIT_STATUS[stopped_by[0]] if stopped_by else 0


def _fmt(x, spec=".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _print_progress(row: MetricsRow) -> None:
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
    if s["env_faults"] or s["learner_restarts"] or s.get("shard_restarts") or s["nonfinite_steps"]:
        print(f"faults survived: {s['env_faults']} environment faults, {s['learner_restarts']} learner restarts, "
              f"{s.get('shard_restarts', 0)} shard restarts, {s['nonfinite_steps']} non-finite steps skipped")
    print(f"wrote {run_dir}/config.json, model.pt, checkpoint.pt, summary.json, progress.csv")
