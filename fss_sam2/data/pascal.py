"""PASCAL-5i from the original downloads: VOC2012 + SBD -> SegmentationClassAug, trainaug / val.

Input (either; `voc` may be VOCdevkit/, `sbd` the SBD release folder or its dataset/):
  voc/JPEGImages/, voc/SegmentationClass/ (palette PNGs, 255 = object boundary),
  voc/ImageSets/Segmentation/{train,val}.txt          plus
  sbd/dataset/cls/<id>.mat (struct GTcls with field Segmentation), sbd/dataset/{train,val}.txt
or a VOC folder that already holds the usual `SegmentationClassAug/` download (then SBD is not
needed: its stems minus VOC val are the training images).

Output (`out`): JPEGImages/ (symlinks, or copies), SegmentationClassAug/<id>.png, lists, meta.
Train = VOC train | SBD train | SBD val, minus VOC val (the standard 10582 "trainaug");
val = VOC val (1449). Labels come from VOC where VOC has them (with its 255 boundaries), else SBD.

The helpers below (linking, atomic label writes, the authors' list files) serve coco.py too.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError
from PIL import Image
from tqdm.auto import tqdm

from .folds import NUM_FOLDS, PASCAL_CLASSES, default_split
from .lists import MIN_CLASS_PIXELS, SPLITS, Item
from .sources import read_label, write_dataset

LABEL_DIR = "SegmentationClassAug"
IMAGE_DIR = "JPEGImages"


def voc_palette() -> list[int]:
    """The VOC colour map (index bits spread over R, G, B), flat [r0, g0, b0, r1, ...]."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def save_label(path: Path, label: np.ndarray, palette: list[int] | None = None) -> None:
    """Write a uint8 (H,W) label PNG atomically (palette mode when a palette is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette is not None:
        im = im.convert("P")
        im.putpalette(palette)
    tmp = path.with_name(f".{path.name}.tmp")
    im.save(tmp, format="PNG")
    os.replace(tmp, path)


def link_or_copy(src: Path, dst: Path, copy: bool = False) -> None:
    """Make `dst` point to `src` (file or folder): a symlink, or a copy when asked or when the
    file system refuses links."""
    src = Path(src).resolve()
    if not src.exists():
        raise FileNotFoundError(f"{src}: not found")
    if dst.exists() and os.path.samefile(src, dst) and not (copy and dst.is_symlink()):
        return  # already a link to src, or src itself (out is the input folder)
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        raise FileExistsError(f"{dst}: a folder is in the way of the link to {src}; remove it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            dst.symlink_to(src, target_is_directory=src.is_dir())
            return
        except OSError as e:
            warnings.warn(f"{dst}: cannot symlink ({e}); copying {src} instead")
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def read_ids(path: Path) -> list[str]:
    """Image ids of a VOC / SBD set file, one per line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image set file missing")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def read_sbd_mat(path: Path) -> np.ndarray:
    """Class map uint8 (H,W) of one SBD `cls/<id>.mat` (struct GTcls, field Segmentation)."""
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False, variable_names=["GTcls"])
        return np.asarray(mat["GTcls"].Segmentation, dtype=np.uint8)
    except (OSError, ValueError, KeyError, AttributeError, MatReadError, NotImplementedError) as e:
        raise ValueError(f"{path}: not an SBD class file with GTcls.Segmentation ({e!r})") from None


def find_author_lists(lists: Path, dataset: str) -> Path:
    """The folder holding {train,val}/data_list_{f}.txt + sub_class_file_list_{f}.txt: `lists`
    itself, or the authors' repository layout below it (lists/<dataset>/fss_list)."""
    lists = Path(lists)
    for cand in (lists, lists / dataset / "fss_list", lists / "lists" / dataset / "fss_list"):
        if (cand / "val" / "data_list_0.txt").is_file():
            break
    else:
        raise FileNotFoundError(
            f"{lists}: no val/data_list_0.txt here nor under {dataset}/fss_list or lists/{dataset}/fss_list"
        )
    missing = [
        str(cand / s / f"{kind}_{f}.txt")
        for s in SPLITS
        for f in range(NUM_FOLDS)
        for kind in ("data_list", "sub_class_file_list")
        if not (cand / s / f"{kind}_{f}.txt").is_file()
    ]
    if missing:
        raise FileNotFoundError(f"{cand}: list files missing: {', '.join(missing)}")
    return cand


