"""The DINOv2 stand-in the package ships: `fss_sam2/resources/standins/toy_dino_<key>.pt` and its
record `.json` (docs/toy_world.md, "The shipped stand-in").

Training the toy DINOv2 costs a fresh clone's first `make demo` 137 s of an idle 2-core CPU (measured); its
file is 1.1 MB, so the package ships the one `ensure_toy_standins` would train for the default
world (`TOY_WORLD`, seed 0), and the cache copies it instead. The SAM 2 stand-in (8.5 M
parameters, 34 MB; 17 MB in fp16) is trained on first use.

The shipped file is what one command writes from the committed code and seed:

    make standins            # = PINNED python -m fss_sam2.toy.standins
    python -m fss_sam2.toy.standins --check   # train it again and compare, byte for byte

Both run under the Makefile's pinned numerics (AVX2 kernels, 2 threads), which they check:
other kernels or thread counts give other bits (docs/toy_world.md, "Reproducible toy numbers").
Its key covers the package version, the pretraining settings and the world's meta files, so a
change to any of them leaves the shipped file unused (trained instead) until it is regenerated,
and the check says so.
"""
from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

SHIPPED_FOLDER = "resources/standins"  # in the package
SHIPPED_KIND = "dino"


def shipped_folder() -> Traversable:
    return resources.files("fss_sam2").joinpath(SHIPPED_FOLDER)


def shipped_files(stem: str) -> tuple[Traversable, Traversable] | None:
    """(weights, record) the package ships under the cache name `stem`, or None."""
    folder = shipped_folder()
    weights, record = folder.joinpath(f"{stem}.pt"), folder.joinpath(f"{stem}.json")
    return (weights, record) if weights.is_file() and record.is_file() else None
