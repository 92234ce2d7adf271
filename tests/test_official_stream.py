"""The "official" episode stream against a literal re-run of the authors' evaluation loop.

The reference here is written independently of fss_sam2/data/episodes.py: a map-style Dataset
that samples like the authors' validation dataset (class by Python `random` among the novel
classes present in the query label, supports by their rejection loop, stacked by prepending),
served by a real torch DataLoader with W workers (shuffle off, batch 1) and walked like their
test.py: seed Python `random`, NumPy and torch, then ceil(N / (len - 1)) passes over the loader,
each a fresh iterator, stopping after N episodes. make_episodes(stream="official",
stream_workers=W) must give the same episodes, in one process, whatever `workers` reads labels.
"""
from __future__ import annotations

import ast
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info

from fss_sam2.data.episodes import Episode, loader_base_seeds, make_episodes
from fss_sam2.data.folds import PASCAL_CLASSES
from fss_sam2.data.sources import ListSource

# the reference loop starts 3 workers; small CI machines suggest fewer
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

PREFIX = "../data/VOCdevkit2012/VOC2012"  # how the authors' list files spell paths
MIN_PIXELS = 2 * 32 * 32
H, W = 64, 80  # 5120 pixels: one large object per image passes the 2048-pixel rule


def write_pascal_fixture(root: Path, images: int = 120, seed: int = 0) -> Path:
    """A PASCAL-layout root (20 classes, grayscale class-id labels with 255 borders) whose val
    lists are written here by the authors' rule and in their format: image i holds a large
    object of class (i % 20) + 1 (so every class has images // 20 list entries), often a small
    second object of any class (present in the label, too small for the lists)."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir(parents=True)
    names = []
    for i in range(images):
        label = np.zeros((H, W), np.uint8)
        big = i % 20 + 1
        label[4:60, 4:44] = 255
        label[5:59, 5:43] = big  # 54 x 38 = 2052 pixels
        if rng.random() < 0.7:
            small = int(rng.integers(1, 21))
            label[50:60, 60:70] = small  # 100 pixels: present, never listed
        name = f"2007_{i:06d}"
        Image.fromarray(label, mode="L").save(root / "SegmentationClassAug" / f"{name}.png")
        Image.fromarray(np.full((H, W, 3), 100, np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        names.append(name)
    meta = {"dataset": "pascal", "num_classes": 20, "class_names": list(PASCAL_CLASSES), "split": "contiguous"}
    (root / "fss_meta.json").write_text(json.dumps(meta))
    for fold in range(4):
        novel = list(range(5 * fold + 1, 5 * fold + 6))
        data, sub = [], {c: [] for c in novel}
        for name in names:
            pair = (f"{PREFIX}/JPEGImages/{name}.jpg", f"{PREFIX}/SegmentationClassAug/{name}.png")
            label = np.asarray(Image.open(root / "SegmentationClassAug" / f"{name}.png"))
            kept = [c for c in novel if (label == c).sum() >= MIN_PIXELS]
            if kept:
                data.append(pair)
                for c in kept:
                    sub[c].append(pair)
        for split in ("val", "train"):  # train lists only so the root reads as complete
            out = root / "lists" / split
            out.mkdir(parents=True, exist_ok=True)
            (out / f"data_list_{fold}.txt").write_text("".join(f"{a} {b}\n" for a, b in data))
            (out / f"sub_class_file_list_{fold}.txt").write_text(str(sub))
    return root


class AuthorsVal(Dataset):
    """Samples one validation episode per list entry with the global Python `random`, by the
    authors' rules; returns (class, support ids in the order the model gets them)."""

    def __init__(self, root: Path, fold: int, shot: int):
        self.root, self.shot = root, shot
        self.novel = set(range(5 * fold + 1, 5 * fold + 6))
        lines = (root / "lists/val" / f"data_list_{fold}.txt").read_text().splitlines()
        self.entries = [tuple(line.split(" ")) for line in lines if line]
        self.sub = ast.literal_eval((root / "lists/val" / f"sub_class_file_list_{fold}.txt").read_text())

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, index):
        image, label_path = self.entries[index]
        label = np.asarray(Image.open(self.root / label_path.replace(f"{PREFIX}/", "")))
        present = [int(v) for v in np.unique(label) if v not in (0, 255) and int(v) in self.novel]
        cls = present[random.randint(1, len(present)) - 1]
        files = self.sub[cls]
        stack, taken = [], []
        for _ in range(self.shot):
            pick = random.randint(1, len(files)) - 1
            current = (image, label_path)
            while current == (image, label_path) or pick in taken:
                pick = random.randint(1, len(files)) - 1
                current = files[pick]
            taken.append(pick)
            stack.insert(0, Path(current[0]).stem)  # each new support goes in front
        return cls, ";".join(stack)


