"""`fss-sam2 reproduce` on a folder of two tiny notebooks (tests/test_notebooks.py executes the
real ones): order, parameter filtering, timings.json, errors naming the notebook, `ensure_run`."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from fss_sam2.tutorial import reproduce as rp
from fss_sam2.cli import main

pytest.importorskip("papermill")


def _notebook(path: Path, parameters: str, body: str) -> None:
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


# each notebook appends its name and the parameters it saw to a log in RESULTS_DIR
LOG = """import json, os
from pathlib import Path
Path(RESULTS_DIR).mkdir(parents=True, exist_ok=True)
with open(Path(RESULTS_DIR) / "log.jsonl", "a") as f:
    f.write(json.dumps({{"name": {name!r}, "cwd": os.getcwd(), "params": {params}}}) + "\\n")
"""


@pytest.fixture
def notebooks(tmp_path) -> Path:
    folder = tmp_path / "repo" / "notebooks"
    folder.mkdir(parents=True)
    _notebook(folder / "02_second.ipynb", 'PROFILE = "x"\nRESULTS_DIR = "r"\nSMOKE = False',
              LOG.format(name="02", params='{"PROFILE": PROFILE, "SMOKE": SMOKE}'))
    _notebook(folder / "01_first.ipynb", 'PROFILE = "x"\nDATA_ROOT = "d"\nRESULTS_DIR = "r"\nDEVICE = "?"',
              LOG.format(name="01", params='{"PROFILE": PROFILE, "DATA_ROOT": DATA_ROOT, "DEVICE": DEVICE}'))
    (folder / "notes.ipynb").write_text("not a numbered notebook, never run")
    return folder


def test_runs_in_order_with_declared_parameters(notebooks, tmp_path):
    out = tmp_path / "build"
    timings = rp.reproduce("toy", out=out, notebooks_dir=notebooks, smoke=True, progress=False)
    assert list(timings) == ["01_first.ipynb", "02_second.ipynb"]
    assert json.loads((out / "notebooks" / rp.TIMINGS).read_text()) == timings
    assert all(s > 0 for s in timings.values())
    assert (out / "notebooks" / "01_first.ipynb").is_file() and (out / "notebooks" / "02_second.ipynb").is_file()
    log = [json.loads(line) for line in (out / "results" / "log.jsonl").read_text().splitlines()]
    assert [r["name"] for r in log] == ["01", "02"]
    assert log[0]["params"] == {"PROFILE": "toy", "DATA_ROOT": str((out / "toy").resolve()), "DEVICE": "cpu"}
    assert log[1]["params"] == {"PROFILE": "toy", "SMOKE": True}
    assert all(Path(r["cwd"]) == notebooks for r in log)  # paths in notebooks are relative to their folder
    # only the declared parameters were injected (papermill adds a cell with them)
    second = nbformat.read(out / "notebooks" / "02_second.ipynb", as_version=4)
    injected = next(c.source for c in second.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "SMOKE = True" in injected and "DATA_ROOT" not in injected and "DEVICE" not in injected


def test_a_failing_cell_names_the_notebook(notebooks, tmp_path):  # smoke: no grid first (tests/test_grid.py)
    _notebook(notebooks / "01_first.ipynb", 'PROFILE = "x"', 'raise RuntimeError("boom")')
    out = tmp_path / "build"
    with pytest.raises(rp.NotebookFailed, match=r"01_first\.ipynb failed in cell .*RuntimeError: boom"):
        rp.reproduce("toy", out=out, notebooks_dir=notebooks, smoke=True, progress=False)
    assert not (out / "notebooks" / "02_second.ipynb").exists()  # stopped at the failure
    assert main(["reproduce", "--smoke", "--out", str(out), "--notebooks", str(notebooks), "--quiet"]) == 1


def test_parameters_of_the_profiles(tmp_path):
    nbdir = tmp_path / "repo" / "notebooks"
    toy = rp.notebook_parameters("toy", tmp_path / "b", nbdir)
    assert toy["FIGURES_DIR"] == str((tmp_path / "repo" / "figures").resolve())
    assert toy["RUNS_DIR"] == str((tmp_path / "b" / "runs").resolve()) and toy["SMOKE"] is False
    assert "SAM2_CHECKPOINT" not in toy
    smoke = rp.notebook_parameters("toy", tmp_path / "b", nbdir, smoke=True)
    assert smoke["FIGURES_DIR"] == str((tmp_path / "b" / "figures").resolve())  # keeps figures/ clean
    paper = rp.notebook_parameters("paper", tmp_path / "b", nbdir, data_root=tmp_path / "pascal",
                                   sam2_checkpoint="s.pt", dino_checkpoint="d.pth")
    assert paper["DATA_ROOT"] == str((tmp_path / "pascal").resolve())
    assert paper["SAM2_CHECKPOINT"].endswith("s.pt") and paper["DINO_CHECKPOINT"].endswith("d.pth")
    with pytest.raises(ValueError, match="--data-root"):
        rp.notebook_parameters("paper", tmp_path / "b", nbdir)
    with pytest.raises(ValueError, match="profile"):
        rp.notebook_parameters("toys", tmp_path / "b", nbdir)
    with pytest.raises(FileNotFoundError, match="NN_"):
        rp.find_notebooks(tmp_path)


def test_ensure_run_reuses_resumes_and_guards(tmp_path, monkeypatch):
    """A finished run is reused, an unfinished one resumed, another config refused (or replaced)."""
    import torch
    from omegaconf import OmegaConf

    from fss_sam2.tutorial import runs
    from fss_sam2.engine.checkpoint import FORMAT

    calls = []

    def fake_train(cfg, factory, out, resume=False, progress=True):  # writes what a finished run leaves
        calls.append(resume)
        out.mkdir(parents=True, exist_ok=True)
        steps = cfg.train.max_steps
        config = {**OmegaConf.to_container(cfg), "out": str(out)}
        torch.save({"format": FORMAT, "config": config, "progress": {"step": steps}}, out / "last.pt")
        (out / "summary.json").write_text(json.dumps({"steps": steps}))
        return {"steps": steps}

    monkeypatch.setattr(runs, "train", fake_train)
    monkeypatch.setattr(runs, "fssam_factory", lambda size: None)
    cfg = OmegaConf.create({"data": {"image_size": 8, "workers": 2}, "train": {"max_steps": 3}})
    out = tmp_path / "run"
    assert runs.ensure_run(cfg, out) == {"steps": 3, "reused": False}
    assert runs.ensure_run(cfg, out) == {"steps": 3, "reused": True}
    faster = OmegaConf.merge(cfg, {"data": {"workers": 0}})  # does not change what is learned
    assert runs.ensure_run(faster, out)["reused"] is True
    (out / "summary.json").unlink()  # interrupted before its summary: continued
    assert runs.ensure_run(cfg, out)["reused"] is False and calls == [False, True]
    longer = OmegaConf.merge(cfg, {"train": {"max_steps": 5}})
    with pytest.raises(ValueError, match=r"run: holds a run of another config \(train\.max_steps: 3 -> 5\)"):
        runs.ensure_run(longer, out)
    assert runs.ensure_run(longer, out, replace=True) == {"steps": 5, "reused": False}
    assert calls == [False, True, False]


def test_the_notebooks_get_the_demo_grids_settings(tmp_path, monkeypatch):
    """Notebook 07 must ask for what the grid before it evaluated, so that it finds it all (at
    5-shot `make demo` evaluates only the removals of IMR and SCMA) and evaluates nothing more."""
    grids, given = [], {}
    monkeypatch.setattr("fss_sam2.tutorial.grid.run_grid", lambda *a, **kw: grids.append(kw))
    monkeypatch.setattr(rp, "run_notebooks", lambda notebooks, out, params, progress: given.update(params) or {})
    monkeypatch.setattr(rp, "find_notebooks", lambda folder: [])
    rp.reproduce("toy", out=tmp_path, progress=False)
    (demo,) = grids
    assert demo["kshot_ablations"] == rp.DEMO_KSHOT_ABLATIONS == ("_no_imr", "_no_scma")
    assert (given["SHOTS"], given["KSHOT_ABLATIONS"], given["TRAINING_SEEDS"]) == ([1, 5], ["_no_imr", "_no_scma"], [321])
    grids.clear()
    rp.reproduce("toy", out=tmp_path, progress=False, full=True)
    assert [g.get("kshot_ablations") for g in grids] == [None, None] and given["KSHOT_ABLATIONS"] is None
    assert given["TRAINING_SEEDS"] == [321, 1, 2]
