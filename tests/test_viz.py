"""Plotting helpers: every function returns a Figure with the expected panels and titles."""
from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from fss_sam2.toy.shipped import shipped_folder
from fss_sam2.tutorial import viz

S = 32


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _episode(k: int = 2, cls: int = 3) -> dict:
    g = torch.Generator().manual_seed(cls)
    label = torch.zeros(S, S, dtype=torch.long)
    label[8:20, 8:20] = 1
    label[7, 8:20] = 255
    return {
        "query": torch.rand(3, S, S, generator=g) * 255,
        "query_label": label,
        "supports": torch.rand(k, 3, S, S, generator=g) * 255,
        "support_masks": label.expand(k, S, S).clone(),
        "cls": cls,
    }


def _titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_headless_backend():
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("MPLBACKEND")):
        assert matplotlib.get_backend().lower() == "agg"


def test_conversions():
    img = viz.to_image(torch.full((3, 4, 5), 300.0))  # (3,H,W) float -> (H,W,3) uint8, clipped
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8 and img.max() == 255
    assert viz.to_image(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5, 3)
    assert viz.to_map(torch.zeros(1, 1, 4, 5)).shape == (4, 5)
    with pytest.raises(ValueError, match="expected \\(3,H,W\\)"):
        viz.to_image(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="expected \\(H,W\\)"):
        viz.to_map(np.zeros((2, 4, 5)))


def test_pca_rgb_colours_feature_directions():
    feats = torch.zeros(2, 8, 4, 4)
    feats[0, 0] = 1.0  # image 0: direction 0 everywhere
    feats[1, 1, :2] = 1.0  # image 1: direction 1 on the top half, nothing below
    rgb = viz.pca_rgb(feats)
    assert rgb.shape == (2, 4, 4, 3) and rgb.dtype == np.uint8
    colours = {tuple(rgb[0, 0, 0]), tuple(rgb[1, 0, 0]), tuple(rgb[1, 3, 0])}
    assert len(colours) == 3  # three feature vectors, three colours
    assert (rgb[0] == rgb[0, 0, 0]).all()  # one vector, one colour


def test_overlay_mask_heat_outline():
    ep = _episode()
    fig = viz.overlay(ep["query"], ep["query_label"], title="query")
    assert isinstance(fig, Figure) and _titles(fig) == ["query"]
    ax = fig.axes[0]
    assert len(ax.images) == 2  # image + the light wash of the 255 band, nothing over the object
    wash = ax.images[1].get_array()
    assert wash[10, 10, 3] == 0 and wash[7, 10, 3] > 0  # the object keeps its colours, the band is washed
    assert len(ax.collections) == 1  # the mask as an outline
    fig = viz.overlay(ep["query"], heat=torch.rand(4, 4), outline=ep["query_label"])
    assert len(fig.axes) == 2 and len(fig.axes[0].images) == 2  # panel + its colour bar (the default)
    assert fig.axes[0].images[1].get_cmap().name == viz.PROB_CMAP
    assert fig.axes[0].collections  # the outline contour
    assert len(viz.overlay(ep["query"], heat=torch.rand(4, 4), colorbar=False).axes) == 1


def _contour_colours(ax) -> list[tuple]:
    return [tuple(np.round(c.get_edgecolor()[0][:3], 3)) for c in ax.collections]


def test_masks_are_outlines_in_their_colours():
    from matplotlib.colors import to_rgb

    ep = _episode(1)
    fig = viz.show_episode(ep, prediction=torch.zeros(S, S).index_fill_(0, torch.arange(8, 14), 1.0))
    support, query, pred = fig.axes
    white, orange = tuple(np.round(to_rgb(viz.MASK_COLOR), 3)), tuple(np.round(to_rgb(viz.PRED_COLOR), 3))
    assert _contour_colours(support) == [white] and _contour_colours(query) == [white]
    assert sorted(_contour_colours(pred)) == sorted([orange, white])  # prediction over the ground truth
    for ax in fig.axes:  # no filled layer over the objects: the image and at most the 255 wash
        layers = [im.get_array() for im in ax.images[1:]]  # above the RGB image: RGBA washes only
        assert all(a.shape[-1] == 4 and a[12, 12, 3] == 0 for a in layers)