def install_author_lists(lists: Path, out: Path, dataset: str, class_names, split: str) -> dict:
    """Copy the authors' list files as they are (their '../data/...' paths resolve by trailing
    components) and write the meta file."""
    src = find_author_lists(lists, dataset)
    # write_dataset with no items writes only the meta (and empty lists, replaced right after)
    write_dataset(out, dataset, class_names, split, [], [], progress=False)
    for s in SPLITS:
        for f in range(NUM_FOLDS):
            for kind in ("data_list", "sub_class_file_list"):
                shutil.copyfile(src / s / f"{kind}_{f}.txt", out / "lists" / s / f"{kind}_{f}.txt")
    return {"lists": str(src)}


def build_pascal(
    voc: str | Path,
    sbd: str | Path | None,
    out: str | Path,
    lists: str | Path | None = None,
    progress: bool = True,
    copy: bool = False,
    min_pixels: int = MIN_CLASS_PIXELS,
) -> dict:
    """Prepare PASCAL-5i under `out` (see the module doc); returns counts per split (and fold).

    lists: the authors' list folder, used instead of building lists by the official rule.
    copy: copy images instead of symlinking them. min_pixels: list rule threshold (2048).
    """
    voc, out = Path(voc), Path(out)
    if (voc / "VOC2012").is_dir():  # the VOCdevkit folder was given
        voc = voc / "VOC2012"
    if not (voc / IMAGE_DIR).is_dir():
        raise FileNotFoundError(f"{voc / IMAGE_DIR}: not found; --voc must be the VOC2012 folder")
    sets = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_ids(sets / "train.txt"), read_ids(sets / "val.txt")
    aug = voc / LABEL_DIR
    image_dirs = [voc / IMAGE_DIR]
    if aug.is_dir():
        # the usual SegmentationClassAug download: trainaug + val labels, SBD already merged in
        pool = {p.stem for p in aug.glob("*.png")} | set(voc_train)
        label_src = {i: aug / f"{i}.png" for i in pool | set(voc_val)}
    elif sbd is not None:
        sbd = Path(sbd) if (Path(sbd) / "cls").is_dir() else Path(sbd) / "dataset"  # benchmark_RELEASE/
        pool = set(voc_train) | set(read_ids(sbd / "train.txt")) | set(read_ids(sbd / "val.txt"))
        label_src = {i: sbd / "cls" / f"{i}.mat" for i in pool}
        image_dirs.append(sbd / "img")
        for i in voc_train + voc_val:  # VOC masks override SBD's where VOC has them
            label_src[i] = voc / "SegmentationClass" / f"{i}.png"
    else:
        raise FileNotFoundError(f"{aug}: not found; pass --sbd (the SBD folder) or use the SegmentationClassAug download")
    val = sorted(set(voc_val))
    train = sorted(pool - set(voc_val))

    palette = voc_palette()
    for i in tqdm(train + val, desc="pascal labels+images", disable=not progress):
        src = label_src[i]
        dst = out / LABEL_DIR / f"{i}.png"
        if not src.is_file():
            raise FileNotFoundError(f"{src}: label of image {i} missing")
        if src.parent == aug:
            link_or_copy(src, dst, copy)
        elif src.suffix == ".mat":
            save_label(dst, read_sbd_mat(src), palette)
        else:
            save_label(dst, read_label(src), palette)
        image = next((d / f"{i}.jpg" for d in image_dirs if (d / f"{i}.jpg").is_file()), None)
        if image is None:
            raise FileNotFoundError(f"{image_dirs[0] / f'{i}.jpg'}: image of {i} missing")
        link_or_copy(image, out / IMAGE_DIR / f"{i}.jpg", copy)

    summary = {"train_images": len(train), "val_images": len(val)}
    if lists is not None:
        summary.update(install_author_lists(Path(lists), out, "pascal", PASCAL_CLASSES, default_split("pascal")))
        return summary
    items = {i: Item(f"{IMAGE_DIR}/{i}.jpg", f"{LABEL_DIR}/{i}.png") for i in train + val}
    summary.update(
        write_dataset(
            out,
            "pascal",
            PASCAL_CLASSES,
            default_split("pascal"),
            [items[i] for i in train],
            [items[i] for i in val],
            min_pixels=min_pixels,
            progress=progress,
        )
    )
    return summary
