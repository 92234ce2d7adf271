"""Your own classes from a folder, for evaluation: one subfolder per class (FSS-1000 layout).

  root/<class>/<name>.jpg + root/<class>/<name>.png         (mask next to the image), or
  root/<class>/<name>.<ext> + root/<class>/masks/<name>.png (masks in their own folder)

Masks are binary: a pixel is foreground when its value is 1 or above 127 (0/1, 0/255 and
anti-aliased 0..255 masks all work; RGB masks count their brightest channel, masks with alpha
are composited on black first; EXIF orientation is applied to masks as to images). Labels come back
with the class id on the foreground, so episodes binarise them like PASCAL / COCO labels.
Every class is novel in fold 0 (there is no training split); other folds do not exist.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..constants import IGNORE
from .lists import FoldList, Item
from .sources import DECODE_ERRORS, read_image, to_rgb, upright

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MASK_DIR = "masks"


@dataclass(frozen=True)
class FolderItem(Item):
    """An item whose id is "class/name": image names repeat across FSS-1000 classes."""

    @property
    def id(self) -> str:
        return f"{Path(self.image).parent.name}/{Path(self.image).stem}"


def read_mask(path: Path) -> np.ndarray:
    """Foreground of a binary mask file, bool (H,W), EXIF orientation applied like `read_image`
    (so a mask stays aligned with its photo); the error names the file.

    Colour masks count their brightest channel; a mask with alpha (RGBA, LA, PA) is first
    composited on black like images are, so transparent pixels are background; palette masks
    count their indices; 16-bit and float masks their values.
    """
    try:
        with Image.open(path) as im:
            im = upright(im)
            if "A" in im.getbands() or "a" in im.getbands():
                values = to_rgb(im.convert("RGBA")).max(axis=2)
            elif im.mode in ("RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
                values = np.asarray(im.convert("RGB")).max(axis=2)
            elif im.mode == "1":
                values = np.asarray(im).astype(np.uint8)
            else:
                values = np.asarray(im)
            if values.ndim != 2:
                raise ValueError(f"mode {im.mode} is not a single-channel or colour mask")
    except DECODE_ERRORS as e:
        raise ValueError(f"{path}: cannot read mask ({e})") from None
    return (values == 1) | (values > 127)


def scan_class(folder: Path) -> list[FolderItem]:
    """(image, mask) pairs of one class folder, paths relative to the dataset root."""
    cls = folder.name
    mask_dir = folder / MASK_DIR
    items = []
    for image in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        if mask_dir.is_dir():
            mask = mask_dir / f"{image.stem}.png"
        elif image.suffix.lower() == ".png":
            continue  # a mask next to its image
        else:
            mask = folder / f"{image.stem}.png"
        if not mask.is_file():
            raise FileNotFoundError(f"{image}: no mask {mask}")
        items.append(FolderItem(f"{cls}/{image.name}", str(mask.relative_to(folder.parent))))
    return items


class FolderSource:
    """A folder of classes read through the ListSource interface (evaluation only, fold 0).

    classes: names of the class folders to use (default: all, sorted); class id = position + 1.
    """

    dataset = "folder"
    split = "all"  # every class is novel in fold 0

    def __init__(self, root: str | Path, classes: Sequence[str] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: folder dataset root not found")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is not None:
            missing = [c for c in classes if c not in found]
            if missing:
                raise FileNotFoundError(f"{self.root}: class folders missing: {', '.join(missing)}")
            found = list(classes)
        if not found:
            raise FileNotFoundError(f"{self.root}: no class folders (expected root/<class>/<name>.jpg + .png)")
        self.class_names: list[str] = found
        self.num_classes = len(found)
        # class ids must fit the label maps: uint8 below the ignore value, else uint16
        self._dtype = np.uint8 if self.num_classes < IGNORE else np.uint16
        by_class = {c: scan_class(self.root / name) for c, name in enumerate(found, 1)}
        self._list = FoldList(items=[it for items in by_class.values() for it in items], by_class=by_class)
        self._ids = {name: c for c, name in enumerate(found, 1)}

    def _check_fold(self, fold: int) -> None:
        if fold != 0:
            raise ValueError(f"fold={fold}: a folder dataset ({self.root}) has fold 0 only (all classes novel)")

    def novel(self, fold: int) -> list[int]:
        self._check_fold(fold)
        return list(range(1, self.num_classes + 1))

    def base(self, fold: int) -> list[int]:
        self._check_fold(fold)
        return []

    def fold_list(self, split: str, fold: int) -> FoldList:
        if split != "val":
            raise ValueError(f"split={split!r}: a folder dataset ({self.root}) has a 'val' split only")
        self._check_fold(fold)
        return self._list

    def resolve(self, rel: str) -> Path:
        path = self.root / rel
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found")
        return path

    def load_image(self, item: Item) -> np.ndarray:
        return read_image(self.resolve(item.image))

    def load_label(self, item: Item) -> np.ndarray:
        """(H,W) label: the item's class id on the mask's foreground, 0 elsewhere."""
        cls = self._ids.get(Path(item.image).parent.name)
        if cls is None:
            raise ValueError(f"{item.image}: not in a class folder of {self.root}")
        return read_mask(self.resolve(item.label)).astype(self._dtype) * self._dtype(cls)
