"""The ``asynca3c`` command: the only package that parses argv or picks uvloop.

One module per command, each with ``add_parser(sub)`` and the ``run(args)`` it
sets as the subparser's default. Building the parser imports no torch: a
command imports the runtime when it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from asynca3c.cli import bench, check_env, evaluate, plot, train
from asynca3c.cli.common import OneLineErrorParser
from asynca3c.errors import Asynca3cError, EnvFault, LearnerError, ShardError

__all__ = ["OneLineErrorParser", "build_parser", "main"]


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog="asynca3c", description="Asynchronous advantage actor-critic "
                                     "on asyncio, uvloop, torch and a Cython return kernel.")
    sub = parser.add_subparsers(parser_class=OneLineErrorParser, dest="command", required=True, metavar="COMMAND")
    for command in (train, plot, evaluate, check_env, bench):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (refused before anything ran), 1 a fault during the run (an
    environment, the learner, a shard, a full disk), 130/143 stopped by SIGINT/SIGTERM."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return args.run(args)
    except (EnvFault, LearnerError, ShardError, OSError) as e:
        print(f"asynca3c: error: {one_line_error(e)}", file=sys.stderr)
        return 1
    except Asynca3cError as e:
        print(f"asynca3c: error: {one_line_error(e)}", file=sys.stderr)
        return 2


def one_line_error(e: BaseException) -> str:
    """The message and its notes (where the state was saved, other failures) on one line."""
    notes = [" ".join(n.split()) for n in getattr(e, "__notes__", [])]
    return "; ".join([" ".join(str(e).split()), *notes])
