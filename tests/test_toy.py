"""The synthetic world: layout, determinism, labels, lists by the official rule, clips, pictures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fss_sam2.data.folds import NUM_FOLDS
from fss_sam2.constants import IGNORE
from fss_sam2.data.lists import class_pixel_counts
from fss_sam2.data.sources import META_FILE, ListSource, read_image, read_label
from fss_sam2.toy.world import (
    TOY_CLASSES,
    draw_instance,
    generate_toy_world,
    make_image,
    render_class_gallery,
    scaled_min_pixels,
    voc_palette,
)

SIZE, IMAGES, CLIPS, FRAMES = 96, 160, 4, 6


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    summary = generate_toy_world(root, seed=0, size=SIZE, images=IMAGES, clips=CLIPS, clip_frames=FRAMES, progress=False)
    return root, summary


def _labels(root: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_label(p) for p in sorted((root / "SegmentationClassAug").glob("toy_*.png"))}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_meta_and_reader(world):
    root, summary = world
    assert len(list((root / "JPEGImages").glob("toy_*.jpg"))) == IMAGES
    assert len(list((root / "SegmentationClassAug").glob("toy_*.png"))) == IMAGES
    assert summary["train"] + summary["val"] == IMAGES and summary["val"] == IMAGES // 4
    meta = json.loads((root / META_FILE).read_text())
    assert meta["dataset"] == "toy" and meta["class_names"] == list(TOY_CLASSES)
    assert meta["min_pixels"] == scaled_min_pixels(SIZE) == round(2048 * SIZE * SIZE / (500 * 375))
    src = ListSource(root)
    assert src.num_classes == 20 and src.split == "contiguous"
    item = src.fold_list("val", 0).items[0]
    img, label = src.load_image(item), src.load_label(item)
    assert img.shape == label.shape + (3,) and img.dtype == np.uint8
    with Image.open(src.resolve(item.label)) as im:
        assert im.mode == "P" and im.getpalette()[: 3 * 21] == voc_palette()[: 3 * 21]
    shapes = {read_image(p).shape[:2] for p in sorted((root / "JPEGImages").glob("toy_*.jpg"))[:40]}
    assert len(shapes) > 10 and any(h != w for h, w in shapes)  # sizes vary, not square
    assert all(0.75 * SIZE <= s <= 1.25 * SIZE for hw in shapes for s in hw)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    args = dict(size=64, images=80, clips=1, clip_frames=3, progress=False)
    generate_toy_world(tmp_path / "a", seed=3, **args)
    generate_toy_world(tmp_path / "b", seed=4, **args)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a["JPEGImages/toy_00000.jpg"] != b["JPEGImages/toy_00000.jpg"]
    assert a["clips/c0000/t00.png"] != b["clips/c0000/t00.png"]
    # the same arguments again, written over the other world: byte-identical to the first
    generate_toy_world(tmp_path / "b", seed=3, **args)
    assert _tree(tmp_path / "b") == a


def test_images_are_order_independent(world):
    root, _ = world
    _, label = make_image(0, 37, SIZE)
    assert np.array_equal(label, read_label(root / "SegmentationClassAug/toy_00037.png"))


def test_label_values_and_ignore_band(world):
    root, _ = world
    for name, label in _labels(root).items():
        values = set(np.unique(label).tolist())
        assert values <= set(range(21)) | {IGNORE}, name
        assert IGNORE in values and values - {0, IGNORE}, name  # every image holds objects and a band
        # two different labels (class/background/other class) never touch: 255 separates them
        for a, b in ((label[1:], label[:-1]), (label[:, 1:], label[:, :-1])):
            touch = (a != b) & (a != IGNORE) & (b != IGNORE)
            assert not touch.any(), name
    # the band is thin (about 2 px along each outline): fewer pixels than the objects' insides
    band = inside = total = 0
    for label in _labels(root).values():
        band += (label == IGNORE).sum()
        inside += ((label > 0) & (label != IGNORE)).sum()
        total += label.size
    assert 0.01 * total < band < inside


def test_every_class_appears_and_scenes_mix_classes(world):
    root, summary = world
    labels = list(_labels(root).values())
    present = [set(class_pixel_counts(label)) for label in labels]
    assert set().union(*present) == set(range(1, 21))
    assert sum(len(p) >= 2 for p in present) > len(labels) // 4  # several classes in many scenes
    assert min(summary["images_per_class"]["train"].values()) >= 4


def test_val_lists_hold_every_novel_class(world):
    root, _ = world
    src = ListSource(root)
    for fold in range(NUM_FOLDS):
        by_class = src.fold_list("val", fold).by_class
        assert sorted(by_class) == src.novel(fold)
        for c in src.novel(fold):
            assert len(by_class[c]) >= 1, (fold, c)
            assert class_pixel_counts(src.load_label(by_class[c][0]))[c] >= scaled_min_pixels(SIZE)


def test_train_lists_drop_novel_classes(world):
    root, _ = world
    src = ListSource(root)
    for fold in range(NUM_FOLDS):
        fl = src.fold_list("train", fold)
        novel = set(src.novel(fold))
        assert fl.items and all(len(fl.by_class[c]) >= 2 for c in src.base(fold))
        for item in fl.items:
            assert not set(class_pixel_counts(src.load_label(item))) & novel, (fold, item)
    # the filter really removes images: a fold's train list is smaller than the train split
    assert len(src.fold_list("train", 0).items) < IMAGES - IMAGES // 4


def test_colour_does_not_identify_the_class(world):
    """Nearest mean-colour classification of objects is near chance (1/20): identity is shape."""
    root, _ = world
    src = ListSource(root)
    feats = {"train": [], "val": []}
    for split in feats:
        items = {it for fold in range(NUM_FOLDS) for it in src.fold_list(split, fold).items}
        for item in sorted(items, key=lambda it: it.id):
            img, label = src.load_image(item).astype(float), src.load_label(item)
            for c in class_pixel_counts(label):
                feats[split].append((c, img[label == c].mean(0)))
    centres = {c: np.mean([f for k, f in feats["train"] if k == c], 0) for c in range(1, 21)}
    hits = [min(centres, key=lambda k: np.linalg.norm(centres[k] - f)) == c for c, f in feats["val"]]
    assert len(hits) >= 20 and np.mean(hits) < 0.2


def test_clips_follow_one_instance(world):
    root, _ = world
    records = json.loads((root / "clips" / "clips.json").read_text())["clips"]
    assert len(records) == CLIPS
    for rec in records:
        assert len(rec["images"]) == len(rec["labels"]) == FRAMES
        assert TOY_CLASSES[rec["class_id"] - 1] == rec["class_name"]
        labels = [read_label(root / p) for p in rec["labels"]]
        images = [read_image(root / p) for p in rec["images"]]
        assert len({im.shape for im in images}) == 1 and images[0].shape[:2] == labels[0].shape
        assert not np.array_equal(images[0], images[-1])
        areas = []
        for label in labels:
            assert set(np.unique(label).tolist()) <= {0, rec["class_id"], IGNORE}
            areas.append(int((label == rec["class_id"]).sum()))
        assert min(areas) > 0
        ratios = np.array(areas[1:]) / np.array(areas[:-1])
        assert ratios.min() > 0.7 and ratios.max() < 1.45, (rec["id"], areas)


def test_instances_and_gallery():
    a, mask = draw_instance(8, np.random.default_rng(0), size=64)
    b, _ = draw_instance(8, np.random.default_rng(1), size=64, clutter=True)
    assert a.shape == b.shape == (64, 64, 3) and a.dtype == np.uint8 and mask.shape == (64, 64)
    assert 0.05 < mask.mean() < 0.7 and not np.array_equal(a, b)
    assert a[mask].mean(0).round().tolist() != a[~mask].mean(0).round().tolist()
    gallery = render_class_gallery(per_class=2, size=32)
    assert gallery.dtype == np.uint8 and gallery.ndim == 3 and gallery.shape[1] > gallery.shape[0]
    assert np.array_equal(gallery, render_class_gallery(per_class=2, size=32))
    with pytest.raises(ValueError, match="class_id=21"):
        draw_instance(21, np.random.default_rng(0))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="images=40"):
        generate_toy_world(tmp_path / "w", images=40, progress=False)
    other = tmp_path / "pascal"
    other.mkdir()
    (other / META_FILE).write_text(json.dumps({"dataset": "pascal"}))
    with pytest.raises(FileExistsError, match="another dataset"):
        generate_toy_world(other, images=80, size=48, clips=0, progress=False)
