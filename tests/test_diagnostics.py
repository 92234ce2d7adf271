"""fss_sam2.tutorial.diagnostics: the per-episode tables of notebooks 03-05 against hand
computations (stub priors, and the model's own trace on a tiny random model), the summary,
the sentences that say what limits each module, and a run's training progress."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from fss_sam2.loading import load_model
from fss_sam2.tutorial import binary_scores, diagnostics, label_on_grid

S = 64  # image side of the tiny model; memory grid 4 x 4 (stride 16, cells sample pixels 0, 16, 32, 48)
nan = math.nan


# ---- priors: a stub model whose priors we write by hand ----


class StubPriors:
    """Stands for FSSAM in `prior_scores`: `pseudo_prompts` returns the given per-shot maps."""

    def __init__(self, fg: torch.Tensor, disc: torch.Tensor):
        self.fg, self.disc = fg, disc
        self.masks = []

    def pseudo_prompts(self, query, supports, masks):
        self.masks.append(masks)
        return SimpleNamespace(fg=self.fg, disc=self.disc)


def _stub_batch(label: torch.Tensor, shots: int = 1) -> dict:
    b, h, w = label.shape
    return {"query": torch.zeros(b, 3, h, w), "supports": torch.zeros(b, shots, 3, h, w),
            "support_masks": torch.full((b, shots, h, w), 255), "query_label": label}


def test_prior_scores_by_hand():
    # one 1x8 query: pixels 0-3 object, 4-6 background, 7 ignore
    label = torch.tensor([[[1, 1, 1, 1, 0, 0, 0, 255]]])
    # foreground prior: marks object pixels 0-2 and background pixels 4-5 (and the ignore pixel)
    fg = torch.tensor([[[[0.9, 0.8, 0.6, 0.1, 0.7, 0.5, 0.2, 1.0]]]])
    # discriminative prior, two shots whose mean marks object pixels 0-1 only
    disc = torch.stack([torch.tensor([[1.0, 0.7, 0.4, 0.0, 0.2, 0.0, 0.0, 0.9]]),
                        torch.tensor([[0.8, 0.5, 0.4, 0.0, 0.4, 0.2, 0.0, 0.9]])])[None]  # (1,2,1,8)
    model = StubPriors(fg.expand(1, 2, 1, 8), disc)
    batch = _stub_batch(label, shots=2)
    table = diagnostics.prior_scores(model, [batch]).set_index("prior")
    assert list(table.columns) == [c for c in diagnostics.PRIOR_COLUMNS if c != "prior"]
    f, d = table.loc["foreground"], table.loc["discriminative"]
    # fg: 3 of 4 object pixels marked, 2 of its 5 marked valid pixels background, IoU 3 / 6
    assert f["coverage"] == pytest.approx(3 / 4) and f["leak"] == pytest.approx(2 / 5)
    assert f["iou"] == pytest.approx(3 / 6) and f["marked"] == pytest.approx(5 / 7)
    assert f["mean on object"] == pytest.approx((0.9 + 0.8 + 0.6 + 0.1) / 4)
    assert f["mean on background"] == pytest.approx((0.7 + 0.5 + 0.2) / 3)  # the ignore pixel left out
    # disc (shot mean 0.9 0.6 0.4 0 0.3 0.1 0 0.9): marks pixels 0-1, nothing of the background
    assert d["coverage"] == pytest.approx(2 / 4) and d["leak"] == pytest.approx(0.0)
    assert d["iou"] == pytest.approx(2 / 4) and d["marked"] == pytest.approx(2 / 7)
    # the same thresholding as binary_scores: coverage = recall, leak = 1 - precision
    for name, prior in (("foreground", fg.mean(1)), ("discriminative", disc.mean(1))):
        s = binary_scores(prior, label)
        assert table.loc[name, "coverage"] == pytest.approx(float(s["recall"][0]))
        assert table.loc[name, "leak"] == pytest.approx(1 - float(s["precision"][0]))
        assert table.loc[name, "iou"] == pytest.approx(float(s["iou"][0]))
    # the support masks reach the priors binarised, ignore pixels as background (as the model)
    assert torch.equal(model.masks[0], torch.zeros(1, 2, 1, 8))


def test_prior_scores_nan_when_there_is_nothing_to_measure():
    label = torch.tensor([[[0, 0, 0, 255]], [[1, 1, 0, 0]]])  # episode 0: no object pixel
    prior = torch.tensor([[[0.9, 0.1, 0.1, 0.1]], [[0.1, 0.2, 0.3, 0.4]]])[:, None]  # episode 1 marks nothing
    table = diagnostics.prior_scores(StubPriors(prior, prior), [_stub_batch(label)])
    fg = table[table.prior == "foreground"].set_index("episode")
    assert math.isnan(fg.loc[0, "coverage"]) and math.isnan(fg.loc[0, "iou"])
    assert math.isnan(fg.loc[0, "mean on object"])
    assert fg.loc[0, "leak"] == 1.0  # it marks background only
    assert math.isnan(fg.loc[1, "leak"]) and fg.loc[1, "coverage"] == 0.0 and fg.loc[1, "marked"] == 0.0
    summary = diagnostics.summarise(priors=table)
    assert summary["foreground prior coverage"] == 0.0 and summary["foreground prior leak"] == 1.0  # NaN skipped


def test_prior_scores_episode_numbers_run_over_batches():
    label = torch.tensor([[[1, 0]]])
    prior = torch.tensor([[[0.9, 0.1]]])[:, None]
    model = StubPriors(prior, prior)
    table = diagnostics.prior_scores(model, [_stub_batch(label), _stub_batch(label)])
    assert sorted(table.episode.unique()) == [0, 1] and len(table) == 4


# ---- the tiny model with random weights, on hand-made episodes ----


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(None, image_size=S, sam2="tiny-toy", dino="tiny-toy").eval()


def _label(box, vanish=False) -> torch.Tensor:
    """A query label with a square object; ignore band around it."""
    lab = torch.zeros(S, S, dtype=torch.long)
    y0, y1, x0, x1 = box
    lab[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
    lab[y0:y1, x0:x1] = 1
    return lab


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    labels = torch.stack([
        _label((14, 40, 14, 40)),  # covers grid cells (1,1), (1,2), (2,1), (2,2)
        _label((28, 62, 12, 60)),  # cells (2,1..3) and (3,1..3)
        _label((4, 12, 20, 30)),  # no sampled pixel: the object vanishes on the 4 x 4 grid
    ])
    support_masks = torch.stack([_label((10, 50, 10, 50)), _label((20, 44, 8, 40)), _label((16, 48, 16, 48))])[:, None]
    return {"query": torch.randint(0, 256, (3, 3, S, S), generator=g).float(),
            "supports": torch.randint(0, 256, (3, 1, 3, S, S), generator=g).float(),
            "support_masks": support_masks, "query_label": labels}


def test_the_hand_made_objects_on_the_grid(batch):
    grid = label_on_grid(batch["query_label"], (4, 4))
    assert [int((g == 1).sum()) for g in grid] == [4, 6, 0]


def test_prior_scores_of_the_model_are_its_trace_priors(model, batch):
    table = diagnostics.prior_scores(model, [batch])
    trace = model.trace(batch["query"], batch["supports"], batch["support_masks"], rounds=0)
    for name, prior in (("foreground", trace.priors.fg.mean(1)), ("discriminative", trace.priors.disc.mean(1))):
        s = binary_scores(prior, batch["query_label"])
        rows = table[table.prior == name].set_index("episode")
        assert rows["iou"].tolist() == pytest.approx(s["iou"].tolist())
        assert rows["coverage"].tolist() == pytest.approx(s["recall"].tolist())
        obj = batch["query_label"] == 1
        assert rows["mean on object"].tolist() == pytest.approx([float(prior[i][obj[i]].mean()) for i in range(3)])
    assert table[["iou", "coverage", "leak", "marked"]].stack().between(0, 1).all()


def test_refinement_round_0_is_the_memories_prior(model, batch):
    table = diagnostics.refinement_scores(model, [batch], rounds=4, version=("v1", "v2"))
    assert list(table.columns) == list(diagnostics.REFINEMENT_COLUMNS)
    assert len(table) == 3 * 2 * 5  # episodes x variants x rounds 0..4
    trace = model.trace(batch["query"], batch["supports"], batch["support_masks"], rounds=0)
    mem = trace.memories
    grid = label_on_grid(batch["query_label"], mem.prior_disc.shape[-2:])
    before = binary_scores(mem.prior_disc, grid)
    fg = binary_scores(mem.prior_fg, grid)
    for version in ("v1", "v2"):
        r0 = table[(table.version == version) & (table["round"] == 0)].set_index("episode")
        assert r0["iou"].tolist()[:2] == pytest.approx(before["iou"].tolist()[:2])
        assert r0["coverage"].tolist()[:2] == pytest.approx(before["recall"].tolist()[:2])
        assert r0["foreground iou"].tolist()[:2] == pytest.approx(fg["iou"].tolist()[:2])
        assert r0[["W on object", "W on background", "W > 0.5 cells"]].isna().all().all()  # no W before IMR
    # the episode whose object vanishes on the grid: no score, never a 0
    lost = table[table.episode == 2]
    assert (lost["object cells"] == 0).all() and lost["iou"].isna().all() and lost["coverage"].isna().all()
    assert lost["W on object"].isna().all() and lost.loc[lost["round"] > 0, "W on background"].notna().all()
    assert table.loc[table.episode < 2, "object cells"].tolist()[:1] == [4]


def test_refinement_rounds_follow_the_model_imr(model, batch):
    """Rounds 1.. of the table are the model's own IMR history (its trace, default v1)."""
    trace = model.trace(batch["query"], batch["supports"], batch["support_masks"], rounds=3, version="v1")
    table = diagnostics.refinement_scores(model, [batch], rounds=3, version="v1")
    grid = label_on_grid(batch["query_label"], (4, 4))
    for r, step in enumerate(trace.refinement, 1):
        rows = table[table["round"] == r].set_index("episode")
        s = binary_scores(step["prior_disc"], grid)
        assert rows["iou"].tolist()[:2] == pytest.approx(s["iou"].tolist()[:2])
        w = step["W"][:, 0]
        for i in range(3):
            obj, bg = grid[i] == 1, grid[i] == 0
            if obj.any():
                assert rows.loc[i, "W on object"] == pytest.approx(float(w[i][obj].mean()))
            assert rows.loc[i, "W on background"] == pytest.approx(float(w[i][bg].mean()))
            high = (w[i] > 0.5) & (grid[i] != 255)
            assert rows.loc[i, "W > 0.5 cells"] == int(high.sum())
            assert rows.loc[i, "W > 0.5 background cells"] == int((high & bg).sum())
            s_qs = step["S_qs"][:, 0]
            if obj.any():
                assert rows.loc[i, "S_qs on object"] == pytest.approx(float(s_qs[i][obj].mean()))
            assert rows.loc[i, "S_qs on background"] == pytest.approx(float(s_qs[i][bg].mean()))
    assert table["W on object"].dropna().between(0, 1).all()
    assert table.loc[table["round"] == 0, ["S_qs on object", "S_qs on background"]].isna().all().all()


