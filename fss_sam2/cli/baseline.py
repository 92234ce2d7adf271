"""`fss-sam2 baseline`: the colour-prototype baseline (no training, no weights) on every fold."""
from __future__ import annotations

from pathlib import Path

from ..baseline import ColourPrototypeBaseline, write_baseline_result
from ..constants import SYNTHETIC
from ..data import open_source
from ..data.episodes import make_episodes, write_episodes_csv
from ..engine.evaluate import evaluate
from ..engine.runtime import atomic_path
from . import arguments as arg
from .data import dataset_args


def _baseline(a) -> None:
    source = open_source(a.dataset, a.root, allow_outside=a.allow_outside)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for fold in a.folds:
        eps = make_episodes(source, fold, a.shot, episodes=a.episodes, seed=a.seed)
        with atomic_path(out / f"episodes_fold{fold}.csv") as tmp:
            write_episodes_csv(tmp, eps)
        r = evaluate(ColourPrototypeBaseline(), source, eps, size=a.size, progress=not a.quiet)
        results[fold] = r
        print(f"fold {fold}: mIoU {100 * r['miou']:.1f}  FB-IoU {100 * r['fb_iou']:.1f}  ({len(eps)} episodes)")
    record = write_baseline_result(out / "results.json", results, dataset=source.dataset, shot=a.shot,
                                   synthetic=source.dataset == "toy")
    label = f" [{SYNTHETIC}]" if record["synthetic"] else ""
    print(f"colour-prototype baseline, {a.shot}-shot, mean over folds {a.folds}: "
          f"mIoU {100 * record['miou']:.1f}  FB-IoU {100 * record['fb_iou']:.1f}{label}")


def add_parser(subparsers) -> None:
    """Register `fss-sam2 baseline`."""
    b = subparsers.add_parser("baseline", help="evaluate the colour-prototype baseline (no training, no weights)")
    dataset_args(b)
    b.add_argument("--folds", type=arg.fold, nargs="+", default=[0, 1, 2, 3])
    b.add_argument("--shot", type=arg.positive_int, default=1)
    b.add_argument("--episodes", type=arg.positive_int, default=1000)
    b.add_argument("--seed", type=arg.seed, default=321)
    b.add_argument("--size", type=arg.positive_int, default=128, help="episode images are resized to size x size")
    b.add_argument("--out", required=True, type=arg.output_folder, help="output folder")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_baseline)