def test_coarse_cells_keep_their_edges():
    cells = np.zeros((4, 4), bool)
    cells[1:3, 1:3] = True  # 2x2 cells of a 4x4 grid over a 32-px image: a square from 8 to 24
    fig = viz.overlay(np.zeros((S, S, 3), np.uint8), cells=cells)
    (lines,) = fig.axes[0].collections
    xy = np.concatenate([p.vertices for p in lines.get_paths()])
    assert xy[:, 0].min() == pytest.approx(8, abs=0.6) and xy[:, 0].max() == pytest.approx(24, abs=0.6)
    full = viz.overlay(np.zeros((S, S, 3), np.uint8), np.ones((S, S), np.uint8))  # touches the border: closed
    assert full.axes[0].collections


def test_diff_limits_are_symmetric():
    assert viz.diff_limits(np.array([-0.2, 0.5]), torch.tensor([0.1])) == (-0.5, 0.5)
    assert viz.diff_limits(np.zeros(3)) == (-1.0, 1.0)


def test_show_episode_rows_and_columns():
    eps = [_episode(2, 3), _episode(2, 4)]
    names = [f"c{i}" for i in range(1, 21)]
    fig = viz.show_episode(eps, prediction=[e["query_label"] for e in eps], class_names=names, title="two")
    assert len(fig.axes) == 2 * 4  # 2 supports + query + prediction per row
    titles = _titles(fig)
    assert titles[:4] == ["support 1: c3", "support 2: c3", "query + ground truth", viz.PREDICTION_TITLE]
    assert titles[4] == "support 1: c4" and fig._suptitle.get_text() == "two"
    single = viz.show_episode(_episode(1))
    assert _titles(single) == ["support 1: class 3", "query + ground truth"]
    with pytest.raises(ValueError, match="1 predictions for 2 episodes"):
        viz.show_episode(eps, prediction=[eps[0]["query_label"]])


def test_map_grid_titles_and_colour_bars():
    maps = [torch.rand(4, 4) for _ in range(5)]
    names = [f"m{i}" for i in range(5)]
    fig = viz.map_grid(maps, names, ncols=3, title="grid")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == names
    assert len(fig.axes) == 6 + 5  # 2x3 grid (one empty) + one colour bar per map
    over = viz.map_grid(maps[:2], names[:2], image=torch.rand(3, S, S) * 255, outline=torch.ones(S, S))
    assert len(over.axes) == 4
    with pytest.raises(ValueError, match="1 titles for 5 maps"):
        viz.map_grid(maps, ["x"])


def test_map_rows_blank_cells_and_shared_scale():
    rows = {"a": [torch.full((3, 3), 0.5), None, torch.full((3, 3), 2.0)], "b": [torch.zeros(3, 3)]}
    fig = viz.map_rows(rows, ["c1", "c2", "c3"], vmax=None, marker=(1, 1))
    grid = fig.axes[:6]
    assert [ax.get_title() for ax in grid[:3]] == ["c1", "c2", "c3"]
    assert grid[0].get_ylabel() == "a" and grid[3].get_ylabel() == "b"
    assert not grid[1].images and not grid[4].images  # None and missing cells stay blank
    assert grid[2].images[0].get_clim() == (0.0, 2.0)  # vmax=None: the largest value shown
    assert len(fig.axes) == 7  # one shared colour bar


def test_round_strip_from_history():
    history = [{k: torch.rand(2, 1, 4, 4) for k in ("S_qs", "S_qq", "W", "prior_disc")} for _ in range(3)]
    fig = viz.round_strip(history, initial=torch.rand(1, 4, 4), index=1, title="imr")
    grid = fig.axes[:16]  # 4 rows x (before + 3 rounds)
    assert [ax.get_title() for ax in grid[:4]] == ["before", "round 1", "round 2", "round 3"]
    assert [grid[4 * r].get_ylabel() for r in range(4)] == ["S_qs", "S_qq", "W", "prior_disc"]
    assert not grid[0].images and grid[12].images  # "before" holds the prior only
    np.testing.assert_allclose(grid[13].images[0].get_array(), history[0]["prior_disc"][1, 0].numpy())
    with pytest.raises(ValueError, match="not in the history"):
        viz.round_strip(history, keys=("nope",))


def test_attention_maps_pick_the_pixel_row():
    from fss_sam2.modules.calibrated_attention import AttentionMaps

    attn = torch.zeros(1, 2, 16, 16)  # (B,heads,N,N) on a 4x4 grid
    attn[0, :, 5, 10] = 0.2  # query pixel (1,1) -> memory location (2,2)
    maps = {"plain": AttentionMaps(query_attention=[attn, attn]),
            "calibrated": AttentionMaps(calibration=[torch.rand(1, 2, 1, 16)] * 2, query_attention=[attn, attn / 2])}
    fig = viz.attention_maps(maps, (1, 1), title="attn")
    grid = fig.axes[:4]
    assert [ax.get_title() for ax in grid[:2]] == ["layer 1", "layer 2"]
    assert grid[0].get_ylabel() == "plain: attention" and grid[2].get_ylabel() == "calibrated: attention"
    assert grid[0].images[0].get_cmap().name == viz.PROB_CMAP
    shown = grid[3].images[0].get_array()
    assert shown.shape == (4, 4) and shown[2, 2] == pytest.approx(0.1) and shown.sum() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no query-memory attention"):
        viz.attention_maps({"x": AttentionMaps()}, (0, 0))


