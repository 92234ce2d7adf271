"""Our checkpoints: compact, atomic, loadable with `torch.load(weights_only=True)`.

A checkpoint is a dict
  format      "fss-sam2/v1"
  config      the run's config as a plain nested dict
  model       the trainable state only (frozen SAM 2 image encoder and DINOv2 are not saved)
  optimizer   AdamW state; scaler: GradScaler state (fp16 runs) or None
  progress    step, epoch, batch (the next batch of that epoch: with the seed, this fixes the
              data order), early-stopping counter, best mIoU, the open loss window, seconds
  max_it      the length of the poly schedule (epochs x iterations per epoch)
  rng         python / numpy / torch CPU / CUDA generator states, as tensors and plain types
  metrics     the last validation result (plain numbers)
best.pt has the same entries with optimizer, scaler and rng set to None.
Files are written to a temporary file in the same folder, fsynced, then renamed over the
target, so a reader sees the old file or the new one, never a partial one.
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from .runtime import atomic_write

FORMAT = "fss-sam2/v1"
# config keys that do not change what a run learns: where it writes, how it loads data and logs
LEARNING_FREE = ("out", "data.workers", "data.val_batch", "train.device", "train.log_every", "train.save_every",
                 "train.tensorboard")
# keys a resumed run may change besides those: where its data lives and how far it goes
RESUME_FREE = (*LEARNING_FREE, "data.root", "train.max_steps")


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to `path` atomically and durably (`runtime.atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f), durable=True)


def load_checkpoint(path: str | Path) -> dict:
    """Read one of our checkpoints on the CPU; clear errors for other files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling / zip / truncation errors have many types
        raise ValueError(f"{path}: not a readable fss-sam2 checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        keys = sorted(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path}: not an fss-sam2 checkpoint (no 'format' entry; found {keys}); "
            "SAM 2 / DINOv2 / the authors' checkpoints are model weights, passed through the model config"
        )
    if ckpt["format"] != FORMAT:
        raise ValueError(f"{path}: checkpoint format {ckpt['format']!r}, this version reads {FORMAT!r}")
    return ckpt


# what `train --resume` needs of last.pt (best.pt holds None for optimizer, scaler and rng)
RESUME_ENTRIES = ("config", "model", "optimizer", "progress", "rng", "metrics", "scaler")


def require_entries(ckpt: dict, path: str | Path, entries=RESUME_ENTRIES, what: str = "resume a run") -> dict:
    """`ckpt` if it has every one of `entries` (not None, except scaler and metrics); else a
    ValueError naming the file and what is missing."""
    optional = {"scaler", "metrics"}
    missing = [k for k in entries if k not in ckpt or (ckpt[k] is None and k not in optional)]
    if missing:
        raise ValueError(f"{path}: cannot {what}: the checkpoint has no {', '.join(missing)} "
                         "(best.pt holds the weights only: resume from last.pt)")
    return ckpt


def rng_state() -> dict:
    """The global generators' states (python, numpy, torch CPU, every CUDA device) as safe types."""
    version, keys, gauss = random.getstate()
    name, mt, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "state": torch.from_numpy(mt.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned (CUDA states only where the devices exist)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["state"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_diff(saved: dict, current: dict, ignore: Iterable[str] = ()) -> list[str]:
    """'key: saved -> current' for every differing leaf key, except those in `ignore`."""
    a, b = flatten(saved), flatten(current)
    skip = set(ignore)
    return [
        f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
        for k in sorted(a.keys() | b.keys())
        if k not in skip and a.get(k) != b.get(k)
    ]
