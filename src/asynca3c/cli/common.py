"""What every command shares: the one-line-error parser, argument types, one-line messages."""

from __future__ import annotations

import argparse
import json
import re


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments: one line naming the problem (``--help`` has the usage), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def tuple_of(kind):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"key\": 1}}', got {text!r}")
    return value


def one_line(x) -> str:
    """A message on one line, without the colour codes gymnasium's warnings carry."""
    return re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(x).split()))
