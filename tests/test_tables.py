"""Paper tables from result files (`fss_sam2.tutorial.tables`) and the notebook that shows them."""
from __future__ import annotations

import csv
import json
import math
import os
from importlib import resources
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from fss_sam2.methods import method_name
from fss_sam2.tutorial import tables

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "08_paper_tables.ipynb"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _csv_rows(dataset: str, shot: int) -> list[dict]:
    """The rows of the shipped CSV for one setting, read without `fss_sam2.tutorial.tables`."""
    with resources.files("fss_sam2").joinpath("resources/paper_numbers.csv").open() as f:
        return [r for r in csv.DictReader(f) if (r["dataset"], r["shot"]) == (dataset, str(shot))]


def _csv_row(method: str, dataset: str, shot: int) -> dict:
    rows = [r for r in _csv_rows(dataset, shot) if r["method"] == method]
    assert len(rows) == 1
    return rows[0]


def _write(root: Path, name: str, dataset: str, fold: int, miou: float, shot: int = 1, model: dict | None = None,
           **extra) -> Path:
    """A results.json as `fss-sam2 evaluate` writes it (the keys read by the tables)."""
    path = root / name / "results.json"
    path.parent.mkdir(parents=True)
    result = {
        "model": "FSSAM", "miou": miou, "fb_iou": 0.7,
        "per_class": {str(c): miou for c in range(5 * fold + 1, 5 * fold + 6)},
        "dataset": dataset, "synthetic": dataset == "toy", "fold": fold, "shot": shot, "episodes": 1000,
        "checkpoint": f"runs/{name}/best.pt", "checkpoint_kind": "ours", "seeds": [{"seed": 321, "miou": miou}],
        "config": {"data": {"dataset": dataset, "fold": fold, "shot": shot},
                   "model": {"sam2": "tiny-toy" if dataset == "toy" else "small", **(model or {})}},
    }
    path.write_text(json.dumps(result | extra))
    return path


@pytest.fixture
def results_dir(tmp_path):
    root = tmp_path / "results"
    _write(root, "toy_fssam", "toy", 0, 0.42)
    _write(root, "toy_no_imr", "toy", 0, 0.40, model={"num_refine": 0})
    _write(root, "toy_no_scma", "toy", 0, 0.38, model={"calibrate": False})
    _write(root, "toy_ppg_only", "toy", 0, 0.36, model={"num_refine": 0, "calibrate": False})
    _write(root, "toy_naive", "toy", 0, 0.30, model={"query_memory": False})
    _write(root, "toy_prior", "toy", 0, 0.33, model={"priors_only": True})
    _write(root, "toy_rounds5", "toy", 0, 0.43, model={"num_refine": 5})
    seeds = [{"seed": 321, "miou": 0.79, "fb_iou": 0.88}, {"seed": 322, "miou": 0.81, "fb_iou": 0.90}]
    for fold in (0, 1, 3):  # fold 2 missing
        _write(root, f"pascal_fold{fold}", "pascal", fold, 0.80, seeds=seeds, std={"miou": 0.012})
    return root


# ---- published numbers ----


def test_paper_numbers_are_the_shipped_csv():
    df = tables.paper_numbers()
    row = _csv_row("FSSAM", "coco", 5)
    got = df[(df["method"] == "FSSAM") & (df["dataset"] == "coco") & (df["shot"] == 5)].iloc[0]
    assert got["fold3"] == float(row["fold3"]) and got["mean_miou"] == float(row["mean_miou"])
    assert {"source", "verified_against_paper"} <= set(df.columns)


# ---- result files ----


