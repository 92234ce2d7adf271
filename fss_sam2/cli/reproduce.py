"""`fss-sam2 reproduce`: the toy evaluation grid, then every tutorial notebook in order."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..tutorial.reproduce import NotebookFailed, reproduce
from . import arguments as arg

def _reproduce_command(a: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        timings = reproduce(a.profile, a.out, a.notebooks, a.smoke, a.device, not a.quiet, a.data_root,
                            a.sam2_checkpoint, a.dino_checkpoint, full=a.full, train_shots=a.train_shots)
    except NotebookFailed as e:
        print(f"fss-sam2 reproduce: error: {e}", flush=True)
        return 1
    for name, seconds in timings.items():
        print(f"{seconds:8.1f} s  {name}")
    print(f"{time.perf_counter() - start:8.1f} s  in all -> {Path(a.out) / 'notebooks'}")
    return 0


def add_parser(subparsers) -> None:
    """Register `fss-sam2 reproduce` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "reproduce",
        help="the toy evaluation grid, then every tutorial notebook in order (toy: the synthetic world on a CPU)",
        description="Toy profile: first the evaluation grid (FSSAM, its ablations and the naive SAM 2, trained and "
                    "evaluated with 95% intervals) of fold 0, 1- and 5-shot (--full: every fold, and training seeds "
                    "321, 1, 2 of fold 0 1-shot). Then notebooks/NN_*.ipynb with papermill into OUT/notebooks "
                    "(timings.json there), reusing the grid's runs and results; results, tables, runs and the toy "
                    "world go under OUT, figures to figures/ (OUT/figures with --smoke, which skips the grid).",
    )
    p.add_argument("--profile", choices=["toy", "paper"], default="toy")
    p.add_argument("--smoke", action="store_true", help="the CI setting: tiny world, random weights, a few steps")
    p.add_argument("--full", action="store_true",
                   help="toy: the grid of every fold 0-3 (1- and 5-shot) and training seeds 321, 1, 2 of fold 0 1-shot")
    p.add_argument("--train-shots", type=arg.positive_int, nargs="+", default=[1], metavar="K",
                   help="shots trained as their own runs (default: 1; the other shots evaluate the 1-shot weights)")
    p.add_argument("--out", default="build", type=arg.output_folder, help="build folder (default: build)")
    p.add_argument("--notebooks", default="notebooks", help="folder of the notebooks (default: notebooks)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--data-root", help="paper: a root prepared by `fss-sam2 data pascal|coco`")
    p.add_argument("--sam2-checkpoint", help="paper: SAM 2.0 weights, e.g. sam2_hiera_small.pt")
    p.add_argument("--dino-checkpoint", help="paper: DINOv2 weights, e.g. dinov2_vitb14_pretrain.pth")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_reproduce_command)
