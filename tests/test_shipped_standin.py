"""The shipped DINOv2 stand-in (fss_sam2/toy/shipped.py, toy/standins.py): the cache takes it instead of training,
and it is, byte for byte, what its one command trains from the committed code and seed."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from fss_sam2.toy import shipped, standins
from fss_sam2.toy.world import NUM_TOY_CLASSES, TOY_WORLD, VAL_EVERY, generate_toy_world
from test_pinned_numerics import ROOT, pinned_env


@pytest.fixture(scope="module")
def default_world(tmp_path_factory):
    """The default world's meta files (what the stand-in's key reads), with the fewest images."""
    root = tmp_path_factory.mktemp("toy")
    generate_toy_world(root, seed=TOY_WORLD["seed"], size=TOY_WORLD["size"], images=VAL_EVERY * NUM_TOY_CLASSES,
                       clips=1, clip_frames=TOY_WORLD["clip_frames"], progress=False)
    return root


def test_the_package_ships_exactly_one_dino_standin_with_its_record():
    files = sorted(f.name for f in shipped.shipped_folder().iterdir())
    assert len(files) == 2 and files[0].startswith("toy_dino_") and files[0].endswith(".json")
    stem = files[0][: -len(".json")]
    assert files[1] == f"{stem}.pt"
    record = json.loads(shipped.shipped_folder().joinpath(files[0]).read_text())
    assert record["key"] == stem.split("_")[-1] and record["metrics"]["steps"] == record["settings"]["steps"]


def test_a_fresh_cache_copies_the_shipped_file_instead_of_training(default_world, tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained although the package ships this stand-in")

    monkeypatch.setattr(standins, "pretrain_toy_dino", no_training)
    got = standins.ensure_toy_standins(default_world, tmp_path / "cache", kinds=("dino",), progress=False)
    assert got["shipped"] == ["dino"] and got["trained"] == []
    source = shipped.shipped_files(Path(got["dino"]).stem)
    assert source is not None and Path(got["dino"]).read_bytes() == source[0].read_bytes()
    assert got["dino_metrics"] == json.loads(source[1].read_text())["metrics"]
    again = standins.ensure_toy_standins(default_world, tmp_path / "cache", kinds=("dino",), progress=False)
    assert again["shipped"] == [] and again["trained"] == [] and again["dino"] == got["dino"]  # now from the cache
    with pytest.raises(AssertionError, match="trained although"):  # not shipped for other settings
        standins.ensure_toy_standins(default_world, tmp_path / "other", kinds=("dino",), dino_steps=3, progress=False)
    with pytest.raises(AssertionError, match="trained although"):  # nor when told not to use it
        standins.ensure_toy_standins(default_world, tmp_path / "off", kinds=("dino",), use_shipped=False,
                                     progress=False)
    with pytest.raises(ValueError, match="kinds="):
        standins.ensure_toy_standins(default_world, tmp_path, kinds=("clip",))


def test_the_check_fails_when_the_retrained_file_differs(tmp_path, monkeypatch, capsys):
    stem = next(f.name for f in shipped.shipped_folder().iterdir() if f.name.endswith(".pt"))[: -len(".pt")]

    def retrained(out_dir: Path, progress: bool = True) -> dict:
        record = json.loads(shipped.shipped_folder().joinpath(f"{stem}.json").read_text())
        (out_dir / f"{stem}.pt").write_bytes(b"other bytes")
        (out_dir / f"{stem}.json").write_text(json.dumps(record))
        return {"dino": out_dir / f"{stem}.pt"}

    monkeypatch.setattr(standins, "_check_pinned", lambda: None)
    monkeypatch.setattr(standins, "train_default", retrained)
    assert standins.main(["--check", "--quiet"]) == 1
    assert "DIFFERS from the shipped file" in capsys.readouterr().out


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the pin names x86-64 instruction sets")
@pytest.mark.timeout(1800)  # 137 s on 2 idle cores; > 600 s (the suite's limit) on a machine busy with other work
def test_the_shipped_file_is_what_make_standins_trains_here():
    """The 900 steps of the stand-in's pretraining, pinned as `make standins`, give the shipped bytes."""
    env = {**{k: v for k, v in os.environ.items() if k not in pinned_env()}, **pinned_env()}
    r = subprocess.run([sys.executable, "-m", "fss_sam2.toy.standins", "--check", "--quiet"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"--- stdout ---\n{r.stdout[-3000:]}\n--- stderr ---\n{r.stderr[-3000:]}"
    assert "equal to the shipped file, losses equal" in r.stdout


def test_the_checks_pin_is_the_makefiles():
    pinned = pinned_env()
    assert pinned["ATEN_CPU_CAPABILITY"].upper() == standins.PINNED_CAPABILITY
    assert int(pinned["OMP_NUM_THREADS"]) == standins.PINNED_THREADS


def test_the_check_refuses_unpinned_numerics():
    env = {**{k: v for k, v in os.environ.items() if k not in pinned_env()}, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "fss_sam2.toy.standins", "--check"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "make standins" in r.stderr
