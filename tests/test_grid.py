"""The evaluation grid (`fss_sam2.tutorial.grid`) on the CI world: runs, results.json keys, the
ablation file, reuse, the plan of `fss-sam2 reproduce [--full]`, and arguments refused by name."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fss_sam2 import stats
from fss_sam2.cli import build_parser
from fss_sam2.constants import SYNTHETIC
from fss_sam2.tutorial import grid, tables
from fss_sam2.tutorial import reproduce as rp

EPISODES = 4
SUFFIXES = ("", "_no_imr", "_no_scma", "_no_imr_scma", "_imr1", "_imr5", "_priors_only")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The smoke grid of fold 0, 1-shot, training seeds 321 and 1 (2 training steps a run)."""
    base = tmp_path_factory.mktemp("grid")
    dirs = {"data_root": base / "toy", "runs_dir": base / "runs", "results_dir": base / "results"}
    table = grid.run_grid("toy", **dirs, training_seeds=(321, 1), episodes=EPISODES, smoke=True,
                          cache_dir=base / "cache", progress=False)
    return {**dirs, "table": table}


def _result(ran, name: str) -> dict:
    return json.loads((ran["results_dir"] / name / "results.json").read_text())


def test_grid_names_runs_and_results(ran, capsys):
    names = [f"toy_fssam{s}" for s in SUFFIXES] + ["toy_naive"]
    names += [f"toy_fssam_seed1{s}" for s in SUFFIXES] + ["toy_naive_seed1"]
    assert list(ran["table"]["name"]) == names
    assert sorted(p.name for p in ran["runs_dir"].iterdir()) == ["toy_fssam", "toy_fssam_seed1", "toy_naive",
                                                                 "toy_naive_seed1"]
    assert list(ran["table"]["method"][:8]) == ["FSSAM", "FSSAM w/o IMR", "FSSAM w/o SCMA", "FSSAM w/o IMR, SCMA",
                                                "IMR rounds = 1", "IMR rounds = 5", "priors only",
                                                "SAM 2 (support as memory)"]
    assert not ran["table"]["reused"].any()


def test_results_json_records_method_switches_and_interval(ran):
    r = _result(ran, "toy_fssam_no_imr")
    assert (r["method"], r["fold"], r["shot"], r["num_refine"], r["calibrate"]) == ("FSSAM w/o IMR", 0, 1, 0, True)
    assert (r["trained_shot"], r["training_seed"], r["ci95_seed"], r["episodes"]) == (1, 321, 321, EPISODES)
    low, high = r["miou_ci95"]
    assert 0 <= low <= high <= 1 and len(r["fb_iou_ci95"]) == 2
    assert _result(ran, "toy_fssam_seed1")["training_seed"] == 1
    naive = _result(ran, "toy_naive")
    assert (naive["method"], naive["query_memory"]) == ("SAM 2 (support as memory)", False)
    # the per-episode counts give the protocol's mIoU again, exactly
    scores = stats.load_episode_scores(ran["results_dir"] / "toy_fssam_no_imr")
    assert len(scores) == EPISODES
    assert stats.weighted_scores(scores, np.ones((1, EPISODES)))["miou"][0] == r["miou"]
    assert stats.bootstrap_ci95(scores)["miou"] == r["miou_ci95"]


def test_the_ablation_file(ran):
    data = json.loads((ran["results_dir"] / "ablations_toy.json").read_text())
    assert data["synthetic"] is True and SYNTHETIC in data["label"]
    assert [(s["fold"], s["shot"], s["training_seed"]) for s in data["settings"]] == [(0, 1, 321), (0, 1, 1)]
    first = data["settings"][0]
    assert first["reference"] == "toy_fssam" and len(first["comparisons"]) == 7
    no_imr = next(c for c in first["comparisons"] if c["method"] == "FSSAM w/o IMR")
    expected = _result(ran, "toy_fssam")["miou"] - _result(ran, "toy_fssam_no_imr")["miou"]
    assert no_imr["name"] == "toy_fssam_no_imr" and no_imr["delta"] == pytest.approx(expected, abs=1e-12)
    assert no_imr["excludes_zero"] == (not no_imr["ci95"][0] <= 0 <= no_imr["ci95"][1])
    (across,) = data["across_training_seeds"]
    assert across["training_seeds"] == [321, 1] and len(across["comparisons"]) == 7
    deltas = tables.ablation_deltas(ran["results_dir"] / "ablations_toy.json")
    assert set(deltas["training seeds"]) == {"321", "1", "321, 1"} and len(deltas) == 21
    assert deltas[tables.GAIN].iloc[0] == pytest.approx(100 * first["comparisons"][0]["delta"])


