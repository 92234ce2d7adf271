"""What the two stand-ins' pretraining loops share: the learning-rate schedule and a loss summary."""
from __future__ import annotations

import math

import numpy as np


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `steps`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def loss_summary(losses: list[float]) -> dict:
    """First and last tenth of a loss curve (a single step is too noisy to compare)."""
    n = max(1, len(losses) // 10)
    return {"loss_first": float(np.mean(losses[:n])), "loss_last": float(np.mean(losses[-n:]))}
