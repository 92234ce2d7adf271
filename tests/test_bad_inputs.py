"""What bad input gets (DESIGN §8), one test per item, mostly through `fss-sam2 evaluate`:
a clear error that names the file or argument and what is wrong."""
from __future__ import annotations

import json
import pickle
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fss_sam2
from fss_sam2.backbones.sam2_model import build_sam2_model
from fss_sam2.cli import main
from fss_sam2.config import load_config, to_dict
from fss_sam2.data.episodes import make_episodes
from fss_sam2.data.sources import ListSource
from fss_sam2.engine.checkpoint import FORMAT
from fss_sam2.loading import build_model
from tests.fixtures_data import write_tiny_toy_root

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "toy.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_tiny_toy_root(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    """A fresh copy of the tiny world, to break."""
    return Path(shutil.copytree(pristine, tmp_path / "root"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An fss-sam2 checkpoint of an untrained toy model at 64 px (what `train` would write)."""
    cfg = to_dict(load_config(CONFIG, ["image_size=64", "device=cpu"]))
    torch.manual_seed(cfg["train"]["seed"])
    model = build_model(cfg["model"], 64)
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    torch.save({"format": FORMAT, "config": cfg, "model": model.trainable_state_dict()}, path)
    return path


def evaluate(root, checkpoint, capsys, *more: str) -> tuple[int, str]:
    """`fss-sam2 evaluate` on 4 episodes -> (exit code, stderr)."""
    code = main(["evaluate", "--config", CONFIG, "--checkpoint", str(checkpoint), "--episodes", "4", "--batch", "2",
                 "--set", f"root={root}", "image_size=64", "workers=0", "device=cpu", *more,
                 "--out", str(Path(root).parent / "eval"), "--quiet"])
    return code, capsys.readouterr().err


def test_missing_dataset_root(tmp_path, checkpoint, capsys):
    code, err = evaluate(tmp_path / "nowhere", checkpoint, capsys)
    assert code == 2 and f"{tmp_path / 'nowhere' / 'fss_meta.json'}: not a prepared dataset root" in err


def test_missing_list_file_and_list_entry(root, checkpoint, capsys):
    lst = root / "lists" / "val" / "data_list_0.txt"
    image = root / lst.read_text().split()[0]  # the first query's image
    image.unlink()
    code, err = evaluate(root, checkpoint, capsys)
    assert code == 2 and f"{image.relative_to(root)}: listed in {root / 'lists'} but not found" in err
    lst.unlink()
    code, err = evaluate(root, checkpoint, capsys)
    assert code == 2 and f"{lst}: list file missing" in err


def test_unreadable_image(root, checkpoint, capsys):
    image = root / (root / "lists" / "val" / "data_list_0.txt").read_text().split()[0]
    image.write_bytes(b"\x89PNG truncated")
    code, err = evaluate(root, checkpoint, capsys)
    assert code == 2 and f"{image}: cannot read image" in err


def test_image_and_label_of_different_sizes(root, checkpoint, capsys):
    image_rel, label_rel = (root / "lists" / "val" / "data_list_0.txt").read_text().split()[:2]
    label = root / label_rel
    Image.open(label).resize((20, 30), Image.NEAREST).save(label)
    code, err = evaluate(root, checkpoint, capsys)
    assert code == 2 and image_rel in err and label_rel in err and "sizes differ" in err


def test_label_values_that_are_not_classes(root, checkpoint, capsys):
    label = root / (root / "lists" / "val" / "data_list_0.txt").read_text().split()[1]
    values = np.asarray(Image.open(label)).copy()
    values[0, 0] = 77  # the world has classes 1..8 and ignore 255
    Image.fromarray(values).save(label)
    code, err = evaluate(root, checkpoint, capsys)
    assert code == 2 and f"{label.relative_to(root)}: label value 77 is neither a class id 0..8 nor 255" in err


def test_too_few_images_of_a_class_for_k_supports(root, checkpoint, capsys):
    code, err = evaluate(root, checkpoint, capsys, "shot=9")
    assert code == 2 and "9-shot episodes need 9" in err and "sub_class_file_list_0.txt" in err


def test_empty_support_mask_warns_then_evaluates(root, checkpoint, capsys):
    source = ListSource(root)
    episodes = make_episodes(source, 0, 1, episodes=4)
    queries = {ep.query for ep in episodes}
    ep = next(e for e in episodes if e.supports[0] not in queries)  # its label does not decide the draw
    label = root / "SegmentationClassAug" / f"{ep.supports[0]}.png"
    values = np.asarray(Image.open(label)).copy()
    values[values == ep.cls] = 0  # listed for the class, but no pixel of it left
    Image.fromarray(values).save(label)
    with pytest.warns(UserWarning, match=f"{label.relative_to(root)}: support mask of class {ep.cls} is empty"):
        code, _ = evaluate(root, checkpoint, capsys)
    assert code == 0 and json.loads((root.parent / "eval" / "results.json").read_text())["episodes"] == 4


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_wrong_checkpoint_kind(pristine, checkpoint, tmp_path, capsys):
    sam = tmp_path / "sam2_hiera_tiny_toy.pt"
    torch.save({"model": build_sam2_model("tiny-toy", 64).state_dict()}, sam)
    code, err = evaluate(pristine, sam, capsys)
    assert code == 2 and f"{sam}: neither an fss-sam2 checkpoint nor an FSSAM release checkpoint" in err
    assert "sam2_checkpoint=" in err
    arbitrary = tmp_path / "arbitrary.pt"
    arbitrary.write_bytes(pickle.dumps({"weights": Fraction(1, 3)}))  # not plain tensors: never unpickled
    code, err = evaluate(pristine, arbitrary, capsys)
    assert code == 2 and f"{arbitrary}: not a readable PyTorch checkpoint" in err
    text = tmp_path / "notes.txt"
    text.write_text("best mIoU 0.73\n")
    code, err = evaluate(pristine, text, capsys)
    assert code == 2 and f"{text}: not a readable PyTorch checkpoint" in err


def test_wrong_sam2_version_or_size(pristine, checkpoint, tmp_path, capsys):
    state = build_sam2_model("tiny-toy", 64).state_dict()
    v21 = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {**state, "no_obj_embed_spatial": torch.zeros(1, 64)}}, v21)
    code, err = evaluate(pristine, checkpoint, capsys, f"model.sam2_checkpoint={v21}")
    assert code == 2 and f"{v21}: SAM 2.1 checkpoints are not supported" in err
    small = tmp_path / "sam2_hiera_small.pt"  # a Hiera-S trunk (96 channels, 16 blocks)
    blocks = {f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.ones(96) for i in range(16)}
    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7), **blocks}}, small)
    code, err = evaluate(pristine, checkpoint, capsys, f"model.sam2_checkpoint={small}")
    assert code == 2 and f"{small}: checkpoint is SAM 2.0 small, model is tiny-toy" in err


def test_image_sizes_that_do_not_fit_the_backbones(pristine, checkpoint, capsys):
    code, err = evaluate(pristine, checkpoint, capsys, "image_size=100")
    assert code == 2 and "data.image_size=100: expected a multiple of 16" in err
    with pytest.raises(ValueError, match=r"image_size=80 .*multiple of 64"):  # SAM 2 fits 80, DINOv2's 14-px patches do not
        fss_sam2.load_model(sam2="tiny-toy", dino="tiny-toy", image_size=80)
    with pytest.raises(ValueError, match="image_size=48: must be a multiple of 16 and at least 64"):
        build_sam2_model("tiny-toy", 48)
