"""`fss-sam2 baseline`: the colour-prototype baseline (no training, no weights) on every fold."""
from __future__ import annotations

import json
from pathlib import Path

from ..baseline import ColourPrototypeBaseline
from ..constants import SYNTHETIC
from ..data import open_source
from ..data.episodes import make_episodes, write_episodes_csv
from ..engine.evaluate import evaluate
from ..engine.runtime import atomic_write_text
from .data import dataset_args


def _baseline(a) -> None:
    source = open_source(a.dataset, a.root)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for fold in a.folds:
        eps = make_episodes(source, fold, a.shot, episodes=a.episodes, seed=a.seed)
        write_episodes_csv(out / f"episodes_fold{fold}.csv", eps)
        r = evaluate(ColourPrototypeBaseline(), source, eps, size=a.size, progress=not a.quiet)
        results[fold] = r
        print(f"fold {fold}: mIoU {100 * r['miou']:.1f}  FB-IoU {100 * r['fb_iou']:.1f}  ({len(eps)} episodes)")
    mean_miou = sum(r["miou"] for r in results.values()) / len(results)
    mean_fb = sum(r["fb_iou"] for r in results.values()) / len(results)
    label = f" [{SYNTHETIC}]" if source.dataset == "toy" else ""
    print(f"colour-prototype baseline, {a.shot}-shot, mean over folds {a.folds}: "
          f"mIoU {100 * mean_miou:.1f}  FB-IoU {100 * mean_fb:.1f}{label}")
    atomic_write_text(out / "results.json", json.dumps(
        {"model": "colour-prototype baseline", "dataset": source.dataset, "shot": a.shot,
         "synthetic": source.dataset == "toy", "folds": results, "miou": mean_miou, "fb_iou": mean_fb},
        indent=1, default=str) + "\n")


def add_parser(subparsers) -> None:
    """Register `fss-sam2 baseline`."""
    b = subparsers.add_parser("baseline", help="evaluate the colour-prototype baseline (no training, no weights)")
    dataset_args(b)
    b.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    b.add_argument("--shot", type=int, default=1)
    b.add_argument("--episodes", type=int, default=1000)
    b.add_argument("--seed", type=int, default=321)
    b.add_argument("--size", type=int, default=128, help="episode images are resized to size x size")
    b.add_argument("--out", required=True)
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_baseline)
