"""`fss-sam2 evaluate`: a checkpoint (ours or the authors') on the official protocol."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..constants import SYNTHETIC_NOTE
from ..engine.cache import FeatureCache
from ..engine.evaluate import evaluate_checkpoint
from . import arguments as arg

def _evaluate_command(a: argparse.Namespace) -> int:
    cfg = load_config(a.config, a.overrides)
    cache = None
    if a.cache or a.cache_dir:
        cache = FeatureCache(max_bytes=int(a.cache_gib * 2**30), disk=a.cache_dir)
    if a.compile:
        print("--compile: the first batch compiles the post-encoder model (minutes on a CPU)", flush=True)
    r = evaluate_checkpoint(cfg, a.checkpoint, a.out, episodes=a.episodes, seeds=a.seeds, batch_size=a.batch,
                            workers=a.workers, device=a.device, cache=cache, compile=a.compile, overlays=a.overlays,
                            overrides=a.overrides, progress=not a.quiet)
    std = r.get("std", {})
    spread = lambda k: f" ± {100 * std[k]:.2f}" if k in std else ""  # noqa: E731
    print(f"{r['dataset']} fold {r['fold']}, {r['shot']}-shot, {r['episodes']} episodes x {len(r['seeds'])} seed(s): "
          f"mIoU {100 * r['miou']:.2f}{spread('miou')}  FB-IoU {100 * r['fb_iou']:.2f}{spread('fb_iou')}")
    if r["synthetic"]:
        print(f"[{SYNTHETIC_NOTE}]")
    print(f"results -> {Path(a.out) / 'results.json'}")
    return 0


def add_parser(subparsers) -> None:
    """Register `fss-sam2 evaluate` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint (ours or the authors') on the official protocol",
        description="Official protocol by default: 1000 episodes of the val list of the config's fold, seed 321, "
                    "stretch resize to the model size, logits resized back to each label's size, threshold 0.5. "
                    "Writes DIR/results.json, DIR/episodes.csv (episodes_seed{S}.csv per seed when several).",
    )
    p.add_argument("--config", required=True, help="YAML config: dataset, root, fold, shot (and, for an authors' "
                                                   "checkpoint, the SAM 2 size and DINOv2)")
    p.add_argument("--checkpoint", required=True, help="our last.pt / best.pt, or an authors' best_{1|5}shot.pth")
    p.add_argument("--episodes", type=arg.positive_int, default=1000)
    p.add_argument("--seeds", type=arg.seed, nargs="+", default=[321], help="one evaluation per seed; mean ± std")
    p.add_argument("--batch", type=arg.positive_int,
                   help="episodes per batch (default: data.val_batch; results do not change)")
    p.add_argument("--workers", type=arg.workers, help="DataLoader processes (default: data.workers)")
    p.add_argument("--device", help="cpu | cuda | cuda:N | auto (default: train.device)")
    p.add_argument("--cache", action="store_true", help="cache the frozen encoders' outputs in memory")
    p.add_argument("--cache-dir", type=arg.output_folder, help="also keep them on disk in this folder (implies --cache)")
    p.add_argument("--cache-gib", type=arg.nonnegative_float, default=4.0,
                   help="memory budget of the cache (GiB; 0: disk tier only)")
    p.add_argument("--compile", action="store_true", help="torch.compile the post-encoder model")
    p.add_argument("--overlays", type=arg.nonnegative_int, default=0, metavar="K",
                   help="write PNG overlays of the first K episodes")
    arg.add_overrides(p, "root=data/pascal or model.num_refine=0")
    p.add_argument("--out", required=True, type=arg.output_folder, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate_command)
