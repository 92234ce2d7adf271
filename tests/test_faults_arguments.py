"""Bad command-line arguments stop at parsing (exit 2, the argument named, nothing read or
written); output paths of the wrong kind are refused up front; --debug shows tracebacks."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fss_sam2.baseline import ColourPrototypeBaseline
from fss_sam2.cli import arguments, build_parser, main
from fss_sam2.data.folds import NUM_FOLDS
from fss_sam2.engine.predict import predict_files
from tests.fixtures_data import TOY_CONFIG, write_tiny_toy_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_tiny_toy_root(tmp_path_factory.mktemp("tiny"))


def refused(argv: list[str], capsys) -> str:
    """Run `fss-sam2 ARGV`, expect argparse's refusal (exit 2); -> stderr."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return captured.err


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _commands(root: Path, out: Path) -> dict[str, list[str]]:
    data = ["--dataset", "toy", "--root", str(root)]
    return {
        "episodes": ["episodes", *data, "--fold", "0", "--out", str(out / "e.csv")],
        "baseline": ["baseline", *data, "--out", str(out / "b")],
        "evaluate": ["evaluate", "--config", TOY_CONFIG, "--checkpoint", str(out / "last.pt"), "--out", str(out / "v")],
        "predict": ["predict", "--checkpoint", str(out / "last.pt"), "--support", "a.png", "m.png", "--query", "q.png",
                    "--out", str(out / "p")],
        "toy": ["data", "toy", "--out", str(out / "w")],
        "download": ["download", "--list"],
    }


BAD = [  # (command, argument, value, what the message says)
    ("baseline", "--size", "0", "expected an integer >= 1"),
    ("baseline", "--episodes", "0", "expected an integer >= 1"),
    ("baseline", "--shot", "-1", "expected an integer >= 1"),
    ("baseline", "--folds", "4", "expected a fold 0..3"),
    ("baseline", "--seed", "-5", "expected a seed >= 0"),
    ("predict", "--batch", "0", "expected an integer >= 1"),
    ("predict", "--batch", "-2", "expected an integer >= 1"),
    ("predict", "--threshold", "1.5", "expected a probability in (0, 1)"),
    ("episodes", "--episodes", "0", "expected an integer >= 1"),
    ("episodes", "--shot", "0", "expected an integer >= 1"),
    ("episodes", "--fold", "5", "expected a fold 0..3"),
    ("episodes", "--workers", "-1", "expected a number of processes >= 0"),
    ("episodes", "--stream-workers", "-1", "expected a number of processes >= 0"),
    ("episodes", "--seed", "x", "'x' is not an integer"),
    ("evaluate", "--episodes", "0", "expected an integer >= 1"),
    ("evaluate", "--batch", "0", "expected an integer >= 1"),
    ("evaluate", "--workers", "-1", "expected a number of processes >= 0"),
    ("evaluate", "--overlays", "-1", "expected an integer >= 0"),
    ("evaluate", "--cache-gib", "-1", "expected a number >= 0"),
    ("evaluate", "--cache-gib", "nan", "expected a finite number"),
    ("evaluate", "--seeds", "-3", "expected a seed >= 0"),
    ("toy", "--images", "0", "expected an integer >= 80"),
    ("toy", "--size", "0", "expected an integer >= 32"),
    ("toy", "--clips", "-1", "expected an integer >= 0"),
    ("toy", "--clip-frames", "1", "expected an integer >= 2"),
    ("download", "--retries", "-1", "expected an integer >= 0"),
    ("download", "--timeout", "0", "expected a number > 0"),
]


@pytest.mark.parametrize("command, argument, value, message", BAD, ids=[f"{c} {a} {v}" for c, a, v, _ in BAD])
def test_out_of_range_numbers_stop_at_parsing(root, tmp_path, capsys, command, argument, value, message):
    argv = _commands(root, tmp_path)[command]
    err = refused([*argv, argument, value], capsys)
    assert f"argument {argument}: " in err and message in err
    assert list(tmp_path.iterdir()) == []  # nothing was written


