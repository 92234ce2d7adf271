"""A prepared few-shot dataset on disk: images, label maps, fold lists and a small meta file.

Every builder (`fss-sam2 data toy|pascal|coco`) writes the same layout, so one reader serves all:
  root/fss_meta.json       {"dataset", "num_classes", "class_names", "split"}
  root/<images>/...        RGB images (JPEGImages/ for PASCAL and toy)
  root/<labels>/...        label PNGs, pixel = class id, 0 background, 255 ignore
  root/lists/{train,val}/  fold lists (see lists.py)

List entries stay inside the root (`ListSource.resolve`): an absolute entry, or one that climbs
out with '..', is read only through a part of it that lies under the root (the authors'
'../data/.../JPEGImages/x.jpg' entries match root/JPEGImages/x.jpg), else it is refused with
the list file and line, unless `allow_outside=True`. The check is on the entry's path, not on
where symlinks lead: the builders link images into the root with symlinks (pascal.link_or_copy,
unless --copy), so a symlink placed inside the root is part of the dataset and is followed.

Images (`read_image`) come back as RGB uint8 with their EXIF orientation applied, like labels
(`read_label`) and folder masks, so an image and its mask stay aligned; see `read_image` for the
rule of each image mode.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from .folds import NUM_FOLDS, SPLIT_MODES, base_classes, novel_classes
from .lists import MIN_CLASS_PIXELS, FoldList, Item, class_pixel_counts, read_fold_list, select, write_fold_list

META_FILE = "fss_meta.json"


# what PIL raises for broken files besides OSError/ValueError (bad headers, short EXIF, bombs)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, struct.error, IndexError, KeyError, Image.DecompressionBombError)
ORIENTATION = 0x0112  # the EXIF orientation tag; values 5..8 swap width and height
SIXTEEN_BITS = 257  # 16-bit samples v -> round(v / 257): 0..65535 onto 0..255, a fixed rule


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image once its EXIF orientation is applied (header only)."""
    orientation = im.getexif().get(ORIENTATION, 1)
    return (im.height, im.width) if orientation in (5, 6, 7, 8) else im.size


def upright(im: Image.Image) -> Image.Image:
    """The image as displayed: its EXIF orientation applied (`ImageOps.exif_transpose`), for
    images, labels and masks alike; `im` itself when it has none."""
    return ImageOps.exif_transpose(im) if im.getexif().get(ORIENTATION, 1) in range(2, 9) else im


def _sample_bits(im: Image.Image) -> int:
    """Bits per sample of a mode-I image: 16 for PNGs (PIL < 10 opens 16-bit PNGs as I) and
    16-bit TIFFs, else 32."""
    if im.format == "PNG":
        return 16
    bits = getattr(im, "tag_v2", {}).get(258)  # TIFF BitsPerSample
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    return 16 if bits == 16 else 32


def _has_alpha(im: Image.Image) -> bool:
    return "A" in im.getbands() or "a" in im.getbands() or "transparency" in im.info


