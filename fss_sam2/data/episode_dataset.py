"""Episodes -> tensors: the torch Datasets of evaluation and training.

A sample is a dict:
  query         (3,S,S)   float32 0..255
  query_label   (S,S)     int64 {0,1,255}: the episode class -> 1, other classes -> 0, 255 kept
  supports      (K,3,S,S) float32 0..255
  support_masks (K,S,S)   int64 {0,1,255}, binarised the same way
  raw_label     (Ho,Wo)   int64 binarised query label at the original size (what evaluation scores)
  cls, index    int
Training randomness comes from a Generator seeded by (seed, epoch, index), so a sample never
depends on the number of DataLoader workers or on which worker draws it (docs/deviations.md,
"Training sampling and resume"). Call `set_epoch`
before each epoch (and do not use persistent workers, which would keep the old epoch).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .episodes import Episode, draw_supports, infer_fold, item_index, present_classes, split_classes
from ..constants import IGNORE
from .lists import Item
from .sources import ListSource
from .transforms import TRAIN_SCALE, train_transform, val_transform


def binarise(label: np.ndarray, cls: int, num_classes: int, where: str) -> np.ndarray:
    """Class `cls` -> 1, background and other classes -> 0, ignore 255 kept; uint8 (H,W)."""
    bad = (label > num_classes) & (label != IGNORE)
    if bad.any():
        value = int(label[bad][0])
        raise ValueError(f"{where}: label value {value} is neither a class id 0..{num_classes} nor {IGNORE}")
    out = (label == cls).astype(np.uint8)
    out[label == IGNORE] = IGNORE
    return out


class _Episodes(Dataset):
    """Loading and transforming shared by the fixed-episode and the training datasets."""

    def __init__(self, source: ListSource, size: int, train: bool, seed: int, scale: tuple[float, float] | None):
        self.source = source
        self.size = size
        self.train = train
        self.seed = seed
        self.scale = scale or TRAIN_SCALE.get(source.dataset, TRAIN_SCALE["pascal"])
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _pair(self, item: Item, label: np.ndarray, cls: int, rng: np.random.Generator | None):
        """-> image (3,S,S), binarised label (S,S), binarised label at the original size (Ho,Wo)."""
        image = self.source.load_image(item)
        if image.shape[:2] != label.shape:
            raise ValueError(f"{item.image} {image.shape[:2]} and {item.label} {label.shape}: sizes differ")
        mask = binarise(label, cls, self.source.num_classes, item.label)
        if rng is None:
            return (*val_transform(image, mask, self.size), mask)
        return (*train_transform(image, mask, self.size, rng, self.scale), mask)

    def _sample(self, index: int, query: Item, label: np.ndarray, cls: int, supports: Sequence[Item],
                rng: np.random.Generator | None) -> dict:
        q, q_label, raw = self._pair(query, label, cls, rng)
        shots = [self._pair(s, self.source.load_label(s), cls, rng)[:2] for s in supports]
        for item, (_, mask) in zip(supports, shots):
            if not (mask == 1).any():  # the model then sees an all-background support, as officially
                warnings.warn(f"{item.label}: support mask of class {cls} is empty after the transform (episode {index})")
        return {
            "query": q,
            "query_label": q_label,
            "supports": torch.stack([s[0] for s in shots]),  # (K,3,S,S)
            "support_masks": torch.stack([s[1] for s in shots]),  # (K,S,S)
            "raw_label": torch.from_numpy(raw.astype(np.int64)),
            "cls": cls,
            "index": index,
        }


class EpisodeDataset(_Episodes):
    """A fixed list of episodes; ids are resolved through `split`'s lists of `fold` (by default
    the fold whose classes the episodes ask for).

    train=False: stretch resize (evaluation). train=True: the training augmentation, drawn per
    (seed, epoch, index).
    """

    def __init__(self, source: ListSource, episodes: Sequence[Episode], size: int = 512, train: bool = False,
                 seed: int = 0, fold: int | None = None, split: str = "val",
                 scale: tuple[float, float] | None = None):
        super().__init__(source, size, train, seed, scale)
        self.episodes = list(episodes)
        self.fold = infer_fold(source, self.episodes, split) if fold is None else fold
        self.items = item_index(source.fold_list(split, self.fold))
        for ep in self.episodes:
            for id_ in (ep.query, *ep.supports):
                if id_ not in self.items:
                    raise KeyError(f"episode image {id_!r} is not in {source.root / 'lists' / split} fold {self.fold}")

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, index: int) -> dict:
        ep = self.episodes[index]
        query = self.items[ep.query]
        rng = self._rng(index) if self.train else None
        supports = [self.items[s] for s in ep.supports]
        return self._sample(index, query, self.source.load_label(query), ep.cls, supports, rng)


class TrainEpisodeDataset(_Episodes):
    """The official training loader: index = query image of the train list of `fold`; each
    (epoch, index) draws a base class present in it and `shot` supports, then augments."""

    def __init__(self, source: ListSource, fold: int, shot: int, size: int = 512, seed: int = 321,
                 scale: tuple[float, float] | None = None):
        super().__init__(source, size, True, seed, scale)
        self.fold = fold
        self.shot = shot
        self.classes = split_classes(source, "train", fold)
        self.lists = source.fold_list("train", fold)
        self.where = f"{source.root / 'lists' / 'train'}/sub_class_file_list_{fold}.txt (fold {fold})"

    def __len__(self) -> int:
        return len(self.lists.items)

    def __getitem__(self, index: int) -> dict:
        rng = self._rng(index)
        query = self.lists.items[index]
        label = self.source.load_label(query)
        candidates = present_classes(label, self.classes)
        if not candidates:
            raise ValueError(f"{query.label}: listed for training fold {self.fold} but holds no base class")
        cls = candidates[int(rng.integers(len(candidates)))]
        supports = draw_supports(self.lists.by_class, cls, query, self.shot, rng, self.where)
        return self._sample(index, query, label, cls, supports, rng)


def collate(samples: list[dict]) -> dict:
    """Stack a list of samples; `raw_label` stays a list (original sizes differ)."""
    out = {k: torch.stack([s[k] for s in samples]) for k in ("query", "query_label", "supports", "support_masks")}
    out["raw_label"] = [s["raw_label"] for s in samples]
    out["cls"] = torch.tensor([s["cls"] for s in samples])
    out["index"] = torch.tensor([s["index"] for s in samples])
    return out
