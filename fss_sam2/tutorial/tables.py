"""The paper's tables and figures from result files: our numbers next to the published ones.

A result file is the `results.json` of `fss-sam2 evaluate` (one fold: miou, fb_iou, per_class,
seeds, dataset, synthetic, config, checkpoint, episodes; fractions in [0, 1]) or of
`fss-sam2 baseline` (several folds under `folds`, a `model` name). Tables hold percentages, the
paper's unit; `formatted` prints them with one decimal and leaves missing values blank. Intervals
are 95% bootstrap intervals over the episodes (`fss_sam2.stats`): of a result's mIoU
(`miou_ci95` in results.json) and of the paired mIoU differences of the grid's ablation file
(`ablations_<dataset>.json`, `tutorial.grid`).

Published numbers come only from the package file `resources/paper_numbers.csv`, each row with
its source. Rows measured here say MEASURED in their `source` column, and rows measured on the
synthetic world also SYNTHETIC_NOTE, which `write_table` repeats in every caption.
"""
from __future__ import annotations

import glob
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..config import ModelConfig, TrainConfig
from ..constants import SYNTHETIC_NOTE
from ..data.folds import COCO_CLASSES, NUM_FOLDS, PASCAL_CLASSES
from ..data.sources import ListSource
from ..methods import FULL, method_name
from ..methods import SWITCHES as MODEL_SWITCHES

FOLDS = [f"fold {i}" for i in range(NUM_FOLDS)]
PERCENT_COLUMNS = (*FOLDS, "mean", "FB-IoU", "mIoU", "mIoU std")
GAIN = f"{FULL} gain"  # mIoU(FSSAM) - mIoU(the row's method), points, on the same episodes
INTERVAL_COLUMNS = ("mIoU 95% CI", "FB-IoU 95% CI", f"{GAIN} 95% CI")  # [low, high] in %
ABLATIONS = "ablations_{dataset}.json"  # the grid's paired differences, in its results folder
DEFAULT_TRAINING_SEED = TrainConfig().seed  # the official one; other seeds are named in the tables
MEASURED = "measured here"
AUTHORS = "authors' checkpoint"  # added to the label of runs of the authors' released weights
CI_NOTE = "[low, high]: 95% bootstrap interval of the mIoU over the episodes (first episode seed)."
PAPER_METHOD = "FSSAM"
DATASET_NAMES = {"pascal": "PASCAL-5i", "coco": "COCO-20i", "toy": "synthetic world"}
SAM2_NAMES = {"small": "SAM2-S", "base_plus": "SAM2-B+", "large": "SAM2-L"}
DINO_NAMES = {"vits14": "DINOv2-S", "vitb14": "DINOv2-B", "vitl14": "DINOv2-L", "vitg14": "DINOv2-G"}
SWITCHES = ("num_refine", "calibrate", "query_memory", "priors_only")  # None for models other than FSSAM
RESULT_COLUMNS = [
    "method", "dataset", "fold", "shot", "backbone", "sam2", "mIoU", "mIoU 95% CI", "FB-IoU", "FB-IoU 95% CI",
    "seeds", "mIoU std", "synthetic", "episodes", "seconds", "checkpoint", "trained shot", "training seed",
    "num_refine", "calibrate", "query_memory", "priors_only", "image_size", "per_class", "root", "path",
]
TABLE_COLUMNS = ["dataset", "method", "backbone", *FOLDS, "mean", "FB-IoU", "source", "verified against paper"]


# ---- published numbers ----


def paper_numbers() -> pd.DataFrame:
    """The published numbers shipped with the package (one row per method x dataset x shot;
    per-fold and mean mIoU and FB-IoU in %, blank where the source has none), with sources."""
    with resources.files("fss_sam2").joinpath("resources/paper_numbers.csv").open() as f:
        return pd.read_csv(f)


# ---- our result files ----


def _model_defaults() -> dict:
    return asdict(ModelConfig())


def _backbone(model: Mapping, defaults: Mapping) -> str:
    sam2, dino = model.get("sam2", defaults["sam2"]), model.get("dino", defaults["dino"])
    return f"{SAM2_NAMES.get(sam2, f'SAM2 {sam2}')} + {DINO_NAMES.get(dino, f'DINOv2 {dino}')}"