def test_refinement_version_none_is_the_model_switch(model, batch):
    table = diagnostics.refinement_scores(model, [batch], rounds=1)
    assert set(table.version) == {model.refine_version}


def test_attention_shares(model, batch):
    table = diagnostics.attention_scores(model, [batch])
    assert list(table.columns) == list(diagnostics.ATTENTION_COLUMNS)
    layers = len(model.sam2.memory_attention.layers)
    assert sorted(table.episode.unique()) == [0, 1]  # episode 2 has no object cell on the grid
    assert len(table) == 2 * 2 * layers and set(table.setting) == {"plain", "calibrated"}
    shares = ["object -> query background", "object -> query object", "object -> query memory",
              "background share of query memory", "background cells", "peak"]
    assert table[shares].stack().between(0, 1).all()
    eps = 1e-9
    assert (table["object -> query background"] + table["object -> query object"]
            <= table["object -> query memory"] + eps).all()
    assert (table["object -> query memory"] <= 1 + eps).all()
    assert (table["peak"] <= table["object -> query memory"] + eps).all()
    on_bg, on_obj = table["object -> query background"], table["object -> query object"]
    ratio = on_bg / (on_bg + on_obj)
    assert table["background share of query memory"].tolist() == pytest.approx(ratio.tolist())
    # the uniform reference: background cells of the query memory, ignore cells left out
    grid = label_on_grid(batch["query_label"], (4, 4))
    for i in (0, 1):
        expected = float((grid[i] == 0).sum() / (grid[i] != 255).sum())
        assert table.loc[table.episode == i, "background cells"].tolist() == pytest.approx([expected] * 2 * layers)
    # by hand from the trace, episode 0, last layer, plain
    trace = model.trace(batch["query"], batch["supports"], batch["support_masks"])
    a = trace.attention_plain.query_attention[-1][0].double().mean(0)  # (N,N)
    g = grid[0].flatten()
    rows = a[g == 1]  # query-object pixels
    row = table[(table.episode == 0) & (table.layer == layers) & (table.setting == "plain")].iloc[0]
    assert row["object -> query background"] == pytest.approx(float(rows[:, g == 0].sum(1).mean()))
    assert row["object -> query object"] == pytest.approx(float(rows[:, g == 1].sum(1).mean()))
    # the calibration map c: only in the calibrated setting, by hand from the trace (episode 0, last layer)
    calibration = ["calibration on query background", "calibration on query object"]
    assert table.loc[table.setting == "plain", calibration].isna().all().all()
    assert table.loc[table.setting == "calibrated", calibration].stack().between(0, 1).all()
    c = trace.attention_calibrated.calibration[-1][0].double().mean(0)[0]  # (N,)
    row = table[(table.episode == 0) & (table.layer == layers) & (table.setting == "calibrated")].iloc[0]
    assert row["calibration on query background"] == pytest.approx(float(c[g == 0].mean()))
    assert row["calibration on query object"] == pytest.approx(float(c[g == 1].mean()))


