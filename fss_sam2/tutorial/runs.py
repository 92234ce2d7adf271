"""Training runs that reruns reuse: the notebooks (and so `make demo`) train through `ensure_run`,
which trains a config into a folder once, continues an interrupted run from its last.pt, and
returns at once when the folder already holds the finished run of the same config.
`tutorial_config` builds the run configs that notebooks 06 (training) and 07 (evaluation) share.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import DictConfig

from ..config import load_config, packaged_configs, to_dict
from ..engine.checkpoint import LEARNING_FREE, config_diff, load_checkpoint
from ..engine.train import train
from ..loading import fssam_factory

# the packaged configs (fss_sam2/configs, also in a wheel install): `CONFIGS / "toy.yaml"` is what
# load_config reads (an importlib.resources Traversable, a pathlib.Path in a file-system install)
CONFIGS = packaged_configs()
# what a run trains: FSSAM, or the naive "support as memory" SAM 2 with the same recipe and budget
VARIANTS = {"fssam": [], "naive": ["model.query_memory=false"]}
# CI: two steps, no validation (so no best.pt: use last.pt), no DataLoader processes
SMOKE = ["train.max_steps=2", "train.log_every=1", "data.val_episodes=8", "data.workers=0"]
def ensure_run(cfg: DictConfig, out: str | Path, replace: bool = False, progress: bool = True) -> dict:
    """Train FSSAM with `cfg` into `out` unless it is done; returns the run's summary (its
    summary.json), with `reused` True when nothing was trained.

    A folder holding a run of another config raises ValueError naming the differing keys, or,
    with `replace`, is deleted and trained afresh (toy runs: new stand-ins or a changed
    configs/toy.yaml must not break `make demo`)."""
    out = Path(out)
    last = out / "last.pt"
    if last.is_file():
        ckpt = load_checkpoint(last)
        diff = config_diff(ckpt["config"], {**to_dict(cfg), "out": str(out)}, LEARNING_FREE)
        if diff and not replace:
            raise ValueError(f"{out}: holds a run of another config ({'; '.join(diff)}); delete the folder or "
                             "choose another one")
        if diff:
            print(f"{out}: replacing a run of another config ({'; '.join(diff)})", flush=True)
            shutil.rmtree(out)
        else:
            summary = out / "summary.json"
            if summary.is_file():
                done = json.loads(summary.read_text())
                if done.get("steps") == ckpt["progress"]["step"]:
                    return {**done, "reused": True}
            return {**train(cfg, fssam_factory(cfg.data.image_size), out, resume=True, progress=progress),
                    "reused": False}
    return {**train(cfg, fssam_factory(cfg.data.image_size), out, progress=progress), "reused": False}


def weight_overrides(sam2_checkpoint: str | Path | None = None,
                     dino_checkpoint: str | Path | None = None) -> list[str]:
    """`model.sam2_checkpoint=...` / `model.dino_checkpoint=...` (absolute paths) for the files
    given: what makes explicit SAM 2.0 / DINOv2 files win over the paths stored in our
    checkpoints (`load_checkpoint_model(..., overrides)`, `evaluate_checkpoint(..., overrides=)`)."""
    return [f"model.{key}={Path(path).resolve()}"
            for key, path in (("sam2_checkpoint", sam2_checkpoint), ("dino_checkpoint", dino_checkpoint))
            if path is not None]


def paper_config(data_root: str | Path, fold: int = 0, shot: int = 1, sam2: str | None = None) -> Path:
    """The packaged config of a paper setting for a prepared root: its dataset (pascal / coco,
    from the root's fss_meta.json), `fold`, `shot` and the SAM 2 size when a config of that size
    ships (else the Hiera-S one; `tutorial_config` then sets model.sam2)."""
    from ..data.sources import ListSource

    dataset = ListSource(data_root).dataset
    if dataset not in ("pascal", "coco"):
        raise ValueError(f"{data_root}: a {dataset!r} root; the paper profile needs a PASCAL-5i or COCO-20i root "
                         "(`fss-sam2 data pascal|coco`)")
    sized = CONFIGS / f"{dataset}_fold{fold}_{sam2}_{shot}shot.yaml"
    return sized if sam2 and sized.is_file() else CONFIGS / f"{dataset}_fold{fold}_small_{shot}shot.yaml"


def tutorial_config(profile: str, variant: str, data_root: str | Path, *, fold: int = 0, shot: int = 1,
                    seed: int = 321, device: str = "cpu", config: str | Path | None = None,
                    sam2_checkpoint: str | Path | None = None, dino_checkpoint: str | Path | None = None,
                    max_steps: int | None = None, val_episodes: int | None = None,
                    smoke: bool = False, sam2: str | None = None, dino: str | None = None,
                    image_size: int | None = None, workers: int | None = None) -> tuple[DictConfig, str]:
    """(config, run folder name) of a tutorial run: `config` (default configs/toy.yaml, or for
    the paper profile `paper_config`: the packaged config of the root's dataset, fold and shot)
    with the data root, fold, shot, seed, device and frozen-weight files given (as absolute
    paths), and `variant` (a key of VARIANTS). Given, `sam2` / `dino` (sizes), `image_size` and
    `workers` (DataLoader processes) replace the config's. Names: toy_fssam, toy_naive,
    pascal_fssam, coco_naive, ... (fold 0, 1-shot), else with _fold{f}_{k}shot."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {sorted(VARIANTS)}")
    if config is None:
        config = CONFIGS / "toy.yaml" if profile == "toy" else paper_config(data_root, fold, shot, sam2)
    overrides = [f"data.root={Path(data_root).resolve()}", f"data.fold={fold}", f"data.shot={shot}",
                 f"train.seed={seed}", f"train.device={device}", *VARIANTS[variant]]
    for key, value in (("model.sam2", sam2), ("model.dino", dino), ("data.image_size", image_size),
                       ("data.workers", workers)):
        if value is not None:
            overrides.append(f"{key}={value}")
    overrides += weight_overrides(sam2_checkpoint, dino_checkpoint)
    if val_episodes is not None:
        overrides.append(f"data.val_episodes={val_episodes}")
    overrides += SMOKE if smoke else []
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    cfg = load_config(config, overrides)
    name = f"{cfg.data.dataset}_{variant}" + ("" if (fold, shot) == (0, 1) else f"_fold{fold}_{shot}shot")
    return cfg, name


def run_checkpoint(run: str | Path) -> Path:
    """best.pt of a run (the best val mIoU), or last.pt when it never validated (smoke runs)."""
    run = Path(run)
    for name in ("best.pt", "last.pt"):
        if (run / name).is_file():
            return run / name
    raise FileNotFoundError(f"{run}: no best.pt or last.pt (train it with notebook 06 or `fss-sam2 train`)")
