"""The n-step return kernel's microbenchmark: the same as ``asynca3c bench returns``."""

import sys

from asynca3c.cli import main

raise SystemExit(main(["bench", "returns", *sys.argv[1:]]))