def authors_loop(root: Path, fold: int, shot: int, episodes: int, seed: int, workers: int) -> list[Episode]:
    data = AuthorsVal(root, fold, shot)
    loader = DataLoader(data, batch_size=1, shuffle=False, num_workers=workers)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    out: list[Episode] = []
    for _ in range(math.ceil(episodes / (len(loader) - 1))):
        for i, (cls, supports) in enumerate(loader):
            if len(out) >= episodes:
                break
            out.append(Episode(Path(data.entries[i][0]).stem, int(cls[0]), tuple(supports[0].split(";"))))
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_pascal_fixture(tmp_path_factory.mktemp("pascal"))


@pytest.mark.parametrize(
    "fold, shot, episodes, seed, workers",
    [
        (0, 1, 70, 321, 3),  # 2.3 passes over the 30-image list: wrap-around, fresh workers
        (0, 5, 65, 321, 3),
        (1, 5, 40, 5, 3),
        (2, 1, 35, 7, 2),
        (3, 2, 61, 321, 0),  # no workers: everything from the main process's `random`
    ],
)
def test_official_stream_matches_a_real_dataloader(root, fold, shot, episodes, seed, workers):
    source = ListSource(root)
    assert 1 < len(source.fold_list("val", fold).items) < episodes
    want = authors_loop(root, fold, shot, episodes, seed, workers)
    got = make_episodes(source, fold, shot, episodes=episodes, seed=seed, stream="official", stream_workers=workers)
    assert got == want
    assert all(len(ep.supports) == shot and ep.query not in ep.supports for ep in got)


def test_official_stream_ignores_label_reading_workers_and_differs_from_seeded(root):
    source = ListSource(root)
    kw = {"episodes": 30, "seed": 321, "stream": "official", "stream_workers": 32}
    one = make_episodes(source, 0, 5, **kw)
    assert make_episodes(source, 0, 5, workers=2, **kw) == one
    assert make_episodes(ListSource(root), 0, 5, **kw) == one  # pascal: official is the default
    assert make_episodes(source, 0, 5, episodes=30, seed=321) == one
    assert make_episodes(source, 0, 5, episodes=30, seed=321, stream="seeded") != one
    assert make_episodes(source, 0, 5, episodes=30, seed=321, stream_workers=3, stream="official") != one
    # the first pass of a longer stream is the shorter stream
    assert make_episodes(source, 0, 5, **{**kw, "episodes": 5}) == one[:5]


def test_base_seeds_are_the_dataloader_iterator_seeds():
    class Seeds(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            info = get_worker_info()
            return info.seed - info.id

    loader = DataLoader(Seeds(), batch_size=1, num_workers=2)
    torch.manual_seed(123)
    drawn = [{int(s) for s in loader} for _ in range(3)]
    assert drawn == [{s} for s in loader_base_seeds(123, 3)]


def test_explicit_base_seeds_and_errors(root):
    source = ListSource(root)
    seeds = loader_base_seeds(321, 3)
    kw = {"episodes": 80, "stream": "official", "stream_workers": 4}
    assert make_episodes(source, 0, 1, base_seeds=seeds, **kw) == make_episodes(source, 0, 1, seed=321, **kw)
    with pytest.raises(ValueError, match="base_seeds: 1 given.*need 3"):
        make_episodes(source, 0, 1, base_seeds=seeds[:1], **kw)
    with pytest.raises(ValueError, match="stream='numpy'"):
        make_episodes(source, 0, 1, stream="numpy")
    with pytest.raises(ValueError, match=r"class \d+ has \d+ support candidates.*fold 0.*20-shot"):
        make_episodes(source, 0, 20, episodes=3, stream="official")


def test_cli_writes_the_official_stream(root, tmp_path):
    from fss_sam2.cli import main
    from fss_sam2.data.episodes import read_episodes_csv

    out = tmp_path / "eps.csv"
    args = ["episodes", "--dataset", "pascal", "--root", str(root), "--fold", "0", "--shot", "5",
            "--episodes", "65", "--seed", "321", "--stream-workers", "3", "--out", str(out)]
    assert main(args) == 0
    assert read_episodes_csv(out) == authors_loop(root, 0, 5, 65, 321, 3)
    assert main([*args[:-2], "--stream", "seeded", "--out", str(tmp_path / "s.csv")]) == 0
    assert read_episodes_csv(tmp_path / "s.csv") == make_episodes(ListSource(root), 0, 5, episodes=65, stream="seeded")
