"""A prepared few-shot dataset on disk: images, label maps, fold lists and a small meta file.

Every builder (`fss-sam2 data toy|pascal|coco`) writes the same layout, so one reader serves all:
  root/fss_meta.json       {"dataset", "num_classes", "class_names", "split"}
  root/<images>/...        RGB images (JPEGImages/ for PASCAL and toy)
  root/<labels>/...        label PNGs, pixel = class id, 0 background, 255 ignore
  root/lists/{train,val}/  fold lists (see lists.py)
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .folds import NUM_FOLDS, base_classes, novel_classes
from .lists import MIN_CLASS_PIXELS, FoldList, Item, class_pixel_counts, read_fold_list, select, write_fold_list

META_FILE = "fss_meta.json"


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H,W,3); the error names the file."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from None


def read_label(path: Path) -> np.ndarray:
    """Label map uint8 (H,W) of class ids (palette indices for palette PNGs)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"mode {im.mode}, expected a palette or grayscale PNG of class ids")
            label = np.asarray(im)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read label map ({e})") from None
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"{path}: label values {label.min()}..{label.max()} do not fit class ids 0..255")
        label = label.astype(np.uint8)
    return label


class ListSource:
    """Reader of a prepared dataset root (PASCAL-5i, COCO-20i or the synthetic world)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path}: not a prepared dataset root (run `fss-sam2 data toy|pascal|coco --out {self.root}`)"
            )
        meta = json.loads(meta_path.read_text())
        self.dataset: str = meta["dataset"]
        self.num_classes: int = int(meta["num_classes"])
        self.class_names: list[str] = list(meta["class_names"])
        self.split: str = meta["split"]
        self._lists: dict[tuple[str, int], FoldList] = {}

    def novel(self, fold: int) -> list[int]:
        return novel_classes(self.num_classes, fold, self.split)

    def base(self, fold: int) -> list[int]:
        return base_classes(self.num_classes, fold, self.split)

    def fold_list(self, split: str, fold: int) -> FoldList:
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r}: expected 'train' or 'val'")
        key = (split, fold)
        if key not in self._lists:
            self._lists[key] = read_fold_list(self.root / "lists" / split, fold)
        return self._lists[key]

    def resolve(self, rel: str) -> Path:
        """Path of a list entry; the authors' '../data/.../JPEGImages/x.jpg' entries are matched
        by their trailing components under this root."""
        path = Path(rel)
        if path.is_absolute() and path.exists():
            return path
        parts = path.parts
        for start in range(len(parts)):
            candidate = self.root.joinpath(*parts[start:])
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"{rel}: listed in {self.root / 'lists'} but not found under {self.root}")

    def load_image(self, item: Item) -> np.ndarray:
        return read_image(self.resolve(item.image))

    def load_label(self, item: Item) -> np.ndarray:
        return read_label(self.resolve(item.label))


def write_dataset(
    root: Path,
    dataset: str,
    class_names: Sequence[str],
    split: str,
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    min_pixels: int = MIN_CLASS_PIXELS,
    progress: bool = True,
) -> dict:
    """Write fss_meta.json and the lists of every fold, by the official rule.

    `min_pixels` is the official 2048 for real data; small synthetic images use a scaled value
    (recorded in the meta file). Each label is read once. Returns {split: {fold: images}}.
    """
    root = Path(root)
    num_classes = len(class_names)
    meta = {
        "dataset": dataset,
        "num_classes": num_classes,
        "class_names": list(class_names),
        "split": split,
        "min_pixels": min_pixels,
    }
    summary = {}
    for name, items in (("train", train_items), ("val", val_items)):
        counts = [
            (it, class_pixel_counts(read_label(root / it.label)))
            for it in tqdm(items, desc=f"{dataset} {name} labels", disable=not progress)
        ]
        summary[name] = {}
        for fold in range(NUM_FOLDS):
            train = name == "train"
            classes = (base_classes if train else novel_classes)(num_classes, fold, split)
            fl = select(counts, classes, filter_intersection=train, min_pixels=min_pixels)
            write_fold_list(root / "lists" / name, fold, fl)
            summary[name][fold] = len(fl.items)
    (root / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return summary
