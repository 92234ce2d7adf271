"""The `fss-sam2` command line on a tiny dataset root: episodes, check, baseline, errors."""
import json

import pytest
from PIL import Image

from fss_sam2.cli import main
from fss_sam2.constants import SYNTHETIC
from tests.fixtures_data import write_tiny_toy_root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_toy_root(tmp_path_factory.mktemp("tiny"))


def test_episodes_csv_identical_with_0_and_2_workers(root, tmp_path):
    files = []
    for workers in (0, 2):
        out = tmp_path / f"ep{workers}.csv"
        args = ["episodes", "--dataset", "toy", "--root", str(root), "--fold", "1", "--shot", "2",
                "--episodes", "40", "--seed", "7", "--workers", str(workers), "--out", str(out)]
        assert main(args) == 0
        files.append(out.read_bytes())
    assert files[0] == files[1]
    lines = files[0].decode().splitlines()
    assert lines[0] == "query,class,supports" and len(lines) == 41
    assert all(len(line.split(",")[2].split(";")) == 2 for line in lines[1:])


def test_data_check_names_the_broken_file(root, tmp_path, capsys):
    assert main(["data", "check", "--dataset", "toy", "--root", str(root)]) == 0
    assert "no problems" in capsys.readouterr().out
    label = next((root / "SegmentationClassAug").glob("*.png"))
    Image.open(label).convert("L").point(lambda v: 77 if v else 0).save(label)  # class 77 does not exist
    try:
        assert main(["data", "check", "--dataset", "toy", "--root", str(root)]) == 1
        assert label.name in capsys.readouterr().out
    finally:
        write_tiny_toy_root(root)  # restore for other tests


def test_baseline_writes_results_labelled_synthetic(root, tmp_path, capsys):
    out = tmp_path / "baseline"
    assert main(["baseline", "--dataset", "toy", "--root", str(root), "--folds", "0", "--episodes", "20",
                 "--size", "64", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert SYNTHETIC in printed and "mIoU" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["synthetic"] is True and 0.0 <= results["miou"] <= 1.0
    assert (out / "episodes_fold0.csv").read_text().startswith("query,class,supports")


def test_data_toy_prints_a_summary_line_and_with_quiet_nothing_else(tmp_path, capsys):
    args = ["data", "toy", "--images", "80", "--clips", "0", "--size", "48"]
    assert main([*args, "--out", str(tmp_path / "a"), "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.out.startswith("synthetic world (toy) written to") and quiet.out.count("\n") == 1
    assert "60 train and 20 val images, 0 clips" in quiet.out and quiet.err == ""
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["images"] == 80


def test_missing_root_is_a_clear_error(tmp_path, capsys):
    code = main(["episodes", "--dataset", "toy", "--root", str(tmp_path / "nowhere"), "--fold", "0",
                 "--out", str(tmp_path / "e.csv")])
    assert code == 2
    assert "fss_meta.json" in capsys.readouterr().err
