"""Episodes as data: an explicit list of (query id, class, support ids), saved as CSV.

Two streams draw the list (docs/episodes.md):

- "official" (the default for the PASCAL-layout datasets toy, pascal and coco): the episodes the
  authors' `test.py` draws, episode for episode, computed here in one process. `test.py` seeds
  Python `random`, NumPy and torch with the seed right before its loop and walks the val list
  in order (shuffle off, batch 1) as many times as needed; every pass starts a fresh DataLoader
  iterator, which draws one `base_seed` from torch's global generator, and worker w of that
  pass seeds its Python `random` with base_seed + w. Query i of a pass is served by worker
  i % workers, whose `random` picks the class (uniformly among the fold's classes present in
  the query label, ascending) and then the supports (the rejection loop: per support one draw
  that is always thrown away, then draws until the entry is neither the query nor an earlier
  support); the supports reach the model in the reverse of their draw order. The stream hence
  depends on the seed and on the authors' worker count (`stream_workers`, 32 in every released
  config), never on the processes used here to read labels.
- "seeded": one NumPy generator (`np.random.default_rng(seed)`) draws the same walk in the main
  process; independent of any worker count, but not the authors' episodes.
"""
from __future__ import annotations

import csv
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .folds import NUM_FOLDS
from ..constants import IGNORE, LIST_DATASETS
from .lists import FoldList, Item
from .sources import ListSource

CSV_HEADER = ("query", "class", "supports")
STREAMS = ("official", "seeded")
OFFICIAL_WORKERS = 32  # `workers` of every released config


@dataclass(frozen=True)
class Episode:
    """One few-shot task: segment class `cls` in image `query` given images `supports` (ids),
    in the order the model receives them."""

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
    """Classes of `classes` with at least one pixel in `label`, ascending (the order of the
    official `np.unique` filter; no size filter, as official)."""
    ids = set(np.unique(label).tolist()) - {0, IGNORE}
    return sorted(c for c in classes if c in ids)


def item_index(fold_list: FoldList) -> dict[str, Item]:
    """id -> Item over every entry of a fold list (queries and supports)."""
    index = {}
    for item in [*fold_list.items, *(it for items in fold_list.by_class.values() for it in items)]:
        known = index.setdefault(item.id, item)
        if known != item:
            raise ValueError(f"id {item.id!r} names two entries of one list: {known} and {item}")
    return index


def _too_few(cls: int, pool: int, query: Item, shot: int, where: str) -> ValueError:
    return ValueError(
        f"class {cls} has {pool} support candidates besides query {query.id!r} in {where}, "
        f"{shot}-shot episodes need {shot} (at least {shot + 1} images of the class)"
    )


def draw_supports(
    by_class: dict[int, list[Item]], cls: int, query: Item, shot: int, rng: np.random.Generator, where: str
) -> list[Item]:
    """`shot` distinct images of class `cls` other than the query, uniformly at random (the
    "seeded" stream)."""
    pool = [it for it in by_class.get(cls, []) if it.image != query.image]
    if len(pool) < shot:
        raise _too_few(cls, len(pool), query, shot, where)
    return [pool[i] for i in rng.choice(len(pool), size=shot, replace=False)]


def official_supports(
    pool: Sequence[Item], query: Item, shot: int, rng: random.Random, cls: int, where: str
) -> list[Item]:
    """The authors' support draw with Python `random` state `rng`, in the order the model
    receives the supports.

    For each support: one `randint(1, n) - 1` whose value the loop discards (its test holds on
    entry, since the candidate starts as the query itself), then `randint(1, n) - 1` until the
    entry at that index is not the query (same image and label path) and the index was not
    drawn for an earlier support. The supports are stacked by prepending, so the model gets
    them last drawn first. Raises ValueError where the authors' loop would never end.
    """
    key = (query.image, query.label)
    others = sum((it.image, it.label) != key for it in pool)
    if others < shot:
        raise _too_few(cls, others, query, shot, where)
    n = len(pool)
    chosen: list[int] = []
    for _ in range(shot):
        idx = rng.randint(1, n) - 1  # thrown away
        entry = key
        while entry == key or idx in chosen:
            idx = rng.randint(1, n) - 1
            entry = (pool[idx].image, pool[idx].label)
        chosen.append(idx)
    return [pool[i] for i in reversed(chosen)]


