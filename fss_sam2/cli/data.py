"""`fss-sam2 data toy|pascal|coco|check` (dataset roots) and `fss-sam2 episodes` (episode lists)."""
from __future__ import annotations

import json
import sys
import time

from ..constants import DATASETS
from ..data.episodes import OFFICIAL_WORKERS, STREAMS
from ..toy.world import NUM_TOY_CLASSES, TOY_WORLD, VAL_EVERY, generate_toy_world
from . import arguments as arg


def _data_toy(a):
    t0 = time.perf_counter()
    summary = generate_toy_world(
        a.out, seed=a.seed, size=a.size, images=a.images, clips=a.clips, clip_frames=a.clip_frames, progress=not a.quiet
    )
    print(f"synthetic world (toy) written to {a.out} in {time.perf_counter() - t0:.1f} s: {summary['train']} train "
          f"and {summary['val']} val images, {summary['clips']} clips")
    if not a.quiet:  # --quiet: the line above only
        print(json.dumps(summary, indent=1, default=str))


def _data_pascal(a):
    from ..data.pascal import build_pascal

    summary = build_pascal(a.voc, a.sbd, a.out, lists=a.lists, progress=not a.quiet, master_list=a.master_list)
    print(json.dumps(summary, indent=1, default=str))
    pool = summary["training_pool"]
    if not pool["paper"]:
        bar = "!" * 78
        print(f"{bar}\nWARNING: training pool of {a.out}: {pool['note']}\n{bar}", file=sys.stderr)


def _data_coco(a):
    from ..data.coco import build_coco

    summary = build_coco(a.coco, a.out, split=a.split, progress=not a.quiet, lists=a.lists, val_only=a.val_only)
    print(json.dumps(summary, indent=1, default=str))


def _data_check(a):
    from ..data.check import check_dataset

    problems = check_dataset(a.dataset, a.root, fast=a.fast, progress=not a.quiet, allow_outside=a.allow_outside)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) found in {a.root}", file=sys.stderr)
        return 1
    print(f"{a.root}: no problems found")
    return 0


def _episodes(a):
    from ..data import open_source
    from ..data.episodes import default_stream, make_episodes, write_episodes_csv
    from ..engine.runtime import atomic_path

    source = open_source(a.dataset, a.root, allow_outside=a.allow_outside)
    stream = a.stream or default_stream(source)
    eps = make_episodes(source, a.fold, a.shot, episodes=a.episodes, seed=a.seed, split=a.split, workers=a.workers,
                        stream=stream, stream_workers=a.stream_workers)
    with atomic_path(a.out) as tmp:  # an earlier file stays whole until the new one is complete
        write_episodes_csv(tmp, eps)
    how = f"official stream, {a.stream_workers} authors' workers" if stream == "official" else "seeded stream"
    print(f"{len(eps)} episodes ({a.dataset} fold {a.fold}, {a.shot}-shot, seed {a.seed}, {how}) -> {a.out}")


def add_parser(subparsers) -> None:
    """Register `fss-sam2 data ...` and `fss-sam2 episodes`."""
    data = subparsers.add_parser("data", help="build or check a dataset root").add_subparsers(dest="kind", required=True)
    t = data.add_parser("toy", help="generate the synthetic world (PASCAL layout)")
    t.add_argument("--out", required=True, type=arg.output_folder)
    t.add_argument("--seed", type=arg.seed, default=TOY_WORLD["seed"])
    t.add_argument("--size", type=arg.int_at_least(32), default=TOY_WORLD["size"],
                   help="typical image side in pixels (>= 32)")
    t.add_argument("--images", type=arg.int_at_least(VAL_EVERY * NUM_TOY_CLASSES), default=TOY_WORLD["images"],
                   help=f"number of images (>= {VAL_EVERY * NUM_TOY_CLASSES}: every class needs val images)")
    t.add_argument("--clips", type=arg.nonnegative_int, default=TOY_WORLD["clips"],
                   help="clips following one individual among companions (for SAM 2-style video use)")
    t.add_argument("--clip-frames", type=arg.int_at_least(2), default=TOY_WORLD["clip_frames"])
    t.set_defaults(func=_data_toy)
    v = data.add_parser("pascal", help="build PASCAL-5i from VOC2012 + SBD")
    v.add_argument("--voc", required=True, help="VOC2012 folder (JPEGImages, SegmentationClass, ImageSets)")
    v.add_argument("--sbd", help="SBD folder (dataset/cls/*.mat); not needed if VOC has SegmentationClassAug")
    v.add_argument("--lists", help="use the authors' fold list files from this folder (val required, train optional; "
                                   "their repository's lists/pascal/fss_list or the repository itself)")
    v.add_argument("--master-list", help="build the training lists from this ordered image list "
                                         "(PFENet's voc_sbd_merge_noduplicate.txt: the paper's 5953-image pool) "
                                         "instead of the 10582 trainaug images")
    v.add_argument("--out", required=True, type=arg.output_folder)
    v.set_defaults(func=_data_pascal)
    c = data.add_parser("coco", help="build COCO-20i from COCO 2014 with pycocotools")
    c.add_argument("--coco", required=True, help="folder with train2014/, val2014/, annotations/")
    c.add_argument("--split", choices=["interleaved", "contiguous"], default="interleaved")
    c.add_argument("--lists", help="use the authors' fold list files from this folder (val required, train optional; "
                                   "their repository's lists/coco/fss_list or the repository itself)")
    c.add_argument("--val-only", action="store_true", help="only val2014 (evaluation); training lists left empty")
    c.add_argument("--out", required=True, type=arg.output_folder)
    c.set_defaults(func=_data_coco)
    k = data.add_parser("check", help="verify a dataset root; names every missing or malformed file")
    dataset_args(k)
    k.add_argument("--fast", action="store_true", help="read headers only: skip decoding every image and label")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=_data_check)
    for q in (t, v, c):
        q.add_argument("--quiet", action="store_true", help="no progress bars")

    e = subparsers.add_parser("episodes", help="write an episode list (CSV: query,class,supports)")
    dataset_args(e)
    e.add_argument("--fold", type=arg.fold, required=True)
    e.add_argument("--shot", type=arg.positive_int, default=1)
    e.add_argument("--episodes", type=arg.positive_int, default=1000)
    e.add_argument("--seed", type=arg.seed, default=321)
    e.add_argument("--split", choices=["val", "train"], default="val")
    e.add_argument("--stream", choices=list(STREAMS), default=None,
                   help="official: the authors' test.py episodes (default for toy/pascal/coco); "
                        "seeded: one NumPy generator (default for folder); see docs/episodes.md")
    e.add_argument("--stream-workers", type=arg.workers, default=OFFICIAL_WORKERS,
                   help="DataLoader workers of the authors' run the official stream reproduces (released configs: 32)")
    e.add_argument("--workers", type=arg.workers, default=0,
                   help="processes reading labels (episodes do not depend on it)")
    e.add_argument("--out", required=True, type=arg.output_file, help="the CSV file to write")
    e.set_defaults(func=_episodes)


def dataset_args(p) -> None:
    """--dataset and --root of a command that reads a dataset root."""
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", required=True)
    p.add_argument("--allow-outside", action="store_true",
                   help="let list entries name files outside the root (refused by default)")
