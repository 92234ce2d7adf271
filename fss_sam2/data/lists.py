"""Fold lists: which images serve which class, built by the official rule (reference §3.2).

On disk (the authors' format, so their files work too), per split in {train, val} and fold f:
  lists/{split}/data_list_{f}.txt          one "image label" pair of paths per line
  lists/{split}/sub_class_file_list_{f}.txt a Python dict literal {class: [[image, label], ...]}
Paths are relative to the dataset root (the authors' absolute-ish paths are resolved too).
"""
from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE = 255
MIN_CLASS_PIXELS = 2 * 32 * 32  # a class counts in an image only if it covers >= 2048 pixels
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Item:
    """One image and its label map, paths relative to the dataset root."""

    image: str
    label: str

    @property
    def id(self) -> str:
        return Path(self.image).stem


@dataclass
class FoldList:
    items: list[Item] = field(default_factory=list)  # every image usable in this split/fold
    by_class: dict[int, list[Item]] = field(default_factory=dict)  # class -> images serving it


def class_pixel_counts(label: np.ndarray) -> dict[int, int]:
    """Pixels per class id in a label map, background (0) and ignore (255) left out."""
    counts = np.bincount(label.ravel(), minlength=IGNORE + 1)  # labels are uint8
    return {int(i): int(counts[i]) for i in np.flatnonzero(counts) if i not in (0, IGNORE)}


def select(
    entries: Iterable[tuple[Item, dict[int, int]]],
    classes: Iterable[int],
    filter_intersection: bool,
    min_pixels: int = MIN_CLASS_PIXELS,
) -> FoldList:
    """The official list rule (BAM / HMNet / FSSAM).

    An image serves class c if c is in `classes` and covers >= min_pixels. With
    filter_intersection (training lists) an image is dropped when it contains any class outside
    `classes` (i.e. a novel class leaks into training otherwise).
    """
    wanted = set(classes)
    out = FoldList(by_class={c: [] for c in sorted(wanted)})
    for item, counts in entries:
        if filter_intersection and not set(counts) <= wanted:
            continue
        served = [c for c, n in counts.items() if c in wanted and n >= min_pixels]
        if served:
            out.items.append(item)
            for c in served:
                out.by_class[c].append(item)
    return out


def write_fold_list(list_dir: Path, fold: int, fold_list: FoldList) -> None:
    list_dir = Path(list_dir)
    list_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{it.image} {it.label}\n" for it in fold_list.items)
    (list_dir / f"data_list_{fold}.txt").write_text(lines)
    sub = {c: [[it.image, it.label] for it in items] for c, items in fold_list.by_class.items()}
    (list_dir / f"sub_class_file_list_{fold}.txt").write_text(repr(sub) + "\n")


def read_fold_list(list_dir: Path, fold: int) -> FoldList:
    """Read one fold's lists (ours or the authors'); errors name the file and the problem."""
    list_dir = Path(list_dir)
    data_file = list_dir / f"data_list_{fold}.txt"
    sub_file = list_dir / f"sub_class_file_list_{fold}.txt"
    for f in (data_file, sub_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: list file missing (build the dataset with `fss-sam2 data ...`)")
    items = []
    for n, line in enumerate(data_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{data_file}:{n}: expected 'image label', got {line!r}")
        items.append(Item(*parts))
    try:
        raw = ast.literal_eval(sub_file.read_text())
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"{sub_file}: not a dict literal {{class: [[image, label], ...]}} ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{sub_file}: expected a dict literal, got {type(raw).__name__}")
    by_class = {int(c): [Item(*pair) for pair in pairs] for c, pairs in raw.items()}
    return FoldList(items=items, by_class=by_class)