def to_rgb(im: Image.Image) -> np.ndarray:
    """RGB uint8 (H,W,3) of an opened image by the rule of its mode (see `read_image`)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        if mode == "I" and _sample_bits(im) != 16:
            raise ValueError("32-bit integer image (mode I): no fixed rule maps it to 8-bit colours; "
                             "save it with 8 or 16 bits per sample")
        values = np.asarray(im).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"16-bit image with values {values.min()}..{values.max()} outside 0..65535")
        gray = ((values + SIXTEEN_BITS // 2) // SIXTEEN_BITS).astype(np.uint8)  # round(v / 257)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        raise ValueError("32-bit float image (mode F): no fixed rule maps floats to 8-bit colours; "
                         "save it as an 8- or 16-bit image")
    if _has_alpha(im):
        # composited on black: each channel x alpha / 255, rounded (transparent pixels are black)
        rgba = np.asarray(im.convert("RGBA")).astype(np.uint16)
        return ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)
    return np.asarray(im.convert("RGB"))  # 1, L, P, RGB, CMYK (no colour management), YCbCr, ...


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H,W,3), EXIF orientation applied; the error names the file.

    By mode: 1, L, P, RGB: as PIL converts them (1 -> 0/255, gray replicated, palette looked up).
    CMYK (e.g. CMYK JPEGs): PIL's CMYK -> RGB (R = 255 - C - K, clipped; ICC profiles are not
    applied). Alpha (LA, PA, RGBA, or a palette / gray / RGB transparent colour): composited on
    black, channel x alpha / 255 rounded, so fully transparent pixels are black. 16-bit gray
    (I;16, or I from a 16-bit PNG/TIFF): v / 257 rounded, a fixed rule (0 -> 0, 65535 -> 255,
    not stretched by the image's own range). 32-bit integer (I) and float (F) images have no
    fixed range and are refused, as are modes PIL cannot convert to RGB.
    """
    try:
        with Image.open(path) as im:
            return to_rgb(upright(im))
    except DECODE_ERRORS as e:
        raise ValueError(f"{path}: cannot read image ({e})") from None


LABEL_MODES = ("P", "L", "I", "I;16", "I;16L", "I;16B")


def read_label(path: Path) -> np.ndarray:
    """Label map uint8 (H,W) of class ids (palette indices for palette PNGs), exactly as stored
    (never resampled), EXIF orientation applied like `read_image`."""
    try:
        with Image.open(path) as im:
            if im.mode not in LABEL_MODES:
                raise ValueError(f"mode {im.mode}, expected a palette or grayscale PNG of class ids")
            label = np.asarray(upright(im))
    except DECODE_ERRORS as e:
        raise ValueError(f"{path}: cannot read label map ({e})") from None
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"{path}: label values {label.min()}..{label.max()} do not fit class ids 0..255")
        label = label.astype(np.uint8)
    return label


META_KEYS = ("dataset", "num_classes", "class_names", "split")


def read_meta(meta_path: Path) -> dict:
    """The meta file of a dataset root, checked; every error names the file and what is wrong."""
    try:
        meta = json.loads(meta_path.read_text())
    except UnicodeDecodeError as e:
        raise ValueError(f"{meta_path}: not a text file ({e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object with keys {', '.join(META_KEYS)}, got {type(meta).__name__}")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: missing key(s) {', '.join(missing)} (a meta file holds {', '.join(META_KEYS)})")
    dataset, n, names, split = (meta[k] for k in META_KEYS)
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"{meta_path}: dataset must be a name, got {dataset!r}")
    if type(n) is not int or n < 1 or n % NUM_FOLDS:
        raise ValueError(f"{meta_path}: num_classes must be a positive multiple of {NUM_FOLDS} (folds), got {n!r}")
    if not isinstance(names, list) or len(names) != n or not all(isinstance(c, str) for c in names):
        raise ValueError(f"{meta_path}: class_names must be a list of {n} names (num_classes), got {names!r:.80}")
    if split not in SPLIT_MODES:
        raise ValueError(f"{meta_path}: split must be one of {', '.join(SPLIT_MODES)}, got {split!r}")
    return meta