def test_collect_results_rows(results_dir):
    df = tables.collect_results(results_dir)
    assert len(df) == 10 and set(tables.RESULT_COLUMNS) == set(df.columns)
    assert math.isnan(df["seconds"].iloc[0]) and not isinstance(df["mIoU 95% CI"].iloc[0], list)  # older files
    toy = df[(df["dataset"] == "toy") & (df["method"] == "FSSAM")].iloc[0]
    assert toy["mIoU"] == pytest.approx(42.0) and toy["FB-IoU"] == pytest.approx(70.0)
    assert toy["synthetic"] and toy["seeds"] == 1 and math.isnan(toy["mIoU std"])
    assert toy["backbone"] == "SAM2 tiny-toy + DINOv2-B"
    assert toy["per_class"] == {c: pytest.approx(42.0) for c in range(1, 6)}
    pascal = df[df["dataset"] == "pascal"]
    assert list(pascal["fold"]) == [0, 1, 3] and not pascal["synthetic"].any()
    assert (pascal["seeds"] == 2).all() and pascal["mIoU std"].iloc[0] == pytest.approx(1.2)
    assert pascal["backbone"].iloc[0] == "SAM2-S + DINOv2-B"
    assert len(tables.collect_results(str(results_dir / "toy_*" / "results.json"))) == 7  # a glob
    assert tables.collect_results([]).empty


@pytest.mark.parametrize("switches, label", [
    ({}, "FSSAM"),
    ({"num_refine": 0}, "FSSAM w/o IMR"),
    ({"calibrate": False}, "FSSAM w/o SCMA"),
    ({"num_refine": 0, "calibrate": False}, "FSSAM w/o IMR, SCMA"),
    ({"num_refine": 5}, "IMR rounds = 5"),
    ({"query_memory": False, "num_refine": 0}, "SAM 2 (support as memory)"),
    ({"priors_only": True}, "priors only"),
    ({"refine_version": "v2"}, "FSSAM (IMR v2)"),
])
def test_variant_labels_follow_the_switches(switches, label):
    assert method_name(switches) == label


def test_kshot_calibration_labels_only_kshot_runs():
    assert method_name({"kshot_calibration": "official"}, shot=1) == "FSSAM"
    assert method_name({"kshot_calibration": "official"}, shot=5) == "FSSAM (official 5-shot calibration)"


def test_baseline_results_file(tmp_path):
    path = tmp_path / "baseline" / "results.json"
    path.parent.mkdir()
    folds = {str(f): {"miou": 0.2 + f / 100, "fb_iou": 0.5, "per_class": {}, "episodes": 20} for f in (0, 1)}
    path.write_text(json.dumps({"model": "colour-prototype baseline", "dataset": "toy", "shot": 1, "synthetic": True,
                                "folds": folds, "miou": 0.205, "fb_iou": 0.5}))
    df = tables.collect_results(path)
    assert list(df["method"]) == ["colour-prototype baseline"] * 2 and list(df["mIoU"]) == pytest.approx([20.0, 21.0])
    assert df["num_refine"].isna().all()
    assert tables.ablation_table(df).empty  # not an FSSAM variant


def test_std_over_seeds_without_a_std_key(tmp_path):
    seeds = [{"seed": s, "miou": v, "fb_iou": 0.5} for s, v in ((1, 0.70), (2, 0.74), (3, 0.72))]
    path = _write(tmp_path, "three_seeds", "coco", 2, 0.72, seeds=seeds)
    row = tables.collect_results(path).iloc[0]
    assert row["seeds"] == 3 and row["mIoU std"] == pytest.approx(2.0)  # sample std (ddof 1), in %


def test_authors_checkpoint_runs_are_labelled(tmp_path):
    path = _write(tmp_path, "official", "pascal", 0, 0.8, checkpoint_kind="official")
    results = tables.collect_results([path, _write(tmp_path, "ours", "pascal", 0, 0.7)])
    assert sorted(results["method"]) == ["FSSAM", f"FSSAM [{tables.AUTHORS}]"]
    table = tables.main_table(results, "pascal", 1)
    ours = table[table["source"].str.startswith(tables.MEASURED)]
    assert list(ours["method"]) == ["FSSAM", f"FSSAM [{tables.AUTHORS}]"]
    assert list(ours["fold 0"]) == pytest.approx([70.0, 80.0])