def loader_base_seeds(seed: int, passes: int) -> list[int]:
    """The `base_seed` of each of the first `passes` DataLoader iterators created after
    `torch.manual_seed(seed)` with nothing else drawing from torch's global CPU generator:
    each iterator draws one int64 with `torch.empty((), dtype=torch.int64).random_()`."""
    import torch

    gen = torch.Generator()
    gen.manual_seed(seed)
    return [int(torch.empty((), dtype=torch.int64).random_(generator=gen).item()) for _ in range(passes)]


def default_stream(source) -> str:
    """'official' for the PASCAL-layout datasets (toy, pascal, coco), 'seeded' for the others
    (a folder of your own classes has no official counterpart)."""
    return "official" if getattr(source, "dataset", None) in LIST_DATASETS else "seeded"


def make_episodes(
    source: ListSource,
    fold: int,
    shot: int,
    episodes: int = 1000,
    seed: int = 321,
    split: str = "val",
    workers: int = 0,
    stream: str | None = None,
    stream_workers: int = OFFICIAL_WORKERS,
    base_seeds: Sequence[int] | None = None,
) -> list[Episode]:
    """`episodes` episodes of `split`'s list of `fold`: queries in list order, repeated as
    needed, each with a class present in it and `shot` supports of that class (module doc).

    stream: "official" (the authors' test.py stream, the default for toy/pascal/coco) or
    "seeded" (one NumPy generator); None picks by dataset (`default_stream`).
    stream_workers: the authors' DataLoader worker count the official stream reproduces (32 in
    every released config; 0 = their main process drew everything from one `random`).
    base_seeds: the official stream's per-pass DataLoader base seeds, when they were not drawn
    straight after `torch.manual_seed(seed)` (default: `loader_base_seeds(seed, passes)`).
    workers: processes reading the query labels here (> 0: DataLoader workers); the episodes
    never depend on it. Each query label is read once (only the first `episodes` list entries
    are ever queries).
    """
    stream = default_stream(source) if stream is None else stream
    if stream not in STREAMS:
        raise ValueError(f"stream={stream!r}: expected one of {STREAMS}")
    if shot < 1 or episodes < 1:
        raise ValueError(f"shot={shot}, episodes={episodes}: both must be >= 1")
    if stream_workers < 0:
        raise ValueError(f"stream_workers={stream_workers}: expected >= 0")
    classes = split_classes(source, split, fold)
    fold_list = source.fold_list(split, fold)
    where = f"{source.root / 'lists' / split}/sub_class_file_list_{fold}.txt (fold {fold})"
    if not fold_list.items:
        raise ValueError(f"{source.root / 'lists' / split}/data_list_{fold}.txt: no images (fold {fold})")
    items = fold_list.items
    queries = items[: min(episodes, len(items))]
    present = dict(zip(queries, _scan_present(source, queries, classes, workers)))

    def candidates_of(query: Item) -> list[int]:
        found = present[query]
        if not found:
            raise ValueError(f"{query.label}: listed for fold {fold} ({split}) but holds none of classes {classes}")
        return found

    out = []
    if stream == "seeded":
        rng = np.random.default_rng(seed)
        for n in range(episodes):
            query = items[n % len(items)]
            candidates = candidates_of(query)
            cls = candidates[int(rng.integers(len(candidates)))]
            supports = draw_supports(fold_list.by_class, cls, query, shot, rng, where)
            out.append(Episode(query.id, cls, tuple(s.id for s in supports)))
        return out

    passes = math.ceil(episodes / len(items))
    if base_seeds is None:
        base_seeds = loader_base_seeds(seed, passes) if stream_workers else []
    elif stream_workers and len(base_seeds) < passes:
        raise ValueError(f"base_seeds: {len(base_seeds)} given, {episodes} episodes over {len(items)} queries "
                         f"need {passes} (one per pass)")
    main = random.Random(seed)  # with 0 workers every draw comes from the main process's `random`
    for p in range(passes):
        rngs = [random.Random(int(base_seeds[p]) + w) for w in range(stream_workers)]
        for i, query in enumerate(items[: episodes - p * len(items)]):
            rng = rngs[i % stream_workers] if stream_workers else main
            candidates = candidates_of(query)
            cls = candidates[rng.randint(1, len(candidates)) - 1]
            supports = official_supports(fold_list.by_class.get(cls, []), query, shot, rng, cls, where)
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


