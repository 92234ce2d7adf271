"""One writer per run folder (out/.lock), nothing of an earlier run overwritten, logs appended on
resume, and episode files checked against the dataset they name."""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fss_sam2.cli import main
from fss_sam2.data.episodes import Episode, make_episodes, read_episodes_csv, write_episodes_csv
from fss_sam2.data.sources import ListSource
from fss_sam2.engine.checkpoint import load_checkpoint
from fss_sam2.engine.runtime import FolderBusy, FolderLock, _process_start
from tests.fixtures_data import TOY_CONFIG, write_tiny_toy_root
from tests.tiny_model import TinyFewShot

REPO = Path(__file__).resolve().parents[1]
SMALL = ["image_size=32", "batch_size=4", "workers=0", "val_episodes=4", "val_batch=4", "log_every=1", "device=cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_tiny_toy_root(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny(monkeypatch):
    """`fss-sam2 train` builds the tiny stand-in model (fast)."""
    monkeypatch.setattr("fss_sam2.loading.build_model", lambda model_cfg, image_size, device="cpu": TinyFewShot())


def train_args(root: Path, out: Path, *more: str) -> list[str]:
    return ["train", "--config", TOY_CONFIG, "--set", f"root={root}", *SMALL, "max_steps=2", *more,
            "--out", str(out), "--quiet"]


def write_lock(folder: Path, pid: int, host: str | None = None) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host or socket.gethostname(), "start": _process_start(pid),
              "time": "2024-01-01 00:00:00", "what": "fss-sam2 train", "token": "other"}
    (folder / ".lock").write_text(json.dumps(record) + "\n")
    return (folder / ".lock").read_bytes()


def test_a_live_lock_refuses_a_second_writer(root, tmp_path, capsys, tiny):
    out = tmp_path / "run"
    other = subprocess.Popen(["sleep", "60"])
    try:
        lock = write_lock(out, other.pid)
        assert main(train_args(root, out)) == 3
        err = capsys.readouterr().err
        assert f"{out}: fss-sam2 train (pid {other.pid} on {socket.gethostname()}" in err
        assert "is writing into this folder" in err
        assert sorted(p.name for p in out.iterdir()) == [".lock"] and (out / ".lock").read_bytes() == lock
    finally:
        other.kill()
        other.wait()


def test_a_lock_of_another_host_is_refused_and_named(tmp_path):
    lock = write_lock(tmp_path, 1, host="elsewhere.example")
    with pytest.raises(FolderBusy, match=rf"pid 1 on elsewhere.example.*delete {tmp_path / '.lock'}"):
        FolderLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_bytes() == lock


def test_a_stale_lock_is_taken_over_with_a_warning(root, tmp_path, capsys, tiny):
    out = tmp_path / "run"
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid runs nothing now
    write_lock(out, gone.pid)
    with pytest.warns(UserWarning, match=rf"{out / '.lock'}: stale lock of pid {gone.pid} .*no longer runs"):
        assert main(train_args(root, out)) == 0
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == 2
    assert not (out / ".lock").exists()  # released at the end


def test_the_lock_is_released_on_every_exit(root, tmp_path, capsys, tiny):
    out = tmp_path / "run"
    assert main(train_args(root, out)) == 0
    assert not (out / ".lock").exists()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(train_args(root, out)) == 3  # refused: already holds a run
    assert "already holds a run (last.pt); continue it with --resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no lock left, nothing changed
    with FolderLock(tmp_path / "fresh") as lock:  # a folder the lock made, left empty: removed again
        assert lock.path.is_file()
    assert not (tmp_path / "fresh").exists()


class Slow(TinyFewShot):
    def forward(self, *args, **kwargs):
        time.sleep(0.25)
        return super().forward(*args, **kwargs)


def _train_in_child(argv: list[str], err: str) -> None:
    import fss_sam2.loading as loading

    loading.build_model = lambda model_cfg, image_size, device="cpu": Slow()
    sys.stderr = open(err, "w")
    try:
        code = main(argv)
    finally:
        sys.stderr.flush()
    os._exit(code)


def test_two_trainings_started_a_second_apart_into_one_folder(root, tmp_path):
    """The issue's race: before, both exited 0 and one run's work was lost. Now the second, started
    while the first holds the folder, is refused naming the folder and the first's pid."""
    out = tmp_path / "run"
    ctx = multiprocessing.get_context("fork")  # two processes, without paying two imports
    argv = train_args(root, out, "max_steps=8")
    first = ctx.Process(target=_train_in_child, args=(argv, str(tmp_path / "err0")))
    second = ctx.Process(target=_train_in_child, args=(argv, str(tmp_path / "err1")))
    first.start()
    deadline = time.monotonic() + 60
    while not (out / ".lock").exists() and time.monotonic() < deadline:  # the first has taken the folder
        time.sleep(0.05)
    second.start()
    for p in (first, second):
        p.join(timeout=120)
    assert (first.exitcode, second.exitcode) == (0, 3), [(tmp_path / f"err{i}").read_text() for i in (0, 1)]
    err = (tmp_path / "err1").read_text()
    assert f"fss-sam2 train: error: {out}: fss-sam2 train (pid {first.pid} on {socket.gethostname()}" in err
    assert "is writing into this folder" in err and "Traceback" not in err
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == 8
    assert not (out / ".lock").exists()