def test_bad_result_files_are_named(tmp_path):
    bad = _write(tmp_path, "percent", "pascal", 0, 81.6)
    with pytest.raises(ValueError, match=r"percent.*miou=81.6 is not a fraction"):
        tables.collect_results(bad)
    nofold = tmp_path / "nofold.json"
    nofold.write_text(json.dumps({"miou": 0.5, "fb_iou": 0.5, "dataset": "toy", "config": {"data": {"shot": 1}}}))
    with pytest.raises(ValueError, match="nofold.json: no fold"):
        tables.read_result(nofold)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tables.collect_results(tmp_path / "nowhere")


# ---- tables ----


def test_main_table_paper_rows_and_ours(results_dir):
    table = tables.main_table(tables.collect_results(results_dir), "pascal", 1)
    paper = table[table["method"].eq("FSSAM") & table["source"].str.startswith("published")]
    assert len(paper) == 1
    row = _csv_row("FSSAM", "pascal", 1)
    for i in range(4):
        assert paper[f"fold {i}"].iloc[0] == float(row[f"fold{i}"])
    assert paper["mean"].iloc[0] == float(row["mean_miou"]) and paper["FB-IoU"].iloc[0] == float(row["fb_iou"])
    assert row["source"] in paper["source"].iloc[0]
    assert paper["verified against paper"].iloc[0] == row["verified_against_paper"]
    published = table[table["source"].str.startswith("published")]
    assert list(published["method"]) == [r["method"] for r in _csv_rows("pascal", 1) if r["method"] != "FSSAM"] + ["FSSAM"]
    ours = table[table["source"].str.startswith(tables.MEASURED)]
    assert len(ours) == 1 and ours.index[0] == table.index[-1]  # after the published rows
    assert tables.SYNTHETIC_NOTE not in ours["source"].iloc[0] and "2 seeds" in ours["source"].iloc[0]
    assert ours["fold 0"].iloc[0] == pytest.approx(80.0) and math.isnan(ours["fold 2"].iloc[0])
    assert math.isnan(ours["mean"].iloc[0])  # a mean needs all four folds
    text = tables.formatted(table)
    assert text.loc[ours.index[0], "fold 2"] == "" and text.loc[ours.index[0], "fold 0"] == "80.0 ± 1.2"
    assert text.loc[paper.index[0], "mean"] == f"{float(row['mean_miou']):.1f}"


def test_main_table_mean_with_all_folds(results_dir):
    _write(results_dir, "pascal_fold2", "pascal", 2, 0.60, fb_iou=0.9)
    table = tables.main_table(tables.collect_results(results_dir), "pascal", 1)
    ours = table[table["source"].str.startswith(tables.MEASURED)].iloc[0]
    assert ours["fold 2"] == pytest.approx(60.0) and ours["mean"] == pytest.approx(75.0)
    assert ours["FB-IoU"] == pytest.approx((70 * 3 + 90) / 4)


def test_toy_rows_cannot_pass_for_paper_numbers(results_dir, tmp_path):
    table = tables.main_table(tables.collect_results(results_dir), "toy", 1)
    ours = table[table["source"].str.startswith(tables.MEASURED)]
    assert len(ours) == 7 and ours["method"].iloc[0] == "FSSAM"
    assert ours["source"].str.contains(tables.SYNTHETIC_NOTE, regex=False).all()
    assert (ours["dataset"] == "toy (synthetic)").all()
    assert (table.loc[~table.index.isin(ours.index), "dataset"] == "pascal").all()
    assert tables.SYNTHETIC_NOTE in table.attrs["caption"]
    md, tex = tables.write_table(table, tmp_path / "out", "toy_1shot", caption="Toy run.")
    assert tables.SYNTHETIC_NOTE in md.read_text().splitlines()[0]  # added to a caption that lacks it
    assert tables.SYNTHETIC_NOTE in tex.read_text().split(r"\caption{")[1].split("}\n")[0]


