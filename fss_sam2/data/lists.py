"""Fold lists: which images serve which class, built by the official rule.

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

from ..constants import IGNORE

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
    # entry path -> "list_file:line" where it was first read (for errors); not part of equality
    origin: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


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


SUB_SHAPE = "a dict literal {class: [[image, label], ...]}"


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e})") from None


def _segment(text: str, node: ast.AST) -> str:
    """The source text of `node`, shortened for an error message."""
    seg = ast.get_source_segment(text, node) or type(node).__name__
    return seg if len(seg) <= 80 else seg[:77] + "..."


def read_sub_class_list(sub_file: Path) -> tuple[dict[int, list[Item]], dict[str, str]]:
    """{class: [items]} of a sub_class_file_list, and each entry's "file:line"; every error names
    the file, the line and what is wrong (a class key that is not an integer, a pair that is not
    [image, label], a class listed twice, ...)."""
    text = _read_text(sub_file)
    if not text.strip():
        raise ValueError(f"{sub_file}: empty file; expected {SUB_SHAPE} ({{}} when no class has an image)")
    try:
        node = ast.parse(text, filename=str(sub_file), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"{sub_file}:{e.lineno}: not {SUB_SHAPE} ({e.msg})") from None
    if not isinstance(node, ast.Dict):
        raise ValueError(f"{sub_file}:{node.lineno}: expected {SUB_SHAPE}, got {_segment(text, node)}")
    by_class: dict[int, list[Item]] = {}
    origin: dict[str, str] = {}
    for key_node, value in zip(node.keys, node.values):
        at = f"{sub_file}:{(key_node or value).lineno}"
        if key_node is None:
            raise ValueError(f"{at}: '**' unpacking is not allowed in {SUB_SHAPE}")
        try:
            key = ast.literal_eval(key_node)
        except ValueError:
            key = None
        if type(key) is not int:  # bools and floats are not class ids either
            raise ValueError(f"{at}: class key {_segment(text, key_node)} is not an integer class id")
        if key in by_class:
            raise ValueError(f"{at}: class {key} is listed twice")
        if not isinstance(value, (ast.List, ast.Tuple)):
            raise ValueError(f"{at}: class {key}: expected a list of [image, label] pairs, got {_segment(text, value)}")
        items = []
        for element in value.elts:
            where = f"{sub_file}:{element.lineno}"
            parts = element.elts if isinstance(element, (ast.List, ast.Tuple)) else []
            pair = [p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str) and p.value.strip()]
            if len(parts) != 2 or len(pair) != 2:
                raise ValueError(
                    f"{where}: class {key}: expected an [image, label] pair of paths, got {_segment(text, element)}"
                )
            items.append(Item(*pair))
            for p in pair:
                origin.setdefault(p, where)
        by_class[key] = items
    return by_class, origin


def read_fold_list(list_dir: Path, fold: int) -> FoldList:
    """Read one fold's lists (ours or the authors'); errors name the file, the line and the problem.

    An empty data list reads as an empty FoldList (`fss-sam2 data check` reports it); the
    returned `origin` maps every entry to the "file:line" it was first read from.
    """
    list_dir = Path(list_dir)
    data_file = list_dir / f"data_list_{fold}.txt"
    sub_file = list_dir / f"sub_class_file_list_{fold}.txt"
    for f in (data_file, sub_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: list file missing (build the dataset with `fss-sam2 data ...`)")
    items, origin = [], {}
    for n, line in enumerate(_read_text(data_file).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{data_file}:{n}: expected 'image label', got {line!r}")
        items.append(Item(*parts))
        for p in parts:
            origin.setdefault(p, f"{data_file}:{n}")
    by_class, sub_origin = read_sub_class_list(sub_file)
    for p, where in sub_origin.items():
        origin.setdefault(p, where)
    return FoldList(items=items, by_class=by_class, origin=origin)