def test_attention_scores_need_a_query_memory(batch):
    torch.manual_seed(0)
    naive = load_model(None, image_size=S, sam2="tiny-toy", dino="tiny-toy", query_memory=False).eval()
    with pytest.raises(ValueError, match="no query memory"):
        diagnostics.attention_scores(naive, [batch])


def test_diagnose_and_summary(model, batch):
    out = diagnostics.diagnose(model, [batch], rounds=2)
    s = out["summary"]
    ref = out["refinement"]
    by_round = [ref.loc[ref["round"] == r, "iou"].mean() for r in range(3)]
    assert s["disc prior iou by round"] == [round(v, 4) for v in by_round]
    assert s["best round"] == max(range(3), key=lambda r: by_round[r])
    assert s["episodes on the grid"] == 2
    pri = out["priors"]
    assert s["discriminative prior leak"] == pytest.approx(pri.loc[pri.prior == "discriminative", "leak"].mean())
    att = out["attention"]
    last = att[(att.layer == att.layer.max()) & (att.setting == "calibrated")]
    share = "background share of query memory"
    assert s[f"{share} (calibrated)"] == pytest.approx(last[share].mean())
    assert 0 < s["background cells"] < 1
    for lines in (diagnostics.prior_limits(s), diagnostics.refinement_limits(s, 2), diagnostics.attention_limits(s)):
        assert lines and all(isinstance(line, str) and "nan" not in line for line in lines)


