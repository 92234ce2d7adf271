"""The trainer, its schedule and its checkpoints, on a tiny stand-in model and a tiny dataset root."""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fss_sam2.config import load_config
from fss_sam2.engine import checkpoint as ckpt_module
from fss_sam2.engine.checkpoint import FORMAT, atomic_save, load_checkpoint, rng_state, set_rng_state
from fss_sam2.engine.schedule import RankBatches, epoch_order, mid_epoch_batch, poly_lr
from fss_sam2.cli.train import add_parser as add_train_cli
from fss_sam2.engine.train import TrainingDiverged, train
from tests.fixtures_data import write_tiny_toy_root
from tests.tiny_model import SimulatedCrash, TinyFewShot, tiny_factory

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "toy.yaml")
# 32 px episodes, 4 per step, 19 training images of fold 0 -> 4 steps per epoch
SMALL = ["image_size=32", "batch_size=4", "workers=0", "val_episodes=4", "val_batch=4", "log_every=1", "device=cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The tiny PASCAL-layout root, registered as a synthetic ('toy') dataset."""
    return write_tiny_toy_root(tmp_path_factory.mktemp("tiny_root"))


def overrides(root: Path, *more: str) -> list[str]:
    return [f"root={root}", *SMALL, *more]


def config(root: Path, *more: str):
    return load_config(CONFIG, overrides(root, *more))


def read_log(out: Path) -> list[dict]:
    with (out / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def losses(out: Path) -> np.ndarray:
    return np.array([float(r["loss"]) for r in read_log(out) if r["loss"]])


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# -- training ------------------------------------------------------------------------------


def test_loss_decreases(root, tmp_path):
    summary = train(config(root, "epochs=15", "lr=3e-2", "val_every=100"), tiny_factory(), tmp_path, progress=False)
    assert summary["steps"] == 60 and summary["stopped"] == "epochs" and summary["iterations_per_epoch"] == 4
    loss = losses(tmp_path)
    assert len(loss) == 60
    assert loss[-10:].mean() < 0.6 * loss[:10].mean(), (loss[:10].mean(), loss[-10:].mean())


def test_checkpoint_contents(root, tmp_path):
    train(config(root, "max_steps=6", "mid_epoch_val_from=0"), tiny_factory(), tmp_path, progress=False)
    last = load_checkpoint(tmp_path / "last.pt")  # weights_only=True inside
    assert last["format"] == FORMAT
    assert last["config"]["train"]["max_steps"] == 6 and last["config"]["out"] == str(tmp_path)
    assert set(last["model"]) == {"embed.weight", "embed.bias", "head.0.weight", "head.0.bias", "head.3.weight", "head.3.bias"}
    assert [g["name"] for g in last["optimizer"]["param_groups"]] == ["embed", "head"]
    p = last["progress"]
    assert (p["step"], p["epoch"], p["batch"]) == (6, 1, 2)
    epochs = last["config"]["train"]["epochs"]  # configs/toy.yaml's
    assert epochs >= 2 and last["max_it"] == 4 * epochs  # the schedule spans all epochs, not max_steps
    m = last["metrics"]
    assert m["step"] == 6 and 0 <= m["miou"] <= 1 and m["episodes"] == 4 and set(m["per_class"]) == {1, 2}
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["optimizer"] is None and best["progress"]["step"] == best["progress"]["best_step"]
    rows = read_log(tmp_path)
    assert [r["step"] for r in rows if r["val_miou"]] == ["2", "4", "6"]  # after batch 2 of 4, epoch end, batch 2
    assert [int(r["step"]) for r in rows if r["loss"]] == [1, 2, 3, 4, 5, 6]


def test_resume_after_crash_equals_uninterrupted(root, tmp_path):
    """Dropout on, mid-epoch validation on: crash at step 11, resume from last.pt (step 9)."""
    more = ("epochs=4", "save_every=3", "mid_epoch_val_from=0", "lr=1e-2")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(config(root, *more), tiny_factory(dropout=0.1), whole, progress=False)
    with pytest.raises(SimulatedCrash):
        train(config(root, *more), tiny_factory(dropout=0.1, crash_after=10), cut, progress=False)
    assert load_checkpoint(cut / "last.pt")["progress"]["step"] == 9  # saved at 3, 4 (epoch end), 6, 8, 9
    summary = train(config(root, *more), tiny_factory(dropout=0.1), cut, resume=True, progress=False)
    assert summary["steps"] == 16
    assert_same_weights(whole / "last.pt", cut / "last.pt")
    assert_same_weights(whole / "best.pt", cut / "best.pt")
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(cut / "last.pt")
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert {k: v for k, v in a["progress"].items() if k != "seconds"} == {k: v for k, v in b["progress"].items() if k != "seconds"}
    assert without_seconds(read_log(whole)) == without_seconds(read_log(cut))  # lost rows replaced, none doubled


def test_resume_after_max_steps_equals_uninterrupted(root, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(config(root, "epochs=3", "lr=1e-2"), tiny_factory(dropout=0.1), whole, progress=False)
    train(config(root, "epochs=3", "lr=1e-2", "max_steps=5"), tiny_factory(dropout=0.1), cut, progress=False)
    train(config(root, "epochs=3", "lr=1e-2"), tiny_factory(dropout=0.1), cut, resume=True, progress=False)
    assert_same_weights(whole / "last.pt", cut / "last.pt")


def test_early_stopping_and_best_checkpoint(root, tmp_path, monkeypatch):
    """Scripted val mIoUs, mid-epoch and end of epoch; a mid-epoch improvement resets the counter."""
    scores = iter([0.1, 0.2, 0.15, 0.3, 0.35, 0.1, 0.1, 0.1, 0.1, 0.1] + [0.0] * 10)
    monkeypatch.setattr("fss_sam2.engine.train.evaluate",
                        lambda *a, **k: {"miou": next(scores), "fb_iou": 0.5, "piou": 0.5, "episodes": 4, "per_class": {}})
    summary = train(config(root, "epochs=10", "early_stop=2", "mid_epoch_val_from=0"), tiny_factory(), tmp_path,
                    progress=False)
    # epochs 0-2 improve (epoch 2 only mid-way), epochs 3 and 4 do not -> stop after epoch 4 (step 20)
    assert (summary["stopped"], summary["steps"]) == ("early_stop", 20)
    assert (summary["best_miou"], summary["best_epoch"]) == (0.35, 2.5)
    assert load_checkpoint(tmp_path / "best.pt")["progress"]["step"] == 10
    assert load_checkpoint(tmp_path / "last.pt")["progress"]["since_best"] == 2
    assert train(config(root, "epochs=10", "early_stop=2", "mid_epoch_val_from=0"), tiny_factory(), tmp_path,
                 resume=True, progress=False)["steps"] == 20  # a finished run stays finished


def test_nan_loss_stops_and_keeps_last_checkpoint(root, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"step 6 .*loss is nan.*last\.pt \(step 4\) is the last good checkpoint"):
        train(config(root, "save_every=2", "val_every=100"), tiny_factory(nan_after=5), tmp_path, progress=False)
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["progress"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert [r["step"] for r in read_log(tmp_path)][-1] == "5"
    # the run continues from step 4 once the cause is gone
    summary = train(config(root, "save_every=2", "val_every=100", "max_steps=6"), tiny_factory(), tmp_path,
                    resume=True, progress=False)
    assert summary["steps"] == 6


def test_resume_errors(root, tmp_path):
    train(config(root, "max_steps=2", "lr=1e-3"), tiny_factory(), tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(config(root, "max_steps=2", "lr=1e-3"), tiny_factory(), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"2 key\(s\): data\.shot: 1 -> 2; train\.lr: 0\.001 -> 0\.002"):
        train(config(root, "lr=2e-3", "shot=2"), tiny_factory(), tmp_path, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(config(root), tiny_factory(), tmp_path / "empty", resume=True, progress=False)


def test_load_checkpoint_rejects_other_files(tmp_path):
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="text.pt: not a readable fss-sam2 checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="no 'format' entry"):
        load_checkpoint(tmp_path / "plain.pt")
    torch.save({"format": "fss-sam2/v0"}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="format 'fss-sam2/v0'"):
        load_checkpoint(tmp_path / "old.pt")


def test_rng_state_round_trip(tmp_path):
    import random

    atomic_save({"format": FORMAT, "rng": rng_state()}, tmp_path / "r.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


# -- atomic writes -------------------------------------------------------------------------


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"format": FORMAT, "step": 1}, path)

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        atomic_save({"format": FORMAT, "step": 2}, path)
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_atomic_save_keeps_old_file_when_writer_is_killed(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"format": FORMAT, "step": 1}, path)
    script = (
        "import os, signal, sys, torch\n"
        "from fss_sam2.engine import checkpoint as c\n"
        "def dying_save(obj, f):\n"
        "    f.write(b'PK\\x03\\x04 half a checkpoint'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "c.torch.save = dying_save\n"
        "c.atomic_save({'format': c.FORMAT, 'step': 2}, sys.argv[1])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, timeout=60)
    assert r.returncode == -9, r.stderr.decode()
    assert load_checkpoint(path)["step"] == 1  # the reader still sees the old, complete file
    atomic_save({"format": FORMAT, "step": 3}, path)  # the next save replaces the stale temporary file
    assert load_checkpoint(path)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# -- distributed ---------------------------------------------------------------------------


def test_two_processes_match_one(root, tmp_path):
    """torchrun, 2 CPU processes (gloo), global batch 4 = 2 x 2, against one process with batch 4.

    Same batches, same data; DDP averages the two half-batch gradients, which equals the
    full-batch gradient up to float summation order: after 8 Adam steps the weights differ by
    ~2e-7 (fp32 rounding, measured), so the check allows 10x that.
    """
    ov = overrides(root, "epochs=2", "lr=1e-2")
    one, two = tmp_path / "one", tmp_path / "two"
    train(load_config(CONFIG, ov), tiny_factory(), one, progress=False)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "tiny_model.py"), "--config", CONFIG, "--set", *ov, "--out", str(two)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a, b = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    assert b["progress"]["step"] == 8
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-5, atol=2e-6)
    rows_one, rows_two = read_log(one), read_log(two)
    assert len(rows_two) == len(rows_one)  # rank 0 alone writes
    np.testing.assert_allclose(losses(two), losses(one), rtol=1e-4)
    val_one = [float(r["val_miou"]) for r in rows_one if r["val_miou"]]
    val_two = [float(r["val_miou"]) for r in rows_two if r["val_miou"]]
    np.testing.assert_allclose(val_two, val_one, atol=1e-3)


# -- schedule ------------------------------------------------------------------------------


def test_poly_lr():
    assert poly_lr(1e-3, 1, 100) == pytest.approx(1e-3 * 0.99 ** 0.9)
    assert poly_lr(1e-3, 100, 100) == 0.0
    assert poly_lr(1e-3, 50, 100, power=1.0) == pytest.approx(5e-4)
    assert poly_lr(1e-3, 5, 100, warmup_steps=10) == pytest.approx(5e-4)


def test_rank_batches_split_the_global_batch():
    order = epoch_order(321, 3, 21)
    assert sorted(order) == list(range(21)) and not np.array_equal(order, epoch_order(321, 4, 21))
    single = list(RankBatches(order, 4))
    assert len(single) == 5  # the last partial batch is dropped
    ranks = [list(RankBatches(order, 4, rank=r, world=2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == single
    assert list(RankBatches(order, 4, start=3)) == single[3:]
    with pytest.raises(ValueError, match="does not split over 3"):
        RankBatches(order, 4, world=3)


def test_mid_epoch_rule():
    assert mid_epoch_batch(100, 526, 101) is None  # PASCAL: epochs 0..100 validate at the end only
    assert mid_epoch_batch(101, 526, 101) == 262  # then also after batch 263 of 526
    assert mid_epoch_batch(0, 10, 0) == 4  # COCO: every epoch
    assert mid_epoch_batch(5, 10, None) is None


# -- command line --------------------------------------------------------------------------


def test_train_cli_writes_and_resumes(root, tmp_path, monkeypatch):
    monkeypatch.setattr("fss_sam2.loading.build_model", lambda model_cfg, image_size, device="cpu": TinyFewShot())
    parser = argparse.ArgumentParser()
    add_train_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    args = parser.parse_args(["train", "--config", CONFIG, "--set", *overrides(root), "--set", "max_steps=3",
                              "save_every=2", "log_every=2", "--out", str(out), "--quiet"])
    assert args.func(args) == 0
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == 3
    assert [r["step"] for r in read_log(out)] == ["2", "3"]  # every 2 steps, and the last partial window
    args = parser.parse_args(["train", "--resume", str(out), "--set", "train.max_steps=5", "--quiet"])
    assert args.func(args) == 0  # config taken from last.pt
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == 5
    assert [(r["step"], bool(r["loss"])) for r in read_log(out)] == [
        ("2", True), ("3", True), ("4", True), ("4", False), ("5", True)]  # step 4 ends epoch 0: a val row
    args = parser.parse_args(["train", "--config", CONFIG, "--set", *overrides(root), "--out", str(out), "--quiet"])
    assert args.func(args) == 3  # refuses to overwrite a run