def _actions(parser: argparse.ArgumentParser, name: str = "fss-sam2"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _actions(sub, f"{name} {sub_name}")
        else:
            yield name, action


def test_every_number_argument_of_every_command_is_range_checked():
    """The class rule: no parser takes a bare int or float (whose range nothing checks)."""
    bare = [f"{name} {a.option_strings}" for name, a in _actions(build_parser()) if a.type in (int, float)]
    assert bare == []
    assert arguments.fold("3") == NUM_FOLDS - 1


def with_out(argv: list[str], out: Path) -> list[str]:
    """`argv` with its --out (if any) replaced by `out`."""
    if "--out" in argv:
        i = argv.index("--out")
        argv = argv[:i] + argv[i + 2:]
    return [*argv, "--out", str(out)]


@pytest.mark.parametrize("command", ["baseline", "evaluate", "predict", "toy", "train"])
def test_an_output_folder_that_is_a_file_is_refused(root, tmp_path, capsys, command):
    argv = _commands(root, tmp_path).get(command, ["train", "--config", TOY_CONFIG])
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    err = refused(with_out(argv, target), capsys)
    assert f"argument --out: {target}: is a file, expected a folder to write into" in err
    below = target / "run"
    err = refused(with_out(argv, below), capsys)
    assert f"argument --out: {below}: cannot be created, {target} is a file" in err
    assert snapshot(tmp_path) == {"notes.txt": b"keep me\n"}


def test_episodes_out_naming_a_folder_is_refused(root, tmp_path, capsys):
    folder = tmp_path / "episodes"
    folder.mkdir()
    (folder / "old.csv").write_text("query,class,supports\n")
    err = refused(["episodes", "--dataset", "toy", "--root", str(root), "--fold", "0", "--out", str(folder)], capsys)
    assert f"argument --out: {folder}: is a folder, expected the name of the file to write" in err
    assert snapshot(folder) == {"old.csv": b"query,class,supports\n"}


def test_train_out_from_the_config_naming_a_file_is_refused_before_the_model_is_built(root, tmp_path, capsys,
                                                                                      monkeypatch):
    target = tmp_path / "run.txt"
    target.write_text("keep me\n")
    monkeypatch.setattr("fss_sam2.loading.build_model", lambda *a, **k: pytest.fail("model built"))
    code = main(["train", "--config", TOY_CONFIG, "--set", f"root={root}", f"out={target}", "device=cpu", "--quiet"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert f"{target}: is a file, expected the run folder (the config's `out`" in captured.err
    assert target.read_text() == "keep me\n"


def test_predict_files_returns_only_the_files_it_wrote(root, tmp_path):
    support = np.asarray(Image.open(root / "JPEGImages" / "img_002.png").convert("RGB"))
    mask = np.asarray(Image.open(root / "SegmentationClassAug" / "img_002.png")) == 3
    queries = []
    for i in (10, 18, 26):
        queries.append(tmp_path / f"q{i}.png")
        shutil.copy(root / "JPEGImages" / f"img_{i:03d}.png", queries[-1])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"batch_size=-2: expected an integer >= 1"):
        predict_files(ColourPrototypeBaseline(), [(support, mask)], queries, out, size=64, batch_size=-2)
    assert not out.exists()
    written = predict_files(ColourPrototypeBaseline(), [(support, mask)], queries, out, size=64, batch_size=2)
    assert written == [out / "q10.png", out / "q18.png", out / "q26.png"] and all(p.is_file() for p in written)


def test_debug_shows_the_traceback_and_only_then(tmp_path, capsys):
    argv = ["episodes", "--dataset", "toy", "--root", str(tmp_path / "nowhere"), "--fold", "0",
            "--out", str(tmp_path / "e.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fss-sam2: error: ") and "fss_meta.json" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(FileNotFoundError, match="fss_meta.json"):
        main(["--debug", *argv])


def test_os_errors_are_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    """An operating-system error (here: permission denied) is a message naming the file, no traceback."""
    def denied(path, episodes):
        raise PermissionError(13, "Permission denied", "/mnt/episodes")

    monkeypatch.setattr("fss_sam2.data.episodes.write_episodes_csv", denied)
    root = write_tiny_toy_root(tmp_path / "root", images=32)
    out = tmp_path / "e.csv"
    assert main(["episodes", "--dataset", "toy", "--root", str(root), "--fold", "0", "--episodes", "2",
                 "--out", str(out)]) == 2
    assert capsys.readouterr().err == "fss-sam2: error: /mnt/episodes: Permission denied\n"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["root"]
