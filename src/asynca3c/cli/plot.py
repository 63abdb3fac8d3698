"""``asynca3c plot``: learning curves of run directories to a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
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
    plot.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from asynca3c.outputs.curves import plot_run_dirs

    out = plot_run_dirs(args.runs, args.output, labels=args.label, title=args.title)
    print(f"wrote {out}")
    return 0
