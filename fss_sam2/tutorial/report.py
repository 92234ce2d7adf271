"""Sentences the notebooks print about their own numbers, computed, never written in advance.

Notebook 02 words `relation(x, y, tolerance)` ("higher", "lower" or "level", within a fixed
tolerance of 0.02 on IoU-like numbers) for two memory settings of the naive SAM 2
(`compare_settings`). Notebook 07 compares methods on the same episodes by the 95% interval of
the paired mIoU difference (`tutorial.grid`, `fss_sam2.stats`): higher or lower only when the
interval excludes 0 (`compare_methods`, `ablation_findings`, `ablation_verdict`). Notebook 08
says why the toy is far below the paper, with the numbers measured (`toy_gap`). Both hold the
synthetic world's results against the targets it was built for (`toy_targets`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..methods import FULL, NAIVE, PRIORS_ONLY, method_name
from .tables import DEFAULT_TRAINING_SEED, GAIN, TINY, gain_decimals, signed

# notebook 02: the settings of the memory study
TRACKING = "tracking: same individual"
EMPTY_MEMORY = "tracking: empty memory mask"
OTHER_INDIVIDUAL = "clips: another individual, same class"
# notebook 07: the method labels of `methods.method_name`
NO_IMR, NO_SCMA = method_name({"num_refine": 0}), method_name({"calibrate": False})
NO_BOTH = method_name({"num_refine": 0, "calibrate": False})
ABLATIONS = (("IMR", NO_IMR), ("SCMA", NO_SCMA), ("IMR and SCMA", NO_BOTH))


def relation(x: float, y: float, tolerance: float) -> str:
    """"higher" if x > y + tolerance, "lower" if x < y - tolerance, else "level"."""
    return "higher" if x > y + tolerance else "lower" if x < y - tolerance else "level"


# ---- notebook 02: one SAM 2, several kinds of memory ----


def compare_settings(summary: pd.DataFrame, a: str, b: str, what: str, tolerance: float = 0.02) -> str:
    """A sentence comparing the measured `what` (a column of `summary`, one row per setting) of
    settings a and b: higher / lower / about the same beyond `tolerance`."""
    x, y = summary.loc[a, what], summary.loc[b, what]
    trend = {"higher": "higher than", "lower": "lower than", "level": "about the same as"}[relation(x, y, tolerance)]
    return f"{what} {x:.2f} with a memory from '{a}' is {trend} {y:.2f} with '{b}'"


def reads_memory(summary: pd.DataFrame, tolerance: float = 0.02) -> bool:
    """Whether emptying the memory mask costs mean IoU (more than `tolerance`) on the clips."""
    return relation(summary.loc[TRACKING, "mean IoU"], summary.loc[EMPTY_MEMORY, "mean IoU"], tolerance) == "higher"


def memory_findings(summary: pd.DataFrame, fss_name: str) -> str:
    """What notebook 02 measured, as text: tracking vs the empty memory mask, another individual
    (when measured) and the few-shot episodes `fss_name` (mean IoU and attention ratio), then
    whether this SAM 2 reads its memory at all. Without the tracking rows (no clips): the
    episodes' mean IoU only. `summary`: one row per setting, columns "mean IoU", "ratio"."""
    if TRACKING not in summary.index:
        return f"Measured: mean IoU {summary.loc[fss_name, 'mean IoU']:.2f} on few-shot episodes (no clips to compare)."
    lines = [compare_settings(summary, TRACKING, fss_name, "mean IoU"),
             compare_settings(summary, TRACKING, fss_name, "ratio")]
    if OTHER_INDIVIDUAL in summary.index:
        lines.insert(1, compare_settings(summary, TRACKING, OTHER_INDIVIDUAL, "mean IoU"))
    lines.insert(1, compare_settings(summary, TRACKING, EMPTY_MEMORY, "mean IoU"))
    verdict = "So this SAM 2 " + (
        "reads its memory: emptying the memory mask costs IoU." if reads_memory(summary) else
        "does NOT read its memory (emptying the mask changes nothing): it segments objects, not *the* object,\n"
        "so the gap between tracking and few-shot episodes above is not about which individual the memory shows.")
    return "Measured:\n- " + ";\n- ".join(lines) + ".\n" + verdict


