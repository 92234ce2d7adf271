"""List entries resolve only inside their dataset root: absolute entries and entries that climb
out with '..' are refused, naming the list file, the line and the entry, unless allow_outside."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import write_tiny_toy_root
from PIL import Image

from fss_sam2.cli import main
from fss_sam2.data.check import check_dataset
from fss_sam2.data.episodes import make_episodes
from fss_sam2.data.sources import ListSource, read_image

LINE = 3  # the list line the tests tamper with


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_tiny_toy_root(tmp_path_factory.mktemp("tiny") / "root", images=32)


@pytest.fixture
def world(pristine, tmp_path):
    """(root, an image next to the root, its bytes): a copy of the tiny root, and a file outside it."""
    root = tmp_path / "data" / "root"
    shutil.copytree(pristine, root)
    outside = tmp_path / "data" / "outside.png"
    Image.fromarray(np.full((40, 56, 3), 7, np.uint8)).save(outside)
    return root, outside, outside.read_bytes()


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def set_entry(root: Path, column: int, entry: str) -> tuple[Path, str]:
    """Write `entry` as the image (0) or label (1) of line LINE of the val list of fold 0, in both
    list files of the fold; returns the list file and the entry it replaced."""
    data_list = root / "lists/val/data_list_0.txt"
    lines = data_list.read_text().splitlines()
    parts = lines[LINE - 1].split()
    old, parts[column] = parts[column], entry
    lines[LINE - 1] = " ".join(parts)
    data_list.write_text("\n".join(lines) + "\n")
    sub = root / "lists/val/sub_class_file_list_0.txt"
    sub.write_text(sub.read_text().replace(repr(old), repr(entry)))
    return data_list, old


def entries(root: Path, outside: Path) -> dict[str, str]:
    return {
        "absolute": str(outside),
        "absolute /etc": "/etc/passwd",
        "dotdot": "../outside.png",
        "deep dotdot": "../" * len(root.parts) + str(outside).lstrip("/"),
        "dotdot inside": "JPEGImages/../../outside.png",
    }


KINDS = ["absolute", "absolute /etc", "dotdot", "deep dotdot", "dotdot inside"]


@pytest.mark.parametrize("kind", KINDS)
def test_entry_leaving_the_root_is_refused(world, kind):
    root, outside, outside_bytes = world
    entry = entries(root, outside)[kind]
    data_list, _ = set_entry(root, 0, entry)
    how = "is an absolute path" if entry.startswith("/") else "climbs out with '..'"
    message = (f"{data_list}:{LINE}: entry {entry!r} leaves the dataset root {root} ({how}) and no part of it "
               f"is found under the root; refused (allow_outside=True reads files outside the root)")
    source = ListSource(root)
    item = source.fold_list("val", 0).items[LINE - 1]
    with pytest.raises(ValueError) as e:
        source.load_image(item)
    assert str(e.value) == message
    before = snapshot(root)
    assert message in check_dataset("toy", root, progress=False)
    assert message in check_dataset("toy", root, fast=True, progress=False)
    assert snapshot(root) == before and outside.read_bytes() == outside_bytes


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "deep dotdot", "dotdot inside"])
def test_entry_leaving_the_root_is_read_with_the_opt_in(world, kind):
    root, outside, outside_bytes = world
    entry = entries(root, outside)[kind]
    set_entry(root, 0, entry)
    source = ListSource(root, allow_outside=True)
    item = source.fold_list("val", 0).items[LINE - 1]
    assert os.path.samefile(source.resolve(item.image), outside)
    np.testing.assert_array_equal(source.load_image(item), read_image(outside))
    problems = check_dataset("toy", root, progress=False, allow_outside=True)
    assert not any("leaves the dataset root" in p for p in problems)
    assert outside.read_bytes() == outside_bytes


def test_label_entry_leaving_the_root_stops_episodes_naming_it(world, capsys):
    root, _, _ = world
    data_list, _ = set_entry(root, 1, "../outside.png")
    with pytest.raises(ValueError, match=rf"^{data_list}:{LINE}: entry '../outside.png' leaves the dataset root"):
        make_episodes(ListSource(root), 0, 1, episodes=4)
    out = root.parent / "e.csv"
    code = main(["episodes", "--dataset", "toy", "--root", str(root), "--fold", "0", "--episodes", "4", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"fss-sam2: error: {data_list}:{LINE}: entry '../outside.png' leaves the dataset root" in err
    assert not out.exists()


def test_entry_only_in_the_sub_class_list_is_named_with_its_line(world):
    root, outside, _ = world
    sub = root / "lists/val/sub_class_file_list_0.txt"
    text = sub.read_text()
    first = text.index("[[") + 1  # the first pair of the first class
    sub.write_text(text[:first] + f"[{str(outside)!r}, 'SegmentationClassAug/x.png'],\n " + text[first:])
    source = ListSource(root)
    fl = source.fold_list("val", 0)
    item = next(it for items in fl.by_class.values() for it in items if it.image == str(outside))
    with pytest.raises(ValueError, match=rf"^{sub}:1: entry {str(outside)!r} leaves the dataset root"):
        source.load_image(item)


def test_entries_inside_the_root_still_resolve(world):
    root, _, _ = world
    source = ListSource(root)
    fl = source.fold_list("val", 0)
    rel = fl.items[0].image
    target = root / rel
    # an absolute path into the root, a detour that stays inside, the authors' '../data/...' form
    for entry in (str(target.resolve()), f"JPEGImages/../{rel}", f"../data/VOCdevkit2012/VOC2012/{rel}", f"./{rel}"):
        assert os.path.samefile(source.resolve(entry), target), entry
    with pytest.raises(FileNotFoundError, match=rf"^JPEGImages/nothing.png: listed in {root / 'lists'} but not found"):
        source.resolve("JPEGImages/nothing.png")


def test_authors_paths_outside_the_root_only_match_inside(world):
    """'../data/.../JPEGImages/x' is read from root/JPEGImages/x even when ../data/... exists."""
    root, _, _ = world
    rel = ListSource(root).fold_list("val", 0).items[0].image
    decoy = root.parent / "data" / rel
    decoy.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(decoy)
    set_entry(root, 0, f"../data/{rel}")
    for allow in (False, True):
        source = ListSource(root, allow_outside=allow)
        assert os.path.samefile(source.resolve(f"../data/{rel}"), root / rel)


def test_symlink_inside_the_root_is_followed(world):
    """The documented choice: the builders symlink images into the root (link_or_copy), so a
    symlink placed inside the root is part of the dataset, wherever it points."""
    root, outside, _ = world
    set_entry(root, 0, "JPEGImages/linked.png")
    (root / "JPEGImages/linked.png").symlink_to(outside)
    source = ListSource(root)
    item = source.fold_list("val", 0).items[LINE - 1]
    np.testing.assert_array_equal(source.load_image(item), read_image(outside))
