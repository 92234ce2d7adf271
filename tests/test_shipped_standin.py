"""The shipped SAM 2 and DINOv2 stand-ins (fss_sam2/toy/shipped.py, toy/standins.py): the cache takes them instead
of training, and they are, byte for byte, what their one command trains from the committed code and seed."""
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


def test_the_package_ships_one_file_of_each_standin_with_its_record():
    files = sorted(f.name for f in shipped.shipped_folder().iterdir())
    assert len(files) == 2 * len(shipped.SHIPPED_KINDS) == 4
    for kind in shipped.SHIPPED_KINDS:
        record_name, weights_name = [f for f in files if f.startswith(f"toy_{kind}_")]
        stem = record_name[: -len(".json")]
        assert record_name.endswith(".json") and weights_name == f"{stem}.pt"
        record = json.loads(shipped.shipped_folder().joinpath(record_name).read_text())
        assert record["key"] == stem.split("_")[-1] and record["metrics"]["steps"] == record["settings"]["steps"]
    sam2_file = next(f for f in files if f.startswith("toy_sam2_") and f.endswith(".pt"))
    assert shipped.shipped_folder().joinpath(sam2_file).stat().st_size < 6e6  # fp16: "a few MB"


def _no_training(*args, **kwargs):
    raise AssertionError("trained although the package ships this stand-in")


@pytest.mark.parametrize("kind", shipped.SHIPPED_KINDS)
def test_a_fresh_cache_copies_the_shipped_file_instead_of_training(kind, default_world, tmp_path, monkeypatch):
    monkeypatch.setattr(standins, f"pretrain_toy_{kind}", _no_training)
    got = standins.ensure_toy_standins(default_world, tmp_path / "cache", kinds=(kind,), progress=False)
    assert got["shipped"] == [kind] and got["trained"] == []
    source = shipped.shipped_files(Path(got[kind]).stem)
    assert source is not None and Path(got[kind]).read_bytes() == source[0].read_bytes()
    assert got[f"{kind}_metrics"] == json.loads(source[1].read_text())["metrics"]
    again = standins.ensure_toy_standins(default_world, tmp_path / "cache", kinds=(kind,), progress=False)
    assert again["shipped"] == [] and again["trained"] == [] and again[kind] == got[kind]  # now from the cache
    with pytest.raises(AssertionError, match="trained although"):  # not shipped for other settings
        standins.ensure_toy_standins(default_world, tmp_path / "other", kinds=(kind,), progress=False,
                                     **{f"{kind}_steps": 3})
    with pytest.raises(AssertionError, match="trained although"):  # nor when told not to use it
        standins.ensure_toy_standins(default_world, tmp_path / "off", kinds=(kind,), use_shipped=False,
                                     progress=False)
    with pytest.raises(ValueError, match="kinds="):
        standins.ensure_toy_standins(default_world, tmp_path, kinds=("clip",))


def test_the_check_fails_when_a_retrained_file_differs(tmp_path, monkeypatch, capsys):
    stems = {kind: next(f.name for f in shipped.shipped_folder().iterdir()
                        if f.name.startswith(f"toy_{kind}_") and f.name.endswith(".pt"))[: -len(".pt")]
             for kind in shipped.SHIPPED_KINDS}

    def retrained(out_dir: Path, progress: bool = True) -> dict:
        for kind, stem in stems.items():
            source = shipped.shipped_folder()
            other = kind == "sam2"  # the DINOv2 file comes out equal, the SAM 2 one not
            (out_dir / f"{stem}.pt").write_bytes(b"other bytes" if other else source.joinpath(f"{stem}.pt").read_bytes())
            (out_dir / f"{stem}.json").write_text(source.joinpath(f"{stem}.json").read_text())
        return {kind: out_dir / f"{stem}.pt" for kind, stem in stems.items()}

    monkeypatch.setattr(standins, "_check_pinned", lambda: None)
    monkeypatch.setattr(standins, "train_default", retrained)
    assert standins.main(["--check", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"{stems['sam2']}.pt: retrained here DIFFERS from the shipped file" in out
    assert f"{stems['dino']}.pt: retrained here equal to the shipped file, losses equal" in out


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the pin names x86-64 instruction sets")
@pytest.mark.timeout(2400)  # ~380 s on 2 idle cores; far more than the suite's 600 s on a machine busy with other work
def test_the_shipped_files_are_what_make_standins_trains_here():
    """The pretraining of both stand-ins (1000 + 900 steps), pinned as `make standins`, gives the shipped bytes."""
    env = {**{k: v for k, v in os.environ.items() if k not in pinned_env()}, **pinned_env()}
    r = subprocess.run([sys.executable, "-m", "fss_sam2.toy.standins", "--check", "--quiet"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, f"--- stdout ---\n{r.stdout[-3000:]}\n--- stderr ---\n{r.stderr[-3000:]}"
    assert r.stdout.count("equal to the shipped file, losses equal") == len(shipped.SHIPPED_KINDS)


def test_the_checks_pin_is_the_makefiles():
    pinned = pinned_env()
    assert pinned["ATEN_CPU_CAPABILITY"].upper() == standins.PINNED_CAPABILITY
    assert int(pinned["OMP_NUM_THREADS"]) == standins.PINNED_THREADS


def test_the_check_refuses_unpinned_numerics():
    env = {**{k: v for k, v in os.environ.items() if k not in pinned_env()}, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "fss_sam2.toy.standins", "--check"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "make standins" in r.stderr