# ---- notebook 07: FSSAM against the other rows, with the grid's paired intervals ----
# `gains`: by method, {"gain": mIoU points of FSSAM minus the method's, "ci95": [low, high]} on the
# same episodes (`tables.ablation_deltas` rows of one setting, via `gains_by_method`)


def gains_by_method(deltas: pd.DataFrame) -> dict[str, dict]:
    """{method: {"gain", "ci95"}} from the `tables.ablation_deltas` rows of one setting."""
    columns = (deltas["method"], deltas[GAIN], deltas[f"{GAIN} 95% CI"])
    return {m: {"gain": g, "ci95": list(ci)} for m, g, ci in zip(*columns)}


def interval_text(gain: Mapping) -> str:
    """"+1.2 points, 95% interval [+0.4, +2.0], excludes 0" for a gain of `gains_by_method`, with
    `tables.gain_decimals` decimals (2 where one would print "-0.0")."""
    low, high = gain["ci95"]
    excludes = not low <= 0 <= high
    d = gain_decimals(gain["gain"], (low, high))
    return (f"{signed(gain['gain'], d)} points, 95% interval [{signed(low, d)}, {signed(high, d)}], "
            f"{'excludes' if excludes else 'includes'} 0")


def _verdict(gain: Mapping) -> str:
    """"higher" / "lower" when the interval of the gain excludes 0 above / below, else "level"."""
    low, high = gain["ci95"]
    return "higher" if low > 0 else "lower" if high < 0 else "level"


def compare_methods(miou: Mapping, gains: Mapping, other: str, reference: str = FULL) -> str:
    """How `reference` does against `other`, from mIoU (%) by method and the paired gain of
    `reference` over `other` (`gains`): "beats" / "is beaten by" when the gain's 95% interval
    excludes 0, else "is level with"; without a paired interval (other episodes, e.g. the colour
    baseline's file) the numbers alone, and it says so."""
    if reference not in miou or other not in miou:
        return f"cannot be compared with {other!r} (not evaluated)"
    head = f"{miou[reference]:.1f} vs {miou[other]:.1f} mIoU"
    if other not in gains:
        gap = round(miou[reference] - miou[other], 1) + 0.0  # + 0.0: no "-0.0"
        verdict = "beats" if gap > 0 else "does not beat"
        return f"{verdict} {other}: {head} ({gap:+.1f} points; no paired interval)"
    verdict = {"higher": "beats", "lower": "is beaten by", "level": "is level with"}[_verdict(gains[other])]
    return f"{verdict} {other}: {head} ({interval_text(gains[other])})"


def ablation_findings(miou: Mapping, gains: Mapping) -> list[str]:
    """One line per module switched off ("IMR", "SCMA", "IMR and SCMA", those evaluated): its
    mIoU change from FSSAM's on the same episodes and the paired interval of FSSAM's gain; then,
    when no switch moves the mIoU by 0.1 point, that the model ignores its query memory."""
    lines = [f"Removing {module} changes the mIoU from {miou[FULL]:.1f} to {miou[other]:.1f} (FSSAM's gain "
             f"{interval_text(gains[other])})." for module, other in ABLATIONS if other in miou and other in gains]
    if lines and all(abs(gains[other]["gain"]) < 0.1 for _, other in ABLATIONS if other in gains):
        lines.append("IMR and SCMA act on the query memory only, and switching them off changes nothing: this trained\n"
                     "model does not use its query memory (notebook 02 checks whether its SAM 2 reads a memory at all).")
    return lines


