"""The stand-in cache: train the toy SAM 2 / DINOv2 on first use, then reuse them.

Each stand-in is keyed by what it depends on (the package version, its settings and seed, the
world's files it reads), so a rerun is instant and a changed world or recipe retrains.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from .. import __version__
from ..data.sources import META_FILE
from ..engine.runtime import atomic_write_text
from .dino_standin import DINO_STEPS, DinoPretrainConfig, pretrain_toy_dino
from .sam2_standin import SAM2_STEPS, Sam2PretrainConfig, pretrain_toy_sam2, read_clips_meta


# ---- the cache -----------------------------------------------------------------------------


def _hash_files(root: Path, paths, h) -> None:
    """Hash each file's path relative to `root` (so a world keys the same wherever it lives and
    however its root is written) and its bytes."""
    root = root.resolve()
    for p in paths:
        h.update(Path(p).resolve().relative_to(root).as_posix().encode())
        h.update(Path(p).read_bytes())


def _cache_key(kind: str, root: Path, settings: dict) -> str:
    """sha256 of what the stand-in depends on: the package version, the settings and the world
    (its meta file and its clip settings: both stand-ins render their own images from the
    world's seed and size, and read none of its files)."""
    h = hashlib.sha256(json.dumps({"kind": kind, "version": __version__, **settings}, sort_keys=True).encode())
    _hash_files(root, [root / META_FILE], h)
    h.update(json.dumps({k: v for k, v in read_clips_meta(root).items() if k != "clips"}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def ensure_toy_standins(root: str | Path, cache_dir: str | Path, seed: int = 0, progress: bool = True,
                        sam2_steps: int = SAM2_STEPS, dino_steps: int = DINO_STEPS,
                        sam2_config: Sam2PretrainConfig | None = None, dino_config: DinoPretrainConfig | None = None,
                        device: str | torch.device = "cpu") -> dict:
    """Paths of the toy SAM 2 and DINOv2 stand-ins of the world at `root` (one pair for every
    fold: both are trained on images rendered apart from the dataset, all classes), training
    whichever is not in `cache_dir` yet (keyed by the world, the settings, the seed and the
    package version; files written atomically, so reruns are instant and an interrupted run
    leaves no half file).

    Returns {"sam2": path, "dino": path, "sam2_metrics": dict, "dino_metrics": dict,
    "trained": names trained by this call}.
    """
    root, cache_dir = Path(root), Path(cache_dir)
    sam2_config, dino_config = sam2_config or Sam2PretrainConfig(), dino_config or DinoPretrainConfig()
    jobs = {
        "sam2": ({"steps": sam2_steps, "seed": seed, **asdict(sam2_config)},
                 lambda out: pretrain_toy_sam2(root, out, sam2_steps, seed, progress, sam2_config, device)),
        "dino": ({"steps": dino_steps, "seed": seed, **asdict(dino_config)},
                 lambda out: pretrain_toy_dino(root, out, dino_steps, seed, progress, dino_config, device)),
    }
    result = {"trained": []}
    for name, (settings, train) in jobs.items():
        key = _cache_key(name, root, settings)
        stem = f"toy_{name}_{key}"
        weights, record = cache_dir / f"{stem}.pt", cache_dir / f"{stem}.json"
        if weights.is_file() and record.is_file() and json.loads(record.read_text()).get("key") == key:
            metrics = json.loads(record.read_text())["metrics"]
        else:
            metrics = train(weights)
            atomic_write_text(record, json.dumps({"key": key, "settings": settings, "metrics": metrics}) + "\n")
            result["trained"].append(name)
        result[name], result[f"{name}_metrics"] = weights, metrics
    return result
