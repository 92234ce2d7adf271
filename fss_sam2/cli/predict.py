"""`fss-sam2 predict`: segment your own images from k annotated examples."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..engine.predict import predict_files, query_files
from ..engine.runtime import resolve_device
from ..loading import load_checkpoint_model
from . import arguments as arg


def _predict_command(a: argparse.Namespace) -> int:
    cfg = load_config(a.config, a.overrides) if a.config else None
    device = resolve_device(a.device, 0, 1)
    model, _ = load_checkpoint_model(a.checkpoint, cfg, a.overrides, device=device)
    supports = [(Path(image), Path(mask)) for image, mask in a.support]
    queries = query_files(a.query)
    precision = cfg.train.precision if cfg is not None else "auto"
    written = predict_files(model, supports, queries, a.out, threshold=a.threshold, overlays=a.overlay,
                            device=device, batch_size=a.batch, precision=precision)
    print(f"{len(written)} mask(s) -> {a.out}" + (f" (overlays in {Path(a.out) / 'overlays'})" if a.overlay else ""))
    return 0


def add_parser(subparsers) -> None:
    """Register `fss-sam2 predict` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "predict",
        help="segment your images given k annotated examples",
        description="Writes one 0/255 mask PNG per query image (same stem) into --out. Support masks: foreground "
                    "where the value is 1 or above 127. Images of any size (stretched to the model size and back).",
    )
    p.add_argument("--checkpoint", required=True, help="our last.pt / best.pt, or an authors' checkpoint (with --config)")
    p.add_argument("--support", nargs=2, action="append", required=True, metavar=("IMAGE", "MASK"),
                   help="an annotated example; repeat for k shots")
    p.add_argument("--query", required=True, help="an image, or a folder of images")
    p.add_argument("--out", required=True, type=arg.output_folder, help="output folder")
    p.add_argument("--config", help="YAML config (needed for an authors' checkpoint: SAM 2 size, DINOv2, image size)")
    p.add_argument("--threshold", type=arg.probability, default=0.5, help="probability threshold (default 0.5)")
    p.add_argument("--overlay", action="store_true", help="also write out/overlays/<stem>.png")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--batch", type=arg.positive_int, default=4, help="query images per batch")
    arg.add_overrides(p, "model.sam2_checkpoint=pretrained/sam2_hiera_small.pt (frozen weights that moved)")
    p.set_defaults(func=_predict_command)
