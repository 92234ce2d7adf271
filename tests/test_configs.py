"""The official configs, the schema, overrides, error messages and the precision policy."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from fss_sam2.config import config_from_dict, load_config, to_dict
from fss_sam2.engine.runtime import autocast, autocast_dtype
from fss_sam2.engine.checkpoint import config_diff

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPECTED = {
    *(f"pascal_fold{f}_small_{k}shot" for f in range(4) for k in (1, 5)),
    *(f"pascal_fold{f}_{s}_1shot" for f in range(4) for s in ("base_plus", "large")),
    *(f"coco_fold{f}_small_{k}shot" for f in range(4) for k in (1, 5)),
    "toy",
}


def cfg(name: str, *overrides: str):
    return load_config(CONFIGS / f"{name}.yaml", overrides)


def test_every_official_setting_has_a_config():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads(name):
    c = cfg(name)
    if name != "toy":
        dataset, fold, size, shot = re.fullmatch(r"(pascal|coco)_fold(\d)_(small|base_plus|large)_(\d)shot", name).groups()
        assert (c.data.dataset, c.data.fold, c.model.sam2, c.data.shot) == (dataset, int(fold), size, int(shot))
        assert c.out == f"runs/{name}"


@pytest.mark.parametrize("fold", range(4))
def test_official_values(fold):
    p = cfg(f"pascal_fold{fold}_small_1shot")
    assert (p.data.dataset, p.data.fold, p.data.shot, p.data.image_size) == ("pascal", fold, 1, 512)
    assert list(p.data.train_scale) == [0.9, 1.1]
    assert (p.data.val_episodes, p.data.val_seed) == (1000, 321)
    assert (p.train.epochs, p.train.early_stop, p.train.mid_epoch_val_from) == (300, 100, 101)
    assert (p.train.batch_size, p.train.lr, p.train.weight_decay, p.train.power, p.train.warmup_steps) == (8, 1e-3, 0.0, 0.9, 0)
    assert (p.train.seed, p.train.precision, p.train.compile, p.train.max_steps) == (321, "auto", False, None)
    assert (p.model.sam2, p.model.sam2_checkpoint) == ("small", "pretrained/sam2_hiera_small.pt")
    assert (p.model.dino, p.model.dino_checkpoint) == ("vitb14", "pretrained/dinov2_vitb14_pretrain.pth")
    assert (p.model.num_refine, p.model.refine_version, p.model.kshot_calibration, p.model.dice_ignore) == (3, "v1", "mean", False)
    c = cfg(f"coco_fold{fold}_small_1shot")
    assert (c.data.dataset, c.data.fold, list(c.data.train_scale)) == ("coco", fold, [0.8, 1.25])
    assert (c.train.epochs, c.train.early_stop, c.train.mid_epoch_val_from) == (75, 25, 0)


@pytest.mark.parametrize("size", ["base_plus", "large"])
def test_sam2_sizes_differ_only_in_the_backbone(size):
    diff = config_diff(to_dict(cfg("pascal_fold2_small_1shot")), to_dict(cfg(f"pascal_fold2_{size}_1shot")))
    assert [d.split(":")[0] for d in diff] == ["model.sam2", "model.sam2_checkpoint", "out"]
    assert f"'pretrained/sam2_hiera_{size}.pt'" in diff[1]


def test_five_shot_differs_only_in_shot():
    diff = config_diff(to_dict(cfg("coco_fold3_small_1shot")), to_dict(cfg("coco_fold3_small_5shot")))
    assert [d.split(":")[0] for d in diff] == ["data.shot", "out"]


def test_toy_profile():
    t = cfg("toy")
    assert (t.data.dataset, t.data.image_size, t.model.sam2, t.model.dino, t.train.device) == ("toy", 128, "tiny-toy-64", "tiny-toy", "cpu")


def test_overrides_short_and_full_names():
    c = cfg("toy", "max_steps=20", "train.save_every=5", "fold=2", "model.calibrate=false", "out=elsewhere",
            "train_scale=[0.5,2.0]", "mid_epoch_val_from=null")
    assert (c.train.max_steps, c.train.save_every, c.data.fold, c.model.calibrate, c.out) == (20, 5, 2, False, "elsewhere")
    assert list(c.data.train_scale) == [0.5, 2.0] and c.train.mid_epoch_val_from is None
    assert config_from_dict(to_dict(c)) == c  # what checkpoints store reads back the same


@pytest.mark.parametrize("override, message", [
    ("max_step=3", r"unknown key 'max_step' \(did you mean 'max_steps'\?\)"),
    ("train.epoch=3", r"unknown key\(s\) 'train.epoch' \(did you mean 'train.epochs'\?\)"),
    ("data=3", r"'data' is a section"),
    ("lr", r"expected key=value"),
    ("fold=7", r"toy.yaml with --set fold=7: data.fold=7: expected 0..3"),
    ("fold=two", r"bad value for 'data.fold'"),
    ("precision=fp8", r"train.precision='fp8'"),
    ("image_size=100", r"data.image_size=100: expected a multiple of 16"),
    ("sam2=huge", r"model.sam2='huge': expected one of"),
    ("train_scale=[1.2,0.9]", r"data.train_scale"),
    ("save_every=0", r"train.save_every=0"),
])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        cfg("toy", override)


def test_bad_files_are_named(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "a.yaml").write_text("train:\n  epochs: 3\n  lr_decay: 0.1\n")
    (tmp_path / "run.yaml").write_text("defaults: [base/a.yaml]\ndata:\n  shot: 5\n")
    with pytest.raises(ValueError, match=r"a.yaml: unknown key\(s\) 'train.lr_decay'"):
        load_config(tmp_path / "run.yaml")
    (tmp_path / "base" / "a.yaml").write_text("defaults: [../run.yaml]\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "run.yaml")
    (tmp_path / "run.yaml").write_text("defaults: [base/missing.yaml]\n")
    with pytest.raises(FileNotFoundError, match=r"missing.yaml: config file not found \(named in .*run.yaml\)"):
        load_config(tmp_path / "run.yaml")
    (tmp_path / "run.yaml").write_text("model: [1, 2]\n")
    with pytest.raises(ValueError, match="'model' must be a mapping"):
        load_config(tmp_path / "run.yaml")
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        load_config(tmp_path / "nothing.yaml")


def test_defaults_merge_in_order(tmp_path):
    (tmp_path / "one.yaml").write_text("train:\n  epochs: 1\n  lr: 0.1\n")
    (tmp_path / "two.yaml").write_text("train:\n  epochs: 2\n")
    (tmp_path / "run.yaml").write_text("defaults: [one.yaml, two.yaml]\ntrain:\n  seed: 7\n")
    c = load_config(tmp_path / "run.yaml", ["lr=0.5"])
    assert (c.train.epochs, c.train.lr, c.train.seed) == (2, 0.5, 7)


def test_precision_policy(monkeypatch):
    assert autocast_dtype("cpu", "auto") is None
    assert autocast_dtype("cpu", "bf16") is torch.bfloat16
    assert autocast_dtype("cpu", "fp32") is None
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device"):
        autocast_dtype("cpu", "fp16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("cuda", "auto") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype("cuda:0", "auto") is torch.float16
    x = torch.ones(2, 2)
    with autocast("cpu", "bf16"):
        assert (x @ x).dtype is torch.bfloat16
    assert (x @ x).dtype is torch.float32  # nothing left open
    with autocast("cpu", "auto"):
        assert (x @ x).dtype is torch.float32


def test_short_names_name_the_packaged_configs(tmp_path, monkeypatch):
    from fss_sam2.config import find_config, packaged_config_names, packaged_configs
    from fss_sam2.tutorial.runs import CONFIGS as RUNS_CONFIGS

    assert Path(RUNS_CONFIGS) == Path(packaged_configs()) == CONFIGS.resolve()  # configs/ -> fss_sam2/configs
    assert set(packaged_config_names()) == EXPECTED
    (tmp_path / "base").mkdir()  # a cwd with a base/ of its own: packaged defaults stay packaged
    (tmp_path / "base" / "pascal.yaml").write_text("data:\n  fold: 3\n")
    monkeypatch.chdir(tmp_path)
    for name in ("pascal_fold0_small_1shot", "pascal_fold0_small_1shot.yaml"):
        assert Path(find_config(name)) == CONFIGS.resolve() / "pascal_fold0_small_1shot.yaml"
        assert load_config(name) == cfg("pascal_fold0_small_1shot")
    assert to_dict(load_config("toy", ["max_steps=3"])) == to_dict(cfg("toy", "max_steps=3"))
    assert load_config(RUNS_CONFIGS / "toy.yaml") == cfg("toy")  # what notebook 06 does
    with pytest.raises(ValueError, match=r"configs/toy.yaml with --set fold=7: data.fold=7"):
        load_config("toy", ["fold=7"])  # errors name the packaged file


def test_unknown_short_name_is_named_with_suggestions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^pascal_fold0_smal_1shot: config file not found: neither a file "
                                                r"nor a packaged config; did you mean 'pascal_fold0_small_1shot'"):
        load_config("pascal_fold0_smal_1shot")
    with pytest.raises(FileNotFoundError, match=r"^toyy: config file not found.*did you mean 'toy'\?.*"
                                                r"packaged configs, usable by name: toy, "):
        load_config("toyy")
    # a path with a folder is a file path only; outside the checkout configs/toy.yaml is not there
    with pytest.raises(FileNotFoundError, match=r"^configs/toy.yaml: config file not found: no such file .*"
                                                r"the packaged config of that name is `--config toy`"):
        load_config("configs/toy.yaml")
    with pytest.raises(FileNotFoundError, match=r"^base/pascal: config file not found"):
        load_config("base/pascal")


def test_an_existing_path_wins_over_a_short_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy").write_text("data:\n  dataset: toy\n  image_size: 64\n")
    (tmp_path / "toy.yaml").write_text("data:\n  dataset: toy\n  image_size: 32\n")
    assert load_config("toy").data.image_size == 64  # the file `toy` here
    assert load_config("toy.yaml").data.image_size == 32
    assert load_config(Path("toy.yaml")).data.image_size == 32
    (tmp_path / "toy").unlink()
    (tmp_path / "toy").mkdir()  # a folder is not a config: the packaged toy.yaml
    assert load_config("toy") == cfg("toy")


def test_configs_load_from_any_traversable(tmp_path):
    """A zipped package's resources are zipfile.Path objects: `defaults` resolve inside the zip."""
    import zipfile

    archive = tmp_path / "configs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in CONFIGS.rglob("*.yaml"):
            z.write(p, f"configs/{p.relative_to(CONFIGS).as_posix()}")
    folder = zipfile.Path(archive, "configs/")
    assert load_config(folder / "coco_fold2_small_5shot.yaml") == cfg("coco_fold2_small_5shot")
    with pytest.raises(FileNotFoundError, match="nothing.yaml: config file not found"):
        load_config(folder / "nothing.yaml")
