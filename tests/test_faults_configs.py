"""Configs read nothing from outside: `defaults` stay in the config's folder (or name packaged
configs), and no value is copied from the environment into what runs save."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from fss_sam2.cli import main
from fss_sam2.config import config_from_dict, load_config, packaged_configs, to_dict

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-value-of-the-environment"


def test_defaults_outside_the_configs_folder_are_refused_unread(tmp_path):
    config = tmp_path / "configs" / "run.yaml"
    config.parent.mkdir()
    outside = tmp_path / "outside.yaml"
    outside.write_text(f"out: {SECRET}\n")
    for entry in ("/etc/passwd", str(outside), "../outside.yaml", "base/../../outside.yaml"):
        config.write_text(f"defaults: [{entry}]\n")
        with pytest.raises(ValueError, match=rf"^{config}: `defaults` entry '{entry}' names a file outside "
                                             rf"{config.parent}; defaults must be files in the config's folder") as e:
            load_config(config)
        assert "root:" not in str(e.value) and SECRET not in str(e.value)  # nothing of the file echoed
    (config.parent / "link.yaml").symlink_to(outside)  # a link inside that leads out is outside too
    config.write_text("defaults: [link.yaml]\n")
    with pytest.raises(ValueError, match="names a file outside"):
        load_config(config)
    config.write_text("defaults: [../outside.yaml]\n")
    assert load_config(config, defaults_anywhere=True).out == SECRET  # the explicit opt-in


def test_defaults_inside_and_packaged_configs_are_allowed(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "a.yaml").write_text("defaults: [../b.yaml]\ntrain:\n  epochs: 3\n")  # up, still inside
    (tmp_path / "b.yaml").write_text("train:\n  lr: 0.5\n")
    toy = Path(packaged_configs()) / "toy.yaml"
    (tmp_path / "run.yaml").write_text(f"defaults: [{toy}, base/a.yaml]\n")
    cfg = load_config(tmp_path / "run.yaml")
    assert (cfg.train.epochs, cfg.train.lr, cfg.data.dataset) == (3, 0.5, "toy")


def test_defaults_of_a_zipped_config_stay_in_the_package(tmp_path):
    archive = tmp_path / "configs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkg/configs/run.yaml", "defaults: [../../secret.yaml]\n")
        z.writestr("secret.yaml", f"out: {SECRET}\n")
    with pytest.raises(ValueError, match=r"`defaults` entry '../../secret.yaml' names a file outside"):
        load_config(zipfile.Path(archive, "pkg/configs/") / "run.yaml")


def test_environment_interpolation_is_refused_in_files_overrides_and_stored_configs(tmp_path, monkeypatch):
    monkeypatch.setenv("FSS_SECRET", SECRET)
    config = tmp_path / "run.yaml"
    config.write_text("defaults: [base.yaml]\n")
    (tmp_path / "base.yaml").write_text("data:\n  root: ${oc.env:FSS_SECRET}\n")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'base.yaml'}: 'data.root' reads an environment variable "
                                         r"\(\$\{oc.env:...\}\), which is not allowed"):
        load_config(config)
    (tmp_path / "base.yaml").write_text("data:\n  train_scale: [0.9, '${oc.env:FSS_SECRET,1.1}']\n")
    with pytest.raises(ValueError, match=r"'data.train_scale.1' reads an environment variable"):
        load_config(config)
    with pytest.raises(ValueError, match=r"^override 'out=runs/\$\{oc.env:FSS_SECRET\}': 'out' reads an environment"):
        load_config("toy", ["out=runs/${oc.env:FSS_SECRET}"])
    stored = {**to_dict(load_config("toy")), "out": "${oc.env:FSS_SECRET}"}
    with pytest.raises(ValueError, match=r"^last.pt: 'out' reads an environment variable"):
        config_from_dict(stored, where="last.pt")
    assert os.environ["FSS_SECRET"] == SECRET


def test_the_cli_names_the_config_and_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FSS_SECRET", SECRET)
    config = tmp_path / "run.yaml"
    config.write_text("defaults: [/etc/passwd]\n")
    argv = ["evaluate", "--config", str(config), "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fss-sam2: error: {config}: `defaults` entry '/etc/passwd' names a file outside")
    assert "root:" not in err and len(err.strip().splitlines()) == 1
    config.write_text("out: ${oc.env:FSS_SECRET}\n")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: 'out' reads an environment variable" in err and SECRET not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]  # nothing written
