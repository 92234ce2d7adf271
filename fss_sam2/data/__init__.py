"""Datasets of the few-shot benchmarks, the synthetic world, and episodes."""
from __future__ import annotations

from pathlib import Path

from .sources import ListSource

DATASETS = ("toy", "pascal", "coco", "folder")


def open_source(dataset: str, root: str | Path):
    """The reader of a dataset root: a prepared PASCAL-layout root, or a folder of your classes."""
    if dataset == "folder":
        from .folder import FolderSource

        return FolderSource(root)
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r}: expected one of {DATASETS}")
    source = ListSource(root)
    if source.dataset != dataset:
        raise ValueError(f"{root}: holds dataset {source.dataset!r} (fss_meta.json), not {dataset!r}")
    return source