# what each comparison of the ablation tells about which part of FSSAM, and where it is diagnosed
PARTS = ((NO_IMR, "Iterative Memory Refinement (IMR)", "notebook 04"),
         (NO_SCMA, "Support-Calibrated Memory Attention (SCMA)", "notebook 05"),
         (NO_BOTH, "IMR and SCMA together", "notebooks 04 and 05"),
         (PRIORS_ONLY, "SAM 2 decoding the DINOv2 prior (against the prior alone)", "notebook 03"),
         (NAIVE, "The pseudo query memory (against the naive SAM 2, a separately trained model)",
          "notebooks 02 and 03"))
EFFECT = {"higher": "helped", "lower": "hurt", "level": "made no difference this evaluation can tell from 0"}


def ablation_verdict(gains: Mapping, across: Mapping | None = None, seeds: str = "") -> list[str]:
    """What the ablation says, one line per part of FSSAM evaluated: how much FSSAM gains with
    it (points, the 95% interval, whether it excludes 0: helped, hurt, or no effect this
    evaluation can tell from 0; "by less than 0.05 points" when it is that small), and the
    notebook with its diagnostics. With `across` (gains
    over the training seeds `seeds`, hierarchical), those decide, since they also hold the
    spread of training; the single run's interval holds the episodes' only."""
    lines = []
    for method, part, where in PARTS:
        source, basis = ((across, f"over training seeds {seeds}") if across and method in across
                         else (gains, "one training run, paired over the episodes"))
        if method in source:
            g = source[method]
            effect = EFFECT[_verdict(g)]
            if _verdict(g) != "level" and abs(g["gain"]) < TINY:
                effect += f", by less than {TINY} points"
            lines.append(f"{part} {effect}: FSSAM's gain {interval_text(g)} ({basis}; diagnostics: {where}).")
    return lines


def measured_seconds(results: pd.DataFrame) -> str:
    """The measured evaluation time of every method of `results` (`collect_results` rows with
    `seconds`), one line: "FSSAM 35 s, FSSAM w/o IMR 16 s, ..."."""
    timed = results.dropna(subset=["seconds"])
    return ", ".join(f"{m} {s:.0f} s" for m, s in zip(timed["method"], timed["seconds"]))


# ---- notebook 07: how far the priors hold the rest back ----


def prior_ceiling(scores: Mapping) -> str:
    """What `diagnostics.oracle_prior_scores` measured, as a sentence: the mIoU with the model's
    own priors and with the ground truth as both priors, and what the difference means; with a
    "token-grid priors" entry, also what a perfect DINOv2 at its token grid would reach."""
    # rounded first: the gap is the difference of the printed numbers, so that the sentence adds up
    own, truth, n = round(scores["own priors"], 1), round(scores["ground-truth priors"], 1), scores["episodes"]
    text = (f"with its own priors these weights score {own:.1f} mIoU, with the query's ground truth as both "
            f"priors {truth:.1f} ({n} episodes). The {truth - own:+.1f} points are what perfect pseudo prompts "
            f"would change without retraining; {truth:.1f} is what the rest of this trained model (SAM 2's "
            "memories, the memory attention, the decoder) makes of perfect priors.")
    if "token-grid priors" in scores:
        grid, tokens = scores["token grid"], round(scores["token-grid priors"], 1)
        text += (f" A DINOv2 whose features named the object exactly, at its {grid} x {grid} token grid (each "
                 f"token's share of the object as its similarity), would give priors worth {tokens:.1f}: "
                 f"{tokens - own:+.1f} over the own priors, {tokens - truth:+.1f} against pixel-exact ones.")
    return text


# ---- notebook 08: the toy against the paper ----


