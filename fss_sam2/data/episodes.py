"""Episodes as data: an explicit, seeded list of (query id, class, support ids) (reference §3.3, §3.5).

The official loader draws episodes inside DataLoader workers, so its episodes depend on the
number of workers (reference W10). Here one generator in the main process draws the whole list
(same walk: queries in list order, repeated until N; a class present in the query, uniformly;
K distinct supports of that class other than the query), and the list can be saved as CSV.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .folds import NUM_FOLDS
from .lists import IGNORE, FoldList, Item
from .sources import ListSource

CSV_HEADER = ("query", "class", "supports")


@dataclass(frozen=True)
class Episode:
    """One few-shot task: segment class `cls` in image `query` given images `supports` (ids)."""

    query: str
    cls: int
    supports: tuple[str, ...]


def split_classes(source: ListSource, split: str, fold: int) -> list[int]:
    """The classes episodes may ask for: novel classes for 'val', base classes for 'train'."""
    if split == "val":
        return source.novel(fold)
    if split == "train":
        return source.base(fold)
    raise ValueError(f"split={split!r}: expected 'train' or 'val'")


def infer_fold(source: ListSource, episodes: Sequence[Episode], split: str = "val") -> int:
    """The one fold whose `split` classes hold every episode's class (always unique for val
    episodes, since novel classes partition the classes)."""
    asked = {ep.cls for ep in episodes}
    folds = []
    for f in range(NUM_FOLDS):
        try:
            classes = split_classes(source, split, f)
        except ValueError:  # a source without this fold (a folder dataset has fold 0 only)
            continue
        if asked <= set(classes):
            folds.append(f)
    if len(folds) != 1:
        raise ValueError(f"episode classes {sorted(asked)} fit {split} folds {folds} of {source.root}: pass fold=")
    return folds[0]


def present_classes(label: np.ndarray, classes: Sequence[int]) -> list[int]:
    """Classes of `classes` with at least one pixel in `label` (no size filter, as official)."""
    ids = set(np.unique(label).tolist()) - {0, IGNORE}
    return [c for c in classes if c in ids]


def item_index(fold_list: FoldList) -> dict[str, Item]:
    """id -> Item over every entry of a fold list (queries and supports)."""
    index = {}
    for item in [*fold_list.items, *(it for items in fold_list.by_class.values() for it in items)]:
        known = index.setdefault(item.id, item)
        if known != item:
            raise ValueError(f"id {item.id!r} names two entries of one list: {known} and {item}")
    return index


def draw_supports(
    by_class: dict[int, list[Item]], cls: int, query: Item, shot: int, rng: np.random.Generator, where: str
) -> list[Item]:
    """`shot` distinct images of class `cls` other than the query, uniformly at random."""
    pool = [it for it in by_class.get(cls, []) if it.image != query.image]
    if len(pool) < shot:
        raise ValueError(
            f"class {cls} has {len(pool)} support candidates besides query {query.id!r} in {where}, "
            f"{shot}-shot episodes need {shot} (at least {shot + 1} images of the class)"
        )
    return [pool[i] for i in rng.choice(len(pool), size=shot, replace=False)]


def make_episodes(
    source: ListSource,
    fold: int,
    shot: int,
    episodes: int = 1000,
    seed: int = 321,
    split: str = "val",
    workers: int = 0,
) -> list[Episode]:
    """The official evaluation walk over `split`'s list of `fold`, drawn by one seeded generator.

    Each query label is read once (only the first `episodes` list entries are ever queries);
    `workers` > 0 reads them in DataLoader worker processes. The draw itself always runs here,
    in one generator, so the episodes never depend on `workers`.
    """
    if shot < 1 or episodes < 1:
        raise ValueError(f"shot={shot}, episodes={episodes}: both must be >= 1")
    classes = split_classes(source, split, fold)
    fold_list = source.fold_list(split, fold)
    where = f"{source.root / 'lists' / split}/sub_class_file_list_{fold}.txt (fold {fold})"
    if not fold_list.items:
        raise ValueError(f"{source.root / 'lists' / split}/data_list_{fold}.txt: no images (fold {fold})")
    queries = fold_list.items[: min(episodes, len(fold_list.items))]
    present = dict(zip(queries, _scan_present(source, queries, classes, workers)))
    rng = np.random.default_rng(seed)
    out = []
    for n in range(episodes):
        query = fold_list.items[n % len(fold_list.items)]
        candidates = present[query]
        if not candidates:
            raise ValueError(f"{query.label}: listed for fold {fold} ({split}) but holds none of classes {classes}")
        cls = candidates[int(rng.integers(len(candidates)))]
        supports = draw_supports(fold_list.by_class, cls, query, shot, rng, where)
        out.append(Episode(query.id, cls, tuple(s.id for s in supports)))
    return out


class _PresentClasses:
    """Map-style dataset: which of `classes` each query label shows (for DataLoader workers)."""

    def __init__(self, source, items: Sequence[Item], classes: Sequence[int]):
        self.source, self.items, self.classes = source, items, classes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> list[int]:
        return present_classes(self.source.load_label(self.items[i]), self.classes)


def _scan_present(source, items: Sequence[Item], classes: Sequence[int], workers: int) -> list[list[int]]:
    scan = _PresentClasses(source, items, classes)
    if workers <= 0:
        return [scan[i] for i in range(len(scan))]
    from torch.utils.data import DataLoader

    loader = DataLoader(scan, batch_size=None, num_workers=workers)
    return list(loader)  # in order: DataLoader keeps the sampler's order


def write_episodes_csv(path: str | Path, episodes: Sequence[Episode]) -> None:
    """CSV `query,class,supports` with supports joined by ';' (same episodes -> same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for ep in episodes:
            writer.writerow((ep.query, ep.cls, ";".join(ep.supports)))


def read_episodes_csv(path: str | Path) -> list[Episode]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: episode file missing")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != CSV_HEADER:
        got = ",".join(rows[0]) if rows else "an empty file"
        raise ValueError(f"{path}: expected header {','.join(CSV_HEADER)!r}, got {got!r}")
    out = []
    for n, row in enumerate(rows[1:], 2):
        if len(row) != 3 or not row[0] or not row[2]:
            raise ValueError(f"{path}:{n}: expected 'query,class,support;support;...', got {','.join(row)!r}")
        try:
            cls = int(row[1])
        except ValueError:
            raise ValueError(f"{path}:{n}: class {row[1]!r} is not an integer") from None
        out.append(Episode(row[0], cls, tuple(row[2].split(";"))))
    return out
