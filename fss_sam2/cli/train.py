"""`fss-sam2 train`: FSSAM from a config, in one process or under torchrun (DDP)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from ..config import config_from_dict, load_config
from ..engine.checkpoint import load_checkpoint, require_entries
from ..engine.train import TrainingDiverged, train
from ..loading import fssam_factory
from . import arguments as arg

def _train_command(a: argparse.Namespace) -> int:
    cfg, out = run_config(a.config, a.overrides, a.resume, a.out)
    try:
        summary = train(cfg, fssam_factory(cfg.data.image_size), out, resume=a.resume is not None, progress=not a.quiet)
    except (TrainingDiverged, FileExistsError) as e:
        if getattr(a, "debug", False):
            raise
        print(f"fss-sam2 train: error: {e}", file=sys.stderr, flush=True)
        return 3
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=1))
    return 0


def add_parser(subparsers) -> None:
    """Register `fss-sam2 train` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "train",
        help="train FSSAM from a config (one process; `torchrun --nproc_per_node N -m fss_sam2.cli train ...` for DDP)",
        description="Train from a YAML config. Writes DIR/last.pt (every save_every steps and at every epoch end), "
                    "DIR/best.pt (best val mIoU), DIR/log.csv, DIR/val_episodes.csv, DIR/summary.json. "
                    "One writer per folder: DIR/.lock (pid, host) while it runs; a second train into DIR is "
                    "refused, a lock left by a process that no longer runs is taken over. A fresh run never "
                    "writes over another run's files (--resume DIR continues one; the log is appended to).",
    )
    p.add_argument("--config", help="YAML config: a file, or a packaged config by name (e.g. toy, pascal_fold0_small_1shot); "
                                     "optional with --resume (the run's own config)")
    arg.add_overrides(p, "train.max_steps=20; a key found in one section only may be short: max_steps=20")
    p.add_argument("--resume", metavar="DIR", type=arg.output_folder, help="continue the run in DIR from DIR/last.pt")
    p.add_argument("--out", type=arg.output_folder, help="output folder (default: the config's `out`; with --resume: DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train_command)


def run_config(config: str | None, overrides: list[str], resume: str | None, out: str | None) -> tuple[DictConfig, Path]:
    """The (config, output folder) of a `train` command. With --resume and no --config the
    config stored in DIR/last.pt is used (overrides still apply)."""
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise ValueError(f"--out {out} and --resume {resume}: a resumed run writes into the folder it resumes")
        if config is None:
            path = Path(resume) / "last.pt"
            stored = require_entries(load_checkpoint(path), path, ("config",), "take the run's config")["config"]
            return config_from_dict(stored, overrides, where=str(path)), Path(resume)
        return load_config(config, overrides), Path(resume)
    if config is None:
        raise ValueError("--config is required (unless --resume DIR continues a run)")
    cfg = load_config(config, overrides)
    if out is None and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ValueError(f"{cfg.out}: is a file, expected the run folder (the config's `out`; or give --out DIR)")
    return cfg, Path(out if out is not None else cfg.out)
