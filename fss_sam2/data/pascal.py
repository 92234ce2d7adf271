"""PASCAL-5i from the original downloads: VOC2012 + SBD -> SegmentationClassAug, trainaug / val.

Input (either; `voc` may be VOCdevkit/, `sbd` the SBD release folder or its dataset/):
  voc/JPEGImages/, voc/SegmentationClass/ (palette PNGs, 255 = object boundary),
  voc/ImageSets/Segmentation/{train,val}.txt          plus
  sbd/dataset/cls/<id>.mat (struct GTcls with field Segmentation), sbd/dataset/{train,val}.txt
or a VOC folder that already holds the usual `SegmentationClassAug/` download (then SBD is not
needed: its stems minus VOC val are the training images).

Output (`out`): JPEGImages/ (symlinks, or copies), SegmentationClassAug/<id>.png, lists, meta.
Labels are plain 8-bit grayscale PNGs (mode "L", pixel = class id), the format the authors'
loaders expect: they read labels with OpenCV as grayscale, which turns a palette PNG's index
15 into its colour's luminance (147). A SegmentationClassAug download in grayscale is linked
as it is; palette files are rewritten. Our reader takes both kinds.

Train = VOC train | SBD train | SBD val, minus VOC val (the standard 10582 "trainaug") by
default; the paper's lists come from PFENet's 5953-image master list instead
(`voc_sbd_merge_noduplicate.txt` = SBD's separately published `train_noval.txt` followed by VOC
train, duplicates dropped), which no rule derives from the two downloads: pass it as
`master_list` to train on the paper's pool. fss_meta.json records the pool ("training_pool").
val = VOC val (1449). Labels come from VOC where VOC has them (with its 255 boundaries), else SBD.

The helpers below (linking, atomic label writes, the authors' list files) serve coco.py too.
"""
from __future__ import annotations

import json
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
from .sources import META_FILE, read_label, write_dataset

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
    """Write a uint8 (H,W) label PNG atomically: grayscale (mode L, what the builders write), or
    palette mode when a palette is given (viewable in colour, but not what the authors' loaders
    read as class ids)."""
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


def find_author_lists(lists: Path, dataset: str) -> tuple[Path, list[str]]:
    """The folder holding the authors' {train,val}/data_list_{f}.txt + sub_class_file_list_{f}.txt
    (`lists` itself, or their repository layout below it: lists/<dataset>/fss_list) and the
    splits it holds. val is required (all 4 folds); train is optional (e.g. the large COCO
    training lists), but a split that is there must be complete."""
    lists = Path(lists)
    for cand in (lists, lists / dataset / "fss_list", lists / "lists" / dataset / "fss_list"):
        if (cand / "val" / "data_list_0.txt").is_file():
            break
    else:
        raise FileNotFoundError(
            f"{lists}: no val/data_list_0.txt here nor under {dataset}/fss_list or lists/{dataset}/fss_list"
        )
    splits = []
    for s in SPLITS:
        files = [cand / s / f"{kind}_{f}.txt" for f in range(NUM_FOLDS) for kind in ("data_list", "sub_class_file_list")]
        missing = [str(p) for p in files if not p.is_file()]
        if not missing:
            splits.append(s)
        elif s == "val" or len(missing) < len(files):
            raise FileNotFoundError(f"{cand}: {s} list files missing: {', '.join(missing)}")
    return cand, splits


def copy_author_lists(src: Path, out: Path, splits) -> None:
    """Copy the authors' list files of `splits` as they are (their '../data/...' paths resolve
    by trailing components) over out/lists."""
    for s in splits:
        for f in range(NUM_FOLDS):
            for kind in ("data_list", "sub_class_file_list"):
                (out / "lists" / s).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / s / f"{kind}_{f}.txt", out / "lists" / s / f"{kind}_{f}.txt")


def install_author_lists(src: Path, out: Path, splits) -> dict:
    """`copy_author_lists` -> the entries they give the build summary
    (list lengths per split and fold, where they came from)."""
    copy_author_lists(src, out, splits)
    return {**{s: {f: list_length(out / "lists" / s / f"data_list_{f}.txt") for f in range(NUM_FOLDS)} for s in splits},
            "lists": str(src), "author_lists": splits}


def update_meta(out: Path, **entries) -> None:
    """Add entries to out/fss_meta.json (written by `write_dataset`)."""
    path = Path(out) / META_FILE
    meta = json.loads(path.read_text())
    meta.update(entries)
    path.write_text(json.dumps(meta, indent=1) + "\n")


