"""Sentences the notebooks print about their own numbers, computed, never written in advance.

Both comparisons rest on one verdict, `relation(x, y, tolerance)`: "higher", "lower" or "level"
(within the tolerance). Notebook 02 words it for two memory settings of the naive SAM 2
(`compare_settings`, a fixed tolerance of 0.02 on IoU-like numbers), notebook 07 for two methods
of a results table (`compare_methods`, twice the spread over episode seeds, in mIoU points).
The sentences differ, so there are two builders over the one verdict.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

# notebook 02: the settings of the memory study
TRACKING = "tracking: same individual"
EMPTY_MEMORY = "tracking: empty memory mask"
OTHER_INDIVIDUAL = "clips: another individual, same class"
# notebook 07: the method labels of `tables.variant`
FULL = "FSSAM"
ABLATIONS = (("IMR", "FSSAM w/o IMR"), ("SCMA", "FSSAM w/o SCMA"), ("IMR and SCMA", "FSSAM w/o IMR, SCMA"))


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


# ---- notebook 07: FSSAM against the other rows of the results table ----


def compare_methods(miou: Mapping, std: Mapping, other: str, reference: str = FULL) -> str:
    """How `reference` does against `other`, from mIoU (%) and its std over seeds (NaN: one
    seed), both by method: "is level with" when the gap (rounded to 0.1) is within twice the
    larger std, else "beats" / "does not beat"; with no std at all there is no level band."""
    if reference not in miou or other not in miou:
        return f"cannot be compared with {other!r} (not evaluated)"
    gap = round(miou[reference] - miou[other], 1) + 0.0  # + 0.0: no "-0.0"
    noise = np.nanmax([std[reference], std[other], 0.0])
    if noise and relation(gap, 0.0, 2 * noise) == "level":
        verdict, sure = "is level with", f", within twice the seed std of {noise:.1f}"
    else:
        verdict = "beats" if gap > 0 else "does not beat"
        sure = ", more than twice the seed std" if noise else ""
    return f"{verdict} {other}: {miou[reference]:.1f} vs {miou[other]:.1f} mIoU ({gap:+.1f} points{sure})"


def ablation_changes(miou: Mapping, full: float) -> dict[str, float]:
    """Per module switched off ("IMR", "SCMA", "IMR and SCMA", those evaluated): the change of
    mIoU (points, rounded to 0.1) from `full`, FSSAM's mIoU (%) on the ablations' seed."""
    return {module: round(miou[other] - full, 1) + 0.0 for module, other in ABLATIONS if other in miou}


def ablation_findings(miou: Mapping, full: float, seed: int) -> list[str]:
    """One line per module switched off (its mIoU change against `full` on episode seed
    `seed`), then, when no switch changes anything, that the model ignores its query memory."""
    changes = ablation_changes(miou, full)
    lines = [f"Removing {module} changes the mIoU by {changes[module]:+.1f} points (seed {seed}: "
             f"{full:.1f} -> {miou[other]:.1f})." for module, other in ABLATIONS if module in changes]
    if changes and all(abs(v) < 0.1 for v in changes.values()):
        lines.append("IMR and SCMA act on the query memory only, and switching them off changes nothing: this trained\n"
                     "model does not use its query memory (notebook 02 checks whether its SAM 2 reads a memory at all).")
    return lines
