"""`fss-sam2 evaluate` on a checkpoint of a 2-step toy run (tiny world, 64 px, one thread)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fss_sam2
from fss_sam2 import stats
from fss_sam2.cli import main
from fss_sam2.config import load_config
from fss_sam2.data.episodes import make_episodes, read_episodes_csv
from fss_sam2.data.sources import ListSource
from fss_sam2.constants import SYNTHETIC_NOTE
from fss_sam2.engine.cache import FeatureCache
from fss_sam2.cli.evaluate import add_parser as add_evaluate_cli
from fss_sam2.engine.evaluate import evaluate_checkpoint
from tests.fixtures_data import train_two_steps, write_tiny_toy_root

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "toy.yaml")
SMALL = ["image_size=64", "workers=0", "device=cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_tiny_toy_root(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def checkpoint(root, tmp_path_factory) -> Path:
    return train_two_steps(root, tmp_path_factory.mktemp("run"), "val_episodes=2")


def overrides(root) -> list[str]:
    return [f"root={root}", *SMALL]


def scores(result: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in result["seeds"]]


def test_evaluate_writes_the_protocol_results(root, checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", "--config", CONFIG, "--checkpoint", str(checkpoint), "--set", *overrides(root),
                 "--episodes", "8", "--seeds", "321", "5", "--batch", "4", "--cache", "--overlays", "2",
                 "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "±" in printed and SYNTHETIC_NOTE in printed
    r = json.loads((out / "results.json").read_text())
    assert r["synthetic"] is True and "toy" in r["label"] and r["dataset"] == "toy"
    assert (r["checkpoint"], r["checkpoint_kind"], r["episodes"], r["fold"], r["shot"]) == (str(checkpoint), "ours", 8, 0, 1)
    assert r["config"]["data"]["root"] == str(root) and r["cache"]["hits"] > 0
    assert [s["seed"] for s in r["seeds"]] == [321, 5] and all(s["episodes"] == 8 for s in r["seeds"])
    assert r["miou"] == pytest.approx(np.mean([s["miou"] for s in r["seeds"]]))
    assert r["std"]["fb_iou"] == pytest.approx(np.std([s["fb_iou"] for s in r["seeds"]], ddof=1))
    assert set(r["per_class"]) == {"1", "2"}  # fold 0's novel classes
    assert 0 < r["fb_iou"] < 1
    # the model as evaluated, what its weights were trained with, and the interval of the first seed
    assert (r["method"], r["num_refine"], r["calibrate"], r["query_memory"]) == ("FSSAM", 3, True, True)
    assert (r["trained_shot"], r["training_seed"], r["ci95_seed"], r["ci95_resamples"]) == (1, 321, 321, 1000)
    assert all(0 <= v <= 1 for v in r["miou_ci95"] + r["fb_iou_ci95"]) and r["miou_ci95"][0] <= r["miou_ci95"][1]
    rows = (out / r["episode_scores"]).read_text().splitlines()
    assert len(rows) == 1 + 2 * 8 and rows[0].startswith("seed,index,query,class,supports,intersection,union")
    first = stats.load_episode_scores(out)  # seed 321's rows give its numbers back, exactly
    assert first.episodes == tuple(read_episodes_csv(out / "episodes.csv"))
    assert stats.weighted_scores(first, np.ones((1, 8)))["miou"][0] == r["seeds"][0]["miou"]
    assert stats.bootstrap_ci95(first) == {"miou": r["miou_ci95"], "fb_iou": r["fb_iou_ci95"]}
    source = ListSource(root)
    for seed in (321, 5):
        assert read_episodes_csv(out / f"episodes_seed{seed}.csv") == make_episodes(source, 0, 1, episodes=8, seed=seed)
    assert (out / "episodes.csv").read_bytes() == (out / "episodes_seed321.csv").read_bytes()
    overlays = sorted((out / "overlays").glob("*.png"))
    assert [p.name for p in overlays] == ["episode_0000.png", "episode_0001.png"]
    query = read_episodes_csv(out / "episodes.csv")[0].query
    h, w = np.asarray(Image.open(root / "JPEGImages" / f"{query}.png")).shape[:2]
    assert np.asarray(Image.open(overlays[0])).shape == (h, 3 * w, 3)  # support | truth | prediction


def test_cache_batch_and_workers_leave_the_results_unchanged(root, checkpoint, tmp_path):
    cfg = load_config(CONFIG, overrides(root))
    plain = evaluate_checkpoint(cfg, checkpoint, tmp_path / "a", episodes=8, batch_size=1, workers=0, progress=False)
    fast = evaluate_checkpoint(cfg, checkpoint, tmp_path / "b", episodes=8, batch_size=4, workers=2,
                               cache=FeatureCache(), progress=False)
    assert plain["fb_iou"] > 0 and scores(fast) == scores(plain)
    assert (plain["cache"], fast["cache"]["misses"] > 0) == (None, True)


def test_authors_checkpoint_gives_the_same_numbers(root, checkpoint, tmp_path):
    """Our checkpoint's model, saved in the authors' DDP layout, evaluated through the config."""
    model = fss_sam2.load_model(checkpoint)
    state = {f"module.{k.replace('prompt_generator.dino.', 'dino.')}": v for k, v in model.state_dict().items()}
    official = tmp_path / "best_1shot.pth"
    torch.save({"epoch": 1, "state_dict": state}, official)
    results = {}
    for name, path in (("ours", checkpoint), ("official", official)):
        assert main(["evaluate", "--config", CONFIG, "--checkpoint", str(path), "--set", *overrides(root),
                     "--episodes", "6", "--batch", "3", "--out", str(tmp_path / name), "--quiet"]) == 0
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert results["official"]["checkpoint_kind"] == "official"
    assert scores(results["official"]) == scores(results["ours"])
    assert (results["official"]["trained_shot"], results["official"]["training_seed"]) == (None, None)  # not recorded
    assert stats.paired_miou_difference(tmp_path / "ours", tmp_path / "official")["ci95"] == [0.0, 0.0]


def test_evaluation_reads_the_checkpoint_once(root, checkpoint, tmp_path, monkeypatch):
    """The model and its training record come from one read of the file (frozen-weight files
    the config names are read by their own loaders and not counted)."""
    import fss_sam2.backbones.sam2_checkpoint as files
    import fss_sam2.engine.evaluate as evaluate_module
    import fss_sam2.loading as loading

    reads = []
    real = files.load_checkpoint_file

    def counting(path, *args, **kwargs):
        if Path(path) == Path(checkpoint):
            reads.append(path)
        return real(path, *args, **kwargs)

    for module in (files, loading, evaluate_module):
        monkeypatch.setattr(module, "load_checkpoint_file", counting)
    result = evaluate_checkpoint(load_config(CONFIG, overrides(root)), checkpoint, tmp_path / "once", episodes=2,
                                 progress=False)
    assert len(reads) == 1
    assert (result["checkpoint_kind"], result["trained_shot"]) == ("ours", 1)


def test_an_inference_switch_names_the_method(root, checkpoint, tmp_path):
    cfg = load_config(CONFIG, overrides(root))
    full = evaluate_checkpoint(cfg, checkpoint, tmp_path / "full", episodes=6, progress=False)
    off = evaluate_checkpoint(cfg, checkpoint, tmp_path / "no_scma", episodes=6, overrides=["model.calibrate=false"],
                              progress=False)
    assert (full["method"], off["method"], off["calibrate"]) == ("FSSAM", "FSSAM w/o SCMA", False)
    d = stats.paired_miou_difference(tmp_path / "full", tmp_path / "no_scma")
    assert d["delta"] == pytest.approx(full["miou"] - off["miou"], abs=1e-12) and d["episodes"] == 6


def test_compile_wraps_the_post_encoder(root, checkpoint, tmp_path, monkeypatch, capsys):
    """Inductor needs minutes on this CPU, so torch.compile is replaced by a recording stand-in."""
    compiled = []

    def fake_compile(fn, **options):
        compiled.append(fn.__name__)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    args = ["evaluate", "--config", CONFIG, "--checkpoint", str(checkpoint), "--set", *overrides(root),
            "--episodes", "4", "--batch", "4", "--compile", "--out", str(tmp_path / "c"), "--quiet"]
    assert main(args) == 0
    assert compiled == ["_post_encoder"]
    assert json.loads((tmp_path / "c" / "results.json").read_text())["compile"] is True

    monkeypatch.setattr("shutil.which", lambda name: None)  # a machine without a C++ compiler
    monkeypatch.delenv("CXX", raising=False)
    assert main(args) == 2
    assert "--compile: torch.compile needs a C++ compiler" in capsys.readouterr().err


def test_official_protocol_is_the_default():
    parser = argparse.ArgumentParser()
    add_evaluate_cli(parser.add_subparsers())
    a = parser.parse_args(["evaluate", "--config", "c.yaml", "--checkpoint", "x.pt", "--out", "o"])
    assert (a.episodes, a.seeds, a.cache, a.compile, a.overlays) == (1000, [321], False, False, 0)
