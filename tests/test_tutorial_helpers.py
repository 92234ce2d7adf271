"""The helpers the notebooks 02, 07 and 09 call (moved out of their cells): sentences, figures,
the baseline's result file, what a memory read shows, the demo folder."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image

from fss_sam2.baseline import write_baseline_result
from fss_sam2.tutorial import demo, memory_reads, report, tables, viz
from fss_sam2.tutorial.memory_study import MemoryRead

S = 32


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


# ---- report: the verdict and the sentences ----


def test_relation():
    assert report.relation(0.5, 0.4, 0.02) == "higher"
    assert report.relation(0.4, 0.5, 0.02) == "lower"
    assert report.relation(0.5, 0.49, 0.02) == "level"
    assert report.relation(2.0, 0.0, 2.0) == "level"  # the tolerance itself is level
    assert report.relation(math.nan, 0.5, 0.02) == "level"


FSS = "few-shot episodes: fold 0, 1-shot"


def _summary(track=0.80, empty=0.30, other=0.60, fss=0.50, ratios=(3.0, 1.5, 1.2, 1.1), with_other=True):
    rows = {report.TRACKING: (track, ratios[0]), report.EMPTY_MEMORY: (empty, ratios[1]),
            report.OTHER_INDIVIDUAL: (other, ratios[2]), FSS: (fss, ratios[3])}
    if not with_other:
        del rows[report.OTHER_INDIVIDUAL]
    return pd.DataFrame({k: {"mean IoU": v[0], "ratio": v[1]} for k, v in rows.items()}).T


def test_compare_settings_sentences():
    summary = _summary()
    assert report.compare_settings(summary, report.TRACKING, FSS, "mean IoU") == (
        "mean IoU 0.80 with a memory from 'tracking: same individual' is higher than 0.50 with "
        "'few-shot episodes: fold 0, 1-shot'")
    assert report.compare_settings(summary, FSS, report.TRACKING, "ratio") == (
        "ratio 1.10 with a memory from 'few-shot episodes: fold 0, 1-shot' is lower than 3.00 with "
        "'tracking: same individual'")
    level = _summary(fss=0.79)
    assert " is about the same as 0.79 " in report.compare_settings(level, report.TRACKING, FSS, "mean IoU")


def test_memory_findings_reads_memory():
    text = report.memory_findings(_summary(), FSS)
    assert text == (
        "Measured:\n"
        "- mean IoU 0.80 with a memory from 'tracking: same individual' is higher than 0.50 with "
        "'few-shot episodes: fold 0, 1-shot';\n"
        "- mean IoU 0.80 with a memory from 'tracking: same individual' is higher than 0.30 with "
        "'tracking: empty memory mask';\n"
        "- mean IoU 0.80 with a memory from 'tracking: same individual' is higher than 0.60 with "
        "'clips: another individual, same class';\n"
        "- ratio 3.00 with a memory from 'tracking: same individual' is higher than 1.10 with "
        "'few-shot episodes: fold 0, 1-shot'.\n"
        "So this SAM 2 reads its memory: emptying the memory mask costs IoU.")
    assert report.reads_memory(_summary())


def test_memory_findings_ignores_memory_and_no_clips():
    summary = _summary(empty=0.79, with_other=False)  # emptying the mask costs 0.01 only
    assert not report.reads_memory(summary)
    text = report.memory_findings(summary, FSS)
    assert text.count("\n- ") == 3 and "another individual" not in text
    assert "\nSo this SAM 2 does NOT read its memory (emptying the mask changes nothing)" in text
    only = pd.DataFrame({FSS: {"mean IoU": 0.4567, "ratio": 1.0}}).T
    assert report.memory_findings(only, FSS) == (
        "Measured: mean IoU 0.46 on few-shot episodes (no clips to compare).")


NAIVE, PRIORS = "SAM 2 (support as memory)", "priors only"


def _gains(**by_method) -> dict:
    return {m: {"gain": g, "ci95": list(ci)} for m, (g, ci) in by_method.items()}


def test_gains_from_the_ablation_file_rows():
    deltas = pd.DataFrame({"method": [NAIVE], tables.GAIN: [1.5], f"{tables.GAIN} 95% CI": [[0.5, 2.5]]})
    assert report.gains_by_method(deltas) == {NAIVE: {"gain": 1.5, "ci95": [0.5, 2.5]}}
    assert report.interval_text({"gain": -0.04, "ci95": [-0.3, 0.0]}) == (
        "-0.04 points, 95% interval [-0.30, 0.00], includes 0")
    assert report.interval_text({"gain": -0.6, "ci95": [-0.8, -0.04]}) == (
        "-0.60 points, 95% interval [-0.80, -0.04], excludes 0")


def test_compare_methods():
    miou = pd.Series({"FSSAM": 60.04, NAIVE: 50.0, PRIORS: 59.0, "colour-prototype baseline": 61.0, "x": 62.0})
    gains = _gains(**{NAIVE: (10.04, (8.0, 12.1)), PRIORS: (1.04, (-0.5, 2.0)), "x": (-1.96, (-3.0, -0.4))})
    assert report.compare_methods(miou, gains, NAIVE) == (
        "beats SAM 2 (support as memory): 60.0 vs 50.0 mIoU (+10.0 points, 95% interval [+8.0, +12.1], excludes 0)")
    assert report.compare_methods(miou, gains, PRIORS) == (
        "is level with priors only: 60.0 vs 59.0 mIoU (+1.0 points, 95% interval [-0.5, +2.0], includes 0)")
    assert report.compare_methods(miou, gains, "x").startswith("is beaten by x: 60.0 vs 62.0 mIoU (-2.0 points")
    assert report.compare_methods(miou, gains, "colour-prototype baseline") == (
        "does not beat colour-prototype baseline: 60.0 vs 61.0 mIoU (-1.0 points; no paired interval)")
    same = pd.Series({"FSSAM": 40.0, NAIVE: 40.0})
    assert report.compare_methods(same, {}, NAIVE) == (
        "does not beat SAM 2 (support as memory): 40.0 vs 40.0 mIoU (+0.0 points; no paired interval)")  # no "-0.0"
    assert report.compare_methods(miou, gains, "FSSAM w/o IMR") == (
        "cannot be compared with 'FSSAM w/o IMR' (not evaluated)")


def test_ablation_findings():
    miou = {"FSSAM": 57.5, "FSSAM w/o IMR": 55.0, "FSSAM w/o IMR, SCMA": 52.34}
    gains = _gains(**{"FSSAM w/o IMR": (2.5, (1.0, 4.0)), "FSSAM w/o IMR, SCMA": (5.16, (3.0, 7.2))})
    assert report.ablation_findings(miou, gains) == [
        "Removing IMR changes the mIoU from 57.5 to 55.0 (FSSAM's gain +2.5 points, 95% interval [+1.0, +4.0], "
        "excludes 0).",
        "Removing IMR and SCMA changes the mIoU from 57.5 to 52.3 (FSSAM's gain +5.2 points, 95% interval "
        "[+3.0, +7.2], excludes 0).",
    ]
    nothing = report.ablation_findings({"FSSAM": 57.5, "FSSAM w/o IMR": 57.5, "FSSAM w/o SCMA": 57.52},
                                       _gains(**{"FSSAM w/o IMR": (0.0, (0.0, 0.0)),
                                                 "FSSAM w/o SCMA": (-0.02, (-0.1, 0.05))}))
    assert len(nothing) == 3 and "does not use its query memory" in nothing[2]
    assert report.ablation_findings({"FSSAM": 57.5}, {}) == []


def test_ablation_verdict_prefers_the_training_seeds():
    gains = _gains(**{"FSSAM w/o IMR": (-0.7, (-1.1, -0.3)), "FSSAM w/o SCMA": (0.1, (-0.2, 0.4)),
                      NAIVE: (1.5, (0.9, 2.1))})
    lines = report.ablation_verdict(gains)
    assert lines[0] == ("Iterative Memory Refinement (IMR) hurt: FSSAM's gain -0.7 points, 95% interval [-1.1, -0.3], "
                        "excludes 0 (one training run, paired over the episodes; diagnostics: notebook 04).")
    assert lines[1].startswith("Support-Calibrated Memory Attention (SCMA) made no difference this evaluation can "
                               "tell from 0")
    assert "helped" in lines[2] and "notebooks 02 and 03" in lines[2] and len(lines) == 3
    across = _gains(**{"FSSAM w/o IMR": (-0.2, (-0.9, 0.5))})
    mixed = report.ablation_verdict(gains, across, "321, 1, 2")
    assert "made no difference" in mixed[0] and "over training seeds 321, 1, 2" in mixed[0]
    assert "one training run" in mixed[1]
    tiny = report.ablation_verdict(_gains(**{"FSSAM w/o SCMA": (-0.03, (-0.06, -0.01))}))
    assert tiny == ["Support-Calibrated Memory Attention (SCMA) hurt, by less than 0.05 points: FSSAM's gain -0.03 "
                    "points, 95% interval [-0.06, -0.01], excludes 0 (one training run, paired over the episodes; "
                    "diagnostics: notebook 05)."]


def test_measured_seconds():
    results = pd.DataFrame({"method": ["FSSAM", "FSSAM w/o IMR", "colour"], "seconds": [35.2, 16.0, math.nan]})
    assert report.measured_seconds(results) == "FSSAM 35 s, FSSAM w/o IMR 16 s"


def test_toy_gap_states_measured_numbers(tmp_path):
    run = tmp_path / "runs" / "toy_fssam"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"steps": 168, "seconds": 84.0}))
    result = tmp_path / "results.json"
    result.write_text(json.dumps({"checkpoint": str(run / "best.pt")}))
    toy = pd.Series({"mIoU": 26.3, "mIoU 95% CI": [25.1, 27.5], "fold": 0, "shot": 1, "image_size": 128,
                     "path": str(result)})
    paper = {"fold0": 81.6, "verified_against_paper": "no"}
    text = report.toy_gap(toy, paper, 512, 20)
    for part in ("81.6 mIoU on PASCAL-5i fold 0, 1-shot (paper_numbers.csv, not yet verified", "26.3 (95% interval "
                 "[25.1, 27.5])", "168 steps in 1.4 min", "128 px instead of 512", "a world of 20 procedurally"):
        assert part in text
    result.write_text("{}")  # no run folder: no step count is made up
    assert "trained for minutes on a CPU" in report.toy_gap(toy, paper, 512, None)


# ---- the baseline's result file ----


def test_write_baseline_result_is_read_back(tmp_path):
    r0 = {"miou": 0.5, "fb_iou": 0.7, "per_class": {1: 0.4, 2: 0.6}, "episodes": 4}
    r1 = {"miou": 0.3, "fb_iou": 0.5, "per_class": {6: 0.3}, "episodes": 4}
    path = tmp_path / "baseline" / "results.json"
    record = write_baseline_result(path, {0: r0, 1: r1}, dataset="toy", shot=1, synthetic=True)
    data = json.loads(path.read_text())
    assert record["miou"] == data["miou"]
    assert path.read_text().endswith("}\n")
    assert data["model"] == "colour-prototype baseline" and data["folds"]["1"]["miou"] == 0.3
    assert data["miou"] == pytest.approx(0.4) and data["fb_iou"] == pytest.approx(0.6)
    rows = tables.read_result(path)
    assert [(r["method"], r["fold"], r["shot"], r["backbone"]) for r in rows] == [
        ("colour-prototype baseline", 0, 1, "none"), ("colour-prototype baseline", 1, 1, "none")]
    assert rows[0]["mIoU"] == pytest.approx(50.0) and rows[0]["per_class"] == {1: 40.0, 2: 60.0}
    assert rows[0]["synthetic"] and rows[0]["num_refine"] is None
    with pytest.raises(ValueError, match="no fold"):
        write_baseline_result(tmp_path / "x.json", {}, dataset="toy", shot=1, synthetic=True)


# ---- memory reads (notebook 02) and the demo folder (notebook 09) ----


def _sample(k: int = 1, seed: int = 0, gap: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(S, S, dtype=torch.long)
    label[8:24, 8:24] = 1
    return {"query": torch.rand(3, S, S, generator=g) * 255, "query_label": label,
            "supports": torch.rand(k, 3, S, S, generator=g) * 255, "support_masks": label.expand(k, S, S).clone(),
            "cls": 1, "gap": gap}


def test_stack():
    query, supports, masks = memory_reads.stack([_sample(2, 0), _sample(2, 1)])
    assert query.shape == (2, 3, S, S) and supports.shape == (2, 2, 3, S, S) and masks.shape == (2, 2, S, S)
    assert torch.equal(supports[1], _sample(2, 1)["supports"])


class _FakeSource:
    """Two novel classes of fold 0 with 8 val images each, one more class with one image."""

    root = "fake"

    def __init__(self):
        self.items = {c: [SimpleNamespace(image=f"JPEGImages/img_{c}_{i}.jpg", cls=c) for i in range(n)]
                      for c, n in ((3, 8), (4, 8), (5, 1))}

    def novel(self, fold):
        return [5, 3, 4]  # class 5 has too few images

    def fold_list(self, split, fold):
        return SimpleNamespace(by_class=self.items)

    def load_image(self, item):
        return np.full((20, 30, 3), 10 * item.cls, np.uint8)

    def load_label(self, item):
        label = np.zeros((20, 30), np.uint8)
        label[5:15, 5:15] = item.cls
        label[4, 5:15] = 255  # the ignore band: background in the demo masks
        return label


def test_write_demo(tmp_path):
    tut = SimpleNamespace(source=_FakeSource(), class_name=lambda c: f"class{c}")
    out = tmp_path / "demo"
    (out / "stale").mkdir(parents=True)
    cls, supports = demo.write_demo(tut, out, fold=0, shot=2, queries=3)
    assert cls == 3 and not (out / "stale").exists()
    assert supports == [(out / "support" / "example_1.jpg", out / "support" / "example_1_mask.png"),
                        (out / "support" / "example_2.jpg", out / "support" / "example_2_mask.png")]
    assert sorted(p.name for p in (out / "queries").iterdir()) == ["img_3_2.jpg", "img_3_3.png", "img_3_4.jpg"]
    assert len(list((out / "truth").iterdir())) == 3
    assert sorted(p.name for p in (out / "classes").iterdir()) == ["class3", "class4"]
    assert len(list((out / "classes" / "class4").iterdir())) == 16  # 8 images + 8 masks
    mask = np.asarray(Image.open(out / "support" / "example_1_mask.png"))
    assert mask.shape == (20, 30) and set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 100
    with pytest.raises(ValueError, match="no novel class of fold 0 has 9 val images"):
        demo.write_demo(tut, out, fold=0, shot=8)


# ---- viz: the notebook figures ----


def _clip_and_read():
    clip = [_sample(seed=i, gap=i + 1) for i in range(3)]
    logits = torch.full((3, S, S), -10.0)
    logits[0, 8:24, 8:24] = 10.0  # frame 1: exactly the object
    logits[1, 8:24, 8:16] = 10.0  # frame 2: half of it
    return clip, MemoryRead(logits, [], 1, (4, 4))


def test_frame_ious():
    clip, read = _clip_and_read()
    probs, iou = memory_reads.frame_ious(clip, read)
    assert probs.shape == (3, S, S) and probs.min() > 0 and probs.max() < 1
    assert iou.tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_frame_strip():
    clip, read = _clip_and_read()
    fig = viz.frame_strip(clip, *memory_reads.frame_ious(clip, read), "clip")
    assert len(fig.axes) == 4
    assert _titles(fig) == ["memory: frame 0", "frame 1: IoU 1.00", "frame 2: IoU 0.50", "frame 3: IoU 0.00"]
    assert fig._suptitle.get_text() == "clip"
    frame2 = fig.axes[2]  # frame 2: the prediction (orange) and the ground truth (white) as outlines
    assert len(frame2.images) == 1  # the image only: no filled mask over it
    (pred, truth) = frame2.collections
    assert tuple(pred.get_edgecolor()[0][:3]) == pytest.approx(to_rgb(viz.PRED_COLOR))
    assert tuple(truth.get_edgecolor()[0][:3]) == pytest.approx(to_rgb(viz.MASK_COLOR))
    xy = np.concatenate([p.vertices for p in pred.get_paths()])  # p > 0.5 on columns 8..15, rows 8..23
    assert xy[:, 0].min() == pytest.approx(8, abs=0.6) and xy[:, 0].max() == pytest.approx(16, abs=0.6)


class _NaiveModel:
    """What `read_memory` needs of `FSSAM(query_memory=False)`: a trace with logits, the query
    features' grid and the memory-attention weights (here 2 layers, 2 heads, fixed)."""

    query_memory = False

    def __init__(self, grid=(4, 4), layers=2):
        self.grid, self.layers = grid, layers

    def trace(self, query, supports, support_masks):
        b, k = supports.shape[:2]
        n = self.grid[0] * self.grid[1]
        weights = [torch.softmax(torch.randn(b, 2, n, k * n + 4 * k, generator=torch.Generator().manual_seed(i)), -1)
                   for i in range(self.layers)]  # (B,heads,n,K*n + 4K pointers)
        return SimpleNamespace(logits=torch.zeros(b, *query.shape[-2:]), attention=SimpleNamespace(weights=weights),
                               query_features=SimpleNamespace(pix=torch.zeros(b, 1, *self.grid)))