def test_write_table_markdown_and_latex(results_dir, tmp_path):
    table = tables.main_table(tables.collect_results(results_dir), "pascal", 1)
    md, tex = tables.write_table(table, tmp_path / "out", "pascal_1shot")
    assert (md.name, tex.name) == ("pascal_1shot.md", "pascal_1shot.tex")
    lines = md.read_text().splitlines()
    assert lines[0] == table.attrs["caption"] and lines[2].startswith("| dataset")
    mean = f"{float(_csv_row('FSSAM', 'pascal', 1)['mean_miou']):.1f}"
    fssam = next(line for line in lines if "| FSSAM" in line and "published" in line)
    assert f"| {mean} " in fssam  # one decimal kept (no number re-parsing)
    ours = next(line for line in lines if tables.MEASURED in line)
    assert "80.0 ± 1.2" in ours and "| 0.0" not in ours
    latex = tex.read_text()
    assert r"\begin{tabular}" in latex and r"\label{tab:pascal_1shot}" in latex and r"\caption{" in latex
    assert r"80.0 $\pm$ 1.2" in latex and r"paper\_numbers.csv" in latex
    with pytest.raises(ValueError, match="plain file name"):
        tables.write_table(table, tmp_path, "sub/name")


def test_ablation_table_follows_the_switches(results_dir):
    results = tables.collect_results(results_dir)
    with pytest.raises(ValueError, match="pass dataset="):
        tables.ablation_table(results)
    table = tables.ablation_table(results, "toy", 1)
    assert list(table["method"]) == ["SAM 2 (support as memory)", "priors only", "FSSAM w/o IMR, SCMA",
                                     "FSSAM w/o SCMA", "FSSAM w/o IMR", "FSSAM"]
    switches = table.set_index("method")[["PPG", "IMR", "SCMA"]]
    assert list(switches.loc["SAM 2 (support as memory)"]) == ["off", "off", "off"]
    assert list(switches.loc["FSSAM w/o IMR"]) == ["on", "off", "on"]
    assert list(switches.loc["FSSAM w/o SCMA"]) == ["on", "on", "off"]
    assert list(switches.loc["FSSAM"]) == ["on", "on", "on"]
    assert table.set_index("method").loc["FSSAM w/o IMR, SCMA", "fold 0"] == pytest.approx(36.0)
    assert table["source"].str.contains(tables.SYNTHETIC_NOTE, regex=False).all()
    rounds = tables.rounds_table(results, "toy", 1)
    assert list(rounds["IMR rounds"]) == ["0", "3", "5"]
    assert list(rounds["fold 0"]) == pytest.approx([40.0, 42.0, 43.0])


def test_duplicate_runs_warn_and_keep_the_last(results_dir):
    _write(results_dir, "toy_fssam_again", "toy", 0, 0.45)
    with pytest.warns(UserWarning, match="several results for fold"):
        table = tables.main_table(tables.collect_results(results_dir), "toy", 1)
    assert table[table["method"] == "FSSAM"]["fold 0"].iloc[-1] == pytest.approx(45.0)


def test_figures(results_dir):
    results = tables.collect_results(results_dir)
    fig = tables.fold_bars(tables.main_table(results, "toy", 1))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("published" in t for t in labels) and sum("SYNTHETIC" in t for t in labels) == 7
    assert tables.SYNTHETIC_NOTE in fig.axes[0].get_title()
    pascal = results[results["dataset"] == "pascal"].iloc[0]
    ticks = [t.get_text() for t in tables.class_bars(pascal).axes[0].get_xticklabels()]
    assert ticks == ["aeroplane", "bicycle", "bird", "boat", "bottle"]  # fold 0 of PASCAL-5i


# ---- intervals ----


def _ablations(root: Path) -> Path:
    """An ablation file as `tutorial.grid` writes it: FSSAM against two methods, training seed 321,
    and the mean over training seeds 321 and 1."""
    def comparison(method, delta, low, high):
        return {"method": method, "name": "x", "delta": delta, "ci95": [low, high], "episodes": 1000,
                "excludes_zero": not low <= 0 <= high}

    record = {"dataset": "toy", "synthetic": True, "settings": [
        {"fold": 0, "shot": 1, "training_seed": 321,
         "comparisons": [comparison("FSSAM w/o IMR", 0.02, 0.01, 0.03),
                         comparison("SAM 2 (support as memory)", 0.12, -0.01, 0.2)]}],
        "across_training_seeds": [{"fold": 0, "shot": 1, "training_seeds": [321, 1],
                                   "comparisons": [comparison("FSSAM w/o IMR", 0.01, -0.02, 0.04)]}]}
    path = root / tables.ABLATIONS.format(dataset="toy")
    path.write_text(json.dumps(record))
    return path


