"""A tiny PASCAL-layout dataset root for data and evaluation tests (seconds, deterministic).

Eight classes (two novel classes per fold), each a flat saturated colour with a little noise,
drawn as rectangles or disks on grey noise; object borders are marked 255 like VOC's.
"""
from __future__ import annotations

import json

from pathlib import Path

import numpy as np
from PIL import Image

from fss_sam2.data.lists import Item
from fss_sam2.data.sources import write_dataset

COLOURS = np.array(
    [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 30),
     (220, 40, 220), (30, 220, 220), (240, 140, 20), (130, 40, 180)],
    dtype=np.float32,
)  # class c has colour COLOURS[c - 1]
SIZES = ((40, 56), (48, 64), (56, 48), (44, 60))  # (H, W), non-square on purpose
MIN_PIXELS = 20


def _draw(label: np.ndarray, cls: int, rng: np.random.Generator) -> None:
    h, w = label.shape
    oh, ow = int(rng.integers(h // 3, h // 2 + 1)), int(rng.integers(w // 3, w // 2 + 1))
    top, left = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
    if rng.random() < 0.5:
        label[top:top + oh, left:left + ow] = cls
    else:
        y, x = np.mgrid[:h, :w]
        cy, cx, r = top + oh / 2, left + ow / 2, min(oh, ow) / 2
        label[(y - cy) ** 2 + (x - cx) ** 2 <= r * r] = cls


def _ignore_borders(label: np.ndarray) -> np.ndarray:
    """Pixels of an object that touch a different class (4-neighbourhood) become 255."""
    pad = np.pad(label, 1, mode="edge")
    edge = np.zeros(label.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= pad[dy:dy + label.shape[0], dx:dx + label.shape[1]] != label
    out = label.copy()
    out[edge & (label > 0)] = 255
    return out


def write_tiny_root(
    root: Path, images: int = 64, size: tuple[int, int] | None = None, seed: int = 0, num_classes: int = 8
) -> Path:
    """Write `images` images (first half train, second half val) and the fold lists under `root`.

    Image i always holds class (i % num_classes) + 1 (drawn last, on top) and often a second
    class. `size` fixes every image's (H, W); by default sizes cycle through SIZES.
    """
    root = Path(root)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(images):
        h, w = size or SIZES[i % len(SIZES)]
        label = np.zeros((h, w), np.uint8)
        main = i % num_classes + 1
        if rng.random() < 0.6:
            _draw(label, int(rng.choice([c for c in range(1, num_classes + 1) if c != main])), rng)
        _draw(label, main, rng)
        image = np.repeat(rng.uniform(90, 150, (h, w, 1)), 3, axis=2).astype(np.float32)
        for c in np.unique(label[label > 0]):
            on = label == c
            image[on] = COLOURS[c - 1] + rng.uniform(-12, 12, (int(on.sum()), 3))
        name = f"img_{i:03d}"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "JPEGImages" / f"{name}.png")
        Image.fromarray(_ignore_borders(label)).save(root / "SegmentationClassAug" / f"{name}.png")
        items.append(Item(f"JPEGImages/{name}.png", f"SegmentationClassAug/{name}.png"))
    names = [f"class{c}" for c in range(1, num_classes + 1)]
    half = images // 2
    write_dataset(root, "tiny", names, "contiguous", items[:half], items[half:], min_pixels=MIN_PIXELS, progress=False)
    return root


def write_tiny_toy_root(root: Path, images: int = 64) -> Path:
    """`write_tiny_root`, registered as a synthetic ('toy') dataset: what the toy-profile code
    paths (configs/toy.yaml, synthetic labels) expect, in a few KB."""
    path = write_tiny_root(root, images=images)
    meta = path / "fss_meta.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"dataset": "toy"}))
    return path


TOY_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "toy.yaml")


def train_two_steps(root: Path, out: Path, *more: str) -> Path:
    """`fss-sam2 train` of configs/toy.yaml on `root` at 64 px for 2 steps (an untrained model in
    our checkpoint format) -> out/last.pt."""
    from fss_sam2.cli import main

    args = ["train", "--config", TOY_CONFIG, "--set", f"root={root}", "image_size=64", "workers=0", "device=cpu",
            "batch_size=2", "max_steps=2", "lr=1e-2", *more, "--out", str(out), "--quiet"]
    assert main(args) == 0
    return out / "last.pt"
