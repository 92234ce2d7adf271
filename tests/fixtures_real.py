"""Tiny copies of the real downloads, in their real formats, with hand-made shapes.

VOC2012 (palette PNGs with 255 borders, ImageSets), SBD (GTcls .mat structs), COCO 2014
(instances JSON: polygons, uncompressed and compressed RLE, a crowd), FSS-1000-style folders.
Each writer returns the label maps the builders must produce, pixel for pixel.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image
from pycocotools import mask as mask_utils

from fss_sam2.data.folds import COCO_CLASSES

H, W = 40, 50  # PASCAL fixture images
MIN_PIXELS = 50
# the real COCO category ids (1..90 with gaps), in order
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def palette() -> list[int]:
    """VOC colour map, written here independently of the package."""
    out = []
    for i in range(256):
        rgb = [0, 0, 0]
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((i >> (3 * bit + ch)) & 1) << (7 - bit)
        out += rgb
    return out


def block(label: np.ndarray, cls: int, top: int, left: int, size: int, border: bool) -> None:
    """A size x size square of `cls`; with border its outer ring is 255 (VOC style)."""
    label[top:top + size, left:left + size] = 255 if border else cls
    if border:
        label[top + 1:top + size - 1, left + 1:left + size - 1] = cls


def grid(classes, border: bool, shape=(H, W), size: int = 10) -> np.ndarray:
    """Classes on a grid of size x size squares, row by row."""
    label = np.zeros(shape, np.uint8)
    per_row = shape[1] // size
    for k, c in enumerate(classes):
        block(label, c, (k // per_row) * size, (k % per_row) * size, size, border)
    return label


def rgb_image(label: np.ndarray) -> Image.Image:
    v = label.astype(np.int64)
    colour = np.stack([v * 37 % 256, v * 91 % 256, 255 - v], axis=2).astype(np.uint8)
    return Image.fromarray(colour)


def save_palette_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label).convert("P")
    im.putpalette(palette())
    im.save(path)


def save_sbd_mat(path: Path, seg: np.ndarray) -> None:
    """The SBD layout: struct GTcls {Segmentation, Boundaries (20x1 cell of sparse), CategoriesPresent}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bounds = np.empty((20, 1), dtype=object)
    for c in range(20):
        bounds[c, 0] = scipy.sparse.csc_matrix(np.zeros(seg.shape, bool))
    present = np.array([c for c in np.unique(seg) if c], np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": seg, "Boundaries": bounds, "CategoriesPresent": present}})


def write_voc_sbd(root: Path) -> dict[str, np.ndarray]:
    """root/VOC2012 and root/SBD; returns {id: expected SegmentationClassAug label}.

    VOC train 2007_000001 (class 1, also in SBD with class 2: VOC wins), 2007_000002 (6, 7);
    VOC val 2007_000003, 2007_000004 (all 20 classes); SBD train 2008_000010 (11) and
    2007_000003 (VOC val: left out of train); SBD val 2008_000011 (16, image only in SBD).
    """
    voc, sbd = root / "VOC2012", root / "SBD" / "dataset"
    voc_labels = {
        "2007_000001": grid([1], border=True),
        "2007_000002": grid([6, 7], border=True),
        "2007_000003": grid(range(1, 21), border=True),
        "2007_000004": grid(list(range(20, 0, -1)), border=True),
    }
    sbd_labels = {
        "2007_000001": grid([2], border=False),
        "2007_000003": grid([3], border=False),
        "2008_000010": grid([11, 0, 11], border=False),
        "2008_000011": grid([0, 16], border=False),
    }
    for i, label in voc_labels.items():
        save_palette_png(voc / "SegmentationClass" / f"{i}.png", label)
    for i, label in sbd_labels.items():
        save_sbd_mat(sbd / "cls" / f"{i}.mat", label)
    (voc / "JPEGImages").mkdir(parents=True)
    (sbd / "img").mkdir(parents=True)
    for i, label in {**sbd_labels, **voc_labels}.items():
        folder = sbd / "img" if i == "2008_000011" else voc / "JPEGImages"
        rgb_image(label).save(folder / f"{i}.jpg")
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000001\n2007_000002\n")
    (sets / "val.txt").write_text("2007_000003\n2007_000004\n")
    (sbd / "train.txt").write_text("2007_000001\n2008_000010\n2007_000003\n")
    (sbd / "val.txt").write_text("2008_000011\n")
    return {
        "2007_000001": voc_labels["2007_000001"],
        "2007_000002": voc_labels["2007_000002"],
        "2007_000003": voc_labels["2007_000003"],
        "2007_000004": voc_labels["2007_000004"],
        "2008_000010": sbd_labels["2008_000010"],
        "2008_000011": sbd_labels["2008_000011"],
    }


def rect_polygon(x0, y0, x1, y1) -> list[list[float]]:
    """A polygon covering pixel columns x0..x1-1 and rows y0..y1-1."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.ravel(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": list(mask.shape), "counts": runs}


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}


def write_coco(root: Path) -> dict[str, np.ndarray]:
    """root/coco in the COCO 2014 layout; returns {label path under out: expected label}.

    train 9: car polygon inside a larger person polygon (listed first: larger-first painting
    keeps the car), toothbrush (id 90 -> 80) as uncompressed RLE; train 25: bicycle as
    compressed RLE; val 42: a person crowd (uncompressed RLE) under a dog polygon; val 73, 74:
    all 80 classes on a grid of polygons (so every class has 2 val images); val 99: unannotated.
    """
    coco = root / "coco"
    value = {cid: v for v, cid in enumerate(COCO_IDS, 1)}
    anns = {"train": [], "val": []}
    images = {"train": [], "val": []}
    expected = {}

    def add_image(split, img_id, h, w, label):
        name = f"COCO_{split}2014_{img_id:012d}"
        images[split].append({"id": img_id, "file_name": f"{name}.jpg", "height": h, "width": w})
        folder = coco / f"{split}2014"
        folder.mkdir(parents=True, exist_ok=True)
        rgb_image(label).save(folder / f"{name}.jpg")
        expected[f"annotations/{split}2014/{name}.png"] = label

    def add_ann(split, img_id, cat, segmentation, crowd=0):
        anns[split].append(
            {"id": 1000 + sum(map(len, anns.values())), "image_id": img_id, "category_id": cat,
             "segmentation": segmentation, "iscrowd": crowd, "area": 0.0, "bbox": [0, 0, 1, 1]}
        )

    h, w = 40, 60
    label = np.zeros((h, w), np.uint8)
    label[5:30, 5:35] = value[1]
    label[10:20, 10:20] = value[3]
    tooth = np.zeros((h, w), bool)
    tooth[32:38, 40:55] = True
    label[tooth] = value[90]
    add_image("train", 9, h, w, label)
    add_ann("train", 9, 3, rect_polygon(10, 10, 20, 20))
    add_ann("train", 9, 1, rect_polygon(5, 5, 35, 30))
    add_ann("train", 9, 90, uncompressed_rle(tooth))

    bike = np.zeros((h, w), bool)
    bike[0:20, 0:30] = True
    add_image("train", 25, h, w, bike.astype(np.uint8) * value[2])
    add_ann("train", 25, 2, compressed_rle(bike))

    crowd = np.zeros((h, w), bool)
    crowd[:, :30] = True
    label = crowd.astype(np.uint8) * value[1]
    label[10:20, 10:20] = value[18]
    add_image("val", 42, h, w, label)
    add_ann("val", 42, 18, rect_polygon(10, 10, 20, 20))
    add_ann("val", 42, 1, uncompressed_rle(crowd), crowd=1)

    for img_id, order in ((73, COCO_IDS), (74, COCO_IDS[::-1])):
        label = np.zeros((80, 100), np.uint8)
        for k, cid in enumerate(order):
            top, left = (k // 10) * 10, (k % 10) * 10
            label[top:top + 10, left:left + 10] = value[cid]
            add_ann("val", img_id, cid, rect_polygon(left, top, left + 10, top + 10))
        add_image("val", img_id, 80, 100, label)
    add_image("val", 99, h, w, np.zeros((h, w), np.uint8))

    categories = [{"id": cid, "name": name, "supercategory": "x"} for cid, name in zip(COCO_IDS, COCO_CLASSES)]
    (coco / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        data = {"images": images[split], "annotations": anns[split], "categories": categories}
        (coco / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))
    return expected


def write_folder(root: Path) -> dict[str, np.ndarray]:
    """FSS-1000 layout, both mask conventions; returns {item id: expected foreground (bool)}.

    cat_a: 001.jpg + 001.png (0/255), 002.jpg + 002.png (0/1);
    dog_b: 001.jpg, 002.png images with masks/001.png (RGB white) and masks/002.png (0/255).
    """
    fg = {}
    for k, (cls, name, ext) in enumerate(
        [("cat_a", "001", ".jpg"), ("cat_a", "002", ".jpg"), ("dog_b", "001", ".jpg"), ("dog_b", "002", ".png")]
    ):
        mask = np.zeros((30, 40), bool)
        mask[5 + k:20, 3:30 - k] = True
        fg[f"{cls}/{name}"] = mask
        folder = root / cls
        mask_dir = folder / "masks" if cls == "dog_b" else folder
        mask_dir.mkdir(parents=True, exist_ok=True)
        rgb_image(mask.astype(np.uint8)).save(folder / f"{name}{ext}")
        values = mask.astype(np.uint8) * (1 if (cls, name) == ("cat_a", "002") else 255)
        if (cls, name) == ("dog_b", "001"):
            values = np.repeat(values[..., None], 3, axis=2)  # an RGB mask
        Image.fromarray(values).save(mask_dir / f"{name}.png")
    return fg


# ---- paper-scale fixtures: every class region over the official 2048-pixel list rule ----

PAPER_BLOCK = 50  # a 50 x 50 square: 2304 class pixels inside a VOC 255 ring, 2500 without


def paper_block(label: np.ndarray, cls: int, top: int, left: int, border: bool) -> None:
    """A PAPER_BLOCK square of `cls` (with border: its outer ring 255, VOC style)."""
    block(label, cls, top, left, PAPER_BLOCK, border)


def paper_groups(num_classes: int, split: str) -> list[list[int]]:
    """The classes of each of the 4 folds (contiguous: PASCAL; interleaved: COCO-20i)."""
    if split == "contiguous":
        n = num_classes // 4
        return [list(range(f * n + 1, f * n + n + 1)) for f in range(4)]
    return [list(range(f + 1, num_classes + 1, 4)) for f in range(4)]


def write_voc_sbd_paper(root: Path, val_images: int = 3) -> dict[str, list[int]]:
    """root/VOC2012 and root/SBD (the real layouts, as `write_voc_sbd`) with classes large enough
    for `fss-sam2 data pascal` to list them by the official rule (>= 2048 pixels); returns
    {image id: classes}.

    VOC val: `val_images` 200 x 250 images holding all 20 classes (255 rings), so every class
    has `val_images` val images in every fold. Training: per fold, 5 images of two of its
    classes each (every class in two of them), so that a fold trains on 15 images holding no
    novel class; the even ones are VOC train (palette PNG), the odd ones SBD train / val only
    (GTcls .mat, image in SBD's img/); one SBD image is also in VOC train (VOC's mask wins).
    """
    voc, sbd = root / "VOC2012", root / "SBD" / "dataset"
    (voc / "JPEGImages").mkdir(parents=True)
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir(parents=True)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    classes: dict[str, list[int]] = {}
    voc_train, voc_val, sbd_train, sbd_val = [], [], [], []
    for k in range(val_images):
        order = list(range(1, 21))
        order = order[k:] + order[:k] if k % 2 == 0 else order[::-1]
        label = grid(order, border=True, shape=(4 * PAPER_BLOCK, 5 * PAPER_BLOCK), size=PAPER_BLOCK)
        i = f"2007_{k + 1:06d}"
        save_palette_png(voc / "SegmentationClass" / f"{i}.png", label)
        rgb_image(label).save(voc / "JPEGImages" / f"{i}.jpg")
        voc_val.append(i)
        classes[i] = order
    n = 0
    for fold_classes in paper_groups(20, "contiguous"):
        for j in range(5):
            pair = [fold_classes[j], fold_classes[(j + 1) % 5]]
            i = f"2008_{100 + n:06d}"
            in_voc = n % 2 == 0
            label = np.zeros((2 * PAPER_BLOCK, 3 * PAPER_BLOCK), np.uint8)
            for c, left in zip(pair, (0, 2 * PAPER_BLOCK)):
                paper_block(label, c, (n % 2) * PAPER_BLOCK, left, border=in_voc)
            if in_voc:
                save_palette_png(voc / "SegmentationClass" / f"{i}.png", label)
                rgb_image(label).save(voc / "JPEGImages" / f"{i}.jpg")
                voc_train.append(i)
            else:
                save_sbd_mat(sbd / "cls" / f"{i}.mat", label)
                rgb_image(label).save(sbd / "img" / f"{i}.jpg")
                (sbd_val if n % 4 == 1 else sbd_train).append(i)
            classes[i] = pair
            n += 1
    save_sbd_mat(sbd / "cls" / f"{voc_train[0]}.mat", np.zeros((2 * PAPER_BLOCK, 3 * PAPER_BLOCK), np.uint8))
    sbd_train.append(voc_train[0])  # also in SBD, with an empty mask: VOC's wins
    (sets / "train.txt").write_text("".join(f"{i}\n" for i in voc_train))
    (sets / "val.txt").write_text("".join(f"{i}\n" for i in voc_val))
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in sbd_train))
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in sbd_val))
    return classes


def write_coco_paper(root: Path, val_images: int = 3) -> dict[str, list[int]]:
    """root/coco in the COCO 2014 layout (as `write_coco`: instances JSON with polygons,
    uncompressed and compressed RLE) with objects large enough for `fss-sam2 data coco` to list
    them by the official rule (>= 2048 pixels); returns {file name: class values 1..80}.

    val2014: `val_images` 400 x 500 images with all 80 classes (polygons), every class in each.
    train2014: per fold of the interleaved split, 10 images of four of its classes each (every
    class in two of them; one object of three as RLE), so a fold trains on 30 images holding
    no novel class. Plus one val image without annotations.
    """
    coco = root / "coco"
    images = {"train": [], "val": []}
    anns = {"train": [], "val": []}
    classes: dict[str, list[int]] = {}
    b = PAPER_BLOCK

    def add(split: str, img_id: int, shape: tuple[int, int], objects: list[tuple[int, int, int]]) -> None:
        """objects: (class value, top, left) of b x b squares."""
        name = f"COCO_{split}2014_{img_id:012d}.jpg"
        label = np.zeros(shape, np.uint8)
        for n, (value, top, left) in enumerate(objects):
            label[top:top + b, left:left + b] = value
            mask = np.zeros(shape, bool)
            mask[top:top + b, left:left + b] = True
            kind = n % 3 if split == "train" else 0
            segmentation = (rect_polygon(left, top, left + b, top + b) if kind == 0 else
                            uncompressed_rle(mask) if kind == 1 else compressed_rle(mask))
            anns[split].append({"id": 1 + sum(map(len, anns.values())), "image_id": img_id,
                                "category_id": COCO_IDS[value - 1], "segmentation": segmentation, "iscrowd": 0,
                                "area": float(b * b), "bbox": [left, top, b, b]})
        folder = coco / f"{split}2014"
        folder.mkdir(parents=True, exist_ok=True)
        rgb_image(label).save(folder / name)
        images[split].append({"id": img_id, "file_name": name, "height": shape[0], "width": shape[1]})
        classes[name] = sorted({v for v, _, _ in objects})

    for k in range(val_images):
        order = list(range(1, 81))
        order = order[k:] + order[:k] if k % 2 == 0 else order[::-1]
        add("val", 100 + k, (8 * b, 10 * b), [(v, (n // 10) * b, (n % 10) * b) for n, v in enumerate(order)])
    add("val", 199, (b, b), [])  # unannotated
    img_id = 1
    for fold_classes in paper_groups(80, "interleaved"):
        for j in range(10):
            four = [fold_classes[(2 * j + d) % 20] for d in range(4)]
            add("train", img_id, (2 * b, 2 * b), [(v, (n // 2) * b, (n % 2) * b) for n, v in enumerate(four)])
            img_id += 1
    categories = [{"id": cid, "name": name, "supercategory": "x"} for cid, name in zip(COCO_IDS, COCO_CLASSES)]
    (coco / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        data = {"images": images[split], "annotations": anns[split], "categories": categories}
        (coco / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))
    return classes
