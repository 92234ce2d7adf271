"""Fold splits and the official list rule."""
import numpy as np
import pytest

from fss_sam2.data.folds import base_classes, novel_classes
from fss_sam2.data.lists import Item, class_pixel_counts, read_fold_list, select, write_fold_list


def test_pascal_folds_are_contiguous_and_partition_20_classes():
    folds = [novel_classes(20, f) for f in range(4)]
    assert folds[0] == [1, 2, 3, 4, 5] and folds[3] == [16, 17, 18, 19, 20]
    assert sorted(sum(folds, [])) == list(range(1, 21))
    assert base_classes(20, 1) == [1, 2, 3, 4, 5] + list(range(11, 21))


def test_coco_interleaved_and_contiguous_splits():
    assert novel_classes(80, 0, "interleaved")[:3] == [1, 5, 9]
    assert novel_classes(80, 3, "interleaved")[-1] == 80
    assert novel_classes(80, 1, "contiguous") == list(range(21, 41))
    assert sorted(sum((novel_classes(80, f, "interleaved") for f in range(4)), [])) == list(range(1, 81))


@pytest.mark.parametrize("kwargs,match", [({"fold": 4}, "fold=4"), ({"split": "random"}, "split='random'")])
def test_bad_fold_or_split_is_named(kwargs, match):
    args = {"num_classes": 20, "fold": 0, "split": "contiguous"} | kwargs
    with pytest.raises(ValueError, match=match):
        novel_classes(**args)


def test_class_pixel_counts_skips_background_and_ignore():
    label = np.array([[0, 1, 1], [255, 2, 1]], dtype=np.uint8)
    assert class_pixel_counts(label) == {1: 3, 2: 1}


def test_select_applies_size_threshold_and_intersection_filter():
    a, b, c = Item("JPEGImages/a.jpg", "L/a.png"), Item("JPEGImages/b.jpg", "L/b.png"), Item("JPEGImages/c.jpg", "L/c.png")
    entries = [(a, {1: 3000, 2: 100}), (b, {1: 10, 3: 5000}), (c, {2: 2048})]
    # val-style: no intersection filter; class 2 in `a` is too small, in `c` exactly at threshold
    val = select(entries, [1, 2], filter_intersection=False)
    assert val.items == [a, c] and val.by_class == {1: [a], 2: [c]}
    # train-style: `b` holds class 3 (outside the list) -> dropped even though class 1 is listed
    train = select(entries, [1, 2], filter_intersection=True)
    assert train.items == [a, c]
    assert select(entries, [1, 3], filter_intersection=True).items == [b]


def test_list_files_round_trip_and_errors(tmp_path):
    a, b = Item("JPEGImages/a.jpg", "SegmentationClassAug/a.png"), Item("JPEGImages/b.jpg", "SegmentationClassAug/b.png")
    fl = select([(a, {1: 5000}), (b, {1: 3000, 2: 4000})], [1, 2], filter_intersection=False)
    write_fold_list(tmp_path, 0, fl)
    back = read_fold_list(tmp_path, 0)
    assert back.items == fl.items and back.by_class == fl.by_class and back.by_class[2][0].id == "b"
    with pytest.raises(FileNotFoundError, match="data_list_1.txt"):
        read_fold_list(tmp_path, 1)
    (tmp_path / "sub_class_file_list_0.txt").write_text("{1: [oops]}")
    with pytest.raises(ValueError, match="sub_class_file_list_0.txt"):
        read_fold_list(tmp_path, 0)
