"""COCO-20i from the original COCO 2014 download, semantic masks built with pycocotools.

Input: coco/{train2014,val2014}/ images, coco/annotations/instances_{train,val}2014.json.
Output (`out`): train2014/, val2014/ (links to the image folders, or copies),
annotations/{train2014,val2014}/<stem>.png (grayscale, pixel = 1..80 in COCO_CLASSES order,
i.e. the category ids sorted), lists, meta.

Painting, per image (one at a time, so memory stays flat):
- overlaps: larger instances are painted first, so a smaller object lying on a larger one
  (a tie on a person, a cup on a table) keeps its pixels; a plain annotation-order loop would
  let whichever instance happens to come later erase it.
- crowd regions (iscrowd=1, RLE over a group of objects): painted first, underneath every
  instance. Default crowd="class" paints them with their class like any instance: the pixels
  are that class (only not separable into instances), a plain pycocotools annToMask loop gives
  the same, and we could not retrieve the parsing script behind the label files most FSS code
  bases share (PFENet's) to do otherwise. crowd="ignore" writes 255 there instead (left out of
  the list rule's pixel counts and of the metrics).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from tqdm.auto import tqdm

from .folds import COCO_CLASSES, SPLIT_MODES
from ..constants import IGNORE
from .lists import MIN_CLASS_PIXELS, Item
from .pascal import find_author_lists, install_author_lists, link_or_copy, save_label, update_meta
from .sources import write_dataset

CROWD_MODES = ("class", "ignore")


def load_api(ann_file: Path) -> COCO:
    if not ann_file.is_file():
        raise FileNotFoundError(f"{ann_file}: COCO annotation file missing")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        return COCO(str(ann_file))


def class_values(api: COCO, ann_file: Path) -> dict[int, int]:
    """Category id -> label value 1..80 (sorted ids), checked against COCO_CLASSES."""
    ids = sorted(api.cats)
    names = tuple(api.cats[i]["name"] for i in ids)
    if names != COCO_CLASSES:
        raise ValueError(f"{ann_file}: categories are not the 80 COCO classes ({len(names)} found)")
    return {cat: value for value, cat in enumerate(ids, 1)}


def semantic_label(api: COCO, img_id: int, values: dict[int, int], crowd: str, ann_file: Path) -> np.ndarray:
    """uint8 (H,W) class map of one image (see the module doc for the painting order)."""
    info = api.imgs[img_id]
    h, w = info["height"], info["width"]
    label = np.zeros((h, w), np.uint8)
    shapes = []
    for ann in api.imgToAnns.get(img_id, []):
        rle = api.annToRLE(ann)
        if list(rle["size"]) != [h, w]:
            raise ValueError(f"{ann_file}: annotation {ann['id']} has size {rle['size']}, image {img_id} is {h}x{w}")
        shapes.append((bool(ann.get("iscrowd", 0)), int(mask_utils.area(rle)), ann, rle))
    # crowds first, then instances from the largest to the smallest; later paint wins
    for is_crowd, _, ann, rle in sorted(shapes, key=lambda s: (not s[0], -s[1])):
        value = IGNORE if is_crowd and crowd == "ignore" else values[ann["category_id"]]
        label[mask_utils.decode(rle).astype(bool)] = value
    return label


def build_coco(
    coco: str | Path,
    out: str | Path,
    split: str = "interleaved",
    progress: bool = True,
    crowd: str = "class",
    lists: str | Path | None = None,
    val_only: bool = False,
    copy: bool = False,
    min_pixels: int = MIN_CLASS_PIXELS,
) -> dict:
    """Prepare COCO-20i under `out` (see the module doc); returns counts per split (and fold).

    split: class split of the folds ("interleaved" = the official use_split_coco, or
    "contiguous"). lists: the authors' list folder (lists/coco/fss_list of their repository);
    its val lists (required) and train lists (optional; ignored with val_only) are used instead
    of building those by the rule. Their order cannot be rebuilt from the annotation files, and
    on COCO only the first 1000 val entries are ever queries, so the authors' episodes need
    their val lists. val_only: only val2014 is needed (evaluation); the training lists are left
    empty.
    copy: copy the image folders instead of symlinking them.
    """
    coco, out = Path(coco), Path(out)
    if split not in SPLIT_MODES:
        raise ValueError(f"split={split!r}: expected one of {SPLIT_MODES}")
    if crowd not in CROWD_MODES:
        raise ValueError(f"crowd={crowd!r}: expected one of {CROWD_MODES}")
    if not coco.is_dir():
        raise FileNotFoundError(f"{coco}: COCO 2014 folder not found")
    items: dict[str, list[Item]] = {"train": [], "val": []}
    for name in ("val",) if val_only else ("train", "val"):
        folder = f"{name}2014"
        if not (coco / folder).is_dir():
            raise FileNotFoundError(f"{coco / folder}: image folder missing")
        ann_file = coco / "annotations" / f"instances_{folder}.json"
        api = load_api(ann_file)
        values = class_values(api, ann_file)
        link_or_copy(coco / folder, out / folder, copy)
        for img_id in tqdm(sorted(api.imgs), desc=f"coco {folder} labels", disable=not progress):
            file_name = api.imgs[img_id]["file_name"]
            label_rel = f"annotations/{folder}/{Path(file_name).stem}.png"
            save_label(out / label_rel, semantic_label(api, img_id, values, crowd, ann_file))
            items[name].append(Item(f"{folder}/{file_name}", label_rel))
        del api  # the train index holds ~1 GB

    summary = {"train_images": len(items["train"]), "val_images": len(items["val"])}
    author, author_splits = find_author_lists(Path(lists), "coco") if lists is not None else (None, [])
    if val_only:
        author_splits = [s for s in author_splits if s == "val"]  # no train2014 images to serve theirs
    summary.update(
        write_dataset(
            out, "coco", COCO_CLASSES, split,
            [] if "train" in author_splits else items["train"],
            [] if "val" in author_splits else items["val"],
            min_pixels=min_pixels, progress=progress,
        )
    )
    if author is not None:
        summary.update(install_author_lists(author, out, author_splits))
        update_meta(out, author_lists={"from": str(author), "splits": author_splits})
    return summary