def toy_gap(toy: pd.Series, paper: Mapping, paper_size: int, classes: int | None) -> str:
    """Why the synthetic world's FSSAM (`toy`: a `collect_results` row) scores far below the
    paper's on the same fold and shot of PASCAL-5i (`paper`: that row of `tables.paper_numbers`),
    with the numbers measured here: its mIoU and interval, image size, the training run's steps
    and minutes (its summary.json, when the run folder is there) and the world's classes."""
    run = None
    try:
        checkpoint = json.loads(Path(toy["path"]).read_text()).get("checkpoint")
        summary = Path(checkpoint).parent / "summary.json" if checkpoint else None
        run = json.loads(summary.read_text()) if summary and summary.is_file() else None
    except (OSError, ValueError):
        pass
    ci = toy["mIoU 95% CI"]
    interval = f" (95% interval [{ci[0]:.1f}, {ci[1]:.1f}])" if isinstance(ci, list) else ""
    trained = (f"FSSAM itself trained {run['steps']} steps in {run['seconds'] / 60:.1f} min" if run
               else "FSSAM itself trained for minutes")
    size = f"images are {toy['image_size']:.0f} px instead of {paper_size}; " if pd.notna(toy["image_size"]) else ""
    world = f"a world of {classes} procedurally drawn classes" if classes else "a tiny procedural world"
    checked = "" if paper["verified_against_paper"] == "yes" else ", not yet verified against the paper's PDF"
    published = paper[f"fold{toy['fold']}"]
    return (f"The paper's FSSAM scores {published:.1f} mIoU on PASCAL-5i fold {toy['fold']}, {toy['shot']}-shot "
            f"(paper_numbers.csv{checked}); FSSAM on the synthetic world scores {toy['mIoU']:.1f}{interval} on its "
            f"fold {toy['fold']}, {toy['shot']}-shot. The two are not comparable: everything around the method "
            f"is scaled down. Its SAM 2 and DINOv2 are tiny stand-ins pretrained for minutes "
            f"on a CPU on the synthetic world, not SAM 2 on SA-1B / SA-V and DINOv2 on LVD-142M; {trained}; {size}"
            f"and {world} is no PASCAL. It shows that the pipeline runs end to end, not what FSSAM scores "
            f"(notebook 07 shows which of its modules help on the toy).")


# ---- notebooks 07 and 08: the synthetic world against the targets it was built for ----
# docs/toy_world.md, "The targets": 1-shot, the mean of the 4 folds, 1000 episodes each
TARGET_MIOU = 50.0  # FSSAM's mIoU
TARGET_GAIN = 10.0  # FSSAM's points over the naive SAM 2 and over the priors alone
TARGET_TRAINING_SEEDS = 3  # the modules' gains must also hold over this many training runs (fold 0)


