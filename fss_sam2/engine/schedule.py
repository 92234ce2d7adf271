"""What happens at which step: learning rate, data order, per-step seeds, validation points.

Everything here is a pure function of the seed and the position in the run, so a run resumed
from a checkpoint replays exactly what an uninterrupted run does. The rules are the release's
(docs/deviations.md, "Validation schedule").
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler


def poly_lr(base_lr: float, it: int, max_it: int, power: float = 0.9, warmup_steps: int = 0) -> float:
    """lr of iteration `it` (1-based): base_lr * (1 - it / max_it) ** power (official, applied
    per iteration to every group), after an optional linear warm-up over `warmup_steps`."""
    if it <= warmup_steps:
        return base_lr * it / warmup_steps
    return base_lr * max(0.0, 1.0 - it / max_it) ** power


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The torch seed of one training step of one process (dropout and any other draw in it)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The shuffled dataset indices of one epoch (a function of seed and epoch only)."""
    return np.random.default_rng([seed, epoch, size]).permutation(size)


class RankBatches(Sampler[list[int]]):
    """Batches of one epoch for one process, from batch `start` on.

    Global batch j holds order[j*B:(j+1)*B] (the last partial batch is dropped); the process of
    rank r gets the r-th of `world` equal contiguous slices of it, so the union over ranks of a
    step's batches is the single-process batch.
    """

    def __init__(self, order: np.ndarray, batch_size: int, start: int = 0, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"train.batch_size={batch_size} does not split over {world} processes")
        self.order = order
        self.batch_size = batch_size
        self.start = start
        self.per_rank = batch_size // world
        self.offset = rank * self.per_rank

    def __len__(self) -> int:
        return len(self.order) // self.batch_size - self.start

    def __iter__(self):
        for j in range(self.start, len(self.order) // self.batch_size):
            first = j * self.batch_size + self.offset
            yield self.order[first:first + self.per_rank].tolist()


def mid_epoch_batch(epoch: int, iters: int, mid_epoch_val_from: int | None) -> int | None:
    """The 0-based batch after which epoch `epoch` validates mid-way, or None.

    Official rule: a half-epoch validation when the schedule has <= 100 epochs (COCO) or the
    epoch index is > 100 (PASCAL), made explicit as `mid_epoch_val_from` (0 / 101 / None).
    """
    if mid_epoch_val_from is None or epoch < mid_epoch_val_from or iters < 2:
        return None
    return iters // 2 - 1