# ---- summary and sentences on hand-made tables ----


def _refinement(ious: dict[int, list[float]], w_obj=0.6, w_bg=0.1) -> pd.DataFrame:
    rows = []
    for r, values in ious.items():
        for e, v in enumerate(values):
            rows.append({"episode": e, "version": "v1", "round": r, "object cells": 0 if math.isnan(v) else 3,
                         "iou": v, "W on object": w_obj if r else nan, "W on background": w_bg if r else nan,
                         "foreground iou": 0.2})
    return pd.DataFrame(rows)


def test_summarise_refinement_by_hand():
    s = diagnostics.summarise(refinement=_refinement({0: [0.2, 0.4, nan], 1: [0.5, 0.5, nan], 2: [0.4, 0.4, nan]}))
    assert s["disc prior iou by round"] == [0.3, 0.5, 0.4] and s["best round"] == 1
    assert s["episodes on the grid"] == 2 and s["W on object"] == pytest.approx(0.6)
    assert s["foreground prior iou"] == pytest.approx(0.2)
    lines = diagnostics.refinement_limits(s, rounds=2)
    assert lines[0].startswith("IMR (2 rounds) raises the discriminative prior's IoU on the memory grid "
                               "from 0.300 to 0.400")
    assert "the best round is 1 (IoU 0.500" in lines[1]
    assert lines[2].endswith("IMR blends M_fg in more on the object than on the background")
    worse = diagnostics.summarise(refinement=_refinement({0: [0.5], 1: [0.4], 2: [0.3]}, w_obj=0.1, w_bg=0.3))
    lines = diagnostics.refinement_limits(worse, rounds=3)  # only 2 rounds scored: the last one
    assert lines[0].startswith("IMR (2 rounds) lowers the discriminative prior's IoU on the memory grid "
                               "from 0.500 to 0.300")
    assert "the best round is 0" in lines[1] and "more on the background than on the object" in lines[2]
    assert len(lines) == 3  # no S_qs in the table: no sentence on it
    with_support = _refinement({0: [0.5], 1: [0.4]})
    with_support["S_qs on object"] = with_support["round"].map({0: nan, 1: 0.62})
    with_support["S_qs on background"] = with_support["round"].map({0: nan, 1: 0.60})
    s = diagnostics.summarise(refinement=with_support)
    assert s["S_qs on object"] == pytest.approx(0.62) and s["S_qs on background"] == pytest.approx(0.60)
    assert diagnostics.refinement_limits(s, rounds=1)[-1].endswith(
        "averages 0.620 on object cells and 0.600 on background cells: higher on the object")
    # only the first variant of the table is summarised
    two = pd.concat([_refinement({0: [0.5], 1: [0.4]}), _refinement({0: [0.5], 1: [0.9]}).assign(version="v2")])
    assert diagnostics.summarise(refinement=two)["best round"] == 0


