"""Plotting helpers: every function returns a Figure with the expected panels and titles."""
from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

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
    assert len(fig.axes[0].images) == 2  # image + mask layer
    fig = viz.overlay(ep["query"], heat=torch.rand(4, 4), outline=ep["query_label"], colorbar=True)
    assert len(fig.axes) == 2 and len(fig.axes[0].images) == 2  # panel + colour bar
    assert fig.axes[0].collections  # the outline contour


def test_show_episode_rows_and_columns():
    eps = [_episode(2, 3), _episode(2, 4)]
    names = [f"c{i}" for i in range(1, 21)]
    fig = viz.show_episode(eps, prediction=[e["query_label"] for e in eps], class_names=names, title="two")
    assert len(fig.axes) == 2 * 4  # 2 supports + query + prediction per row
    titles = _titles(fig)
    assert titles[:4] == ["support 1: c3", "support 2: c3", "query + ground truth", "prediction (outline: GT)"]
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
    shown = grid[3].images[0].get_array()
    assert shown.shape == (4, 4) and shown[2, 2] == pytest.approx(0.1) and shown.sum() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no query-memory attention"):
        viz.attention_maps({"x": AttentionMaps()}, (0, 0))


def test_compare_maps_columns():
    ep = [_episode(1, c) for c in (1, 2, 3)]
    images = [e["query"] for e in ep]
    labels = [e["query_label"] for e in ep]
    fig = viz.compare_maps(images, {"p": [torch.rand(4, 4)] * 3, "q": [torch.rand(4, 4)] * 3}, labels, title="c")
    assert len(fig.axes) == 3 * 3 + 1
    assert [fig.axes[3 * r].get_ylabel() for r in range(3)] == ["image + ground truth", "p", "q"]
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
