"""What the tutorial notebooks call, so that they stay narrative.

    session.py        `setup`: data, models and episodes of a profile; probes into `FSSAM.trace`
    memory_study.py   SAM 2's memory read on a video vs on a few-shot episode (notebook 02)
    memory_reads.py   what notebook 02 shows of one memory read (IoU per frame, object attention)
    diagnostics.py    what limits each module on a model and episodes (notebooks 03-05, 07)
    report.py         sentences that state, from the numbers, what a run showed
    demo.py           a small folder of your own images for notebook 09
    viz.py            figures (one style, masks as outlines)
    tables.py         the paper's tables from results files, beside the published numbers
    runs.py           the training runs the notebooks use (trained once, then reused)
    grid.py           FSSAM, its ablations and the naive SAM 2 over folds and shots, with intervals
    reproduce.py      execute every notebook in order (`fss-sam2 reproduce`)
"""
from __future__ import annotations

import importlib

# name -> module that defines it; loaded on first use, so that importing one room (e.g.
# `fss_sam2.tutorial.tables`, which the toy must never reach) loads nothing else
_EXPORTS = {
    **dict.fromkeys(("EPISODE_SEED", "IMAGE_SIZE", "PROFILES", "Tutorial", "attention_mass", "binary_scores",
                     "episode_explorer", "episode_grid", "in_colab", "label_on_grid", "setup", "trace"),
                    "fss_sam2.tutorial.session"),
    **dict.fromkeys(("SMOKE_WORLD", "TOY_WORLD", "ensure_toy_world", "world_settings"), "fss_sam2.toy.world"),
    "SYNTHETIC": "fss_sam2.constants",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fss_sam2.tutorial' has no attribute {name!r}")
