"""Faults of a dataset root that `fss-sam2 data check` and the reader must name: a truncated
JPEG, empty list files, a corrupt or incomplete meta file, a malformed sub_class_file_list.
Every case asserts the message names the file (and line / key) and that checking changes nothing."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import write_tiny_toy_root
from PIL import Image

from fss_sam2.cli import main
from fss_sam2.data.check import check_dataset
from fss_sam2.data.lists import read_fold_list
from fss_sam2.data.sources import ListSource, read_image


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_tiny_toy_root(tmp_path_factory.mktemp("tiny") / "root", images=32)  # "toy": the CLI accepts it


@pytest.fixture
def root(pristine, tmp_path):
    out = tmp_path / "root"
    shutil.copytree(pristine, out)
    return out


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root: bytes and modification time (what a read-only check keeps)."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def check(root: Path, **kwargs) -> list[str]:
    """check_dataset of the tiny root, asserting it modifies nothing."""
    before = snapshot(root)
    problems = check_dataset("toy", root, progress=False, **kwargs)
    assert snapshot(root) == before
    return problems


def lists(root: Path):
    return sorted((root / "lists").rglob("*.txt"))


def replace_in_lists(root: Path, old: str, new: str) -> None:
    for f in lists(root):
        f.write_text(f.read_text().replace(old, new))


def test_pristine_root_has_no_problems(root):
    assert check(root) == [] and check(root, fast=True) == []


def truncated_jpeg(root: Path) -> Path:
    """Replace the first val query's PNG by a JPEG cut after its header (the lists follow)."""
    rel = (root / "lists/val/data_list_0.txt").read_text().split()[0]
    png = root / rel
    buf = io.BytesIO()
    Image.fromarray(read_image(png)).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    jpg = png.with_suffix(".jpg")
    jpg.write_bytes(data[: len(data) * 2 // 3])
    png.unlink()
    replace_in_lists(root, rel, str(Path(rel).with_suffix(".jpg")))
    with Image.open(jpg) as im:  # the header is intact: the size reads
        assert im.size == Image.open(io.BytesIO(data)).size
    return jpg


def test_check_decodes_a_truncated_jpeg(root, capsys):
    jpg = truncated_jpeg(root)
    problems = check(root)
    assert any(p.startswith(f"{jpg}: cannot read image (") and "truncated" in p for p in problems), problems
    assert check(root, decode_images=True) == problems  # the former name of the switch
    assert not any(str(jpg) in p for p in check(root, fast=True))  # fast: headers only, by choice
    before = snapshot(root)
    assert main(["data", "check", "--dataset", "toy", "--root", str(root)]) == 1  # the CLI decodes too
    assert str(jpg) in capsys.readouterr().out
    assert snapshot(root) == before


@pytest.mark.parametrize("split", ["val", "train"])
def test_empty_data_list_is_a_problem(root, split):
    data_list = root / "lists" / split / "data_list_0.txt"
    data_list.write_text("")
    problems = check(root)
    assert f"{data_list}: no images (the {split} list of fold 0 is empty)" in problems
    assert not any("data_list_1.txt" in p for p in problems)  # only the emptied list is named


def test_all_train_lists_empty_is_an_evaluation_only_root(root):
    """`data coco --val-only` leaves every train list empty on purpose: not a problem."""
    for f in range(4):
        (root / f"lists/train/data_list_{f}.txt").write_text("")
        (root / f"lists/train/sub_class_file_list_{f}.txt").write_text("{}\n")
    assert check(root) == []
    (root / "lists/val/data_list_2.txt").write_text("")
    assert check(root) == [f"{root / 'lists/val/data_list_2.txt'}: no images (the val list of fold 2 is empty)"]


def test_empty_sub_class_list_file_is_named(root):
    sub = root / "lists/train/sub_class_file_list_2.txt"
    sub.write_text("\n")
    expected = f"{sub}: empty file; expected a dict literal {{class: [[image, label], ...]}} ({{}} when no class has an image)"
    assert check(root) == [expected]


def test_no_class_in_sub_class_list_is_a_problem(root):
    sub = root / "lists/train/sub_class_file_list_1.txt"
    sub.write_text("{}\n")
    problems = check(root)
    assert any(p.startswith(f"{sub}: no class lists an image, though data_list_1.txt lists ") for p in problems), problems


def test_missing_list_file_is_named(root):
    (root / "lists/val/data_list_3.txt").unlink()
    assert f"{root / 'lists/val/data_list_3.txt'}: list file missing" in check(root)[0]


def test_corrupt_meta_names_the_file_and_the_place(root, capsys):
    meta = root / "fss_meta.json"
    meta.write_text('{"dataset": "toy" "num_classes": 8}\n')
    message = f"{meta}:1:19: not valid JSON (Expecting ',' delimiter)"
    assert check(root) == [message]
    with pytest.raises(ValueError) as e:
        ListSource(root)
    assert str(e.value) == message
    code = main(["episodes", "--dataset", "toy", "--root", str(root), "--fold", "0", "--out", str(root.parent / "e.csv")])
    assert code == 2 and f"fss-sam2: error: {message}" in capsys.readouterr().err


META_FAULTS = [
    (lambda m: m.pop("class_names"), "missing key(s) class_names (a meta file holds dataset, num_classes, class_names, split)"),
    (lambda m: m.pop("split") and m.pop("dataset"), "missing key(s) dataset, split"),
    (lambda m: m.update(num_classes="8"), "num_classes must be a positive multiple of 4 (folds), got '8'"),
    (lambda m: m.update(num_classes=6, class_names=list("abcdef")), "num_classes must be a positive multiple of 4"),
    (lambda m: m.update(class_names=["a", "b"]), "class_names must be a list of 8 names (num_classes), got ['a', 'b']"),
    (lambda m: m.update(split="random"), "split must be one of interleaved, contiguous, got 'random'"),
    (lambda m: m.update(dataset=""), "dataset must be a name, got ''"),
]


@pytest.mark.parametrize("fault,expected", META_FAULTS)
def test_incomplete_meta_names_the_file_and_the_key(root, fault, expected):
    meta_path = root / "fss_meta.json"
    meta = json.loads(meta_path.read_text())
    fault(meta)
    meta_path.write_text(json.dumps(meta))
    problems = check(root)
    assert len(problems) == 1 and problems[0].startswith(f"{meta_path}: {expected}"), problems
    with pytest.raises(ValueError, match="fss_meta.json: "):
        ListSource(root)


def test_meta_that_is_not_an_object(root):
    meta = root / "fss_meta.json"
    meta.write_text("[1, 2]")
    assert check(root) == [f"{meta}: expected a JSON object with keys dataset, num_classes, class_names, split, got list"]
    meta.write_bytes(b"\xff\xfe\x00garbage")
    assert check(root)[0].startswith(f"{meta}: not a text file (")


PAIR = "['JPEGImages/img_016.png', 'SegmentationClassAug/img_016.png']"
SUB_FAULTS = [
    (f"{{'a': [{PAIR}]}}", "1: class key 'a' is not an integer class id"),
    (f"{{1: [{PAIR}],\n 2.0: []}}", "2: class key 2.0 is not an integer class id"),
    (f"{{1: [{PAIR}],\n True: []}}", "2: class key True is not an integer class id"),
    (f"{{1: [],\n\n 1: [{PAIR}]}}", "3: class 1 is listed twice"),
    ("{1: [['JPEGImages/img_016.png']]}", "1: class 1: expected an [image, label] pair of paths, got ['JPEGImages/img_016.png']"),
    (f"{{1: [{PAIR},\n  ['a', 'b', 'c']]}}", "2: class 1: expected an [image, label] pair of paths, got ['a', 'b', 'c']"),
    ("{1: [['a', 2]]}", "1: class 1: expected an [image, label] pair of paths, got ['a', 2]"),
    ("{1: 'JPEGImages/img_016.png'}", "1: class 1: expected a list of [image, label] pairs, got 'JPEGImages/img_016.png'"),
    ("{1: [oops]}", "1: class 1: expected an [image, label] pair of paths, got oops"),
    (f"{{1: [{PAIR}]\n 2: []}}", "1: not a dict literal {class: [[image, label], ...]} ("),
    (f"[{PAIR}]", f"1: expected a dict literal {{class: [[image, label], ...]}}, got [{PAIR}]"),
    ("{**x}", "1: '**' unpacking is not allowed"),
]


@pytest.mark.parametrize("text,expected", SUB_FAULTS)
def test_bad_sub_class_file_list_names_file_line_and_key(root, text, expected):
    sub = root / "lists/val/sub_class_file_list_0.txt"
    sub.write_text(text + "\n")
    with pytest.raises(ValueError) as e:
        read_fold_list(root / "lists/val", 0)
    assert str(e.value).startswith(f"{sub}:{expected}"), str(e.value)
    problems = check(root)
    assert problems[0] == str(e.value) and all(str(sub) not in p for p in problems[1:])


def test_good_sub_class_list_records_where_entries_come_from(root):
    fl = read_fold_list(root / "lists/val", 0)
    first = fl.items[0]
    assert fl.origin[first.image] == f"{root / 'lists/val/data_list_0.txt'}:1"
    assert read_fold_list(root / "lists/val", 0) == fl  # origin is not part of equality


def test_check_reports_a_label_of_the_wrong_size_with_both_files(root):
    rel_image, rel_label = (root / "lists/val/data_list_0.txt").read_text().split()[:2]
    label = np.asarray(Image.open(root / rel_label))
    Image.fromarray(label[:, :-1]).save(root / rel_label)
    problems = check(root)
    assert any(p.startswith(f"{root / rel_label}: label is ") and str(root / rel_image) in p for p in problems)