def test_a_second_grid_reuses_everything_and_keeps_the_other_settings(ran, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("nothing should be trained or evaluated again")

    monkeypatch.setattr(grid, "evaluate_checkpoint", refuse)
    monkeypatch.setattr("fss_sam2.tutorial.runs.train", refuse)
    again = grid.run_grid("toy", ran["data_root"], ran["runs_dir"], ran["results_dir"], episodes=EPISODES, smoke=True,
                          progress=False)
    assert again["reused"].all() and len(again) == 8
    printed = capsys.readouterr().out
    assert "toy_fssam: found: 2 steps" in printed and "found)" in printed and SYNTHETIC in printed
    data = json.loads((ran["results_dir"] / "ablations_toy.json").read_text())
    assert len(data["settings"]) == 2 and data["across_training_seeds"][0]["training_seeds"] == [321, 1]


def test_given_checkpoints_and_lookups_only(ran, tmp_path, capsys):
    given = {"fssam": ran["runs_dir"] / "toy_fssam" / "last.pt", "naive": None}
    t = grid.run_grid("toy", ran["data_root"], tmp_path / "no_runs", tmp_path / "results", episodes=2, smoke=True,
                      imr_rounds=(), checkpoints=given, train=False, progress=False)
    assert list(t["name"]) == [f"toy_fssam{s}" for s in SUFFIXES if s not in ("_imr1", "_imr5")]  # naive: no run
    assert "no best.pt or last.pt" in capsys.readouterr().out
    assert _result({"results_dir": tmp_path / "results"}, "toy_fssam")["checkpoint"] == str(given["fssam"])


def test_plan_of_the_demo_and_of_full():
    demo, = (grid.plan_grid("toy", "nowhere", **g) for g in rp.reproduction_grids("toy"))
    assert [r.name for r in demo.trainings] == ["toy_fssam", "toy_naive"]
    assert len(demo.evaluations) == 12 and [e.name for e in demo.evaluations[8:]] == [
        "toy_fssam_fold0_5shot", "toy_fssam_fold0_5shot_no_imr", "toy_fssam_fold0_5shot_no_scma", "toy_naive_fold0_5shot"]
    assert {(e.shot, e.run.shot) for e in demo.evaluations} == {(1, 1), (5, 1)}  # 5-shot: the 1-shot weights
    full = [grid.plan_grid("toy", "nowhere", **g) for g in rp.reproduction_grids("toy", full=True)]
    trainings = {r.name for g in full for r in g.trainings}
    evaluations = {e.name for g in full for e in g.evaluations}
    assert len(trainings) == 12 and len(evaluations) == 80
    assert {"toy_fssam_fold3_1shot", "toy_naive_seed2", "toy_fssam_seed1"} <= trainings
    assert {"toy_fssam_fold3_5shot_priors_only", "toy_naive_seed1", "toy_fssam_seed2_imr5"} <= evaluations
    both = [grid.plan_grid("toy", "nowhere", **g) for g in rp.reproduction_grids("toy", full=True, train_shots=(1, 5))]
    assert {r.name for g in both for r in g.trainings} > trainings | {"toy_fssam_fold3_5shot"}
    own = grid.plan_grid("toy", "nowhere", shots=(1, 5), train_shots=(1, 5))
    assert [r.name for r in own.trainings] == ["toy_fssam", "toy_naive", "toy_fssam_fold0_5shot", "toy_naive_fold0_5shot"]
    assert rp.reproduction_grids("toy", smoke=True) == [] and rp.reproduction_grids("paper") == []
    with pytest.raises(ValueError, match=r"kshot_ablations=\['_no_dino'\]: \['_no_dino'\] are not among"):
        grid.plan_grid("toy", "nowhere", shots=(1, 5), kshot_ablations=("_no_dino",))
    with pytest.raises(ValueError, match="--full: the toy profile only"):
        rp.reproduction_grids("paper", full=True)
    with pytest.raises(ValueError, match="--train-shots 1 3: the grid evaluates shots 1, 5, not 3"):
        rp.reproduction_grids("toy", train_shots=(1, 3))


def test_reproduce_arguments():
    a = build_parser().parse_args(["reproduce", "--full", "--train-shots", "1", "5", "--out", "b"])
    assert (a.full, a.train_shots, a.profile, a.out) == (True, [1, 5], "toy", "b")
    a = build_parser().parse_args(["reproduce"])
    assert (a.full, a.train_shots, a.smoke) == (False, [1], False)


def test_reproduce_refuses_shot_zero(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reproduce", "--train-shots", "0"])
    assert "argument --train-shots: 0: expected an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("keywords, match", [
    ({"folds": (4,)}, r"folds=\[4\]: 4 is not a fold 0..3"),
    ({"folds": ()}, r"folds=\[\]: expected at least one"),
    ({"shots": (0,)}, r"shots=\[0\]: 0 is not a shot >= 1"),
    ({"shots": (1, 1)}, r"shots=\[1, 1\]: expected distinct values"),
    ({"training_seeds": (-1,)}, r"training_seeds=\[-1\]"),
    ({"train_shots": (5,)}, r"train_shots=\[5\]: \[5\] not among shots=\[1\]"),
    ({"imr_rounds": (3,)}, r"imr_rounds=\[3\]: 3 rounds is FSSAM itself"),
    ({"imr_rounds": (0,)}, r"imr_rounds=\[0\]"),
])
def test_bad_grid_arguments_are_named(keywords, match):
    with pytest.raises(ValueError, match=match):
        grid.plan_grid("toy", "nowhere", **keywords)