class ListSource:
    """Reader of a prepared dataset root (PASCAL-5i, COCO-20i or the synthetic world).

    allow_outside: let list entries that are absolute or climb out with '..' read files outside
    the root (refused by default, see the module doc).
    """

    def __init__(self, root: str | Path, allow_outside: bool = False):
        self.root = Path(root)
        self.allow_outside = allow_outside
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path}: not a prepared dataset root (run `fss-sam2 data toy|pascal|coco --out {self.root}`)"
            )
        meta = read_meta(meta_path)
        self.dataset: str = meta["dataset"]
        self.num_classes: int = meta["num_classes"]
        self.class_names: list[str] = list(meta["class_names"])
        self.split: str = meta["split"]
        self._lists: dict[tuple[str, int], FoldList] = {}

    def novel(self, fold: int) -> list[int]:
        return novel_classes(self.num_classes, fold, self.split)

    def base(self, fold: int) -> list[int]:
        return base_classes(self.num_classes, fold, self.split)

    def fold_list(self, split: str, fold: int) -> FoldList:
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r}: expected 'train' or 'val'")
        key = (split, fold)
        if key not in self._lists:
            self._lists[key] = read_fold_list(self.root / "lists" / split, fold)
        return self._lists[key]

    def origin(self, rel: str) -> str | None:
        """The "list_file:line" an entry was first read from (None if no list read names it)."""
        return next((fl.origin[rel] for fl in self._lists.values() if rel in fl.origin), None)

    def leaves_root(self, rel: str) -> bool:
        """Whether the entry, read as written, names a path outside the root (by its path
        alone: symlinks are not followed, see the module doc)."""
        path = Path(os.path.normpath(rel))
        if path.is_absolute():
            return not path.is_relative_to(Path(os.path.abspath(self.root)))
        return bool(path.parts) and path.parts[0] == ".."

    def resolve(self, rel: str) -> Path:
        """Path of a list entry under this root. The authors' '../data/.../JPEGImages/x.jpg'
        entries are matched by their trailing components; only parts without '..' are tried, so
        nothing outside the root is read unless allow_outside (then the entry as written is the
        last resort). Raises ValueError for an entry that leaves the root, naming its list file
        and line, and FileNotFoundError for a missing file."""
        path = Path(rel)
        parts = path.parts
        for start in range(1 if path.is_absolute() else 0, len(parts)):
            tail = parts[start:]
            if ".." in tail:
                continue
            candidate = self.root.joinpath(*tail)
            if candidate.exists():
                return candidate
        where = self.origin(rel)
        if self.leaves_root(rel):
            outside = path if path.is_absolute() else self.root / path
            if self.allow_outside and outside.exists():
                return outside
            if not self.allow_outside:
                how = "is an absolute path" if path.is_absolute() else "climbs out with '..'"
                raise ValueError(
                    f"{where or self.root / 'lists'}: entry {rel!r} leaves the dataset root {self.root} ({how}) "
                    f"and no part of it is found under the root; refused (allow_outside=True reads files "
                    f"outside the root)"
                )
        at = f" (first listed at {where})" if where else ""
        raise FileNotFoundError(f"{rel}: listed in {self.root / 'lists'} but not found under {self.root}{at}")

    def load_image(self, item: Item) -> np.ndarray:
        return read_image(self.resolve(item.image))

    def load_label(self, item: Item) -> np.ndarray:
        return read_label(self.resolve(item.label))


def write_dataset(
    root: Path,
    dataset: str,
    class_names: Sequence[str],
    split: str,
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    min_pixels: int = MIN_CLASS_PIXELS,
    progress: bool = True,
) -> dict:
    """Write fss_meta.json and the lists of every fold, by the official rule.

    `min_pixels` is the official 2048 for real data; small synthetic images use a scaled value
    (recorded in the meta file). Each label is read once. Returns {split: {fold: images}}.
    """
    root = Path(root)
    num_classes = len(class_names)
    meta = {
        "dataset": dataset,
        "num_classes": num_classes,
        "class_names": list(class_names),
        "split": split,
        "min_pixels": min_pixels,
    }
    summary = {}
    for name, items in (("train", train_items), ("val", val_items)):
        counts = [
            (it, class_pixel_counts(read_label(root / it.label)))
            for it in tqdm(items, desc=f"{dataset} {name} labels", disable=not progress)
        ]
        summary[name] = {}
        for fold in range(NUM_FOLDS):
            train = name == "train"
            classes = (base_classes if train else novel_classes)(num_classes, fold, split)
            fl = select(counts, classes, filter_intersection=train, min_pixels=min_pixels)
            write_fold_list(root / "lists" / name, fold, fl)
            summary[name][fold] = len(fl.items)
    (root / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return summary