def read_log(out: Path) -> list[dict]:
    with (out / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_fresh_run_never_overwrites_an_earlier_runs_files(root, tmp_path, capsys, tiny):
    out = tmp_path / "run"
    out.mkdir()
    log = "step,epoch,loss,lr,seconds,val_miou,val_fb_iou\n1,0.25,0.9,1e-3,1.0,,\n"
    (out / "log.csv").write_text(log)  # a run that died before its first checkpoint
    (out / "best.pt").write_bytes(b"a model")
    assert main(train_args(root, out)) == 3
    err = capsys.readouterr().err
    assert f"{out}: holds files of an earlier run (best.pt, log.csv) but no last.pt to resume from" in err
    assert (out / "log.csv").read_text() == log and (out / "best.pt").read_bytes() == b"a model"
    (out / "best.pt").unlink()
    (out / "log.csv").write_text(log.splitlines()[0] + "\n")  # a header only holds nothing: trained over
    assert main(train_args(root, out)) == 0


def test_resume_appends_to_the_log(root, tmp_path, capsys, tiny):
    out = tmp_path / "run"
    assert main(train_args(root, out)) == 0
    before = (out / "log.csv").read_bytes()
    assert main(["train", "--resume", str(out), "--set", "max_steps=3", "--quiet"]) == 0
    after = (out / "log.csv").read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    assert [r["step"] for r in read_log(out)] == ["1", "2", "3"]


# -- episode files ------------------------------------------------------------------------------


def test_an_episode_whose_query_lacks_its_class_is_refused(root, tmp_path):
    source = ListSource(root)
    episodes = make_episodes(source, 0, 1, episodes=6, seed=3)
    path = tmp_path / "episodes.csv"
    write_episodes_csv(path, episodes)
    assert read_episodes_csv(path, source) == episodes  # a good file passes the checks
    classes = source.novel(0)
    ep = episodes[2]
    label = source.load_label(next(it for it in source.fold_list("val", 0).items if it.id == ep.query))
    absent = next(c for c in classes if not (label == c).any())
    bad = [*episodes[:2], Episode(ep.query, absent, ep.supports), *episodes[3:]]
    write_episodes_csv(path, bad)
    before = path.read_bytes()
    assert read_episodes_csv(path) == bad  # without a source: the file's syntax only
    with pytest.raises(ValueError, match=rf"^{path}:4: query '{ep.query}' holds no pixel of class {absent} "
                                         r".*the episode would score 0"):
        read_episodes_csv(path, source)
    assert path.read_bytes() == before
    write_episodes_csv(path, [*episodes[:1], Episode(ep.query, 99, ep.supports)])
    with pytest.raises(ValueError, match=rf"^{path}:3: class 99 is not a val class of any fold"):
        read_episodes_csv(path, source)
    write_episodes_csv(path, [Episode("nowhere", ep.cls, ep.supports)])
    with pytest.raises(ValueError, match=rf"^{path}:2: image 'nowhere' is not in .*lists/val \(fold 0\)"):
        read_episodes_csv(path, source)
    other = next(c for c in classes if c != ep.cls)
    stranger = source.fold_list("val", 0).by_class[other][0].id
    if stranger not in {it.id for it in source.fold_list("val", 0).by_class[ep.cls]}:
        write_episodes_csv(path, [Episode(ep.query, ep.cls, (stranger,))])
        with pytest.raises(ValueError, match=rf"^{path}:2: support '{stranger}' is not listed for class {ep.cls}"):
            read_episodes_csv(path, source)


def test_resume_from_a_checkpoint_without_training_state_or_a_damaged_log(root, tmp_path, capsys, tiny):
    out = tmp_path / "run"
    assert main(train_args(root, out)) == 0
    log = (out / "log.csv").read_bytes()
    (out / "log.csv").write_text("step,loss\nseven,0.5\n")
    assert main(["train", "--resume", str(out), "--set", "max_steps=3", "--quiet"]) == 2
    assert f"{out / 'log.csv'}:2: step 'seven' is not an integer" in capsys.readouterr().err
    (out / "log.csv").write_bytes(log)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    torch.save({**ckpt, "optimizer": None, "rng": None}, out / "last.pt")  # what best.pt holds
    before = (out / "last.pt").read_bytes()
    assert main(["train", "--resume", str(out), "--set", "max_steps=3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'last.pt'}: cannot resume a run: the checkpoint has no optimizer, rng" in err
    assert (out / "last.pt").read_bytes() == before and (out / "log.csv").read_bytes() == log