def test_summarise_refinement_over_the_model_rounds_with_a_paired_standard_error():
    table = _refinement({0: [0.2, 0.4, 0.3], 1: [0.5, 0.6, 0.4], 2: [0.45, 0.55, 0.45], 3: [0.3, 0.3, 0.3]})
    table["W on object"] = table["round"].map({0: nan, 1: 0.6, 2: 0.4, 3: 0.0})
    table["W > 0.5 cells"] = table["round"].map({0: nan, 1: 4, 2: 2, 3: 100})
    table["W > 0.5 background cells"] = table["round"].map({0: nan, 1: 3, 2: 0, 3: 100})
    s = diagnostics.summarise(refinement=table, rounds=2)
    assert s["best round"] == 1 and s["W rounds"] == 2
    assert s["W on object"] == pytest.approx(0.5)  # rounds 1-2 only, not round 3's 0.0
    assert s["W > 0.5 background share"] == pytest.approx(3 / 6)  # pooled over rounds 1-2: 3 of 6 cells
    diff = pd.Series([0.05, 0.05, -0.05])  # round 1 minus round 2 per episode
    assert s["best minus rounds"] == pytest.approx(diff.mean())
    assert s["best minus rounds s.e."] == pytest.approx(diff.sem())
    lines = diagnostics.refinement_limits(s, rounds=2)
    assert "within two standard errors, so no round count is clearly better" in lines[1]
    assert "(rounds 1-2)" in lines[2] and "of the cells with W > 0.5, 50% are background" in lines[2]
    clear = table.copy()
    clear.loc[clear["round"] == 1, "iou"] = [0.7, 0.8, 0.75]  # ahead of round 2 by 0.25 to 0.3 in every episode
    lines = diagnostics.refinement_limits(diagnostics.summarise(refinement=clear, rounds=2), rounds=2)
    assert "above the model's 2" in lines[1] and "no round count is clearly better" not in lines[1]


def test_summarise_refinement_without_any_object_on_the_grid():
    s = diagnostics.summarise(refinement=_refinement({0: [nan], 1: [nan]}))
    assert s["best round"] is None and s["episodes on the grid"] == 0
    assert diagnostics.refinement_limits(s, rounds=1)[0].startswith("no episode keeps an object cell")


def _attention(plain: float, calibrated: float, uniform: float = 0.8, c_bg: float = nan, c_obj: float = nan
               ) -> pd.DataFrame:
    rows = []
    for layer, shift in ((1, 0.3), (2, 0.0)):  # only the last layer counts
        for setting, share in (("plain", plain), ("calibrated", calibrated)):
            calibrated_only = (c_bg - shift, c_obj) if setting == "calibrated" else (nan, nan)
            rows.append({"episode": 0, "layer": layer, "setting": setting, "object -> query background": share / 2,
                         "object -> query object": (1 - share) / 2, "object -> query memory": 0.5,
                         "background share of query memory": share - shift, "background cells": uniform,
                         "calibration on query background": calibrated_only[0],
                         "calibration on query object": calibrated_only[1]})
    return pd.DataFrame(rows)