def _fraction(path: Path, key: str, value) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{path}: {key}={value!r} is not a fraction in [0, 1]")
    return float(value)


def _interval(path: Path, key: str, value) -> list[float] | float:
    """A [low, high] interval of fractions as percentages; NaN when the file has none."""
    if value is None:
        return math.nan
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{path}: {key}={value!r} is not an interval [low, high]")
    return [100 * _fraction(path, key, v) for v in value]


def _run_numbers(path: Path, run: Mapping, where: str) -> dict:
    """mIoU, FB-IoU (%) and their 95% intervals, seeds, sample std of the per-seed mIoU (%),
    seconds, per-class IoU (%) of one fold."""
    seeds = run.get("seeds") or []
    per_seed = [s for s in (seeds.values() if isinstance(seeds, Mapping) else seeds) if isinstance(s, Mapping)]
    seed_miou = [_fraction(path, f"{where}seeds[].miou", s.get("miou")) for s in per_seed]
    miou = run.get("miou", float(np.mean(seed_miou)) if seed_miou else None)
    fb_iou = run.get("fb_iou")
    if fb_iou is None and per_seed:
        fb_iou = float(np.mean([_fraction(path, f"{where}seeds[].fb_iou", s.get("fb_iou")) for s in per_seed]))
    std = (run.get("std") or {}).get("miou")  # `fss-sam2 evaluate` with several seeds: sample std
    if std is None:
        std = float(np.std(seed_miou, ddof=1)) if len(seed_miou) > 1 else math.nan
    seconds = [s["seconds"] for s in per_seed if isinstance(s.get("seconds"), (int, float))]
    return {
        "mIoU": 100 * _fraction(path, f"{where}miou", miou),
        "mIoU 95% CI": _interval(path, f"{where}miou_ci95", run.get("miou_ci95")),
        "FB-IoU": 100 * _fraction(path, f"{where}fb_iou", fb_iou),
        "FB-IoU 95% CI": _interval(path, f"{where}fb_iou_ci95", run.get("fb_iou_ci95")),
        "seeds": max(len(seeds), 1),
        "mIoU std": 100 * std,
        "episodes": run.get("episodes"),
        "seconds": sum(seconds) if seconds else math.nan,
        "per_class": {int(c): 100 * _fraction(path, f"{where}per_class[{c}]", v)
                      for c, v in (run.get("per_class") or {}).items()},
    }


def read_result(path: str | Path) -> list[dict]:
    """The rows (one per fold) of one results.json; ValueError naming the file if malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable results.json ({e})") from e
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    d = _model_defaults()
    config = data.get("config") or {}
    cdata, cmodel = config.get("data") or {}, config.get("model") or {}
    dataset, shot = data.get("dataset", cdata.get("dataset")), data.get("shot", cdata.get("shot"))
    if dataset is None or shot is None:
        raise ValueError(f"{path}: no dataset or shot (expected 'dataset' and 'config.data.shot')")
    if "folds" in data:  # `fss-sam2 baseline`: {fold: result}
        runs = [(int(f), r, f"folds.{f}.") for f, r in data["folds"].items()]
    else:
        fold = data.get("fold", cdata.get("fold"))
        if fold is None:
            raise ValueError(f"{path}: no fold (expected 'config.data.fold')")
        runs = [(int(fold), data, "")]
    other = not cmodel and isinstance(data.get("model"), str)  # e.g. the colour-prototype baseline
    if other:
        method, backbone, m = data["model"], "none", dict.fromkeys(SWITCHES + ("sam2",))
    else:
        # the switches of the model as evaluated (results.json records them) win over its config's
        m = {**d, **cmodel, **{k: data[k] for k in MODEL_SWITCHES if k in data}}
        method, backbone = method_name(m, int(shot)), _backbone(cmodel, d)
        if data.get("checkpoint_kind") == "official":
            method += f" [{AUTHORS}]"
    checkpoint = data.get("checkpoint")
    return [
        {
            "method": method,
            "dataset": dataset,
            "fold": fold,
            "shot": int(shot),
            "backbone": backbone,
            "sam2": m["sam2"],
            **_run_numbers(path, run, where),
            "synthetic": bool(data.get("synthetic")) or dataset == "toy",
            "checkpoint": Path(checkpoint).name if checkpoint else "",
            "trained shot": data.get("trained_shot"),
            "training seed": data.get("training_seed"),
            **{k: m[k] for k in SWITCHES},
            "image_size": data.get("image_size"),
            "root": data.get("root"),
            "path": str(path),
        }
        for fold, run, where in runs
    ]


def _result_files(paths) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = []
    for p in paths:
        if isinstance(p, str) and glob.has_magic(p):
            files += sorted(Path(f) for f in glob.glob(p, recursive=True))
        elif Path(p).is_dir():
            files += sorted(Path(p).rglob("results.json"))
        elif Path(p).is_file():
            files.append(Path(p))
        else:
            raise FileNotFoundError(f"{p}: no such results.json, folder or glob match")
    return files


def collect_results(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per fold of every results.json in `paths` (files, folders searched recursively,
    or glob patterns): method label, dataset, fold, shot, backbone, mIoU / FB-IoU / std (%),
    number of seeds, synthetic flag, the switches, per-class IoU (%) and the file."""
    rows = [row for f in _result_files(paths) for row in read_result(f)]
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return df.sort_values(["dataset", "shot", "method", "backbone", "fold"], ignore_index=True)