def test_results_table_with_intervals_and_gains(results_dir):
    ci = {"miou_ci95": [0.40, 0.44], "fb_iou_ci95": [0.68, 0.72], "training_seed": 321, "trained_shot": 1}
    for name in ("toy_fssam", "toy_no_imr"):
        path = results_dir / name / "results.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | ci))
    _write(results_dir, "toy_fssam_seed1", "toy", 0, 0.41, training_seed=1)
    results = tables.collect_results(results_dir)
    toy = results[results["dataset"] == "toy"]
    fssam = toy[(toy["method"] == "FSSAM") & (toy["training seed"] == 321)].iloc[0]
    assert fssam["mIoU 95% CI"] == pytest.approx([40.0, 44.0]) and fssam["trained shot"] == 1
    deltas = tables.ablation_deltas(_ablations(results_dir))
    assert list(deltas["training seeds"]) == ["321", "321", "321, 1"]
    assert deltas[tables.GAIN].tolist() == pytest.approx([2.0, 12.0, 1.0]) and deltas["excludes 0"].tolist() == [
        True, False, False]
    table = tables.results_table(toy, deltas)
    assert list(table["method"]) == ["SAM 2 (support as memory)", "priors only", "FSSAM w/o IMR, SCMA",
                                     "FSSAM w/o SCMA", "FSSAM w/o IMR", "FSSAM", "IMR rounds = 5",
                                     "FSSAM [training seed 1]"]
    text = tables.formatted(table).set_index("method")
    assert text.loc["FSSAM w/o IMR", tables.GAIN] == "+2.0"
    assert text.loc["FSSAM w/o IMR", f"{tables.GAIN} 95% CI"] == "[1.0, 3.0]"
    assert text.loc["FSSAM", "mIoU 95% CI"] == "[40.0, 44.0]" and text.loc["FSSAM", tables.GAIN] == ""
    assert text.loc["priors only", "mIoU 95% CI"] == ""  # written before intervals: blank
    assert tables.SYNTHETIC_NOTE in table.attrs["caption"]
    main = tables.main_table(results, "toy", 1)
    shown = tables.formatted(main[main["source"].str.startswith(tables.MEASURED)]).set_index("method")
    assert shown.loc["FSSAM", "fold 0"] == "42.0 [40.0, 44.0]"
    assert shown.loc["FSSAM [training seed 1]", "fold 0"] == "41.0"
    assert shown.loc["FSSAM w/o IMR", "fold 0"] == "40.0 [40.0, 44.0]" and len(shown) == 8  # one row per method
    assert tables.CI_NOTE in main.attrs["caption"]
    bad = results_dir / "ablations_bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="ablations_bad.json: not an ablation file"):
        tables.ablation_deltas(bad)


def test_switches_as_evaluated_win_over_the_config(tmp_path):
    """A naive run evaluated through a config of FSSAM: results.json's own switches name it."""
    path = _write(tmp_path, "naive", "toy", 0, 0.3, query_memory=False, method="SAM 2 (support as memory)")
    assert tables.collect_results(path)["method"].iloc[0] == "SAM 2 (support as memory)"


def test_method_bars(results_dir):
    path = results_dir / "toy_fssam" / "results.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"miou_ci95": [0.40, 0.44]}))
    fig = tables.method_bars(tables.collect_results(results_dir).query("dataset == 'toy'"), 1)
    miou, fb = fig.axes
    assert miou.get_ylim() == (0, 100) and fb.get_title() == "FB-IoU"
    fig.canvas.draw()
    assert any(t.get_text() for t in fb.get_yticklabels()) and fb.yaxis.get_tick_params()["labelleft"]
    assert [t.get_text() for t in miou.get_xticklabels()][-2:] == ["FSSAM", "IMR rounds = 5"]
    assert miou.get_legend_handles_labels()[1] == ["fold 0: 1, 2, 3, 4, 5"]  # no root: class ids
    assert tables.SYNTHETIC_NOTE in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="no results at 5-shot"):
        tables.method_bars(tables.collect_results(results_dir), 5)
    # a baseline row names no root (NaN in the table): the other rows' root, or class ids
    mixed = tables.collect_results(results_dir).query("dataset == 'toy'").assign(root=math.nan)
    assert tables.method_bars(mixed, 1).axes[0].get_legend_handles_labels()[1] == ["fold 0: 1, 2, 3, 4, 5"]


