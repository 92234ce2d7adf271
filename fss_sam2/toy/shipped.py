"""The stand-ins the package ships: `fss_sam2/resources/standins/toy_<kind>_<key>.pt` and their
records `.json`, for the SAM 2 and the DINOv2 stand-in (docs/toy_world.md, "The shipped stand-ins").

Training them costs a fresh clone's first `make demo` about 245 s (SAM 2, 1000 steps) and 137 s
(DINOv2, 900 steps) of an idle 2-core CPU (measured); their files are 4.8 MB (fp16) and 1.1 MB,
so the package ships the pair `ensure_toy_standins` would train for the default world
(`TOY_WORLD`, seed 0), and the cache copies them instead.

The shipped files are what one command writes from the committed code and seed:

    make standins            # = PINNED python -m fss_sam2.toy.standins
    python -m fss_sam2.toy.standins --check   # train them again and compare, byte for byte

Both run under the Makefile's pinned numerics (AVX2 kernels, 2 threads), which they check:
other kernels or thread counts give other bits (docs/toy_world.md, "Reproducible toy numbers").
A key covers the package version, the pretraining settings and the world's meta files, so a
change to any of them leaves a shipped file unused (trained instead) until it is regenerated,
and the check says so.
"""
from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

SHIPPED_FOLDER = "resources/standins"  # in the package
SHIPPED_KINDS = ("sam2", "dino")


def shipped_folder() -> Traversable:
    return resources.files("fss_sam2").joinpath(SHIPPED_FOLDER)


def shipped_files(stem: str) -> tuple[Traversable, Traversable] | None:
    """(weights, record) the package ships under the cache name `stem`, or None."""
    folder = shipped_folder()
    weights, record = folder.joinpath(f"{stem}.pt"), folder.joinpath(f"{stem}.json")
    return (weights, record) if weights.is_file() and record.is_file() else None