# ---- tables ----


def _select(results: pd.DataFrame, dataset: str | None, shot: int | None) -> pd.DataFrame:
    for key, value in (("dataset", dataset), ("shot", shot)):
        if value is None:
            found = sorted(results[key].unique())
            if len(found) > 1:
                raise ValueError(f"results hold {key} {found}: pass {key}= to pick one")
        else:
            results = results[results[key] == value]
    return results


def _fssam_runs(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of FSSAM and its variants (those with switches), switches as int / bool."""
    results = results[results["num_refine"].notna()]
    return results.astype({"num_refine": int, "calibrate": bool, "query_memory": bool, "priors_only": bool})


def _setting(results: pd.DataFrame) -> str:
    """", PASCAL-5i, 1-shot" for results of one dataset and shot ("" when empty)."""
    if results.empty:
        return ""
    dataset = results["dataset"].iloc[0]
    return f", {DATASET_NAMES.get(dataset, dataset)}, {results['shot'].iloc[0]}-shot"


def _label(method: str, training_seed) -> str:
    """The method, with its training seed when it is not the official one."""
    if pd.isna(training_seed) or int(training_seed) == DEFAULT_TRAINING_SEED:
        return method
    return f"{method} [training seed {int(training_seed)}]"


def _seed_rank(training_seed) -> tuple[int, int]:
    """The official training seed (or none known) first, then the others in order."""
    if pd.isna(training_seed) or int(training_seed) == DEFAULT_TRAINING_SEED:
        return 0, 0
    return 1, int(training_seed)


def _measured_rows(results: pd.DataFrame, order, extra=None) -> tuple[list[dict], list[dict], list[dict]]:
    """One table row per (method, backbone, training seed), folds side by side, with their
    per-fold std over episode seeds and 95% intervals; mean and FB-IoU only when all folds are
    there (the paper's means). Rows are sorted by `order(first result row)`; `extra(first result
    row)` adds columns."""
    rows, stds, cis = [], [], []
    # a result that does not record its training seed (older files, the authors' weights) sits with the official one
    seeds = results["training seed"].astype(float).fillna(DEFAULT_TRAINING_SEED)
    groups = results.assign(**{"training seed": seeds}).groupby(["method", "backbone", "training seed"])
    for (method, backbone, seed), g in sorted(groups, key=lambda kg: order(kg[1].iloc[0])):
        first = g.iloc[0]
        method = _label(method, seed)
        dup = g[g["fold"].duplicated(keep=False)]
        if not dup.empty:
            warnings.warn(f"{method} ({backbone}): several results for fold(s) {sorted(set(dup['fold']))} "
                          f"({', '.join(dup['path'])}); the last is shown")
        g = g.drop_duplicates("fold", keep="last").set_index("fold")
        synthetic = bool(g["synthetic"].any())
        seeds = int(g["seeds"].max())
        complete = all(i in g.index for i in range(NUM_FOLDS))
        source = MEASURED + (f"; {SYNTHETIC_NOTE}" if synthetic else "") + (f"; {seeds} seeds" if seeds > 1 else "")
        dataset = g["dataset"].iloc[0]
        rows.append({
            "dataset": f"{dataset} (synthetic)" if synthetic else dataset,
            "method": method,
            "backbone": backbone,
            **{col: g["mIoU"].get(i, math.nan) for i, col in enumerate(FOLDS)},
            "mean": g["mIoU"].mean() if complete else math.nan,
            "FB-IoU": g["FB-IoU"].mean() if complete else math.nan,
            "source": source,
            "verified against paper": "n/a",
            **(extra(first) if extra else {}),
        })
        stds.append({col: g["mIoU std"].get(i, math.nan) for i, col in enumerate(FOLDS)})
        cis.append({col: g["mIoU 95% CI"].get(i, math.nan) for i, col in enumerate(FOLDS)})
    return rows, stds, cis


def _table(rows: list[dict], stds: list[dict], cis: list[dict], columns: list[str], caption: str) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["std"] = pd.DataFrame(stds, columns=FOLDS, index=df.index)
    df.attrs["ci"] = pd.DataFrame(cis, columns=FOLDS, index=df.index)
    has_ci = any(isinstance(v, list) for row in cis for v in row.values())
    df.attrs["caption"] = (caption + (f" {CI_NOTE}" if has_ci else "")
                           + (f" Rows marked synthetic: {SYNTHETIC_NOTE}." if _has_synthetic(df) else ""))
    return df


def main_table(results: pd.DataFrame, dataset: str, shot: int, paper_dataset: str | None = None) -> pd.DataFrame:
    """The paper's main results table for `dataset` and `shot`: per-fold mIoU, mean and
    FB-IoU (%) of the peers and of FSSAM as published (from the package CSV, `source` = where each number comes
    from), then our rows for `dataset` from `results` (`source` = MEASURED, and SYNTHETIC_NOTE
    for synthetic-world runs). Missing values are NaN (blank when formatted). The published rows
    are those of `paper_dataset` (default: `dataset`; PASCAL-5i for the toy world, whose layout
    it copies)."""
    paper_dataset = paper_dataset or ("pascal" if dataset == "toy" else dataset)
    paper = paper_numbers()
    paper = paper[(paper["dataset"] == paper_dataset) & (paper["shot"] == shot)]
    paper = pd.concat([paper[paper["method"] != PAPER_METHOD], paper[paper["method"] == PAPER_METHOD]])
    rows = [
        {
            "dataset": r["dataset"],
            "method": r["method"],
            "backbone": r["backbone"],
            **{col: r[f"fold{i}"] for i, col in enumerate(FOLDS)},
            "mean": r["mean_miou"],
            "FB-IoU": r["fb_iou"],
            "source": f"published: {r['source']}",
            "verified against paper": r["verified_against_paper"],
        }
        for _, r in paper.iterrows()
    ]
    ours, ours_std, ours_ci = _measured_rows(results[(results["dataset"] == dataset) & (results["shot"] == shot)],
                                             lambda r: (r["method"].split(" [")[0] != PAPER_METHOD,
                                                        *_ablation_order(r)))
    caption = (f"{DATASET_NAMES.get(dataset, dataset)}, {shot}-shot: mIoU (%) per fold and mean over the "
               f"{NUM_FOLDS} folds, FB-IoU (%); published rows ({DATASET_NAMES.get(paper_dataset, paper_dataset)}) "
               f"from paper_numbers.csv with their sources; blank = not reported or not measured "
               f"(our mean and FB-IoU need all {NUM_FOLDS} folds).")
    return _table(rows + ours, [{}] * len(rows) + ours_std, [{}] * len(rows) + ours_ci, TABLE_COLUMNS, caption)


def _ablation_order(r: pd.Series) -> tuple:
    """Naive SAM 2, the prior alone, then PPG with IMR and / or SCMA switched on."""
    if r["priors_only"]:
        rank = 1
    elif not r["query_memory"]:
        rank = 0
    else:
        rank = 2 + bool(r["num_refine"]) + 2 * bool(r["calibrate"])
    return rank, r["method"]


def _switches(row: pd.Series) -> dict:
    if row["priors_only"]:
        return {"PPG": "on", "IMR": "n/a", "SCMA": "n/a", "IMR rounds": ""}
    if not row["query_memory"]:
        return {"PPG": "off", "IMR": "off", "SCMA": "off", "IMR rounds": ""}
    r = int(row["num_refine"])
    return {"PPG": "on", "IMR": "on" if r else "off", "SCMA": "on" if row["calibrate"] else "off", "IMR rounds": str(r)}


def _variant_table(results: pd.DataFrame, caption: str, order) -> pd.DataFrame:
    """Measured rows of `results` sorted by `order(first result row)`, with their switches."""
    rows, stds, cis = _measured_rows(results, order, _switches)
    columns = ["method", "PPG", "IMR", "SCMA", "IMR rounds", *TABLE_COLUMNS[2:-1]]
    return _table(rows, stds, cis, columns, caption)


def ablation_table(results: pd.DataFrame, dataset: str | None = None, shot: int | None = None) -> pd.DataFrame:
    """The module ablation (paper: PPG / IMR / SCMA on or off) from whatever variants `results`
    hold for one dataset and shot: one row per variant, mIoU (%) per fold, mean and FB-IoU."""
    results = _fssam_runs(_select(results, dataset, shot))
    rounds = _model_defaults()["num_refine"]
    keep = results["priors_only"] | ~results["query_memory"] | results["num_refine"].isin([0, rounds])
    results = results[keep]
    caption = (f"Ablation of FSSAM's modules{_setting(results)}: mIoU (%) measured here (the package ships no "
               "published ablation numbers).")
    return _variant_table(results, caption, _ablation_order)


def rounds_table(results: pd.DataFrame, dataset: str | None = None, shot: int | None = None) -> pd.DataFrame:
    """mIoU (%) against the number of IMR rounds (full FSSAM otherwise), one row per rounds."""
    results = _fssam_runs(_select(results, dataset, shot))
    results = results[results["query_memory"] & ~results["priors_only"] & results["calibrate"]]
    caption = f"Iterative Memory Refinement rounds{_setting(results)}: mIoU (%) measured here."
    table = _variant_table(results, caption, lambda r: (int(r["num_refine"]), r["method"]))
    return table.drop(columns=["PPG", "IMR", "SCMA"])


# ---- intervals: every result and the grid's paired differences ----


def ablation_deltas(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """The paired mIoU differences of the grid's ablation files (`ABLATIONS`, written by
    `tutorial.grid`), one row per compared method and setting, in points: `GAIN` = mIoU(FSSAM) -
    mIoU(method) on the same episodes with its 95% interval, whether that excludes 0, and the
    training seeds it covers ("321": one run, paired over episodes; "321, 1, 2": the mean over
    training runs, hierarchical bootstrap over training seeds and episodes)."""
    rows = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        try:
            data = json.loads(Path(path).read_text())
            entries = [(e, [e["training_seed"]]) for e in data["settings"]]
            entries += [(e, e["training_seeds"]) for e in data["across_training_seeds"]]
            rows += [{
                "dataset": data["dataset"], "fold": e["fold"], "shot": e["shot"],
                "training seeds": ", ".join(map(str, seeds)), "method": c["method"],
                GAIN: 100 * c["delta"], f"{GAIN} 95% CI": [100 * v for v in c["ci95"]],
                "excludes 0": c["excludes_zero"], "synthetic": data["synthetic"],
            } for e, seeds in entries for c in e["comparisons"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not an ablation file of the grid ({type(e).__name__}: {e})") from None
    columns = ["dataset", "fold", "shot", "training seeds", "method", GAIN, f"{GAIN} 95% CI", "excludes 0", "synthetic"]
    return pd.DataFrame(rows, columns=columns)


def results_table(results: pd.DataFrame, deltas: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per result of `collect_results` (a method on one fold and shot), with its mIoU and
    FB-IoU and their 95% intervals, the measured seconds and, from `deltas` (`ablation_deltas`),
    what FSSAM gains over it on the same episodes (`GAIN`, with its paired interval). Sorted by
    dataset, shot, fold, training seed, then as the paper's ablation."""
    results = results.copy()
    results["training seeds"] = results["training seed"].map(
        lambda s: "" if pd.isna(s) else str(int(s)))
    if deltas is not None and not deltas.empty:
        single = deltas[~deltas["training seeds"].str.contains(",")]
        results = results.merge(single[["dataset", "fold", "shot", "training seeds", "method", GAIN, f"{GAIN} 95% CI"]],
                                on=["dataset", "fold", "shot", "training seeds", "method"], how="left")
    else:
        results[GAIN], results[f"{GAIN} 95% CI"] = math.nan, math.nan
    results["method"] = [_label(m, s) for m, s in zip(results["method"], results["training seed"])]
    order = [(r["dataset"], r["shot"], r["fold"], _seed_rank(r["training seed"]),
              *(_ablation_order(r) if pd.notna(r["num_refine"]) else (-1, r["method"])))
             for _, r in results.iterrows()]
    results = results.iloc[sorted(range(len(results)), key=order.__getitem__)].reset_index(drop=True)
    columns = ["dataset", "fold", "shot", "method", "mIoU", "mIoU 95% CI", "FB-IoU", "FB-IoU 95% CI", GAIN,
               f"{GAIN} 95% CI", "trained shot", "episodes", "seconds", "synthetic"]
    table = results[columns]
    table.attrs["caption"] = (
        f"mIoU and FB-IoU (%) with 95% bootstrap intervals over the episodes (first episode seed); {GAIN}: "
        f"mIoU points of FSSAM minus the row's, paired over the same episodes, with its interval; trained shot: "
        f"the shot its weights were trained at; seconds: the evaluation's measured time."
        + (f" Rows marked synthetic: {SYNTHETIC_NOTE}." if _has_synthetic(table) else ""))
    return table


# ---- output ----


def _has_synthetic(df: pd.DataFrame) -> bool:
    if "synthetic" in df and df["synthetic"].astype(bool).any():
        return True
    return "source" in df and bool(df["source"].astype(str).str.contains(SYNTHETIC_NOTE, regex=False).any())


def _interval_text(value, decimals: int = 1) -> str:
    return f"[{value[0]:.{decimals}f}, {value[1]:.{decimals}f}]" if isinstance(value, (list, tuple)) else ""


TINY = 0.05  # points: a gain that prints as 0.0 at one decimal


def gain_decimals(gain: float, ci95) -> int:
    """Decimals to print a gain and its 95% interval with: 2 when the gain is under `TINY` or an
    interval that excludes 0 ends within `TINY` of it (so that none reads "-0.0 [-0.1, -0.0]"), else 1."""
    if isinstance(ci95, (list, tuple)):
        low, high = ci95
        if not low <= 0 <= high and min(abs(low), abs(high)) < TINY:
            return 2
    return 2 if abs(gain) < TINY else 1


def signed(value: float, decimals: int) -> str:
    """`value` with its sign at `decimals` decimals; one that rounds to zero prints unsigned
    ("0.00", never "-0.00" or "+0.00": a gain of zero has no direction)."""
    text = f"{value:+.{decimals}f}"
    return text[1:] if float(text) == 0 else text


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    """`df` as text: percentages with one decimal (and "± std" over seeds, "[low, high]" 95%
    intervals where known), gains signed, seconds whole, missing values blank, never 0."""
    std, ci = df.attrs.get("std"), df.attrs.get("ci")
    out = df.astype(object).where(df.notna(), "")
    for col in PERCENT_COLUMNS:
        if col not in df:
            continue
        for i, v in df[col].items():
            if pd.isna(v):
                continue
            s = std.at[i, col] if std is not None and col in std else math.nan
            interval = _interval_text(ci.at[i, col]) if ci is not None and col in ci else ""
            out.at[i, col] = (f"{v:.1f}" + (f" ± {s:.1f}" if not pd.isna(s) else "")
                              + (f" {interval}" if interval else ""))
    for col in INTERVAL_COLUMNS:
        if col in df:
            out[col] = df[col].map(_interval_text)
    for col, text in (("seconds", "{:.0f}"), ("trained shot", "{:.0f}")):
        if col in df:
            out[col] = df[col].map(lambda v: "" if pd.isna(v) else text.format(v + 0.0))  # + 0.0: no "-0.0"
    if GAIN in df:
        gain_ci = df[f"{GAIN} 95% CI"] if f"{GAIN} 95% CI" in df else pd.Series(math.nan, index=df.index)
        for i, v in df[GAIN].items():
            d = 1 if pd.isna(v) else gain_decimals(v, gain_ci[i])
            out.at[i, GAIN] = "" if pd.isna(v) else signed(v, d)
            if f"{GAIN} 95% CI" in df:
                out.at[i, f"{GAIN} 95% CI"] = _interval_text(gain_ci[i], d)
    return out


def _tex_escape(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(c, c) for c in text)


def write_table(df: pd.DataFrame, out_dir: str | Path, name: str, caption: str | None = None) -> tuple[Path, Path]:
    """Write `name.md` (the caption line, then a Markdown table) and `name.tex` (a LaTeX table
    with caption and label `tab:name`) under `out_dir`; returns both paths. The caption defaults
    to the table's own; a table with synthetic rows always says so in its caption."""
    if not name or Path(name).name != name:
        raise ValueError(f"write_table: name={name!r} must be a plain file name without folders")
    caption = caption or df.attrs.get("caption", "")
    if _has_synthetic(df) and SYNTHETIC_NOTE not in caption:
        caption = f"{caption} Rows marked synthetic: {SYNTHETIC_NOTE}.".strip()
    text = formatted(df.drop(columns=["per_class"], errors="ignore"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, tex = out / f"{name}.md", out / f"{name}.tex"
    md.write_text(f"{caption}\n\n{text.to_markdown(index=False, disable_numparse=True)}\n")
    columns = "".join(r"p{0.3\linewidth}" if c == "source" else "l" for c in text.columns)  # sources wrap
    latex = text.to_latex(index=False, escape=True, caption=_tex_escape(caption), label=f"tab:{name}",
                          column_format=columns)
    tex.write_text(latex.replace("±", r"$\pm$"))
    return md, tex


# ---- figures ----


def fold_bars(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Per-fold mIoU bars of a `main_table`: FSSAM as published (plain) and every measured row
    with per-fold numbers (hatched; synthetic ones labelled so)."""
    measured = table["source"].str.startswith(MEASURED)
    rows = table[(measured | (table["method"] == PAPER_METHOD)) & table[FOLDS].notna().any(axis=1)]
    if rows.empty:
        raise ValueError("fold_bars: no FSSAM or measured row of the table has per-fold numbers")
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * NUM_FOLDS, 2.8 + 0.2 * len(rows)))
    width = 0.8 / len(rows)
    x = np.arange(NUM_FOLDS)
    for j, (i, r) in enumerate(rows.iterrows()):
        if measured[i]:
            kind = "measured here, SYNTHETIC" if SYNTHETIC_NOTE in r["source"] else "measured here"
        else:
            kind = "published"
        values = r[FOLDS].to_numpy(dtype=float)
        bars = ax.bar(x - 0.4 + width * (j + 0.5), np.nan_to_num(values), width, hatch="//" if measured[i] else None,
                      label=f"{r['method']} ({r['backbone']}) on {r['dataset']}: {kind}")
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.1f}" for v in values], fontsize=7)
    ax.set_xticks(x, FOLDS)
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    synthetic = rows["source"].str.contains(SYNTHETIC_NOTE, regex=False).any()
    ax.set_title((title or "mIoU per fold") + (f"\n[{SYNTHETIC_NOTE}]" if synthetic else ""))
    fig.tight_layout()
    return fig


def dataset_class_names(dataset: str, root: str | None) -> list[str] | None:
    """The class names of a dataset: PASCAL-5i's and COCO-20i's, or those of the root a result
    was measured on (its fss_meta.json: the synthetic world's); None when unknown."""
    if dataset in ("pascal", "coco"):
        return {"pascal": PASCAL_CLASSES, "coco": COCO_CLASSES}[dataset]
    try:
        return ListSource(root).class_names if isinstance(root, (str, Path)) else None
    except (OSError, ValueError):
        return None


def method_bars(results: pd.DataFrame, shot: int, title: str | None = None) -> Figure:
    """mIoU and FB-IoU (%) of every method of `results` (`collect_results`) at `shot`, one bar
    per fold (its novel classes named in the legend), 95% intervals as error bars, y from 0 to
    100: the measured rows of one setting side by side."""
    results = results[results["shot"] == shot]
    if results.empty:
        raise ValueError(f"method_bars: no results at {shot}-shot")
    labels = [_label(m, s) for m, s in zip(results["method"], results["training seed"])]
    results = results.assign(label=labels)
    order = {label: (_seed_rank(r["training seed"]),
                     *(_ablation_order(r) if pd.notna(r["num_refine"]) else (-1, label)))
             for label, (_, r) in zip(labels, results.iterrows())}
    methods = sorted(set(labels), key=order.__getitem__)
    folds = sorted(results["fold"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(2.5 + 0.9 * len(methods) * max(1, len(folds) / 2), 4.4), sharey=True)
    width = 0.8 / len(folds)
    x = np.arange(len(methods))
    roots = results["root"].dropna()  # the baseline's results name no root: any other row's names the classes
    root = roots.iloc[0] if len(roots) else None
    for ax, metric in zip(axes, ("mIoU", "FB-IoU")):
        for j, fold in enumerate(folds):
            g = results[results["fold"] == fold].drop_duplicates("label", keep="last").set_index("label")
            values = np.array([g[metric].get(m, math.nan) for m in methods])
            intervals = [g[f"{metric} 95% CI"].get(m, math.nan) for m in methods]
            err = np.array([[v - c[0], c[1] - v] if isinstance(c, list) else [0.0, 0.0]
                            for v, c in zip(values, intervals)]).T  # (2,M): below, above
            first = g.iloc[0]
            names = dataset_class_names(first["dataset"], root)
            classes = ", ".join(names[c - 1] if names else str(c) for c in sorted(first["per_class"]))
            ax.bar(x - 0.4 + width * (j + 0.5), np.nan_to_num(values), width, yerr=err, capsize=2,
                   label=f"fold {fold}: {classes}" if classes else f"fold {fold}")
        ax.set_xticks(x, methods, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"{metric} (%)")
        ax.tick_params(axis="y", labelleft=True)  # sharey hides the right panel's labels otherwise
        ax.set_title(metric)
    axes[0].legend(fontsize=7, loc="upper left")
    synthetic = bool(results["synthetic"].any())
    dataset = results["dataset"].iloc[0]
    head = title or f"{DATASET_NAMES.get(dataset, dataset)}, {shot}-shot: every method (error bars: 95% intervals)"
    fig.suptitle(head + (f"\n[{SYNTHETIC_NOTE}]" if synthetic else ""), fontsize=9)
    fig.tight_layout()
    return fig


def class_bars(result: pd.Series, class_names: list[str] | None = None) -> Figure:
    """Per-class IoU (%) of one row of `collect_results`, with its mIoU as a line. Class names
    default to `dataset_class_names` (PASCAL's, COCO's, or those of the result's root)."""
    per_class = result["per_class"]
    if not per_class:
        raise ValueError(f"class_bars: {result['path']} holds no per-class IoU")
    names = class_names or dataset_class_names(result["dataset"], result.get("root"))
    classes = sorted(per_class)
    labels = [names[c - 1] if names else f"class {c}" for c in classes]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + 0.35 * len(classes)), 3.2))
    ax.bar(range(len(classes)), [per_class[c] for c in classes], color="#1f77b4")
    ax.axhline(result["mIoU"], color="black", lw=1, ls="--", label=f"mIoU {result['mIoU']:.1f}")
    ax.set_xticks(range(len(classes)), labels, rotation=60, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    title = f"per-class IoU: {result['method']}\n{result['dataset']} fold {result['fold']}, {result['shot']}-shot"
    ax.set_title(title + (f"\n[{SYNTHETIC_NOTE}]" if result["synthetic"] else ""))
    fig.tight_layout()
    return fig


# ---- the baseline's result file ----