def test_bad_run_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="profile='toys'"):
        grid.plan_grid("toys", tmp_path)
    with pytest.raises(ValueError, match="episodes=0"):
        grid.run_grid("toy", tmp_path, tmp_path, tmp_path, episodes=0)
    with pytest.raises(ValueError, match=r"checkpoints=.*one fold and one training seed"):
        grid.run_grid("toy", tmp_path, tmp_path, tmp_path, folds=(0, 1), checkpoints={"fssam": tmp_path / "x.pt"})
    with pytest.raises(ValueError, match=r"checkpoints: unknown variant\(s\) \['fsam'\]"):
        grid.run_grid("toy", tmp_path, tmp_path, tmp_path, checkpoints={"fsam": tmp_path / "x.pt"})
    with pytest.raises(FileNotFoundError, match=r"checkpoints\['fssam'\] = .*x.pt'?: no such file"):
        grid.run_grid("toy", tmp_path, tmp_path, tmp_path, checkpoints={"fssam": tmp_path / "x.pt"})
    assert not (tmp_path / "toy").exists()  # refused before any world or run is made


def test_reproduce_runs_the_grid_then_passes_its_shots(tmp_path, monkeypatch):
    """`reproduce` without --smoke: the demo's grid (here recorded, not run), then the notebooks
    get SHOTS, TRAIN_SHOTS and TRAINING_SEEDS."""
    pytest.importorskip("papermill")
    import nbformat

    calls = []
    monkeypatch.setattr(grid, "run_grid", lambda *args, **kw: calls.append((args, kw)))
    folder = tmp_path / "repo" / "notebooks"
    folder.mkdir(parents=True)
    params = nbformat.v4.new_code_cell('SHOTS = None\nTRAIN_SHOTS = None\nTRAINING_SEEDS = None\nRESULTS_DIR = "r"')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell("import json, pathlib\npathlib.Path(RESULTS_DIR).mkdir(parents=True)\n"
                                     "(pathlib.Path(RESULTS_DIR) / 'p.json').write_text(json.dumps([SHOTS, TRAIN_SHOTS, "
                                     "TRAINING_SEEDS]))")
    nb = nbformat.v4.new_notebook(cells=[params, body])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "01_params.ipynb")
    timings = rp.reproduce("toy", tmp_path / "build", folder, progress=False, full=True)
    assert list(timings) == ["grid", "01_params.ipynb"]
    assert [kw["folds"] for _, kw in calls] == [(0, 1, 2, 3), (0,)]
    assert calls[1][1]["training_seeds"] == (321, 1, 2) and calls[0][1]["train_shots"] == (1,)
    args = calls[0][0]
    assert args[0] == "toy" and Path(args[1]) == (tmp_path / "build" / "toy").resolve()
    passed = json.loads((tmp_path / "build" / "results" / "p.json").read_text())
    assert passed == [[1, 5], [1], [321, 1, 2]]
