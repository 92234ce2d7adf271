"""A demo folder of image and mask files from the synthetic world (notebook 09): the files
`predict_files` and the folder evaluation read, laid out as your own files would be."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def write_demo(tut, out: str | Path, fold: int, shot: int, queries: int = 6, classes: int = 2,
               per_class: int = 8) -> tuple[int, list[tuple[Path, Path]]]:
    """A demo folder from the synthetic world's val images of fold `fold`'s novel classes (what
    notebook 09 segments when you give no files of your own), replacing `out`:

        support/   `shot` examples of the first novel class with enough images:
                   example_<i>.jpg + example_<i>_mask.png (0/255)
        queries/   the next `queries` images of that class (alternately .jpg and .png) ...
        truth/     ... and their 0/255 masks, <stem>.png
        classes/   the first `classes` novel classes in the FSS-1000 layout: <class name>/<stem>.jpg
                   + <stem>.png, up to `per_class` images each

    Masks are the class's pixels, the ignore band (object boundary) counted as background.
    `tut`: a `Tutorial` session. Returns the class and the (image, mask) paths of the supports."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    src = tut.source
    by_class = src.fold_list("val", fold).by_class
    novel = [c for c in src.novel(fold) if len(by_class.get(c, [])) > shot]
    if not novel:
        raise ValueError(f"{src.root}: no novel class of fold {fold} has {shot + 1} val images")

    def mask_of(item, cls):  # (H,W) uint8 0/255, the ignore band (object boundary) counted as background
        return ((src.load_label(item) == cls) * 255).astype(np.uint8)

    def write(item, cls, image_path, mask_path=None):
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(src.load_image(item)).save(image_path)
        if mask_path is not None:
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask_of(item, cls)).save(mask_path)

    cls = novel[0]
    pool = by_class[cls]
    supports = [(out / "support" / f"example_{i + 1}.jpg", out / "support" / f"example_{i + 1}_mask.png")
                for i in range(shot)]
    for item, (image, mask) in zip(pool, supports):
        write(item, cls, image, mask)
    for n, item in enumerate(pool[shot : shot + queries]):
        stem = Path(item.image).stem
        write(item, cls, out / "queries" / f"{stem}{'.png' if n % 2 else '.jpg'}", out / "truth" / f"{stem}.png")
    for c in novel[:classes]:
        for item in by_class[c][:per_class]:
            stem = Path(item.image).stem
            folder = out / "classes" / tut.class_name(c)
            write(item, c, folder / f"{stem}.jpg", folder / f"{stem}.png")
    return cls, supports
