"""What the tutorial notebooks call, so that they stay narrative.

    session.py        `setup`: data, models and episodes of a profile; probes into `FSSAM.trace`
    memory_study.py   SAM 2's memory read on a video vs on a few-shot episode (notebook 02)
    viz.py            figures (one style, masks as outlines)
    tables.py         the paper's tables from results files, beside the published numbers
    runs.py           the training runs the notebooks use (trained once, then reused)
    reproduce.py      execute every notebook in order (`fss-sam2 reproduce`)
"""
from __future__ import annotations

from ..constants import SYNTHETIC
from ..toy.world import SMOKE_WORLD, TOY_WORLD, ensure_toy_world, world_settings
from .session import (
    EPISODE_SEED,
    IMAGE_SIZE,
    PROFILES,
    Tutorial,
    attention_mass,
    binary_scores,
    episode_explorer,
    episode_grid,
    in_colab,
    label_on_grid,
    setup,
    trace,
)

__all__ = [
    "EPISODE_SEED", "IMAGE_SIZE", "PROFILES", "SMOKE_WORLD", "SYNTHETIC", "TOY_WORLD", "Tutorial", "attention_mass",
    "binary_scores", "ensure_toy_world", "episode_explorer", "episode_grid", "in_colab", "label_on_grid", "setup",
    "trace", "world_settings",
]