def _status(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _fold_range(values: pd.Series) -> str:
    return f"{signed(values.min(), 1)} to {signed(values.max(), 1)}" if len(values) > 1 else signed(values.iloc[0], 1)


def toy_targets(results: pd.DataFrame, deltas: pd.DataFrame) -> list[str]:
    """The synthetic world's results held against its targets, one line each, "met" or "MISSED"
    with the numbers that decide it: FSSAM at least `TARGET_MIOU` mIoU at 1-shot; at least
    `TARGET_GAIN` points above the naive SAM 2 and above the priors alone (the mean of the folds'
    paired gains); removing IMR and removing SCMA each lowering the mIoU, the 95% interval of
    FSSAM's gain above 0 on every fold and, over `TARGET_TRAINING_SEEDS` or more training runs,
    for the fold they were measured on; FSSAM's 5-shot mIoU above its 1-shot one.

    `results`: `tables.collect_results` rows (the official training seed's are used), `deltas`:
    `tables.ablation_deltas` rows. The targets are on the mean of the 4 folds; with fewer, the
    first line says which folds the numbers are the mean of."""
    official = results[results["training seed"].isna() | (results["training seed"] == DEFAULT_TRAINING_SEED)]
    one = official[(official["shot"] == 1) & (official["method"] == FULL)].drop_duplicates("fold", keep="last")
    if one.empty:
        return ["No 1-shot FSSAM result: nothing to hold against the targets."]
    fssam = one.set_index("fold")["mIoU"].sort_index()
    folds = list(fssam.index)
    names = ", ".join(map(str, folds))
    where = (f"the mean of folds {names}" if len(folds) == 4 else
             f"fold{'s' if len(folds) > 1 else ''} {names} only (the targets are on the mean of the 4 folds, "
             "which `fss-sam2 reproduce --profile toy --full` evaluates)")
    deltas = deltas[(deltas["shot"] == 1)]
    single = deltas[(deltas["training seeds"] == str(DEFAULT_TRAINING_SEED)) & deltas["fold"].isin(folds)]
    across = deltas[deltas["training seeds"].str.count(",") >= TARGET_TRAINING_SEEDS - 1]
    lines = [f"The synthetic world's targets, 1-shot, {where}:"]
    per_fold = f" (per fold {', '.join(f'{v:.1f}' for v in fssam)})" if len(folds) > 1 else ""
    lines.append(f"{_status(fssam.mean() >= TARGET_MIOU)}: FSSAM at least {TARGET_MIOU:.0f} mIoU: "
                 f"{fssam.mean():.1f}{per_fold}.")

    def over_seeds(method: str) -> tuple[list[dict], str]:
        rows = across[across["method"] == method]
        found = [{"gain": g, "ci95": list(ci)} for g, ci in zip(rows[GAIN], rows[f"{GAIN} 95% CI"])]
        text = "; ".join(f"fold {f} over training seeds {s}: {interval_text(g)}"
                         for f, s, g in zip(rows["fold"], rows["training seeds"], found))
        return found, text

    for method, label in ((NAIVE, "the naive SAM 2"), (PRIORS_ONLY, "the priors alone")):
        gains = single[single["method"] == method]
        if gains.empty:
            lines.append(f"not measured: FSSAM at least {TARGET_GAIN:.0f} points above {label} (not evaluated).")
            continue
        _, seeds_text = over_seeds(method)
        lines.append(f"{_status(gains[GAIN].mean() >= TARGET_GAIN)}: FSSAM at least {TARGET_GAIN:.0f} points above "
                     f"{label}: {signed(gains[GAIN].mean(), 1)} (per fold {_fold_range(gains[GAIN])})"
                     + (f"; {seeds_text}" if seeds_text else "") + ".")
    for method, module in ((NO_IMR, "IMR"), (NO_SCMA, "SCMA")):
        gains = single[single["method"] == method]
        if gains.empty:
            lines.append(f"not measured: removing {module} lowers the mIoU (not evaluated).")
            continue
        above = sum(ci[0] > 0 for ci in gains[f"{GAIN} 95% CI"])
        found, seeds_text = over_seeds(method)
        ok = above == len(gains) and all(g["ci95"][0] > 0 for g in found)
        status = (_status(ok) if found or not ok
                  else f"met on the episodes, not measured over {TARGET_TRAINING_SEEDS} training seeds")
        decimals = max(gain_decimals(g, ci) for g, ci in zip(gains[GAIN], gains[f"{GAIN} 95% CI"]))
        gain_range = (f"{signed(gains[GAIN].min(), decimals)} to {signed(gains[GAIN].max(), decimals)}"
                      if len(gains) > 1 else signed(gains[GAIN].iloc[0], decimals))
        lines.append(f"{status}: removing {module} lowers the mIoU, FSSAM's gain above 0 with 95% confidence: "
                     f"on {above} of {len(gains)} fold{'s' if len(gains) > 1 else ''} (gains {gain_range})"
                     + (f"; {seeds_text}" if seeds_text else "") + ".")
    five = official[(official["shot"] == 5) & (official["method"] == FULL)].drop_duplicates("fold", keep="last")
    five = five.set_index("fold")["mIoU"]
    both = [f for f in folds if f in five.index]
    if not both:
        lines.append("not measured: FSSAM's 5-shot mIoU above its 1-shot one (no 5-shot result).")
    else:
        higher = sum(five[f] > fssam[f] for f in both)
        lines.append(f"{_status(higher == len(both))}: FSSAM's 5-shot mIoU above its 1-shot one: "
                     f"{five[both].mean():.1f} against {fssam[both].mean():.1f}, higher on {higher} of {len(both)} "
                     f"fold{'s' if len(both) > 1 else ''}.")
    return lines
