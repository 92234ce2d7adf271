"""Check a prepared dataset before spending GPU time on it: every problem names its file.

Checked: the root, meta and every list file (train and val of every fold; an empty data list is
a problem, except train lists that are all empty: an evaluation-only root); every listed entry
stays inside the root (unless allow_outside); every listed image and label exists and decodes
in full, as training reads it (fast=True reads image headers only); image and label sizes
agree (EXIF orientation applied); label values lie in
{0..num_classes, 255}; each class listed for an image is present in its label; every novel class
has >= 2 val images (else no 1-shot episode). Nothing is written. `summary` gives the counts per
split/fold/class.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .folder import FolderSource
from .folds import NUM_FOLDS
from ..constants import IGNORE
from .lists import SPLITS, FoldList, Item
from .sources import DECODE_ERRORS, META_FILE, ListSource, oriented_size, read_image, read_label

Source = ListSource | FolderSource


def open_source(dataset: str, root: str | Path, allow_outside: bool = False) -> Source:
    """A class folder for dataset "folder", else a prepared root (its meta names the dataset)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found")
    return FolderSource(root) if dataset == "folder" else ListSource(root, allow_outside=allow_outside)


def read_lists(source: Source) -> tuple[dict[tuple[str, int], FoldList], list[str]]:
    """Every readable fold list {(split, fold): list}, and the problems of the others."""
    keys = [("val", 0)] if isinstance(source, FolderSource) else [(s, f) for s in SPLITS for f in range(NUM_FOLDS)]
    lists, problems = {}, []
    for key in keys:
        try:
            lists[key] = source.fold_list(*key)
        except (OSError, ValueError) as e:
            problems.append(str(e))
    return lists, problems


def list_file(source: Source, split: str, fold: int) -> Path:
    """The file a problem of a list entry is reported against."""
    if isinstance(source, FolderSource):
        return source.root
    return source.root / "lists" / split / f"sub_class_file_list_{fold}.txt"


def data_list_file(source: Source, split: str, fold: int) -> Path:
    """The file an empty list is reported against."""
    if isinstance(source, FolderSource):
        return source.root
    return source.root / "lists" / split / f"data_list_{fold}.txt"


def check_item(source: Source, item: Item, where: Path | str, fast: bool = False) -> tuple[list[str], set[int]]:
    """Problems of one image/label pair, and the label values present. The image is decoded in
    full by `read_image` (header only when fast); the label always is."""
    problems, size, values = [], None, set()
    image = None
    try:
        image = source.resolve(item.image)
    except FileNotFoundError:
        problems.append(f"{where}: image {item.image} not found under {source.root}")
    except ValueError as e:  # the entry leaves the root
        problems.append(str(e))
    if image is not None and fast:
        try:
            with Image.open(image) as im:
                size = oriented_size(im)
        except DECODE_ERRORS as e:
            problems.append(f"{image}: unreadable image ({e})")
    elif image is not None:
        try:
            h, w = read_image(image).shape[:2]
            size = (w, h)
        except ValueError as e:  # names the file
            problems.append(str(e))
    try:
        label_path = source.resolve(item.label)
    except FileNotFoundError:
        problems.append(f"{where}: label {item.label} not found under {source.root}")
        return problems, values
    except ValueError as e:
        problems.append(str(e))
        return problems, values
    try:
        label = source.load_label(item) if isinstance(source, FolderSource) else read_label(label_path)
    except (OSError, ValueError) as e:
        problems.append(f"{label_path}: unreadable label ({e})")
        return problems, values
    if size is not None and label.shape != (size[1], size[0]):
        h, w = label.shape
        problems.append(f"{label_path}: label is {w}x{h} but image {image} is {size[0]}x{size[1]}")
    values = set(np.flatnonzero(np.bincount(label.ravel())).tolist())
    bad = sorted(v for v in values if v > source.num_classes and v != IGNORE)
    if bad:
        problems.append(f"{label_path}: label values {bad} outside 0..{source.num_classes} and {IGNORE}")
    return problems, values


def check_dataset(
    dataset: str,
    root: str | Path,
    fast: bool = False,
    progress: bool = True,
    allow_outside: bool = False,
    decode_images: bool | None = None,
) -> list[str]:
    """Problems of a prepared dataset root (pascal, coco, toy, ...) or a class folder ("folder").

    fast: read image headers only instead of decoding every image (labels are always decoded).
    progress: a progress bar over the listed pairs. allow_outside: accept list entries that
    leave the root (see ListSource). decode_images: the former name, = not fast.
    """
    if decode_images is not None:
        fast = not decode_images
    try:
        source = open_source(dataset, root, allow_outside=allow_outside)
    except (OSError, ValueError) as e:
        return [str(e)]
    problems = []
    if isinstance(source, ListSource) and source.dataset != dataset:
        problems.append(f"{source.root / META_FILE}: dataset is {source.dataset!r}, expected {dataset!r}")
    lists, list_problems = read_lists(source)
    problems += list_problems
    # an evaluation-only root (`data coco --val-only`, author val lists only) has every train list
    # empty on purpose; one empty train list among filled ones is a problem
    train = [fl for (split, _), fl in lists.items() if split == "train"]
    evaluation_only = len(train) == NUM_FOLDS and not any(fl.items for fl in train)
    for (split, fold), fl in lists.items():
        if not fl.items:
            if not (split == "train" and evaluation_only):
                problems.append(f"{data_list_file(source, split, fold)}: no images (the {split} list of fold {fold} is empty)")
        elif not any(fl.by_class.values()):
            problems.append(f"{list_file(source, split, fold)}: no class lists an image, though "
                            f"{data_list_file(source, split, fold).name} lists {len(fl.items)}")

    where: dict[Item, Path | str] = {}  # each pair is checked once, reported against a line naming it
    for (split, fold), fl in lists.items():
        for it in fl.items + [it for items in fl.by_class.values() for it in items]:
            where.setdefault(it, fl.origin.get(it.image) or list_file(source, split, fold))
    values: dict[Item, set[int]] = {}
    for it, listed_in in tqdm(where.items(), desc=f"check {dataset}", disable=not progress):
        item_problems, values[it] = check_item(source, it, listed_in, fast)
        problems += item_problems

    for (split, fold), fl in lists.items():
        listed_in = list_file(source, split, fold)
        for c, items in sorted(fl.by_class.items()):
            if c not in range(1, source.num_classes + 1):
                problems.append(f"{listed_in}: class {c} outside 1..{source.num_classes}")
                continue
            for it in items:
                if values[it] and c not in values[it]:
                    problems.append(f"{listed_in}: {it.label} is listed for class {c} but has no pixel of it")
        if split == "val":
            for c in source.novel(fold):
                n = len(fl.by_class.get(c, []))
                if n < 2:
                    name = source.class_names[c - 1]
                    problems.append(f"{listed_in}: class {c} ({name}) has {n} val image(s); a 1-shot episode needs 2")
    return problems


def summary(dataset: str, root: str | Path) -> str:
    """Images per split/fold and per class, one line each."""
    source = open_source(dataset, root)
    lists, problems = read_lists(source)
    lines = [f"{dataset} at {source.root}: {source.num_classes} classes, split {source.split}"]
    for (split, fold), fl in lists.items():
        per_class = ", ".join(f"{source.class_names[c - 1]}:{len(v)}" for c, v in sorted(fl.by_class.items()))
        lines.append(f"{split} fold {fold}: {len(fl.items)} images ({per_class})")
    return "\n".join(lines + problems)