def test_compare_maps_columns():
    ep = [_episode(1, c) for c in (1, 2, 3)]
    images = [e["query"] for e in ep]
    labels = [e["query_label"] for e in ep]
    fig = viz.compare_maps(images, {"p": [torch.rand(4, 4)] * 3, "q": [torch.rand(4, 4)] * 3}, labels, title="c")
    assert len(fig.axes) == 3 * 3 + 1  # one shared colour bar
    assert [fig.axes[3 * r].get_ylabel() for r in range(3)] == ["image + ground truth", "p", "q"]
    assert fig.axes[3].images[1].get_cmap().name == viz.PROB_CMAP
    with pytest.raises(ValueError, match="row 'p' has 2 maps for 3 images"):
        viz.compare_maps(images, {"p": [torch.rand(4, 4)] * 2})


def test_savefig_writes_png(tmp_path):
    fig = viz.overlay(np.zeros((8, 8, 3), np.uint8), title="x")
    path = viz.savefig(fig, tmp_path / "sub" / "x.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="x.jpg: figures are written as PNG"):
        viz.savefig(fig, tmp_path / "x.jpg")


def test_show_episode_takes_a_collated_batch():
    from fss_sam2.data.episode_dataset import collate

    eps = [_episode(1, 3), _episode(1, 5)]
    batch = collate([e | {"raw_label": e["query_label"], "index": i} for i, e in enumerate(eps)])
    fig = viz.show_episode(batch, prediction=batch["query_label"])  # (B,S,S) predictions
    assert len(fig.axes) == 2 * 3
    assert [fig.axes[0].get_title(), fig.axes[3].get_title()] == ["support 1: class 3", "support 1: class 5"]


# ---- the numbers printed beside the figures ----


def test_split_means_and_weight_sentence():
    w = torch.tensor([[0.9, 0.7], [0.1, 0.6]])[None, None]  # (1,1,2,2)
    label = torch.tensor([[1, 0], [0, 255]])[None]  # (1,2,2): one object cell, two background, one ignore
    assert viz.split_means(w, label) == pytest.approx({"object": 0.9, "background": 0.4})
    assert viz.weight_sentence(w, label) == ("mean W 0.90 on query-object cells, 0.40 on query-background cells; "
                                             "2 of the 3 labelled cells (ignore-label cells left out) have W > 0.5, "
                                             "50% of them on background")
    assert np.isnan(viz.split_means(w, torch.zeros(1, 2, 2))["object"])
    with pytest.raises(ValueError, match="one value per cell"):
        viz.split_means(w, torch.zeros(3))


def test_best_rounds():
    import pandas as pd

    curve = pd.DataFrame({"v1": [0.18, 0.22, 0.21, 0.20], "v2": [0.18, 0.19, 0.20, 0.21]}, index=[0, 1, 2, 3])
    assert viz.best_rounds(curve, 3) == [
        ("v1: best mean IoU 0.220 after 1 round(s); the model's 3 rounds 0.200 (0.020 below the best); "
         "before refinement 0.180"),
        "v2: best mean IoU 0.210 after 3 round(s); the model's 3 rounds 0.210 (the best); before refinement 0.180"]


def test_peak_weights():
    attn = torch.zeros(1, 1, 2, 4)
    attn[0, 0, 0] = torch.tensor([0.3, 0.1, 0.0, 0.0])
    attn[0, 0, 1] = torch.tensor([0.1, 0.1, 0.1, 0.1])
    assert viz.peak_weights(attn) == pytest.approx({"peak": 0.2, "block": 0.4})


def test_row_spread_and_sentences():
    peaked = torch.zeros(2, 1, 2, 6)  # (B,heads,n,L): 4 support keys + 2 pointers
    peaked[..., 0] = 0.5
    peaked[..., 4:] = 0.25  # the pointers are left out
    uniform = torch.zeros(2, 1, 2, 6)
    uniform[..., :4] = 0.25
    rows = torch.tensor([[True, False], [False, False]])  # sample 1 has no row
    s = viz.row_spread([peaked, peaked], rows, keys=4)
    assert s["peak"][0] == pytest.approx(1.0) and s["entropy"][0] == pytest.approx(0.0) and np.isnan(s["peak"][1])
    u = viz.row_spread([uniform], torch.ones(2, 2, dtype=torch.bool), keys=4)
    assert u["peak"] == pytest.approx([0.25, 0.25]) and u["entropy"] == pytest.approx([1.0, 1.0])
    tracking = {"peak": np.array([1.0, 0.9]), "entropy": np.array([0.0, 0.1])}
    same = {"peak": np.array([1.0, 0.9]), "entropy": np.array([0.1, 0.0])}
    lines = viz.spread_sentences({"tracking": tracking, "few-shot": u, "same": same})
    assert lines[0].startswith("tracking: 2 samples, the strongest memory location holds 0.95 of a query pixel's")
    assert lines[3].startswith("'few-shot' attention is more spread than 'tracking' (1.00 vs 0.05")
    assert lines[4].startswith("'same' attention is about as spread as 'tracking'")


def test_standin_note():
    got = viz.standin_note({"sam2": "/c/toy_sam2_ab.pt", "dino": "/c/toy_dino_fold0_cd.pt", "trained": ["dino"],
                            "sam2_metrics": {"steps": 1200, "seconds": 1654.06}, "dino_metrics": {}})
    assert got == [("toy SAM 2 stand-in toy_sam2_ab.pt: read from the cache (trained by an earlier run); "
                    "its record: 1200 training steps in 1654 s"),
                   "toy DINOv2 stand-in toy_dino_fold0_cd.pt: trained by this call; its record holds no training time"]
    shipped = next(f.name for f in shipped_folder().iterdir() if f.name.endswith(".pt"))
    copied, cached = (viz.standin_note({"dino": f"/c/{shipped}", "shipped": shipped_by, "dino_metrics": {"seconds": 9}})
                      for shipped_by in (["dino"], []))
    assert copied == [f"toy DINOv2 stand-in {shipped}: copied by this call from the file the package ships (made by "
                      "`make standins`); its record: trained in 9 s"]
    assert cached == [f"toy DINOv2 stand-in {shipped}: read from the cache, where an earlier run copied the file the "
                      "package ships; its record: trained in 9 s"]


def test_curve_notes():
    import pandas as pd

    log = pd.DataFrame({"step": [10, 56, 60, 112], "epoch": [0.2, 1.0, 1.1, 2.0], "loss": [0.6, None, 0.5, None],
                        "val_miou": [None, 0.26, None, 0.27]})
    assert viz.curve_notes(log, "run") == [
        "run: Dice loss 0.600 at step 10, 0.500 at step 60",
        "run: val mIoU 26.0 at step 56, best 27.0 at step 112, last 27.0 at step 112",
        ("run: the validation curve starts at step 56 (epoch 1): the run first validates there, so there is no "
         "point for the model before training")]
    zero = pd.concat([pd.DataFrame({"step": [0], "epoch": [0.0], "loss": [None], "val_miou": [0.1]}), log])
    assert viz.curve_notes(zero, "run")[-1] == "run: the validation curve starts at step 0 (the model before training)"
    assert viz.curve_notes(log.assign(val_miou=None), "run")[-1] == "run: no validation in the log"


def test_contrast_sentence():
    import pandas as pd

    table = pd.DataFrame({"iou": [0.18, 0.24], "precision": [0.19, 0.31], "recall": [0.76, 0.50]}, index=["fg", "disc"])
    assert viz.contrast_sentence(table, "fg", "disc") == (
        "fg vs disc: iou 0.18 vs 0.24 (lower), precision 0.19 vs 0.31 (lower), recall 0.76 vs 0.50 (higher); "
        "complementary errors: one has the higher recall, the other the higher precision")
    same = table.assign(recall=[0.5, 0.5])
    assert viz.contrast_sentence(same, "fg", "disc").endswith("not complementary here: neither trades recall "
                                                             "for precision against the other")


def test_best_rounds_with_spread():
    import pandas as pd

    curve = pd.DataFrame({"v1": [0.18, 0.22]}, index=[0, 1])
    spread = pd.DataFrame({"v1": [0.01, 0.02]}, index=[0, 1])
    assert viz.best_rounds(curve, 1, spread) == [
        ("v1: best mean IoU 0.220 ± 0.020 after 1 round(s); the model's 1 rounds 0.220 ± 0.020 (the best); "
         "before refinement 0.180 ± 0.010")]
