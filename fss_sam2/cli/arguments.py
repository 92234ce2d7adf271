"""Argument types of every `fss-sam2` command: numbers range-checked and output paths checked
when the command line is parsed, before any data or model is read.

Each is an argparse `type=`: a bad value stops the command with
`fss-sam2 CMD: error: argument --NAME: <what is wrong>` on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..data.folds import NUM_FOLDS


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number")
    return value


def int_at_least(minimum: int, what: str = "an integer"):
    """An integer >= minimum (a type for argparse)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value}: expected {what} >= {minimum}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


def int_in(low: int, high: int, what: str = "an integer"):
    """An integer in low..high, both included (a type for argparse)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value}: expected {what} {low}..{high}")
        return value

    parse.__name__ = f"int_in_{low}_{high}"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)
fold = int_in(0, NUM_FOLDS - 1, "a fold")
seed = int_at_least(0, "a seed")
workers = int_at_least(0, "a number of processes")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _real(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g}: expected a number > 0")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _real(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g}: expected a number >= 0")
    return value


def probability(text: str) -> float:
    """A number strictly between 0 and 1 (a threshold)."""
    value = _real(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{value:g}: expected a probability in (0, 1)")
    return value


def _blocking_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of `path` that is not a folder (nothing can be created below it)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def output_folder(text: str) -> str:
    """A folder a command writes into: absent (created later) or a folder, never a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, expected a folder to write into")
    blocked = _blocking_ancestor(path)
    if blocked is not None:
        raise argparse.ArgumentTypeError(f"{text}: cannot be created, {blocked} is a file")
    return text


def output_file(text: str) -> str:
    """A file a command writes: absent or a file, never a folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, expected the name of the file to write "
                                         f"(e.g. {path / 'episodes.csv'})")
    blocked = _blocking_ancestor(path)
    if blocked is not None:
        raise argparse.ArgumentTypeError(f"{text}: cannot be created, {blocked} is a file")
    return text


def add_overrides(parser, example: str) -> None:
    """`--set KEY=VALUE ...` (repeatable): config overrides, as `fss_sam2.config.load_config` takes them."""
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help=f"config overrides, e.g. {example}")
