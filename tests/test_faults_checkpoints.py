"""Saved files under faults: a full disk gives one clear error and keeps the previous file;
feature-cache entries altered on disk are detected, recomputed and rewritten."""
from __future__ import annotations

import errno
import multiprocessing
import os
import resource
import signal
import sys
from pathlib import Path

import pytest
import torch

import fss_sam2
from fss_sam2.cli import main
from fss_sam2.engine import runtime
from fss_sam2.engine.cache import FeatureCache, _check_record
from fss_sam2.engine.checkpoint import atomic_save, load_checkpoint
from fss_sam2.engine.runtime import NoSpaceLeft, atomic_write_text
from tests.fixtures_data import TOY_CONFIG, write_tiny_toy_root
from tests.tiny_model import TinyFewShot

SMALL = ["image_size=32", "batch_size=4", "workers=0", "val_episodes=4", "val_batch=4", "log_every=1", "device=cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_tiny_toy_root(tmp_path_factory.mktemp("tiny"))


def _resume_with_a_file_size_limit(out: str, limit: int, err: str) -> None:
    """A forked child: `fss-sam2 train --resume OUT` where no file may grow past `limit` bytes
    (RLIMIT_FSIZE; writes then fail with EFBIG, as on a full disk with ENOSPC)."""
    import fss_sam2.loading as loading

    loading.build_model = lambda model_cfg, image_size, device="cpu": TinyFewShot()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.stderr = open(err, "w")
    code = main(["train", "--resume", out, "--set", "max_steps=3", "--quiet"])
    sys.stderr.flush()
    os._exit(code)


def test_a_full_disk_while_saving_a_checkpoint_is_one_clear_error(root, tmp_path, monkeypatch):
    monkeypatch.setattr("fss_sam2.loading.build_model", lambda model_cfg, image_size, device="cpu": TinyFewShot())
    out = tmp_path / "run"
    assert main(["train", "--config", TOY_CONFIG, "--set", f"root={root}", *SMALL, "max_steps=2",
                 "--out", str(out), "--quiet"]) == 0
    last = out / "last.pt"
    before = last.read_bytes()
    assert len(before) > 4096
    child = multiprocessing.get_context("fork").Process(
        target=_resume_with_a_file_size_limit, args=(str(out), len(before) // 2, str(tmp_path / "err")))
    child.start()
    child.join(timeout=120)
    err = (tmp_path / "err").read_text()
    assert child.exitcode == 2, err
    assert err == f"fss-sam2: error: {last}: no space left to write it (File too large); the previous file is unchanged\n"
    assert last.read_bytes() == before and load_checkpoint(last)["progress"]["step"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "log.csv", "summary.json", "val_episodes.csv"]


class FullDisk:
    """`open` for runtime.atomic_write whose files refuse writes (ENOSPC) for names containing `name`."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, file, mode="r", *args, **kwargs):
        f = open(file, mode, *args, **kwargs)
        if self.name not in str(file):
            return f

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def __getattr__(self, attr):
                return getattr(f, attr)

        return Full()


def test_a_full_disk_while_saving_results_is_one_clear_error(root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "baseline"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": true}\n')
    monkeypatch.setattr(runtime, "open", FullDisk("results.json"), raising=False)
    assert main(["baseline", "--dataset", "toy", "--root", str(root), "--folds", "0", "--episodes", "4",
                 "--size", "32", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (f"fss-sam2: error: {out / 'results.json'}: no space left to write it "
                   f"({os.strerror(errno.ENOSPC)}); the previous file is unchanged\n")
    assert (out / "results.json").read_text() == '{"earlier": true}\n'
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_while_writing_episodes_keeps_the_earlier_file(root, tmp_path, capsys, monkeypatch):
    from fss_sam2.data import episodes as episodes_module

    out = tmp_path / "episodes.csv"
    out.write_text("query,class,supports\nearlier,1,a\n")
    real = episodes_module.write_episodes_csv

    def full(path, episodes):
        real(path, episodes[:1])  # part of the file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(episodes_module, "write_episodes_csv", full)
    assert main(["episodes", "--dataset", "toy", "--root", str(root), "--fold", "0", "--episodes", "3",
                 "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"fss-sam2: error: {out}: no space left to write it "
                                       f"({os.strerror(errno.ENOSPC)}); the previous file is unchanged\n")
    assert out.read_text() == "query,class,supports\nearlier,1,a\n" and sorted(tmp_path.iterdir()) == [out]


def test_no_space_left_names_the_file_through_torch_save(tmp_path, monkeypatch):
    """torch.save turns a failed write into a RuntimeError raised while handling the OSError:
    still one NoSpaceLeft naming the file; a new file is not left half-written."""
    monkeypatch.setattr(runtime, "open", FullDisk("ckpt.pt"), raising=False)
    with pytest.raises(NoSpaceLeft, match=rf"^{tmp_path / 'ckpt.pt'}: no space left .*; nothing was written$") as e:
        atomic_save({"x": torch.zeros(1000)}, tmp_path / "ckpt.pt")
    assert e.value.errno == errno.ENOSPC and e.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(tmp_path / "other.json", "{}\n")  # other files are written as before
    assert (tmp_path / "other.json").read_text() == "{}\n"


# -- the disk feature cache -------------------------------------------------------------------


def test_a_cache_entry_altered_on_disk_is_a_miss_with_a_warning_and_rewritten(tmp_path):
    torch.manual_seed(0)
    model = fss_sam2.load_model(sam2="tiny-toy", dino="tiny-toy", image_size=64)
    g = torch.Generator().manual_seed(0)
    query, supports = torch.rand(1, 3, 64, 64, generator=g) * 255, torch.rand(1, 1, 3, 64, 64, generator=g) * 255
    with torch.inference_mode():
        expected = FeatureCache(disk=tmp_path).features(model, query, supports)
    files = sorted(tmp_path.rglob("*.pt"))
    assert len(files) == 4 and all(_check_record(torch.load(f, weights_only=True)) is None for f in files)
    altered = next(f for f in files if "tokens" in torch.load(f, weights_only=True)["tensors"])
    record = torch.load(altered, weights_only=True)
    record["tensors"]["tokens"] = record["tensors"]["tokens"] + 1.0  # same shape and dtype, other values
    torch.save(record, altered)
    fresh = FeatureCache(max_bytes=0, disk=tmp_path)
    with pytest.warns(UserWarning, match=rf"{altered}: cache entry does not match its checksum \(altered on disk\); "
                                         r"recomputing it"):
        with torch.inference_mode():
            got = fresh.features(model, query, supports)
    torch.testing.assert_close(got.tokens, expected.tokens)  # recomputed, not the altered values
    torch.testing.assert_close(got.sam.pix, expected.sam.pix)
    assert fresh.stats()["misses"] == 1 and fresh.stats()["disk_hits"] == 3
    assert _check_record(torch.load(altered, weights_only=True)) is None  # rewritten whole
