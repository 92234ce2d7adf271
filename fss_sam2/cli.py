"""The `fss-sam2` command line: data, episodes, the baseline, train, evaluate, predict, reproduce."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _data_toy(a):
    from .data.toy import generate_toy_world

    t0 = time.perf_counter()
    summary = generate_toy_world(
        a.out, seed=a.seed, size=a.size, images=a.images, clips=a.clips, clip_frames=a.clip_frames, progress=not a.quiet
    )
    print(f"synthetic world (toy) written to {a.out} in {time.perf_counter() - t0:.1f} s")
    print(json.dumps(summary, indent=1, default=str))


def _data_pascal(a):
    from .data.pascal import build_pascal

    print(json.dumps(build_pascal(a.voc, a.sbd, a.out, lists=a.lists, progress=not a.quiet), indent=1, default=str))


def _data_coco(a):
    from .data.coco import build_coco

    print(json.dumps(build_coco(a.coco, a.out, split=a.split, progress=not a.quiet), indent=1, default=str))


def _data_check(a):
    from .data.check import check_dataset

    problems = check_dataset(a.dataset, a.root)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) found in {a.root}", file=sys.stderr)
        return 1
    print(f"{a.root}: no problems found")
    return 0


def _episodes(a):
    from .data import open_source
    from .data.episodes import make_episodes, write_episodes_csv

    source = open_source(a.dataset, a.root)
    eps = make_episodes(source, a.fold, a.shot, episodes=a.episodes, seed=a.seed, split=a.split, workers=a.workers)
    write_episodes_csv(a.out, eps)
    print(f"{len(eps)} episodes ({a.dataset} fold {a.fold}, {a.shot}-shot, seed {a.seed}) -> {a.out}")


def _baseline(a):
    from .baseline import ColourPrototypeBaseline
    from .data import open_source
    from .data.episodes import make_episodes, write_episodes_csv
    from .data.toy import SYNTHETIC
    from .engine.evaluate import evaluate

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
    (out / "results.json").write_text(json.dumps(
        {"model": "colour-prototype baseline", "dataset": source.dataset, "shot": a.shot,
         "synthetic": source.dataset == "toy", "folds": results, "miou": mean_miou, "fb_iou": mean_fb},
        indent=1, default=str) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fss-sam2", description="FSSAM few-shot segmentation: data, episodes, evaluation.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or check a dataset root").add_subparsers(dest="kind", required=True)
    t = data.add_parser("toy", help="generate the synthetic world (PASCAL layout)")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--size", type=int, default=160, help="typical image side in pixels")
    t.add_argument("--images", type=int, default=1000)
    t.add_argument("--clips", type=int, default=40, help="clips following one individual among companions (for SAM 2-style video use)")
    t.add_argument("--clip-frames", type=int, default=8)
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
    k.add_argument("--dataset", required=True, choices=["toy", "pascal", "coco", "folder"])
    k.add_argument("--root", required=True)
    k.set_defaults(func=_data_check)
    for q in (t, v, c):
        q.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("episodes", help="write a seeded episode list (CSV: query,class,supports)")
    _dataset_args(e)
    e.add_argument("--fold", type=int, required=True)
    e.add_argument("--shot", type=int, default=1)
    e.add_argument("--episodes", type=int, default=1000)
    e.add_argument("--seed", type=int, default=321)
    e.add_argument("--split", choices=["val", "train"], default="val")
    e.add_argument("--workers", type=int, default=0, help="processes reading labels (episodes do not depend on it)")
    e.add_argument("--out", required=True)
    e.set_defaults(func=_episodes)

    from .engine.evaluate import add_evaluate_cli
    from .engine.predict import add_predict_cli
    from .engine.train import add_train_cli
    from .reproduce import add_reproduce_cli

    add_train_cli(sub)
    add_evaluate_cli(sub)
    add_predict_cli(sub)
    add_reproduce_cli(sub)

    b = sub.add_parser("baseline", help="evaluate the colour-prototype baseline (no training, no weights)")
    _dataset_args(b)
    b.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    b.add_argument("--shot", type=int, default=1)
    b.add_argument("--episodes", type=int, default=1000)
    b.add_argument("--seed", type=int, default=321)
    b.add_argument("--size", type=int, default=128, help="episode images are resized to size x size")
    b.add_argument("--out", required=True)
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_baseline)
    return p


def _dataset_args(p):
    p.add_argument("--dataset", required=True, choices=["toy", "pascal", "coco", "folder"])
    p.add_argument("--root", required=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (FileNotFoundError, ValueError) as e:
        print(f"fss-sam2: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