def read_master_list(path: Path) -> list[str]:
    """Image ids of a PASCAL master list (PFENet's voc_sbd_merge_noduplicate.txt: lines
    'JPEGImages/<id>.jpg SegmentationClassAug/<id>.png', or bare ids), in file order, repeated
    ids dropped (keeping the first, as PFENet's duplicate removal does)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: master list missing")
    ids: dict[str, None] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            ids.setdefault(Path(line.split()[0]).stem, None)
    if not ids:
        raise ValueError(f"{path}: empty master list")
    return list(ids)


PAPER_POOL_IMAGES = 5953  # PFENet's voc_sbd_merge_noduplicate.txt, behind every released PASCAL list
TRAINAUG_NOTE = (
    "NOT the paper's training pool: these training lists come from the trainaug images "
    "(VOC train + SBD train + SBD val - VOC val: 10582 with the full downloads); the released lists come from PFENet's "
    "5953-image voc_sbd_merge_noduplicate.txt (SBD train_noval.txt + VOC train), which no rule "
    "derives from the downloads. Pass --master-list voc_sbd_merge_noduplicate.txt (or --lists "
    "with the authors' training lists) for the paper's pool; see docs/episodes.md."
)


def build_pascal(
    voc: str | Path,
    sbd: str | Path | None,
    out: str | Path,
    lists: str | Path | None = None,
    progress: bool = True,
    copy: bool = False,
    min_pixels: int = MIN_CLASS_PIXELS,
    master_list: str | Path | None = None,
) -> dict:
    """Prepare PASCAL-5i under `out` (see the module doc); returns counts per split (and fold)
    and the training pool ("training_pool", also in fss_meta.json).

    lists: the authors' list folder; its val lists (required) and train lists (optional) are
    used instead of building those by the official rule. master_list: a file of training image
    ids in order (PFENet's voc_sbd_merge_noduplicate.txt) to build the training lists from,
    instead of trainaug. copy: copy images instead of symlinking them. min_pixels: list rule
    threshold (2048).
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
    if master_list is not None:
        train = read_master_list(Path(master_list))
        in_val = [i for i in train if i in set(val)]
        unknown = [i for i in train if i not in pool]
        if in_val:
            raise ValueError(f"{master_list}: {len(in_val)} VOC val image(s) in the training master list, e.g. {in_val[:3]}")
        if unknown:
            raise ValueError(f"{master_list}: {len(unknown)} image(s) neither in VOC train nor in SBD / "
                             f"SegmentationClassAug, e.g. {unknown[:3]}")
        paper = len(train) == PAPER_POOL_IMAGES
        training_pool = {
            "source": "master_list", "file": str(master_list), "images": len(train), "paper": paper,
            "note": "training lists built from the master list, in its order"
            + ("" if paper else f" ({len(train)} images; the paper's has {PAPER_POOL_IMAGES})"),
        }
    else:
        train = sorted(pool - set(voc_val))
        training_pool = {"source": "trainaug", "images": len(train), "paper": False, "note": TRAINAUG_NOTE}
    author, author_splits = find_author_lists(Path(lists), "pascal") if lists is not None else (None, [])
    if "train" in author_splits:
        training_pool = {
            "source": "author_lists", "file": str(author / "train"), "paper": True,
            "note": f"the authors' training lists (built from PFENet's {PAPER_POOL_IMAGES}-image master list)",
        }

    for i in tqdm(train + val, desc="pascal labels+images", disable=not progress):
        src = label_src[i]
        dst = out / LABEL_DIR / f"{i}.png"
        if not src.is_file():
            raise FileNotFoundError(f"{src}: label of image {i} missing")
        if src.suffix == ".mat":
            save_label(dst, read_sbd_mat(src))
        elif src.parent == aug and label_mode(src) == "L":
            link_or_copy(src, dst, copy)  # already what the authors read
        else:
            save_label(dst, read_label(src))  # VOC palette PNGs (and palette SegmentationClassAug files)
        image = next((d / f"{i}.jpg" for d in image_dirs if (d / f"{i}.jpg").is_file()), None)
        if image is None:
            raise FileNotFoundError(f"{image_dirs[0] / f'{i}.jpg'}: image of {i} missing")
        link_or_copy(image, out / IMAGE_DIR / f"{i}.jpg", copy)

    summary = {"train_images": len(train), "val_images": len(val)}
    items = {i: Item(f"{IMAGE_DIR}/{i}.jpg", f"{LABEL_DIR}/{i}.png") for i in train + val}
    built = write_dataset(
        out,
        "pascal",
        PASCAL_CLASSES,
        default_split("pascal"),
        [] if "train" in author_splits else [items[i] for i in train],
        [] if "val" in author_splits else [items[i] for i in val],
        min_pixels=min_pixels,
        progress=progress,
    )
    summary.update(built)
    if author is not None:
        summary.update(install_author_lists(author, out, author_splits))
    summary["training_pool"] = training_pool
    update_meta(out, training_pool=training_pool,
                author_lists=None if author is None else {"from": str(author), "splits": author_splits})
    return summary


def label_mode(path: Path) -> str:
    """PIL mode of a label PNG (header only)."""
    try:
        with Image.open(path) as im:
            return im.mode
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read label map ({e})") from None


def list_length(path: Path) -> int:
    """Entries of a data_list file."""
    return sum(1 for line in path.read_text().splitlines() if line.strip())