# ---- the notebook ----


def test_notebook_is_committed_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for name in ("PROFILE", "RESULTS_DIR", "TABLES_DIR", "FIGURES_DIR", "SMOKE"):
        assert f"\n{name} = " in "\n" + params[0].source
    badge = "colab.research.google.com/github/fss-sam2/fss-sam2/blob/main/notebooks/08_paper_tables.ipynb"
    assert badge in nb.cells[0].source


@pytest.mark.parametrize("with_results", [True, False], ids=["two_results", "no_results"])
def test_notebook_executes(with_results, tmp_path, monkeypatch):
    pm = pytest.importorskip("papermill")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    results = tmp_path / "results"
    results.mkdir()
    if with_results:
        _write(results, "toy_fold0", "toy", 0, 0.42)
        _write(results, "pascal_fold1", "pascal", 1, 0.75)
    params = {"PROFILE": "toy", "RESULTS_DIR": str(results), "TABLES_DIR": str(tmp_path / "tables"),
              "FIGURES_DIR": str(tmp_path / "figures"), "SMOKE": True}
    out = pm.execute_notebook(str(NOTEBOOK), str(tmp_path / NOTEBOOK.name), parameters=params, cwd=str(NOTEBOOK.parent),
                              kernel_name="python3", progress_bar=False, execution_timeout=120)
    text = json.dumps([c.get("outputs", []) for c in out.cells])
    written = {p.name for p in (tmp_path / "tables").iterdir()}
    assert {"table_pascal_1shot.md", "table_pascal_1shot.tex", "table_coco_5shot.md"} <= written
    assert (tmp_path / "figures" / "08_pascal_1shot_folds.png").is_file()
    if with_results:
        assert "table_toy_1shot.md" in written and "No measured results" not in text
        md = (tmp_path / "tables" / "table_pascal_1shot.md").read_text()
        assert "| 75.0 " in md and tables.MEASURED in md
        assert tables.SYNTHETIC_NOTE in (tmp_path / "tables" / "table_toy_1shot.md").read_text().splitlines()[0]
        assert sorted(p.name for p in (tmp_path / "figures").glob("08_*_classes.png"))
    else:
        assert "No measured results found" in text and "make demo" in text
        assert not any(name.startswith("table_toy") for name in written)


def test_gains_that_round_to_zero_print_with_two_decimals():
    g = tables.GAIN
    df = pd.DataFrame({"method": ["a", "b", "c", "d", "e"], g: [-0.03, 2.04, -0.6, float("nan"), -0.004],
                       f"{g} 95% CI": [[-0.06, -0.01], [1.0, 3.1], [-0.8, -0.04], float("nan"), [-0.03, 0.02]]})
    text = tables.formatted(df).set_index("method")
    assert (text.at["a", g], text.at["a", f"{g} 95% CI"]) == ("-0.03", "[-0.06, -0.01]")  # not "-0.0 [-0.1, -0.0]"
    assert (text.at["b", g], text.at["b", f"{g} 95% CI"]) == ("+2.0", "[1.0, 3.1]")
    assert (text.at["c", g], text.at["c", f"{g} 95% CI"]) == ("-0.60", "[-0.80, -0.04]")  # excludes 0: shown
    assert (text.at["d", g], text.at["d", f"{g} 95% CI"]) == ("", "")
    assert (text.at["e", g], text.at["e", f"{g} 95% CI"]) == ("0.00", "[-0.03, 0.02]")  # not "-0.00"