def read_episodes_csv(path: str | Path, source: ListSource | None = None, fold: int | None = None,
                      split: str = "val") -> list[Episode]:
    """The episodes of a CSV written by `write_episodes_csv` (errors name the file and line).
    With `source`, each episode is also checked against it (`check_episodes`): its class is a
    `split` class of `fold` (default: the fold the classes fit), its query label holds that
    class, its images are in the fold's lists and its supports serve the class."""
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
    if source is not None:
        if not out:
            raise ValueError(f"{path}: no episodes (a header only)")
        check_episodes(source, out, fold, split, where=[f"{path}:{n}" for n in range(2, len(rows) + 1)])
    return out


def check_episodes(source: ListSource, episodes: Sequence[Episode], fold: int | None = None, split: str = "val",
                   where: Sequence[str] | None = None) -> int:
    """ValueError naming the episode (`where[i]`, e.g. 'file.csv:LINE'; default 'episode i') of
    the first episode that cannot be scored as asked: a class that is not a `split` class of
    `fold`, an image missing from the fold's lists, a query whose label holds no pixel of the
    class (it would score 0), a support not listed for the class. Returns the fold (default:
    the one the episodes' classes fit, `infer_fold`)."""
    name = (lambda i: where[i]) if where is not None else (lambda i: f"episode {i}")
    if not episodes:
        raise ValueError("episodes: none given")
    if fold is None:
        for i, ep in enumerate(episodes):
            if not any(ep.cls in _classes_or_none(source, split, f) for f in range(NUM_FOLDS)):
                raise ValueError(f"{name(i)}: class {ep.cls} is not a {split} class of any fold of {source.root}")
        fold = infer_fold(source, episodes, split)
    classes = split_classes(source, split, fold)
    fold_list = source.fold_list(split, fold)
    index = item_index(fold_list)
    lists = f"{source.root / 'lists' / split} (fold {fold})"
    served = {c: {it.id for it in items} for c, items in fold_list.by_class.items()}
    present: dict[str, bool] = {}
    for i, ep in enumerate(episodes):
        if ep.cls not in classes:
            raise ValueError(f"{name(i)}: class {ep.cls} is not a {split} class of fold {fold} ({classes})")
        for id_ in (ep.query, *ep.supports):
            if id_ not in index:
                raise ValueError(f"{name(i)}: image {id_!r} is not in {lists}")
        key = f"{ep.query}/{ep.cls}"
        if key not in present:
            query = index[ep.query]
            present[key] = bool(present_classes(source.load_label(query), [ep.cls]))
        if not present[key]:
            raise ValueError(f"{name(i)}: query {ep.query!r} holds no pixel of class {ep.cls} "
                             f"({index[ep.query].label}); the episode would score 0")
        for id_ in ep.supports:
            if id_ not in served.get(ep.cls, ()):
                raise ValueError(f"{name(i)}: support {id_!r} is not listed for class {ep.cls} in "
                                 f"{source.root / 'lists' / split}/sub_class_file_list_{fold}.txt")
    return fold


def _classes_or_none(source: ListSource, split: str, fold: int) -> list[int]:
    try:
        return split_classes(source, split, fold)
    except ValueError:  # a source without this fold (a folder dataset has fold 0 only)
        return []