def test_object_attention():
    region, maps = memory_reads.object_attention(_NaiveModel(), _sample())
    # the object (pixels 8..23) on a 4x4 grid of 8-pixel cells, nearest: cells 1 and 2
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:3] = True
    assert torch.equal(region, expected)
    assert len(maps) == 2 and maps[0].shape == (1, 4, 4)
    assert float(maps[0].sum()) < 1  # the rest of the attention goes to the pointers
    empty = {**_sample(), "query_label": torch.zeros(S, S, dtype=torch.long)}
    assert memory_reads.object_attention(_NaiveModel(), empty)[0].all()  # no object: every cell


def test_attention_rows():
    model = _NaiveModel()
    empty = {**_sample(seed=1), "query_label": torch.zeros(S, S, dtype=torch.long)}
    cases = [(name, s, *memory_reads.object_attention(model, s)) for name, s in (("tracking", _sample()),
                                                                                 ("few-shot", empty))]
    fig = viz.attention_rows(cases, layers=2, title="attention")
    assert len(fig.axes) == 2 * 4 + 2 * 2  # the panels, and a colour bar for each of the 4 attention maps
    assert _titles(fig)[:8] == ["tracking: query object cells", "memory image + mask", "layer 1 attention",
                            "layer 2 attention", "few-shot: query object cells", "memory image + mask",
                            "layer 1 attention", "layer 2 attention"]
    assert len(fig.axes[0].images) == 1 and len(fig.axes[0].collections) == 2  # GT and object cells: outlines
    heat = fig.axes[2].images[-1]  # layer 1's map over the memory image, on its own scale
    assert heat.get_array().shape == (4, 4) and heat.get_clim()[1] == pytest.approx(float(heat.get_array().max()))


