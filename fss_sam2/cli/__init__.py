"""The `fss-sam2` command line: one module per command, each with an `add_parser(subparsers)`.

    data toy|pascal|coco|check, episodes   cli/data.py
    baseline                               cli/baseline.py
    train                                  cli/train.py
    evaluate                               cli/evaluate.py
    predict                                cli/predict.py
    download                               cli/download.py
    reproduce                              cli/reproduce.py
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("data", "train", "evaluate", "predict", "download", "reproduce", "baseline")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fss-sam2", description="FSSAM few-shot segmentation: data, episodes, evaluation.")
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error (by default: one line naming the file or argument)")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return p


def error_message(e: BaseException) -> str:
    """One line for an error caused by the input or the machine: our messages name the file or
    argument; an operating-system error (e.g. permission denied, no space left) names its file."""
    if isinstance(e, OSError) and e.strerror and e.filename:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def main(argv=None) -> int:
    """Run one command. Errors of the input or the machine (ValueError, OSError: missing files,
    no space left, permissions) are one line on stderr and exit status 2; --debug re-raises
    them with their traceback. Argument errors stop at parsing (argparse: status 2)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"fss-sam2: error: {error_message(e)}", file=sys.stderr)
        return 2
