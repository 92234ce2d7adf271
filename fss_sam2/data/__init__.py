"""Datasets of the few-shot benchmarks, the synthetic world, and episodes."""
from __future__ import annotations

from pathlib import Path

from ..constants import DATASETS
from .sources import ListSource


def open_source(dataset: str, root: str | Path, allow_outside: bool = False):
    """The reader of a dataset root: a prepared PASCAL-layout root, or a folder of your classes.
    allow_outside: list entries may name files outside the root (refused by default)."""
    if dataset == "folder":
        from .folder import FolderSource

        return FolderSource(root)
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r}: expected one of {DATASETS}")
    source = ListSource(root, allow_outside=allow_outside)
    if source.dataset != dataset:
        raise ValueError(f"{root}: holds dataset {source.dataset!r} (fss_meta.json), not {dataset!r}")
    return source
