"""The stand-in cache: train the toy SAM 2 / DINOv2 on first use, then reuse them.

Each stand-in is keyed by what it depends on (the package version, its settings and seed, the
world's files it reads), so a rerun is instant and a changed world or recipe retrains. The
package ships both stand-ins of the default world (`toy/shipped.py`, 4.8 + 1.1 MB): a cache
without them takes the shipped files, bit for bit what their training here would write; `main`
(`python -m fss_sam2.toy.standins [--check]`, `make standins`) writes or checks those files.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from .. import __version__
from ..data.sources import META_FILE
from ..engine.runtime import atomic_write, atomic_write_text
from .dino_standin import DINO_STEPS, DinoPretrainConfig, pretrain_toy_dino
from .sam2_standin import SAM2_STEPS, Sam2PretrainConfig, pretrain_toy_sam2, read_clips_meta
from .shipped import SHIPPED_FOLDER, SHIPPED_KINDS, shipped_files, shipped_folder
from .world import NUM_TOY_CLASSES, TOY_WORLD, VAL_EVERY, generate_toy_world

KINDS = ("sam2", "dino")
PINNED_CAPABILITY, PINNED_THREADS = "AVX2", 2  # the Makefile's PINNED


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
                        device: str | torch.device = "cpu", kinds=KINDS, use_shipped: bool = True) -> dict:
    """Paths of the toy SAM 2 and DINOv2 stand-ins of the world at `root` (one pair for every
    fold: both are trained on images rendered apart from the dataset, all classes), training
    whichever is not in `cache_dir` yet (keyed by the world, the settings, the seed and the
    package version; files written atomically, so reruns are instant and an interrupted run
    leaves no half file). `use_shipped`: a stand-in the package ships under its key is copied
    into `cache_dir` instead of trained (`toy/shipped.py`). `kinds`: which of "sam2", "dino".

    Returns {kind: path, f"{kind}_metrics": dict for each of `kinds`, "trained": kinds trained
    by this call, "shipped": kinds copied from the package's files by this call}.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds={list(kinds)}: expected some of {list(KINDS)}")
    root, cache_dir = Path(root), Path(cache_dir)
    sam2_config, dino_config = sam2_config or Sam2PretrainConfig(), dino_config or DinoPretrainConfig()
    jobs = {
        "sam2": ({"steps": sam2_steps, "seed": seed, **asdict(sam2_config)},
                 lambda out: pretrain_toy_sam2(root, out, sam2_steps, seed, progress, sam2_config, device)),
        "dino": ({"steps": dino_steps, "seed": seed, **asdict(dino_config)},
                 lambda out: pretrain_toy_dino(root, out, dino_steps, seed, progress, dino_config, device)),
    }
    result = {"trained": [], "shipped": []}
    for name in kinds:
        settings, train = jobs[name]
        key = _cache_key(name, root, settings)
        stem = f"toy_{name}_{key}"
        weights, record = cache_dir / f"{stem}.pt", cache_dir / f"{stem}.json"
        shipped = shipped_files(stem) if use_shipped else None
        if weights.is_file() and record.is_file() and json.loads(record.read_text()).get("key") == key:
            metrics = json.loads(record.read_text())["metrics"]
        elif shipped is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            for source, target in zip(shipped, (weights, record)):
                with source.open("rb") as f_in:
                    atomic_write(target, lambda f_out, f_in=f_in: shutil.copyfileobj(f_in, f_out))
            metrics = json.loads(record.read_text())["metrics"]
            result["shipped"].append(name)
        else:
            metrics = train(weights)
            atomic_write_text(record, json.dumps({"key": key, "settings": settings, "metrics": metrics}) + "\n")
            result["trained"].append(name)
        result[name], result[f"{name}_metrics"] = weights, metrics
    return result


# ---- the shipped stand-ins (toy/shipped.py): `make standins` writes them, --check retrains and compares ----


def _check_pinned() -> None:
    found = (torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())
    if found != (PINNED_CAPABILITY, PINNED_THREADS):
        raise SystemExit(f"python -m fss_sam2.toy.standins: PyTorch runs {found[0]} kernels on {found[1]} thread(s); the "
                         f"shipped stand-ins are made with {PINNED_CAPABILITY} on {PINNED_THREADS} (run it through "
                         "`make standins`, which sets the Makefile's PINNED)")


def train_default(out_dir: Path, progress: bool = True) -> dict:
    """Train the default world's stand-ins into `out_dir` (no shipped file used) and return
    `ensure_toy_standins`'s result. The world is written with only the images it needs for the
    keys: the stand-ins read the world's seed, size and clip settings, never its images."""
    root = out_dir / "world"
    generate_toy_world(root, seed=TOY_WORLD["seed"], size=TOY_WORLD["size"], images=VAL_EVERY * NUM_TOY_CLASSES,
                       clips=1, clip_frames=TOY_WORLD["clip_frames"], progress=False)
    return ensure_toy_standins(root, out_dir, progress=progress, kinds=SHIPPED_KINDS, use_shipped=False)


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)]


def _compare(weights: Path) -> bool:
    """Print whether the retrained `weights` (and its record's losses) equal the shipped file."""
    shipped = shipped_files(_stem(weights))
    if shipped is None:
        names = sorted(f.name for f in shipped_folder().iterdir()) if shipped_folder().is_dir() else []
        print(f"the package ships no {weights.name} (it has {names}): the code, settings or package version "
              "changed since it was made; regenerate it with `make standins`", file=sys.stderr)
        return False
    same_bytes = shipped[0].read_bytes() == weights.read_bytes()
    same_losses = (json.loads(shipped[1].read_text())["metrics"]["losses"]
                   == json.loads(weights.with_suffix(".json").read_text())["metrics"]["losses"])
    print(f"{weights.name}: retrained here {'equal to' if same_bytes else 'DIFFERS from'} the shipped file, "
          f"losses {'equal' if same_losses else 'DIFFER'}")
    return same_bytes and same_losses


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fss_sam2.toy.standins",
                                description="regenerate (or --check) the stand-ins the package ships")
    p.add_argument("--check", action="store_true", help="train them again and compare with the shipped files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    _check_pinned()
    with tempfile.TemporaryDirectory() as tmp:
        made = train_default(Path(tmp), progress=not a.quiet)
        if a.check:
            same = [_compare(Path(made[kind])) for kind in SHIPPED_KINDS]  # every kind reported
            return 0 if all(same) else 1
        folder = Path(__file__).resolve().parents[1] / SHIPPED_FOLDER  # the source tree's, not an installed copy
        folder.mkdir(parents=True, exist_ok=True)
        for kind in SHIPPED_KINDS:
            weights = Path(made[kind])
            for old in folder.glob(f"toy_{kind}_*"):
                old.unlink()
            for source in (weights, weights.with_suffix(".json")):
                atomic_write(folder / source.name, lambda f, data=source.read_bytes(): f.write(data))
            print(f"wrote {folder / weights.name} ({weights.stat().st_size / 1e6:.1f} MB) and its record")
    return 0


if __name__ == "__main__":
    sys.exit(main())
