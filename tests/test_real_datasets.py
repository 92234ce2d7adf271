"""Builders of PASCAL-5i / COCO-20i, the class-folder source and the dataset checker, on tiny
copies of the real downloads (fixtures_real.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fixtures_data import write_tiny_root
from fixtures_real import MIN_PIXELS, palette, write_coco, write_folder, write_voc_sbd
from fss_sam2.data.check import check_dataset, summary
from fss_sam2.data.coco import build_coco
from fss_sam2.data.folder import FolderSource
from fss_sam2.data.pascal import build_pascal, voc_palette
from fss_sam2.data.sources import ListSource, read_label

# pycocotools 2.0.x with numpy 2 warns on every mask decode
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def pascal(tmp_path_factory):
    root = tmp_path_factory.mktemp("pascal")
    expected = write_voc_sbd(root)
    summary = build_pascal(root / "VOC2012", root / "SBD", root / "out", progress=False, min_pixels=MIN_PIXELS)
    return root, expected, summary


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    expected = write_coco(root)
    summary = build_coco(root / "coco", root / "out", progress=False, min_pixels=MIN_PIXELS)
    return root, expected, summary


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder") / "classes"
    return root, write_folder(root)


def ids(items):
    return sorted(it.id for it in items)


def test_voc_palette_is_the_standard_one():
    assert voc_palette() == palette()
    assert voc_palette()[3:6] == [128, 0, 0] and voc_palette()[255 * 3:] == [224, 224, 192]


def test_pascal_sets_and_masks(pascal):
    root, expected, summary = pascal
    out = root / "out"
    assert summary["train_images"] == 4 and summary["val_images"] == 2
    for i, label in expected.items():
        written = Image.open(out / "SegmentationClassAug" / f"{i}.png")
        assert written.mode == "L"  # plain class ids: what the authors' OpenCV grayscale read expects
        np.testing.assert_array_equal(np.asarray(written), label, err_msg=i)
    assert sorted(p.stem for p in (out / "SegmentationClassAug").iterdir()) == sorted(expected)
    image = out / "JPEGImages" / "2008_000011.jpg"  # only in SBD's img/
    assert image.is_symlink() and image.resolve() == (root / "SBD/dataset/img/2008_000011.jpg").resolve()


def test_pascal_lists_follow_the_rule(pascal):
    root, _, summary = pascal
    src = ListSource(root / "out")
    assert (src.dataset, src.num_classes, src.split) == ("pascal", 20, "contiguous")
    # fold 0 trains on classes 6..20: 2007_000001 holds class 1 (novel) and is dropped
    assert ids(src.fold_list("train", 0).items) == ["2007_000002", "2008_000010", "2008_000011"]
    assert ids(src.fold_list("train", 1).items) == ["2007_000001", "2008_000010", "2008_000011"]
    assert ids(src.fold_list("train", 2).items) == ["2007_000001", "2007_000002", "2008_000011"]
    val = src.fold_list("val", 3)
    assert sorted(val.by_class) == [16, 17, 18, 19, 20]
    assert all(ids(v) == ["2007_000003", "2007_000004"] for v in val.by_class.values())
    assert summary["val"] == {f: 2 for f in range(4)}
    item = val.by_class[16][0]
    assert src.load_image(item).shape == (40, 50, 3)
    assert set(np.unique(src.load_label(item))) == set(range(1, 21)) | {255}  # the grid fills the image


def test_pascal_from_segmentation_class_aug_and_author_lists(pascal, tmp_path):
    root, expected, _ = pascal
    voc = tmp_path / "VOC2012"
    shutil.copytree(root / "VOC2012", voc)
    shutil.copy(root / "SBD/dataset/img/2008_000011.jpg", voc / "JPEGImages")
    shutil.copytree(root / "out/SegmentationClassAug", voc / "SegmentationClassAug")
    # the authors' repository layout, with their '../data/...' paths
    fss = tmp_path / "repo/lists/pascal/fss_list"
    prefix = "../data/VOCdevkit2012/VOC2012"
    for split in ("train", "val"):
        (fss / split).mkdir(parents=True)
        for f in range(4):
            pair = [f"{prefix}/JPEGImages/2007_000003.jpg", f"{prefix}/SegmentationClassAug/2007_000003.png"]
            (fss / split / f"data_list_{f}.txt").write_text(" ".join(pair) + "\n")
            (fss / split / f"sub_class_file_list_{f}.txt").write_text(repr({5 * f + 1: [pair]}) + "\n")
    out = tmp_path / "out"
    summary = build_pascal(tmp_path, None, out, lists=tmp_path / "repo", progress=False)  # VOCdevkit/ given
    assert summary["train_images"] == 4 and summary["val_images"] == 2
    assert (out / "lists/val/data_list_2.txt").read_text() == (fss / "val/data_list_2.txt").read_text()
    src = ListSource(out)
    item = src.fold_list("val", 2).by_class[11][0]
    np.testing.assert_array_equal(src.load_label(item), expected["2007_000003"])
    assert check_dataset("pascal", out) == [
        f"{out}/lists/val/sub_class_file_list_{f}.txt: class {c} ({src.class_names[c - 1]}) has {n} val image(s); "
        "a 1-shot episode needs 2"
        for f in range(4)
        for c in range(5 * f + 1, 5 * f + 6)
        for n in [1 if c == 5 * f + 1 else 0]
    ]


def test_pascal_needs_sbd_or_aug(tmp_path):
    write_voc_sbd(tmp_path)
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug: not found; pass --sbd"):
        build_pascal(tmp_path / "VOC2012", None, tmp_path / "out", progress=False)
    (tmp_path / "SBD/dataset/cls/2008_000010.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="2008_000010.mat: not an SBD class file"):
        build_pascal(tmp_path / "VOC2012", tmp_path / "SBD/dataset", tmp_path / "out", progress=False)


def test_coco_masks_pixel_for_pixel(coco):
    root, expected, summary = coco
    out = root / "out"
    assert summary["train_images"] == 2 and summary["val_images"] == 4
    for rel, label in expected.items():
        np.testing.assert_array_equal(read_label(out / rel), label, err_msg=rel)
    assert (out / "train2014").is_symlink() and (out / "val2014").is_symlink()


def test_coco_lists_and_crowd_as_ignore(coco, tmp_path):
    root, expected, _ = coco
    src = ListSource(root / "out")
    assert (src.dataset, src.num_classes, src.split) == ("coco", 80, "interleaved")
    # fold 0 novel = 1, 5, 9, ...: train image 9 holds person (1) and is dropped
    assert ids(src.fold_list("train", 0).items) == ["COCO_train2014_000000000025"]
    assert ids(src.fold_list("train", 1).items) == ["COCO_train2014_000000000009"]
    val = src.fold_list("val", 0)
    assert ids(val.by_class[1]) == ids(val.by_class[17]) == [f"COCO_val2014_0000000000{i}" for i in (42, 73, 74)]
    assert ids(val.by_class[5]) == ["COCO_val2014_000000000073", "COCO_val2014_000000000074"]
    assert check_dataset("coco", root / "out") == []

    build_coco(
        root / "coco", tmp_path, split="contiguous", crowd="ignore", val_only=True, progress=False, min_pixels=MIN_PIXELS
    )
    label = read_label(tmp_path / "annotations/val2014/COCO_val2014_000000000042.png")
    want = expected["annotations/val2014/COCO_val2014_000000000042.png"].copy()
    want[want == 1] = 255
    np.testing.assert_array_equal(label, want)
    src = ListSource(tmp_path)
    assert src.split == "contiguous" and src.fold_list("train", 0).items == []
    assert ids(src.fold_list("val", 0).by_class[17]) == [f"COCO_val2014_0000000000{i}" for i in (42, 73, 74)]


def test_coco_rejects_wrong_categories(coco, tmp_path):
    root = coco[0]
    shutil.copytree(root / "coco", tmp_path / "coco", symlinks=True)
    ann = tmp_path / "coco/annotations/instances_val2014.json"
    data = json.loads(ann.read_text())
    data["categories"] = data["categories"][:79]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="instances_val2014.json: categories are not the 80 COCO classes"):
        build_coco(tmp_path / "coco", tmp_path / "out", val_only=True, progress=False)


def test_folder_source(folder):
    root, fg = folder
    src = FolderSource(root)
    assert (src.dataset, src.num_classes, src.class_names) == ("folder", 2, ["cat_a", "dog_b"])
    assert src.novel(0) == [1, 2] and src.base(0) == []
    fl = src.fold_list("val", 0)
    assert ids(fl.items) == ["cat_a/001", "cat_a/002", "dog_b/001", "dog_b/002"]  # unique across classes
    for c, items in fl.by_class.items():
        for it in items:
            label = src.load_label(it)
            assert label.dtype == np.uint8
            np.testing.assert_array_equal(label, fg[it.id] * np.uint8(c), err_msg=it.id)
            assert src.load_image(it).shape == (30, 40, 3)
    assert fl.by_class[2][1].image == "dog_b/002.png" and fl.by_class[2][1].label == "dog_b/masks/002.png"
    with pytest.raises(ValueError, match="fold=1"):
        src.novel(1)
    with pytest.raises(ValueError, match="'val' split only"):
        src.fold_list("train", 0)
    assert FolderSource(root, classes=["dog_b"]).num_classes == 1


def test_folder_with_255_classes_has_16_bit_labels(tmp_path):
    for c in range(255):
        (tmp_path / f"c{c:03d}").mkdir()
        Image.new("RGB", (4, 3)).save(tmp_path / f"c{c:03d}/x.jpg")
        Image.new("L", (4, 3), 255).save(tmp_path / f"c{c:03d}/x.png")
    src = FolderSource(tmp_path)
    item = src.fold_list("val", 0).by_class[255][0]
    assert item.id == "c254/x"
    label = src.load_label(item)
    assert label.dtype == np.uint16 and (label == 255).all()


def test_folder_missing_mask_is_named(folder, tmp_path):
    shutil.copytree(folder[0], tmp_path / "c")
    (tmp_path / "c/cat_a/002.png").unlink()
    with pytest.raises(FileNotFoundError, match="cat_a/002.jpg: no mask"):
        FolderSource(tmp_path / "c")


def test_check_accepts_good_datasets(pascal, folder, tmp_path):
    assert check_dataset("pascal", pascal[0] / "out", decode_images=True) == []
    assert check_dataset("folder", folder[0]) == []
    assert check_dataset("tiny", write_tiny_root(tmp_path, images=32)) == []
    text = summary("pascal", pascal[0] / "out")
    assert "train fold 0: 3 images" in text and "val fold 3: 2 images (pottedplant:2, sheep:2," in text


def test_check_names_broken_files(pascal, folder, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(pascal[0] / "out", out, symlinks=True)
    labels = out / "SegmentationClassAug"
    data = (labels / "2007_000003.png").read_bytes()
    (labels / "2007_000003.png").write_bytes(data[: len(data) // 2])  # truncated
    (out / "JPEGImages/2007_000004.jpg").unlink()  # missing image
    bad = read_label(labels / "2008_000010.png").copy()
    bad[0, 0] = 30  # not a PASCAL class
    Image.fromarray(bad).save(labels / "2008_000010.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(labels / "2007_000002.png")  # wrong size
    problems = "\n".join(check_dataset("pascal", out))
    assert f"{labels / '2007_000003.png'}: unreadable label" in problems
    assert "image JPEGImages/2007_000004.jpg not found" in problems
    assert f"{labels / '2008_000010.png'}: label values [30] outside 0..20 and 255" in problems
    assert f"{labels / '2007_000002.png'}: label is 20x20 but image" in problems
    assert "2007_000002.png is listed for class 6 but has no pixel of it" in problems

    (out / "lists/val/data_list_2.txt").unlink()
    assert any("data_list_2.txt: list file missing" in p for p in check_dataset("pascal", out))
    assert check_dataset("coco", out)[0] == f"{out / 'fss_meta.json'}: dataset is 'pascal', expected 'coco'"
    (out / "fss_meta.json").unlink()
    assert "fss_meta.json: not a prepared dataset root" in check_dataset("pascal", out)[0]
    assert check_dataset("pascal", tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'}: dataset root not found"]

    classes = tmp_path / "classes"
    shutil.copytree(folder[0], classes)
    (classes / "dog_b/masks/001.png").write_bytes(b"\x89PNG broken")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(classes / "cat_a/002.png")  # empty mask
    problems = "\n".join(check_dataset("folder", classes))
    assert f"{classes / 'dog_b/masks/001.png'}: unreadable label" in problems
    assert "cat_a/002.png is listed for class 1 but has no pixel of it" in problems