def test_show_predictions(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[:5] = 255
    files = []
    for name in ("s1", "q1", "q2", "q3"):
        Image.fromarray(np.full((10, 10, 3), 128, np.uint8)).save(tmp_path / f"{name}.jpg")
        Image.fromarray(mask).save(tmp_path / f"{name}.png")
        files.append(tmp_path / f"{name}.jpg")
    supports, queries = [(files[0], tmp_path / "s1.png")], files[1:]
    pred = np.zeros((10, 10), bool)
    pred[:5, :5] = True  # half of the ground truth
    truth = {"q1": mask == 255, "q2": None}
    fig = viz.show_predictions(supports, queries, [pred] * 3, truth=lambda q: truth.get(q.stem), title="mine")
    assert len(fig.axes) == 2 * 3  # a row of supports, then the queries, 3 a row
    assert _titles(fig) == ["support: s1.jpg", "", "", "q1.jpg, IoU 0.50", "q2.jpg", "q3.jpg"]
    assert len(viz.show_predictions(supports, queries[:1], [pred]).axes) == 2


def test_prior_ceiling_adds_up_to_its_printed_numbers():
    text = report.prior_ceiling({"own priors": 28.64, "ground-truth priors": 56.76, "episodes": 1000})
    assert "score 28.6 mIoU, with the query's ground truth as both priors 56.8 (1000 episodes)" in text
    assert "The +28.2 points" in text  # 56.8 - 28.6, not round(56.76 - 28.64) = 28.1
    assert "token grid" not in text
    grid = report.prior_ceiling({"own priors": 28.64, "ground-truth priors": 56.76, "token-grid priors": 41.26,
                                 "token grid": 10, "episodes": 1000})
    assert grid.startswith(text)
    assert "at its 10 x 10 token grid" in grid and "worth 41.3: +12.7 over the own priors, -15.5 against" in grid


def _toy_rows(fssam: dict, five: dict | None = None) -> pd.DataFrame:
    """`collect_results`-like rows: FSSAM's 1-shot (and 5-shot) mIoU by fold, plus another
    training seed's result that must not count."""
    rows = [{"fold": f, "shot": 1, "method": "FSSAM", "mIoU": m, "training seed": math.nan} for f, m in fssam.items()]
    rows += [{"fold": f, "shot": 5, "method": "FSSAM", "mIoU": m, "training seed": 321} for f, m in (five or {}).items()]
    rows.append({"fold": 0, "shot": 1, "method": "FSSAM", "mIoU": 99.0, "training seed": 1})
    return pd.DataFrame(rows)


def _toy_deltas(by_method: dict, seeds: str = "321") -> pd.DataFrame:
    """`ablation_deltas`-like rows, 1-shot: {method: [(fold, gain, (low, high)), ...]}."""
    rows = [{"fold": f, "shot": 1, "training seeds": seeds, "method": m, tables.GAIN: g, f"{tables.GAIN} 95% CI": list(ci)}
            for m, entries in by_method.items() for f, g, ci in entries]
    return pd.DataFrame(rows, columns=["fold", "shot", "training seeds", "method", tables.GAIN, f"{tables.GAIN} 95% CI"])


def test_toy_targets_on_four_folds_and_training_seeds():
    results = _toy_rows({0: 28.6, 1: 29.9, 2: 25.6, 3: 30.0}, five={0: 32.6, 1: 32.2, 2: 29.6, 3: 24.0})
    deltas = pd.concat([
        _toy_deltas({NAIVE: [(0, 7.4, (6.3, 8.6)), (1, 10.5, (9, 12)), (2, 7.8, (6, 9)), (3, 5.9, (5, 7))],
                     PRIORS: [(0, 1.5, (0.6, 2.4)), (1, 2.6, (1, 4)), (2, -0.3, (-1.1, 0.6)), (3, 3.5, (2, 5))],
                     "FSSAM w/o IMR": [(f, 2.0, (1.0, 3.0)) for f in range(4)],
                     "FSSAM w/o SCMA": [(0, -0.03, (-0.04, -0.01)), (1, 0.5, (0.2, 0.8)), (2, 0.4, (0.1, 0.7)),
                                        (3, 0.6, (0.3, 0.9))]}),
        _toy_deltas({NAIVE: [(0, 7.3, (6.7, 8.0))], "FSSAM w/o IMR": [(0, 1.9, (-0.2, 2.2))]}, seeds="321, 1, 2"),
    ])
    lines = report.toy_targets(results, deltas)
    assert lines[0] == "The synthetic world's targets, 1-shot, the mean of folds 0, 1, 2, 3:"
    assert lines[1] == "MISSED: FSSAM at least 50 mIoU: 28.5 (per fold 28.6, 29.9, 25.6, 30.0)."
    assert lines[2] == ("MISSED: FSSAM at least 10 points above the naive SAM 2: +7.9 (per fold +5.9 to +10.5); fold 0 "
                        "over training seeds 321, 1, 2: +7.3 points, 95% interval [+6.7, +8.0], excludes 0.")
    assert lines[3] == "MISSED: FSSAM at least 10 points above the priors alone: +1.8 (per fold -0.3 to +3.5)."
    # every fold's interval is above 0, the one over training seeds is not
    assert lines[4].startswith("MISSED: removing IMR lowers the mIoU, FSSAM's gain above 0 with 95% confidence: on 4 "
                               "of 4 folds (gains +2.0 to +2.0); fold 0 over training seeds 321, 1, 2: +1.9 points")
    assert lines[5] == ("MISSED: removing SCMA lowers the mIoU, FSSAM's gain above 0 with 95% confidence: on 3 of 4 "
                        "folds (gains -0.03 to +0.60).")
    assert lines[6] == "MISSED: FSSAM's 5-shot mIoU above its 1-shot one: 29.6 against 28.5, higher on 3 of 4 folds."
    assert len(lines) == 7


def test_toy_targets_met_on_one_fold_and_unmeasured_ones():
    results = _toy_rows({0: 61.0}, five={0: 64.0})
    deltas = _toy_deltas({NAIVE: [(0, 12.0, (11, 13))], PRIORS: [(0, 10.5, (9, 12))],
                          "FSSAM w/o IMR": [(0, 1.0, (0.5, 1.5))]})
    lines = report.toy_targets(results, deltas)
    assert lines[0].startswith("The synthetic world's targets, 1-shot, fold 0 only (the targets are on the mean of the "
                               "4 folds")
    assert lines[1] == "met: FSSAM at least 50 mIoU: 61.0."
    assert lines[2].startswith("met: FSSAM at least 10 points above the naive SAM 2: +12.0 (per fold +12.0)")
    assert lines[3].startswith("met: FSSAM at least 10 points above the priors alone: +10.5")
    assert lines[4] == ("met on the episodes, not measured over 3 training seeds: removing IMR lowers the mIoU, FSSAM's "
                        "gain above 0 with 95% confidence: on 1 of 1 fold (gains +1.0).")
    assert lines[5] == "not measured: removing SCMA lowers the mIoU (not evaluated)."
    assert lines[6] == "met: FSSAM's 5-shot mIoU above its 1-shot one: 64.0 against 61.0, higher on 1 of 1 fold."
    assert report.toy_targets(results[results["shot"] == 5], deltas) == [
        "No 1-shot FSSAM result: nothing to hold against the targets."]