def test_calibration_map_sentence():
    s = diagnostics.summarise(attention=_attention(0.9, 0.6, c_bg=0.7, c_obj=0.72))
    assert s["calibration on query background"] == pytest.approx(0.7)  # the last layer's
    assert s["calibration on query object"] == pytest.approx(0.72)
    lines = diagnostics.attention_limits(s)
    assert lines[-1].endswith("averages 0.720 on object cells and 0.700 on background cells: higher on the object, "
                              "so the bias falls harder on background keys")
    same = diagnostics.attention_limits(diagnostics.summarise(attention=_attention(0.9, 0.6, c_bg=0.7, c_obj=0.703)))
    assert same[-1].endswith("about equal on both, so the bias cannot single out background keys")
    # without c (no calibrated rows scored it) there is no sentence about it
    assert len(diagnostics.attention_limits(diagnostics.summarise(attention=_attention(0.9, 0.6)))) == 3


def test_summarise_attention_and_its_sentences():
    s = diagnostics.summarise(attention=_attention(0.9, 0.6))
    assert s["background share of query memory (plain)"] == pytest.approx(0.9)
    assert s["background share of query memory (calibrated)"] == pytest.approx(0.6)
    assert s["object -> query background (calibrated)"] == pytest.approx(0.3) and s["background cells"] == 0.8
    lines = diagnostics.attention_limits(s)
    assert lines[0].startswith("query-object pixels give 90.0% (plain) and 60.0% (calibrated)")
    assert "a uniform attention would give 80.0%" in lines[0]
    assert "the calibration lowers that share (90.0% -> 60.0%)" in lines[1]
    assert "plain attention reads the background more than a uniform attention would" in lines[1]
    up = diagnostics.attention_limits(diagnostics.summarise(attention=_attention(0.5, 0.7)))
    assert "the calibration raises that share" in up[1] and "less than a uniform" in up[1]
    same = diagnostics.attention_limits(diagnostics.summarise(attention=_attention(0.8, 0.8)))
    assert "leaves that share" in same[1] and "about as much as a uniform" in same[1]
    empty = diagnostics.summarise(attention=pd.DataFrame(columns=list(diagnostics.ATTENTION_COLUMNS)))
    assert math.isnan(empty["background cells"])
    assert diagnostics.attention_limits(empty)[0].startswith("no episode keeps an object cell")


def _priors(fg: tuple, disc: tuple) -> pd.DataFrame:
    return pd.DataFrame([{"episode": 0, "prior": name, "iou": 0.3, "coverage": c, "leak": l}
                         for name, (c, l) in (("foreground", fg), ("discriminative", disc))])


def test_prior_sentences():
    s = diagnostics.summarise(priors=_priors((0.9, 0.6), (0.5, 0.2)))
    lines = diagnostics.prior_limits(s)
    assert lines[0].startswith("the foreground prior marks 90% of the query's object (coverage) and 60% of what "
                               "it marks is background (leak)")
    assert ("its larger error is its leak: 60% of what it marks is background, while it misses 10% of the object"
            in lines[0])
    assert "its larger error is what it misses: 50% of the object" in lines[1]
    assert lines[2] == ("the discriminative prior covers less of the object than the foreground prior (50% vs 90%) "
                        "and leaks less (20% vs 60%): complementary errors: the foreground prior is the more "
                        "complete, the discriminative the cleaner")
    better = diagnostics.prior_limits(diagnostics.summarise(priors=_priors((0.5, 0.6), (0.7, 0.2))))
    assert "not complementary: the discriminative prior is at least as good on both errors" in better[2]
    level = diagnostics.prior_limits(diagnostics.summarise(priors=_priors((0.5, 0.5), (0.5, 0.5))))
    assert "covers as much of the object as the foreground prior" in level[2]
    assert "both errors alike" in level[0]


# ---- training progress from a log ----


def test_training_progress_by_hand(tmp_path):
    rows = ["step,epoch,loss,lr,seconds,val_miou,val_fb_iou"]
    rows += [f"{s},{s / 10:g},{1 - s / 100:.2f},0.001,{s},," for s in range(1, 21)]  # 20 loss rows, 0.99 .. 0.80
    rows.insert(1, "0,0,,,0,0.1,0.5")
    rows.insert(12, "10,1,,,10,0.3,0.6")
    rows.append("20,2,,,20,0.25,0.6")
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    p = diagnostics.training_progress(tmp_path)
    assert p["val_steps"] == [0, 10, 20] and p["val_miou"] == [0.1, 0.3, 0.25]
    assert p["last_val_gain"] == pytest.approx(-0.05)
    # 20 loss rows: the last tenth is steps 19-20, the tenth before steps 17-18
    assert p["loss_last_tenth"] == pytest.approx((0.81 + 0.80) / 2)
    assert p["loss_tenth_before"] == pytest.approx((0.83 + 0.82) / 2)


