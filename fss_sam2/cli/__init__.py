"""The `fss-sam2` command line: one module per command, each with an `add_parser(subparsers)`.

    data toy|pascal|coco|check, episodes   cli/data.py
    baseline                               cli/baseline.py
    train                                  cli/train.py
    evaluate                               cli/evaluate.py
    predict                                cli/predict.py
    reproduce                              cli/reproduce.py
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("data", "train", "evaluate", "predict", "reproduce", "baseline")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fss-sam2", description="FSSAM few-shot segmentation: data, episodes, evaluation.")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (FileNotFoundError, ValueError) as e:
        print(f"fss-sam2: error: {e}", file=sys.stderr)
        return 2
