"""`fss-sam2 data toy|pascal|coco|check` (dataset roots) and `fss-sam2 episodes` (episode lists)."""
from __future__ import annotations

import json
import sys
import time

from ..constants import DATASETS
from ..toy.world import TOY_WORLD, generate_toy_world


def _data_toy(a):
    t0 = time.perf_counter()
    summary = generate_toy_world(
        a.out, seed=a.seed, size=a.size, images=a.images, clips=a.clips, clip_frames=a.clip_frames, progress=not a.quiet
    )
    print(f"synthetic world (toy) written to {a.out} in {time.perf_counter() - t0:.1f} s")
    print(json.dumps(summary, indent=1, default=str))


def _data_pascal(a):
    from ..data.pascal import build_pascal

    print(json.dumps(build_pascal(a.voc, a.sbd, a.out, lists=a.lists, progress=not a.quiet), indent=1, default=str))


def _data_coco(a):
    from ..data.coco import build_coco

    print(json.dumps(build_coco(a.coco, a.out, split=a.split, progress=not a.quiet), indent=1, default=str))


def _data_check(a):
    from ..data.check import check_dataset

    problems = check_dataset(a.dataset, a.root)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) found in {a.root}", file=sys.stderr)
        return 1
    print(f"{a.root}: no problems found")
    return 0


def _episodes(a):
    from ..data import open_source
    from ..data.episodes import make_episodes, write_episodes_csv

    source = open_source(a.dataset, a.root)
    eps = make_episodes(source, a.fold, a.shot, episodes=a.episodes, seed=a.seed, split=a.split, workers=a.workers)
    write_episodes_csv(a.out, eps)
    print(f"{len(eps)} episodes ({a.dataset} fold {a.fold}, {a.shot}-shot, seed {a.seed}) -> {a.out}")


def add_parser(subparsers) -> None:
    """Register `fss-sam2 data ...` and `fss-sam2 episodes`."""
    data = subparsers.add_parser("data", help="build or check a dataset root").add_subparsers(dest="kind", required=True)
    t = data.add_parser("toy", help="generate the synthetic world (PASCAL layout)")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=TOY_WORLD["seed"])
    t.add_argument("--size", type=int, default=TOY_WORLD["size"], help="typical image side in pixels")
    t.add_argument("--images", type=int, default=TOY_WORLD["images"])
    t.add_argument("--clips", type=int, default=TOY_WORLD["clips"],
                   help="clips following one individual among companions (for SAM 2-style video use)")
    t.add_argument("--clip-frames", type=int, default=TOY_WORLD["clip_frames"])
    t.set_defaults(func=_data_toy)
    v = data.add_parser("pascal", help="build PASCAL-5i from VOC2012 + SBD")
    v.add_argument("--voc", required=True, help="VOC2012 folder (JPEGImages, SegmentationClass, ImageSets)")
    v.add_argument("--sbd", help="SBD folder (dataset/cls/*.mat); not needed if VOC has SegmentationClassAug")
    v.add_argument("--lists", help="use the authors' fold list files from this folder")
    v.add_argument("--out", required=True)
    v.set_defaults(func=_data_pascal)
    c = data.add_parser("coco", help="build COCO-20i from COCO 2014 with pycocotools")
    c.add_argument("--coco", required=True, help="folder with train2014/, val2014/, annotations/")
    c.add_argument("--split", choices=["interleaved", "contiguous"], default="interleaved")
    c.add_argument("--out", required=True)
    c.set_defaults(func=_data_coco)
    k = data.add_parser("check", help="verify a dataset root; names every missing or malformed file")
    dataset_args(k)
    k.set_defaults(func=_data_check)
    for q in (t, v, c):
        q.add_argument("--quiet", action="store_true", help="no progress bars")

    e = subparsers.add_parser("episodes", help="write a seeded episode list (CSV: query,class,supports)")
    dataset_args(e)
    e.add_argument("--fold", type=int, required=True)
    e.add_argument("--shot", type=int, default=1)
    e.add_argument("--episodes", type=int, default=1000)
    e.add_argument("--seed", type=int, default=321)
    e.add_argument("--split", choices=["val", "train"], default="val")
    e.add_argument("--workers", type=int, default=0, help="processes reading labels (episodes do not depend on it)")
    e.add_argument("--out", required=True)
    e.set_defaults(func=_episodes)


def dataset_args(p) -> None:
    """--dataset and --root of a command that reads a dataset root."""
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", required=True)
