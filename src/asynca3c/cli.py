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
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from asynca3c.config import PRESETS, Config, ConfigError
from asynca3c.envs import EnvError

#: Exit status when a run was stopped by Ctrl-C (after writing its results).
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
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
    parser = _Parser(prog="asynca3c", description="Asynchronous advantage actor-critic "
                                     "on asyncio, uvloop, torch and a Cython return kernel.")
    sub = parser.add_subparsers(parser_class=_Parser, dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train an agent on a gymnasium environment",
                           description="Train A3C on a gymnasium environment until the budget is spent "
                                       "(or it is solved, with --until-solved).")
    train.add_argument("--preset", choices=sorted(PRESETS), default="default",
                       help="starting values for every field; flags override them (default: default)")
    train.add_argument("--run-dir", type=Path, default=None,
                       help="where config.json, model.pt, summary.json and progress.csv go "
                            "(default: runs/ENV-TIMESTAMP)")
    train.add_argument("--quiet", action="store_true", help="print only the summary")
    _add_config_flags(train)

    bench = sub.add_parser("bench", help="microbenchmarks")
    bench_sub = bench.add_subparsers(parser_class=_Parser, dest="bench", required=True, metavar="BENCHMARK")
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
        return _train(args)
    except (ConfigError, EnvError) as e:
        print(f"asynca3c: error: {e}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    from asynca3c.config import preset
    from asynca3c.trainer import Trainer, run_on_uvloop

    fields = {f.name for f in dataclasses.fields(Config)}
    config = preset(args.preset, **{k: v for k, v in vars(args).items() if k in fields})
    run_dir = args.run_dir or Path("runs") / f"{config.env}-{time.strftime('%Y%m%d-%H%M%S')}"
    report = (lambda row: None) if args.quiet else _print_progress

    async def run():
        trainer = Trainer(config, run_dir=run_dir, on_progress=report)
        loop = asyncio.get_running_loop()
        interrupted = []

        def on_sigint():
            if interrupted:  # second Ctrl-C: stop now, results are lost
                raise KeyboardInterrupt
            interrupted.append(True)
            print("\ninterrupted: stopping (the queue drains, results are written; Ctrl-C again to abort)",
                  file=sys.stderr, flush=True)
            trainer.request_stop("interrupted")

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            return await trainer.run(), bool(interrupted)
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    if not args.quiet:
        print(f"training {config.env} (preset {args.preset}, seed {config.seed}); run dir {run_dir}", flush=True)
    result, interrupted = run_on_uvloop(run())
    _print_summary(result.to_dict(), run_dir)
    return EXIT_INTERRUPTED if interrupted else 0


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
    print(f"wrote {run_dir}/config.json, model.pt, summary.json, progress.csv")


if __name__ == "__main__":
    raise SystemExit(main())
