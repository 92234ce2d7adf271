"""The authors' list files for validation only, the PASCAL training pool, and grayscale labels,
on tiny copies of the real downloads (fixtures_real.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fixtures_real import MIN_PIXELS, save_palette_png, write_coco, write_voc_sbd
from fss_sam2.cli import main
from fss_sam2.data.coco import build_coco
from fss_sam2.data.pascal import build_pascal
from fss_sam2.data.sources import ListSource, read_label

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

PREFIX = "../data/VOCdevkit2012/VOC2012"


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    return root, write_voc_sbd(root)


def author_lists(folder, splits=("val",), folds=range(4)):
    """The authors' layout (lists/pascal/fss_list/<split>/...) with their '../data/...' paths and
    tuple pairs: one entry per fold, 2007_000004 for class 5f+1."""
    fss = folder / "lists/pascal/fss_list"
    for split in splits:
        (fss / split).mkdir(parents=True, exist_ok=True)
        for f in folds:
            pair = (f"{PREFIX}/JPEGImages/2007_000004.jpg", f"{PREFIX}/SegmentationClassAug/2007_000004.png")
            (fss / split / f"data_list_{f}.txt").write_text(" ".join(pair) + "\n")
            (fss / split / f"sub_class_file_list_{f}.txt").write_text(str({5 * f + 1: [pair]}))
    return folder


def rule_lists(out):
    return {(s, f): ListSource(out).fold_list(s, f) for s in ("train", "val") for f in range(4)}


def test_pascal_val_only_author_lists(downloads, tmp_path):
    root, _ = downloads
    plain = build_pascal(root / "VOC2012", root / "SBD", tmp_path / "plain", progress=False, min_pixels=MIN_PIXELS)
    lists = author_lists(tmp_path / "repo")
    out = tmp_path / "out"
    summary = build_pascal(root / "VOC2012", root / "SBD", out, lists=lists, progress=False, min_pixels=MIN_PIXELS)
    assert summary["author_lists"] == ["val"] and summary["val"] == {f: 1 for f in range(4)}
    assert summary["train"] == plain["train"]
    fss = lists / "lists/pascal/fss_list"
    for f in range(4):
        for kind in ("data_list", "sub_class_file_list"):
            assert (out / f"lists/val/{kind}_{f}.txt").read_text() == (fss / f"val/{kind}_{f}.txt").read_text()
    # training lists built by the rule, exactly as without author lists
    for f in range(4):
        assert ListSource(out).fold_list("train", f) == ListSource(tmp_path / "plain").fold_list("train", f)
    meta = json.loads((out / "fss_meta.json").read_text())
    assert meta["author_lists"] == {"from": str(fss), "splits": ["val"]}
    assert meta["training_pool"]["source"] == "trainaug" and meta["training_pool"]["paper"] is False
    assert "NOT the paper's training pool" in meta["training_pool"]["note"]
    item = ListSource(out).fold_list("val", 1).by_class[6][0]
    assert ListSource(out).load_label(item).shape == (40, 50)  # '../data/...' resolves under out


def test_pascal_author_train_lists_are_the_paper_pool(downloads, tmp_path):
    root, _ = downloads
    lists = author_lists(tmp_path / "repo", splits=("train", "val"))
    out = tmp_path / "out"
    summary = build_pascal(root / "VOC2012", root / "SBD", out, lists=lists, progress=False, min_pixels=MIN_PIXELS)
    assert summary["author_lists"] == ["train", "val"]
    meta = json.loads((out / "fss_meta.json").read_text())
    assert meta["training_pool"]["source"] == "author_lists" and meta["training_pool"]["paper"] is True


def test_incomplete_author_lists_are_named(downloads, tmp_path):
    root, _ = downloads
    lists = author_lists(tmp_path / "repo", splits=("val",))
    author_lists(lists, splits=("train",), folds=[0])  # half a training set
    with pytest.raises(FileNotFoundError, match=r"train list files missing: .*train/data_list_1.txt"):
        build_pascal(root / "VOC2012", root / "SBD", tmp_path / "out", lists=lists, progress=False)
    (lists / "lists/pascal/fss_list/val/sub_class_file_list_3.txt").unlink()
    shutil.rmtree(lists / "lists/pascal/fss_list/train")
    with pytest.raises(FileNotFoundError, match=r"val list files missing: .*val/sub_class_file_list_3.txt"):
        build_pascal(root / "VOC2012", root / "SBD", tmp_path / "out", lists=lists, progress=False)


def test_master_list_sets_the_training_pool(downloads, tmp_path, capsys):
    root, _ = downloads
    master = tmp_path / "voc_sbd_merge_noduplicate.txt"
    lines = [f"JPEGImages/{i}.jpg SegmentationClassAug/{i}.png" for i in ("2008_000010", "2007_000002", "2008_000010")]
    master.write_text("\n".join(lines) + "\n")  # a repeated line is dropped, the order is kept
    out = tmp_path / "out"
    summary = build_pascal(root / "VOC2012", root / "SBD", out, master_list=master, progress=False,
                           min_pixels=MIN_PIXELS)
    assert summary["train_images"] == 2
    train = ListSource(out).fold_list("train", 0)
    assert [it.id for it in train.items] == ["2008_000010", "2007_000002"]
    pool = json.loads((out / "fss_meta.json").read_text())["training_pool"]
    assert (pool["source"], pool["images"], pool["paper"]) == ("master_list", 2, False)

    master.write_text("JPEGImages/2007_000003.jpg SegmentationClassAug/2007_000003.png\n")
    with pytest.raises(ValueError, match="1 VOC val image.*2007_000003"):
        build_pascal(root / "VOC2012", root / "SBD", out, master_list=master, progress=False)
    master.write_text("2099_000001\n")
    with pytest.raises(ValueError, match="neither in VOC train nor in SBD.*2099_000001"):
        build_pascal(root / "VOC2012", root / "SBD", out, master_list=master, progress=False)

    # the command line says loudly when the pool is not the paper's
    assert main(["data", "pascal", "--voc", str(root / "VOC2012"), "--sbd", str(root / "SBD"),
                 "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: training pool" in err and "NOT the paper's training pool" in err


def test_labels_are_grayscale_class_ids(downloads, tmp_path):
    root, expected = downloads
    out = tmp_path / "out"
    build_pascal(root / "VOC2012", root / "SBD", out, progress=False, min_pixels=MIN_PIXELS)
    for i, label in expected.items():
        with Image.open(out / "SegmentationClassAug" / f"{i}.png") as im:
            assert im.mode == "L"
            # a grayscale decoder (the authors read labels with OpenCV IMREAD_GRAYSCALE) sees class ids
            np.testing.assert_array_equal(np.asarray(im.convert("L")), label, err_msg=i)
    # a palette SegmentationClassAug download is rewritten; a grayscale one is linked as it is
    voc = tmp_path / "VOC2012"
    shutil.copytree(root / "VOC2012", voc)
    shutil.copy(root / "SBD/dataset/img/2008_000011.jpg", voc / "JPEGImages")
    aug = voc / "SegmentationClassAug"
    shutil.copytree(out / "SegmentationClassAug", aug)
    (aug / "2007_000003.png").unlink()
    save_palette_png(aug / "2007_000003.png", expected["2007_000003"])
    with Image.open(aug / "2007_000003.png") as im:
        seen = np.asarray(im.convert("L"))
    assert seen[expected["2007_000003"] == 15].tolist()[0] == 147  # what a grayscale decoder reads there
    out2 = tmp_path / "out2"
    build_pascal(voc, None, out2, progress=False, min_pixels=MIN_PIXELS)
    written = out2 / "SegmentationClassAug" / "2007_000003.png"
    assert not written.is_symlink() and Image.open(written).mode == "L"
    np.testing.assert_array_equal(read_label(written), expected["2007_000003"])
    assert (out2 / "SegmentationClassAug" / "2007_000004.png").is_symlink()


def test_coco_author_val_lists_and_grayscale_labels(tmp_path):
    expected = write_coco(tmp_path)
    fss = tmp_path / "repo/lists/coco/fss_list"
    prefix = "../data/MSCOCO2014"
    pair = (f"{prefix}/val2014/COCO_val2014_000000000073.jpg", f"{prefix}/annotations/val2014/COCO_val2014_000000000073.png")
    other = (f"{prefix}/val2014/COCO_val2014_000000000074.jpg", f"{prefix}/annotations/val2014/COCO_val2014_000000000074.png")
    for split in ("val", "train"):
        (fss / split).mkdir(parents=True)
        for f in range(4):
            (fss / split / f"data_list_{f}.txt").write_text(f"{' '.join(other)}\n{' '.join(pair)}\n")
            (fss / split / f"sub_class_file_list_{f}.txt").write_text(str({f + 1: [pair, other]}))
    out = tmp_path / "out"
    assert main(["data", "coco", "--coco", str(tmp_path / "coco"), "--out", str(out), "--lists",
                 str(tmp_path / "repo"), "--val-only", "--quiet"]) == 0
    for rel, label in expected.items():
        if "val2014" in rel:
            with Image.open(out / rel) as im:
                assert im.mode == "L"
                np.testing.assert_array_equal(np.asarray(im), label, err_msg=rel)
    src = ListSource(out)
    assert [it.id for it in src.fold_list("val", 2).items] == ["COCO_val2014_000000000074", "COCO_val2014_000000000073"]
    assert src.fold_list("train", 0).items == []  # val only: their training lists are not installed
    meta = json.loads((out / "fss_meta.json").read_text())
    assert meta["author_lists"]["splits"] == ["val"]
    summary = build_coco(tmp_path / "coco", tmp_path / "both", lists=fss, progress=False, min_pixels=MIN_PIXELS)
    assert summary["author_lists"] == ["train", "val"] and summary["train"] == {f: 2 for f in range(4)}
