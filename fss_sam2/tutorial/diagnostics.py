"""What limits each of FSSAM's modules on a model and a list of episodes (notebooks 03-05, 07).

Each table function runs the model's stages over batches of episodes and returns one row per
episode (a pandas DataFrame), so a notebook can average, plot or bootstrap them:

- `prior_scores`: how much of the query's object the two priors cover (recall) and how much of
  what they mark is background (leak = 1 - precision): the failure modes IMR and SCMA exist for
  (paper, "Pseudo Prompt Generator");
- `refinement_scores`: the discriminative prior's IoU after each IMR round, and where the blend
  weight W lands (object vs background cells) (paper, "Iterative Memory Refinement");
- `attention_scores`: the share of attention that query-object pixels give to query-background
  memory, with and without the calibration (paper, "Support-Calibrated Memory Attention");
- `oracle_prior_scores`: the mIoU of the same weights with their own priors and with the query's
  ground truth as both priors (an oracle pseudo prompt generator), at pixel resolution and on
  the DINOv2 token grid (`token_grid_priors`): how far the priors hold the rest of FSSAM back,
  and how much of that a perfect DINOv2 at the toy's token grid would win back;
- `training_progress`: whether a run was still improving when its budget ended (its log.csv).

A score that has nothing to measure is NaN, never 0: coverage when the query has no object
pixel, leak when the prior marks nothing, and on the memory grid every score of an episode
whose object vanishes when its label is sampled to the grid (small objects on a small grid).
Means (`summarise`) skip them.

`summarise` turns the three per-episode tables into the handful of numbers the closing cells
and the README quote; `diagnose` computes all three on the same batches.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ..constants import IGNORE
from ..engine.evaluate import call_model, evaluate
from ..modules.common import minmax_normalize
from ..modules.prompt_generator import DINO_PATCH, dino_size, priors_at_image_size
from .session import label_on_grid

NAN = float("nan")
PRIOR_COLUMNS = ("episode", "prior", "iou", "coverage", "leak", "marked", "mean on object", "mean on background")
REFINEMENT_COLUMNS = ("episode", "version", "round", "object cells", "iou", "coverage", "leak", "W on object",
                      "W on background", "W > 0.5 cells", "W > 0.5 background cells", "foreground iou",
                      "S_qs on object", "S_qs on background")
ATTENTION_COLUMNS = ("episode", "layer", "setting", "object cells", "object -> query background",
                     "object -> query object", "object -> query memory", "background share of query memory",
                     "background cells", "peak", "calibration on query background", "calibration on query object")


def _f(x) -> float:
    return float(x)


def _share(num: torch.Tensor, den: torch.Tensor) -> list[float]:
    """num / den per episode, NaN where den == 0."""
    return [_f(n / d) if d > 0 else NAN for n, d in zip(num.double().tolist(), den.double().tolist())]


def _region_scores(prob: torch.Tensor, label: torch.Tensor, threshold: float) -> dict[str, list[float]]:
    """Per episode: iou, coverage (recall), leak (1 - precision) and marked (share of the valid
    pixels marked) of `prob` >= threshold against a {0,1,255} label of the same size (B,H,W);
    NaN where a score has no denominator (iou and coverage: no object pixel; leak: nothing
    marked). Same thresholding and ignore rule as `binary_scores`."""
    valid = label != IGNORE
    pred = (prob >= threshold) & valid
    gt = (label == 1) & valid
    inter = (pred & gt).flatten(1).sum(1)
    marked, objects = pred.flatten(1).sum(1), gt.flatten(1).sum(1)
    union = (pred | gt).flatten(1).sum(1)
    iou = _share(inter, union)
    return {
        "iou": [v if n > 0 else NAN for v, n in zip(iou, objects.tolist())],
        "coverage": _share(inter, objects),
        "leak": _share(marked - inter, marked),
        "marked": _share(marked, valid.flatten(1).sum(1)),
    }


@torch.no_grad()
def prior_scores(model, batches: Iterable[dict], threshold: float = 0.5) -> pd.DataFrame:
    """Per episode and prior ("foreground", "discriminative"; shot means, as the model uses them,
    at image size, from `model.pseudo_prompts` alone: SAM 2 is not run): iou, coverage (share
    of the object the prior marks, = recall), leak (share of what it marks that is background,
    = 1 - precision), marked (share of the image it marks), and the mean prior on object and on
    background pixels (ignore pixels left out). Thresholding as `binary_scores`."""
    rows, episode = [], 0
    for batch in batches:
        maps = model.pseudo_prompts(batch["query"], batch["supports"], (batch["support_masks"] == 1).float())
        label = batch["query_label"]
        obj, bg = (label == 1).float(), (label == 0).float()
        for name, prior in (("foreground", maps.fg.mean(1)), ("discriminative", maps.disc.mean(1))):
            prior = prior.float()
            if prior.shape[-2:] != label.shape[-2:]:
                raise ValueError(f"prior_scores: priors {tuple(prior.shape[-2:])} and labels "
                                 f"{tuple(label.shape[-2:])} differ in size")
            s = _region_scores(prior, label, threshold)
            on_object = _share((prior * obj).flatten(1).sum(1), obj.flatten(1).sum(1))
            on_background = _share((prior * bg).flatten(1).sum(1), bg.flatten(1).sum(1))
            for i in range(len(label)):
                rows.append({"episode": episode + i, "prior": name, **{k: v[i] for k, v in s.items()},
                             "mean on object": on_object[i], "mean on background": on_background[i]})
        episode += len(label)
    return pd.DataFrame(rows, columns=list(PRIOR_COLUMNS))


@torch.no_grad()
def refinement_scores(model, batches: Iterable[dict], rounds: int = 6, version: str | Sequence[str] | None = None,
                      threshold: float = 0.5) -> pd.DataFrame:
    """Per episode, IMR variant and round r = 0..rounds (0: the discriminative prior before
    IMR), on the memory grid: the prior's iou / coverage / leak against the query label
    (nearest-sampled to the grid, as SCMA samples the support masks), the foreground prior's
    iou (the reference IMR borrows from), and for r >= 1 the mean blend weight W on object and
    on background cells, and how many (non-ignore) cells have W > 0.5, and how many of those
    are background (counts, to pool over episodes), and the mean of S_qs (the foreground-prior
    query memory's similarity to the support's object prototype, min-max over the cells; W's
    support term) on object and on background cells. `version`: one IMR variant ("v1", "v2"), several (one trace, then
    the IMR stage once per variant), or None (the model's). Episodes whose object vanishes
    on the grid ("object cells" 0) get NaN scores."""
    versions = [version] if version is None or isinstance(version, str) else list(version)
    versions = [model.refine_version if v is None else v for v in versions]
    rows, episode = [], 0
    for batch in batches:
        mem = model.trace(batch["query"], batch["supports"], batch["support_masks"], rounds=0).memories
        grid = label_on_grid(batch["query_label"], mem.prior_disc.shape[-2:])  # (B,h,w)
        obj, bg = (grid == 1).float(), (grid == 0).float()
        n_obj, n_bg = obj.flatten(1).sum(1), bg.flatten(1).sum(1)
        fg_iou = _region_scores(mem.prior_fg[:, 0].float(), grid, threshold)["iou"]
        for v in versions:
            _, steps = model.refine(mem, rounds, v, history=True)
            priors = [mem.prior_disc] + [step["prior_disc"] for step in steps]
            for r, prior in enumerate(priors):
                s = _region_scores(prior[:, 0].float(), grid, threshold)
                if r:
                    w = steps[r - 1]["W"][:, 0].float()  # (B,h,w)
                    w_obj = _share((w * obj).flatten(1).sum(1), n_obj)
                    w_bg = _share((w * bg).flatten(1).sum(1), n_bg)
                    high = (w > 0.5) & (grid != IGNORE)
                    s_qs = steps[r - 1]["S_qs"][:, 0].float()  # (B,h,w), the same every round
                    s_qs_obj = _share((s_qs * obj).flatten(1).sum(1), n_obj)
                    s_qs_bg = _share((s_qs * bg).flatten(1).sum(1), n_bg)
                    n_high, n_high_bg = high.flatten(1).sum(1).tolist(), (high & (grid == 0)).flatten(1).sum(1).tolist()
                for i in range(len(grid)):
                    rows.append({"episode": episode + i, "version": v, "round": r, "object cells": int(n_obj[i]),
                                 **{k: s[k][i] for k in ("iou", "coverage", "leak")},
                                 "W on object": w_obj[i] if r else NAN, "W on background": w_bg[i] if r else NAN,
                                 "W > 0.5 cells": n_high[i] if r else NAN,
                                 "W > 0.5 background cells": n_high_bg[i] if r else NAN,
                                 "foreground iou": fg_iou[i], "S_qs on object": s_qs_obj[i] if r else NAN,
                                 "S_qs on background": s_qs_bg[i] if r else NAN})
        episode += len(grid)
    return pd.DataFrame(rows, columns=list(REFINEMENT_COLUMNS))


@torch.no_grad()
def attention_scores(model, batches: Iterable[dict]) -> pd.DataFrame:
    """Per episode, layer and setting ("plain", "calibrated": the same memory through both
    attentions), over the query pixels of the object (on the memory grid) and heads:

    - "object -> query background" / "object -> query object" / "object -> query memory": the
      share of their whole attention (over the memory bank: supports, query memory, pointers)
      on query-memory cells of the background, of the object, on the whole query memory;
    - "background share of query memory": of their attention on the query memory's background
      and object cells, the share on background cells; compare with
    - "background cells": the share of those cells that are background (what a uniform
      attention over the query memory would give);
    - "peak": the largest weight they give one query-memory cell;
    - "calibration on query background" / "calibration on query object" (calibrated setting
      only, NaN for plain): the mean, over heads and over the query memory's background /
      object cells, of the calibration map c (how much each query-memory key resembles the
      support's object prototype, min-max over the keys): SCMA's bias s * min(Â + c - 1, 0)
      can only single out background keys whose c is lower than the object's.

    Episodes whose object vanishes on the grid are left out ("object cells" counts what is
    left). Needs a model with a query memory (FSSAM, not the naive one)."""
    rows, episode = [], 0
    for batch in batches:
        trace = model.trace(batch["query"], batch["supports"], batch["support_masks"])
        if trace.attention_calibrated is None:
            raise ValueError("attention_scores: the model has no query memory (query_memory=False), "
                             "nothing to calibrate")
        grid = label_on_grid(batch["query_label"], trace.query_memory.shape[-2:]).flatten(1)  # (B,N)
        obj, bg = (grid == 1).float(), (grid == 0).float()
        n_obj = obj.sum(1)
        for setting, maps in (("plain", trace.attention_plain), ("calibrated", trace.attention_calibrated)):
            calibration = maps.calibration or [None] * len(maps.query_attention)  # (B,heads,1,N) per layer
            for layer, (attn, c) in enumerate(zip(maps.query_attention, calibration), 1):  # attn (B,heads,N,N)
                a = attn.double()
                heads = a.mean(1)  # (B,N,N) heads averaged
                per_pixel = {"object -> query background": (heads * bg[:, None].double()).sum(-1),
                             "object -> query object": (heads * obj[:, None].double()).sum(-1),
                             "object -> query memory": heads.sum(-1),
                             "peak": a.amax(-1).mean(1)}  # each (B,N)
                for i in range(len(grid)):
                    if n_obj[i] == 0:
                        continue
                    rows_i = obj[i].bool()
                    row = {k: _f(v[i][rows_i].mean()) for k, v in per_pixel.items()}
                    valid = row["object -> query background"] + row["object -> query object"]
                    row["background share of query memory"] = (row["object -> query background"] / valid
                                                               if valid > 0 else NAN)
                    row["background cells"] = _f(bg[i].sum() / (bg[i] + obj[i]).sum())
                    c_i = None if c is None else c[i].double().mean(0)[0]  # (N,) heads averaged
                    row["calibration on query background"] = (NAN if c_i is None or bg[i].sum() == 0
                                                              else _f((c_i * bg[i]).sum() / bg[i].sum()))
                    row["calibration on query object"] = NAN if c_i is None else _f((c_i * obj[i]).sum() / n_obj[i])
                    rows.append({"episode": episode + i, "layer": layer, "setting": setting,
                                 "object cells": int(n_obj[i]), **row})
        episode += len(grid)
    return pd.DataFrame(rows, columns=list(ATTENTION_COLUMNS))


def token_grid_priors(truth: torch.Tensor, grid: int) -> torch.Tensor:
    """The priors a DINOv2 whose token features named the object exactly would give: each
    token's share of the ground-truth mask `truth` (B,S,S) in {0,1} on a `grid` x `grid` token
    grid stands in for its cosine with the support's object prototype (and 1 - share for the
    background one), through the pseudo prompt generator's own steps (min-max on the grid, then
    `priors_at_image_size`) -> (B,2,S,S)
    [foreground, discriminative]."""
    share = F.adaptive_avg_pool2d(truth[:, None].float(), grid)  # (B,1,t,t)
    fg_tok, bg_tok = minmax_normalize(share, dims=(2, 3)), minmax_normalize(1 - share, dims=(2, 3))
    fg, _, disc = priors_at_image_size(fg_tok, bg_tok, truth.shape[-2:])  # (B,1,S,S) each
    return torch.cat([fg, disc], dim=1)


def oracle_prior_scores(model, source, episodes, size: int, fold: int, device="cpu", batch_size: int = 16,
                        own: bool = True, token_grid: bool = False) -> dict:
    """The official evaluation (`engine.evaluate.evaluate`) of `model` (a full FSSAM, not
    `priors_only`) on `episodes` of `source`, with the query's ground-truth mask (ignore pixels
    as background) given as both priors of every shot: the ceiling that better priors could
    reach with these weights (never a method: the oracle reads the answer); with `token_grid`,
    also with `token_grid_priors` on the DINOv2 token grid (the ceiling of a perfect DINOv2 at
    its resolution); and, with `own`, with its own priors (pass own=False when an evaluation of
    the same weights and episodes is at hand, and take its mIoU). -> mIoU (%) {"ground-truth
    priors", "token-grid priors" (with `token_grid`), "own priors" (with `own`), "episodes",
    "token grid" (its side)}."""
    if getattr(model, "priors_only", False):
        raise ValueError("oracle_prior_scores: a priors-only model would just return the ground truth")
    grid = dino_size(size) // DINO_PATCH

    def oracle_step(make_priors):
        def step(model, batch, device):
            truth = (batch["query_label"] == 1).float().to(device)  # (B,S,S)
            priors = make_priors(truth)  # (B,2,S,S): [fg, disc]
            oracle = priors[:, None].expand(-1, batch["supports"].shape[1], -1, -1, -1)  # (B,K,2,S,S)
            return model(batch["query"].to(device), batch["supports"].to(device),
                         batch["support_masks"].to(device), priors=oracle)
        return step

    steps = {"own priors": call_model} if own else {}
    steps["ground-truth priors"] = oracle_step(lambda truth: truth[:, None].expand(-1, 2, -1, -1))
    if token_grid:
        steps["token-grid priors"] = oracle_step(lambda truth: token_grid_priors(truth, grid))
    out = {}
    for name, step in steps.items():
        r = evaluate(model, source, episodes, size=size, fold=fold, device=device, batch_size=batch_size,
                     progress=False, step=step)
        out[name] = 100 * r["miou"]
    return {**out, "episodes": len(episodes), "token grid": grid}


def training_progress(run: str | Path) -> dict:
    """From a run's log.csv: the val mIoU of every validation, the gain of the last one over the
    one before, and the Dice loss of the last tenth of the logged steps against the tenth before:
    whether the run was still improving when its budget ended."""
    log = pd.read_csv(Path(run) / "log.csv")
    val = log.dropna(subset=["val_miou"])
    loss = log.dropna(subset=["loss"])["loss"].to_numpy()
    n = max(1, len(loss) // 10)
    return {
        "val_steps": val["step"].astype(int).tolist(),
        "val_miou": val["val_miou"].round(4).tolist(),
        "last_val_gain": float(val["val_miou"].iloc[-1] - val["val_miou"].iloc[-2]) if len(val) >= 2 else NAN,
        "loss_last_tenth": float(loss[-n:].mean()) if len(loss) else NAN,
        "loss_tenth_before": float(loss[-2 * n : -n].mean()) if len(loss) >= 2 * n else NAN,
    }


def _mean(x) -> float:
    x = pd.Series(x, dtype="float64").dropna()
    return float(x.mean()) if len(x) else NAN


def summarise(priors: pd.DataFrame | None = None, refinement: pd.DataFrame | None = None,
              attention: pd.DataFrame | None = None, rounds: int | None = None) -> dict:
    """The headline numbers of the per-episode tables, means over the episodes that have the
    score (NaN skipped; NaN when none has it):

    - priors: "<prior> prior iou / coverage / leak" for each prior;
    - refinement (its first IMR variant; `rounds`: the model's rounds, None = every round of the
      table): "disc prior iou by round" (round 0 = before IMR), "best round" (None when no round
      has a score), "best minus rounds" / "best minus rounds s.e." (the best round's IoU minus
      that after `rounds`, paired over the episodes, and its standard error), "foreground prior
      iou", "W on object" / "W on background" and "W > 0.5 background share" (the share of the
      cells with W > 0.5 that are query background, pooled), "S_qs on object" / "S_qs on
      background", over rounds 1..`rounds` ("W rounds"),
      "episodes on the grid" (with an object cell);
    - attention (the last layer, the one the decoder reads): per setting "object -> query
      background (<setting>)", "background share of query memory (<setting>)", "object ->
      query memory (<setting>)", "background cells" (the uniform reference), and
      "calibration on query background" / "calibration on query object" (the map c)."""
    out = {}
    if priors is not None:
        for name, g in priors.groupby("prior", sort=False):
            for k in ("iou", "coverage", "leak"):
                out[f"{name} prior {k}"] = _mean(g[k])
    if refinement is not None:
        first = refinement[refinement["version"] == refinement["version"].iloc[0]] if len(refinement) else refinement
        by_round = first.groupby("round")["iou"].mean()
        out["disc prior iou by round"] = [round(float(v), 4) for v in by_round]
        out["best round"] = None if by_round.isna().all() else int(by_round.idxmax())
        out["foreground prior iou"] = _mean(first.loc[first["round"] == 0, "foreground iou"])
        last = int(first["round"].max()) if len(first) else 0
        last = last if rounds is None else min(rounds, last)
        per_episode = first.pivot_table(index="episode", columns="round", values="iou", dropna=False)
        if out["best round"] is None or last not in per_episode:
            out["best minus rounds"] = out["best minus rounds s.e."] = NAN
        else:
            diff = (per_episode[out["best round"]] - per_episode[last]).dropna()
            out["best minus rounds"] = _mean(diff)
            out["best minus rounds s.e."] = float(diff.sem()) if len(diff) > 1 else NAN
        weighted = first[(first["round"] >= 1) & (first["round"] <= last)]
        out["W rounds"] = last
        out["W on object"] = _mean(weighted["W on object"])
        out["W on background"] = _mean(weighted["W on background"])
        for k in ("S_qs on object", "S_qs on background"):
            out[k] = _mean(weighted[k]) if k in weighted else NAN
        if "W > 0.5 cells" in weighted and weighted["W > 0.5 cells"].sum() > 0:
            out["W > 0.5 background share"] = float(weighted["W > 0.5 background cells"].sum()
                                                    / weighted["W > 0.5 cells"].sum())
        else:
            out["W > 0.5 background share"] = NAN
        out["episodes on the grid"] = int(first.loc[first["round"] == 0, "object cells"].gt(0).sum())
    if attention is not None:
        last = attention[attention["layer"] == attention["layer"].max()] if len(attention) else attention
        for setting in ("plain", "calibrated"):
            g = last[last["setting"] == setting]
            for k in ("object -> query background", "background share of query memory", "object -> query memory"):
                out[f"{k} ({setting})"] = _mean(g[k])
        out["background cells"] = _mean(last.loc[last["setting"] == "plain", "background cells"])
        calibrated = last[last["setting"] == "calibrated"]
        for k in ("calibration on query background", "calibration on query object"):
            out[k] = _mean(calibrated[k]) if k in calibrated else NAN
    return out


def diagnose(model, batches: list[dict], rounds: int = 6) -> dict:
    """All three tables on the same batches and their summary: {"priors", "refinement",
    "attention", "summary"}."""
    with torch.inference_mode():
        priors = prior_scores(model, batches)
        refinement = refinement_scores(model, batches, rounds)
        attention = attention_scores(model, batches)
    return {"priors": priors, "refinement": refinement, "attention": attention,
            "summary": summarise(priors, refinement, attention)}


# ---- what limits each module: sentences from the numbers (closing cells of notebooks 03-05) ----


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.0%}"


def _num(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def _compare(a: float, b: float, tolerance: float, more: str, less: str, same: str) -> str:
    """`more` when a > b + tolerance, `less` when a < b - tolerance, else `same` (also with NaN)."""
    if math.isnan(a) or math.isnan(b) or abs(a - b) <= tolerance:
        return same
    return more if a > b else less


def prior_limits(summary: dict, tolerance: float = 0.01) -> list[str]:
    """From `summarise(priors=...)`: per prior its coverage, leak and IoU, which of its two
    errors is the larger (the object it misses, 1 - coverage, or the background in what it
    marks, the leak), and how the two priors compare (complementary errors or not)."""
    lines, stats = [], {}
    for name in ("foreground", "discriminative"):
        cov, leak, iou = (summary.get(f"{name} prior {k}", NAN) for k in ("coverage", "leak", "iou"))
        stats[name] = cov, leak
        if math.isnan(cov) or math.isnan(leak):
            lines.append(f"the {name} prior: coverage {_pct(cov)}, leak {_pct(leak)} (nothing to measure on these "
                         "episodes)")
            continue
        miss = 1 - cov
        limit = _compare(leak, miss, tolerance, f"its leak: {_pct(leak)} of what it marks is background, while it "
                         f"misses {_pct(miss)} of the object",
                         f"what it misses: {_pct(miss)} of the object, while {_pct(leak)} of what it marks is "
                         "background", f"both errors alike: it misses {_pct(miss)} of the object and "
                         f"{_pct(leak)} of what it marks is background")
        lines.append(f"the {name} prior marks {_pct(cov)} of the query's object (coverage) and {_pct(leak)} of what "
                     f"it marks is background (leak), IoU {_num(iou)}; its larger error is {limit}")
    (cf, lf), (cd, ld) = stats["foreground"], stats["discriminative"]
    cover = _compare(cd, cf, tolerance, "more", "less", "as much")
    leaks = _compare(ld, lf, tolerance, "more", "less", "as much")
    if (cover, leaks) == ("less", "less"):
        verdict = "complementary errors: the foreground prior is the more complete, the discriminative the cleaner"
    elif (cover, leaks) == ("more", "more"):
        verdict = ("complementary errors, the other way round: the discriminative prior is the more complete, "
                   "the foreground the cleaner")
    elif (cover, leaks) == ("as much", "as much"):
        verdict = "no difference beyond the tolerance"
    elif cover != "less" and leaks != "more":
        verdict = "not complementary: the discriminative prior is at least as good on both errors"
    else:
        verdict = "not complementary: the foreground prior is at least as good on both errors"
    than = "as" if cover == "as much" else "than"
    lines.append(f"the discriminative prior covers {cover} of the object {than} the foreground prior ({_pct(cd)} vs "
                 f"{_pct(cf)}) and leaks {leaks} ({_pct(ld)} vs {_pct(lf)}): {verdict}")
    return lines


def refinement_limits(summary: dict, rounds: int, tolerance: float = 0.005) -> list[str]:
    """From `summarise(refinement=...)`: the discriminative prior's IoU on the memory grid
    before IMR and after `rounds` (the model's rounds; the last scored round if fewer were
    run), the best round, the foreground prior for reference, and where W lands (object vs
    background cells)."""
    curve = summary.get("disc prior iou by round", [])
    kept = summary.get("episodes on the grid", 0)
    if not curve or summary.get("best round") is None:
        return [f"no episode keeps an object cell on the memory grid ({kept}), nothing to score"]
    r = min(rounds, len(curve) - 1)
    before, after = curve[0], curve[r]
    best = summary["best round"]
    change = _compare(after, before, tolerance, "raises", "lowers", "leaves")
    to = f"from {before:.3f} to {after:.3f}" if change != "leaves" else f"at {before:.3f} (then {after:.3f})"
    gap, se = summary.get("best minus rounds", NAN), summary.get("best minus rounds s.e.", NAN)
    if best == r or math.isnan(gap):
        versus = ""
    elif not math.isnan(se) and gap < 2 * se:
        versus = (f", {gap:.3f} ± {se:.3f} (paired s.e. over episodes) above the model's {r}: within two standard "
                  "errors, so no round count is clearly better on these episodes")
    else:
        versus = f", {gap:.3f} ± {se:.3f} (paired s.e. over episodes) above the model's {r}"
    lines = [(f"IMR ({r} round{'' if r == 1 else 's'}) {change} the discriminative prior's IoU on the memory grid "
              f"{to} ({kept} episodes with an object cell on the grid)"),
             (f"the best round is {best} (IoU {curve[best]:.3f}; round 0 = before IMR){versus}; the foreground "
              f"prior, which IMR borrows from, has IoU {_num(summary.get('foreground prior iou', NAN))} on the grid")]
    w_obj, w_bg = summary.get("W on object", NAN), summary.get("W on background", NAN)
    where = _compare(w_obj, w_bg, tolerance, "more on the object than on the background",
                     "more on the background than on the object", "about as much on the background as on the object")
    w_rounds = summary.get("W rounds", len(curve) - 1)
    span = "round 1" if w_rounds == 1 else f"rounds 1-{w_rounds}"
    share = summary.get("W > 0.5 background share", NAN)
    high = "" if math.isnan(share) else f"; of the cells with W > 0.5, {_pct(share)} are background"
    lines.append(f"W averages {_num(w_obj)} on object cells and {_num(w_bg)} on background cells ({span}): IMR "
                 f"blends M_fg in {where}{high}")
    q_obj, q_bg = summary.get("S_qs on object", NAN), summary.get("S_qs on background", NAN)
    if not (math.isnan(q_obj) or math.isnan(q_bg)):
        tells = _compare(q_obj, q_bg, tolerance, "higher on the object", "higher on the background",
                         "about equal on both: it cannot tell them apart")
        lines.append(f"W's support term S_qs (the foreground-prior query memory against the support's object "
                     f"prototype, 0..1) averages {q_obj:.3f} on object cells and {q_bg:.3f} on background cells: "
                     f"{tells}")
    return lines


def attention_limits(summary: dict, tolerance: float = 0.005) -> list[str]:
    """From `summarise(attention=...)` (the last layer): the share of their query-memory
    attention that query-object pixels give to query-background cells, plain vs calibrated,
    against the uniform reference (the share of those cells that are background), and how much
    of their whole attention goes to the query memory at all."""
    plain = summary.get("background share of query memory (plain)", NAN)
    calib = summary.get("background share of query memory (calibrated)", NAN)
    uniform = summary.get("background cells", NAN)
    if math.isnan(plain) or math.isnan(calib):
        return ["no episode keeps an object cell on the memory grid: nothing to measure"]
    change = _compare(calib, plain, tolerance, "raises", "lowers", "leaves")
    reads = _compare(plain, uniform, tolerance, "more than", "less than", "about as much as")
    lines = [(f"query-object pixels give {plain:.1%} (plain) and {calib:.1%} (calibrated) of their query-memory "
              f"attention to query-background cells; a uniform attention would give {uniform:.1%} (the share of "
              "the cells that are background)"),
             (f"the calibration {change} that share ({plain:.1%} -> {calib:.1%}); plain attention reads the "
              f"background {reads} a uniform attention would")]
    q_plain = summary.get("object -> query memory (plain)", NAN)
    q_calib = summary.get("object -> query memory (calibrated)", NAN)
    b_plain = summary.get("object -> query background (plain)", NAN)
    b_calib = summary.get("object -> query background (calibrated)", NAN)
    lines.append(f"of their whole attention (supports, query memory, pointers) the query memory gets {q_plain:.1%} "
                 f"(plain) and {q_calib:.1%} (calibrated), its background cells {b_plain:.1%} and {b_calib:.1%}")
    c_bg, c_obj = summary.get("calibration on query background", NAN), summary.get("calibration on query object", NAN)
    if not (math.isnan(c_bg) or math.isnan(c_obj)):
        tells = _compare(c_obj, c_bg, tolerance, "higher on the object, so the bias falls harder on background keys",
                         "higher on the background, so the bias falls harder on object keys",
                         "about equal on both, so the bias cannot single out background keys")
        lines.append(f"the calibration map c (each query-memory key's similarity to the support's object prototype, "
                     f"0..1) averages {c_obj:.3f} on object cells and {c_bg:.3f} on background cells: {tells}")
    return lines