def test_training_progress_of_a_short_log(tmp_path):
    (tmp_path / "log.csv").write_text("step,epoch,loss,lr,seconds,val_miou,val_fb_iou\n"
                                      "1,0,0.9,0.001,1,,\n2,0,,,2,0.2,0.5\n")
    p = diagnostics.training_progress(tmp_path)
    assert p["val_miou"] == [0.2] and math.isnan(p["last_val_gain"])
    assert p["loss_last_tenth"] == pytest.approx(0.9) and math.isnan(p["loss_tenth_before"])


# ---- the oracle priors: the same weights with the ground truth as both priors ----


def test_oracle_prior_scores_own_priors_are_the_evaluation(tmp_path):
    from fss_sam2.data.episodes import make_episodes
    from fss_sam2.data.sources import ListSource
    from fss_sam2.engine.evaluate import evaluate
    from tests.fixtures_data import write_tiny_root

    source = ListSource(write_tiny_root(tmp_path))
    episodes = make_episodes(source, fold=0, shot=1, episodes=12)
    torch.manual_seed(0)
    fssam = load_model(None, image_size=S, sam2="tiny-toy", dino="tiny-toy").eval()
    scores = diagnostics.oracle_prior_scores(fssam, source, episodes, size=S, fold=0, batch_size=4)
    reference = evaluate(fssam, source, episodes, size=S, fold=0, batch_size=4, progress=False)
    assert scores["episodes"] == 12
    assert scores["own priors"] == pytest.approx(100 * reference["miou"])  # the official protocol's number
    assert scores["ground-truth priors"] != pytest.approx(scores["own priors"])  # the priors reached the model
    grid = S * 35 // 32 // 14  # the DINOv2 token grid of the image side S
    alone = diagnostics.oracle_prior_scores(fssam, source, episodes, size=S, fold=0, batch_size=4, own=False,
                                            token_grid=True)
    assert set(alone) == {"ground-truth priors", "token-grid priors", "episodes", "token grid"}
    assert alone["ground-truth priors"] == scores["ground-truth priors"] and alone["token grid"] == grid
    assert alone["token-grid priors"] != pytest.approx(alone["ground-truth priors"])  # coarser priors, other logits
    priors_only = load_model(None, image_size=S, sam2="tiny-toy", dino="tiny-toy", priors_only=True)
    with pytest.raises(ValueError, match="priors-only"):
        diagnostics.oracle_prior_scores(priors_only, source, episodes, size=S, fold=0)


def test_token_grid_priors_follow_the_prompt_generator():
    # an object covering the left 3 of 4 tokens' columns exactly: shares 1 there, 0 in the last column
    truth = torch.zeros(1, 8, 8)
    truth[0, :, :6] = 1
    fg, disc = diagnostics.token_grid_priors(truth, grid=4)[0]
    assert fg.shape == (8, 8) and float(fg.min()) == 0 and float(fg.max()) == pytest.approx(1, abs=1e-6)
    assert torch.allclose(fg[:, :5], torch.ones(8, 5), atol=1e-6)  # bilinear, corners aligned: ones up to x = 5
    assert float(fg[0, 7]) == pytest.approx(0, abs=1e-6)
    # the contrast with the ideal background similarity (1 - share): max(2 fg - 1, 0), min-max
    expected = (2 * fg - 1).clamp_min(0)
    assert torch.allclose(disc, expected / expected.max(), atol=1e-5)
    # 2 x 2 tokens of 4 x 4 pixels: token (0,0) covered, token (0,1) half covered, the rest empty; the
    # corner pixels sit exactly on the token centres (align_corners): the foreground prior keeps the
    # half-covered token at 0.5, the contrast with the background (2 fg - 1 = 0) drops it
    half = torch.zeros(1, 8, 8)
    half[0, :4, :4] = 1
    half[0, :4, 4:6] = 1
    fg, disc = diagnostics.token_grid_priors(half, grid=2)[0]
    assert [float(fg[0, 0]), float(fg[0, 7]), float(fg[7, 0])] == pytest.approx([1, 0.5, 0], abs=1e-6)
    assert [float(disc[0, 0]), float(disc[0, 7]), float(disc[7, 7])] == pytest.approx([1, 0, 0], abs=1e-6)
