"""A run trained from one folder with relative weight paths is evaluated and used for prediction
from another folder: the run records where its frozen weights are."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fss_sam2.backbones.dinov2 import build_dinov2
from fss_sam2.backbones.sam2_model import build_sam2_model
from fss_sam2.cli import main
from fss_sam2.engine.checkpoint import load_checkpoint
from fss_sam2.toy.sam2_standin import TOY_SAM2
from tests.fixtures_data import TOY_CONFIG, write_tiny_toy_root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`fss-sam2 train` started in `repo/` with weights under `repo/pretrained/` (relative paths)."""
    repo = tmp_path_factory.mktemp("repo")
    root = write_tiny_toy_root(repo / "data")
    torch.manual_seed(0)
    (repo / "pretrained").mkdir()
    torch.save({"model": build_sam2_model(TOY_SAM2, 64).state_dict()}, repo / "pretrained" / "sam2.pt")
    torch.save(build_dinov2("tiny-toy").state_dict(), repo / "pretrained" / "dino.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        args = ["train", "--config", TOY_CONFIG, "--set", "root=data", "image_size=64", "workers=0", "device=cpu",
                "batch_size=2", "max_steps=2", "val_episodes=2", "model.sam2_checkpoint=pretrained/sam2.pt",
                "model.dino_checkpoint=pretrained/dino.pt", "--out", "runs/p0", "--quiet"]
        assert main(args) == 0
    return repo, root


def test_the_run_records_absolute_weight_paths(trained):
    repo, _ = trained
    model = load_checkpoint(repo / "runs" / "p0" / "last.pt")["config"]["model"]
    assert model["sam2_checkpoint"] == str((repo / "pretrained" / "sam2.pt").resolve())
    assert model["dino_checkpoint"] == str((repo / "pretrained" / "dino.pt").resolve())


def test_evaluate_and_predict_from_another_folder(trained, tmp_path, monkeypatch):
    repo, root = trained
    monkeypatch.chdir(tmp_path)  # outside the folder the run was trained in
    ckpt = str(repo / "runs" / "p0" / "last.pt")
    assert main(["evaluate", "--config", TOY_CONFIG, "--checkpoint", ckpt, "--episodes", "2", "--workers", "0",
                 "--set", f"root={root}", "--out", "ev", "--quiet"]) == 0
    assert 0 <= json.loads((tmp_path / "ev" / "results.json").read_text())["miou"] <= 1
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save("support.png")
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 10:40] = 255
    Image.fromarray(mask).save("mask.png")
    Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)).save("query.png")
    assert main(["predict", "--checkpoint", ckpt, "--support", "support.png", "mask.png", "--query", "query.png",
                 "--device", "cpu", "--out", "masks"]) == 0
    assert Image.open(tmp_path / "masks" / "query.png").size == (20, 30)


def test_moved_weights_are_named_and_an_explicit_path_wins(trained, tmp_path, monkeypatch, capsys):
    repo, root = trained
    moved = tmp_path / "moved"
    moved.mkdir()
    (repo / "pretrained").rename(moved / "pretrained")
    try:
        monkeypatch.chdir(tmp_path)
        ckpt = str(repo / "runs" / "p0" / "last.pt")
        base = ["evaluate", "--config", TOY_CONFIG, "--checkpoint", ckpt, "--episodes", "2", "--workers", "0",
                "--out", "ev", "--quiet", "--set", f"root={root}"]
        assert main(base) == 2
        assert "sam2.pt" in capsys.readouterr().err  # the error names the missing weight file
        assert main([*base, f"model.sam2_checkpoint={moved / 'pretrained' / 'sam2.pt'}",
                     f"model.dino_checkpoint={moved / 'pretrained' / 'dino.pt'}"]) == 0
    finally:
        (moved / "pretrained").rename(repo / "pretrained")
