"""Plotting helpers shared by the tutorials: episodes, mask outlines and heat maps, grids of maps,
and the few numbers the notebooks print beside their figures.

Every function takes tensors or arrays (images (3,H,W) in 0..255 or (H,W,3) uint8; masks and
maps (H,W), leading size-1 dimensions allowed) and returns its matplotlib Figure; `savefig`
writes one as a PNG for `figures/`. Outside a notebook and without a display, matplotlib runs
headless (Agg).

One convention for every figure:
- masks are outlines (matplotlib contour at 0.5), never fills, so that the objects keep their
  own colours: ground truth and support masks in white (MASK_COLOR), predictions in orange
  (PRED_COLOR), cells of a memory grid dashed (REGION_COLOR), each line on a dark halo; the
  255 "ignore" band is a light grey wash (it is a thin band along the boundaries);
- every heat map has a colour bar; probability-like maps (priors, similarities, W, the
  calibration map, attention) use PROB_CMAP, differences DIFF_CMAP centred on 0.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

if (
    "ipykernel" not in sys.modules
    and not os.environ.get("MPLBACKEND")
    and sys.platform.startswith("linux")
    and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..constants import IGNORE  # noqa: E402
from ..toy.shipped import shipped_files  # noqa: E402

MASK_COLOR = "white"  # ground truth and support masks (outlines)
PRED_COLOR = "#ff7f0e"  # predictions (outlines)
REGION_COLOR = "#17becf"  # cells of a memory grid (dashed outlines)
IGNORE_COLOR = "#d0d0d0"  # the 255 band (a light wash)
PROB_CMAP = "viridis"  # every probability-like map
DIFF_CMAP = "RdBu_r"  # differences, centred on 0 (`diff_limits`)
HALO = (patheffects.withStroke(linewidth=2.8, foreground="black"),)  # under every outline
STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.interpolation": "nearest",
    "image.cmap": PROB_CMAP,
}


def use_style() -> None:
    """The tutorials' matplotlib style (small fonts, crisp maps); call once per notebook."""
    plt.rcParams.update(STYLE)


def diff_limits(*maps) -> tuple[float, float]:
    """(vmin, vmax) symmetric about 0 covering every value of `maps`: the colour limits of a
    difference map drawn with DIFF_CMAP (0 is the centre colour)."""
    top = max((float(np.nanmax(np.abs(to_numpy(m)))) for m in maps), default=0.0)
    top = top or 1.0
    return -top, top


# ---- conversions ----


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def to_image(x) -> np.ndarray:
    """An RGB image (3,H,W) in 0..255 or (H,W,3) -> (H,W,3) uint8."""
    a = to_numpy(x)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"image of shape {a.shape}: expected (3,H,W) or (H,W,3) RGB")
    return np.clip(a, 0, 255).round().astype(np.uint8) if a.dtype != np.uint8 else a


def to_map(x) -> np.ndarray:
    """A mask or map with optional leading size-1 dimensions -> (H,W)."""
    a = to_numpy(x)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"map of shape {a.shape}: expected (H,W) (leading size-1 dimensions allowed)")
    return a


def pca_rgb(features) -> np.ndarray:
    """Feature maps (N,C,h,w) -> RGB images (N,h,w,3) uint8: the first three principal
    components, shared by all N maps (one colour = one feature direction in every image)."""
    f = to_numpy(features).astype(np.float64)
    if f.ndim != 4:
        raise ValueError(f"features of shape {f.shape}: expected (N,C,h,w)")
    n, c, h, w = f.shape
    x = f.transpose(0, 2, 3, 1).reshape(-1, c)  # (N*h*w, C)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    y = x @ vt[:3].T  # (N*h*w, <=3)
    if y.shape[1] < 3:
        y = np.pad(y, ((0, 0), (0, 3 - y.shape[1])))
    y = (y - y.min(0)) / (np.ptp(y, 0) + 1e-12)
    return (y.reshape(n, h, w, 3) * 255).round().astype(np.uint8)


# ---- single panels ----


def _axes(ax, size: float = 3.0):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=(size, size))
    return fig, ax


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def _contour(ax, region, w: float, h: float, color: str, dashed: bool = False) -> None:
    """Draw the boundary of a boolean region (any resolution) stretched over (0..w, 0..h): the
    contour at 0.5 of the region sampled (nearest) at the pixel centres of a (h,w) raster, so
    that the cells of a coarse grid keep their square edges; closed along the image border."""
    region = np.asarray(region, dtype=bool)
    if not region.any():
        return
    rh, rw = region.shape
    ph, pw = max(round(h), rh), max(round(w), rw)
    rows = np.minimum(((np.arange(ph) + 0.5) * rh / ph).astype(int), rh - 1)
    cols = np.minimum(((np.arange(pw) + 0.5) * rw / pw).astype(int), rw - 1)
    fine = np.pad(region[rows][:, cols].astype(float), 1)  # a False frame: contours close at the border
    ys, xs = (np.arange(-1, ph + 1) + 0.5) * h / ph, (np.arange(-1, pw + 1) + 0.5) * w / pw
    lines = ax.contour(xs, ys, fine, levels=[0.5], colors=color, linewidths=1.3,
                       linestyles="--" if dashed else "-")
    lines.set(path_effects=list(HALO))


def _colorbar(fig, mappable, ax, label: str | None = None):
    bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    if label:
        bar.set_label(label)
    return bar


def overlay(
    image,
    mask=None,
    heat=None,
    *,
    ax=None,
    title: str | None = None,
    color: str = MASK_COLOR,
    alpha: float = 0.6,
    outline=None,
    cells=None,
    cmap: str = PROB_CMAP,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    colorbar: bool = True,
) -> Figure:
    """An image with the outline of a binary mask ({0,1,255}: the boundary of the 1s in `color`,
    255 a light grey wash), and/or a heat map (any resolution, stretched over the image at
    `alpha`, with its colour bar unless `colorbar=False`), the outline of `outline` (e.g. the
    ground truth) in MASK_COLOR and the cells of `cells` (a bool map of a coarse grid) dashed."""
    fig, ax = _axes(ax)
    img = to_image(image)
    h, w = img.shape[:2]
    ax.imshow(img, extent=(0, w, h, 0))
    if heat is not None:
        im = ax.imshow(to_map(heat), extent=(0, w, h, 0), cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha)
        if colorbar:
            _colorbar(fig, im, ax)
    if mask is not None:
        m = to_map(mask)
        if (m == IGNORE).any():
            rgba = np.zeros((*m.shape, 4))
            rgba[m == IGNORE] = (*to_rgb(IGNORE_COLOR), 0.45)
            ax.imshow(rgba, extent=(0, w, h, 0))
        _contour(ax, m == 1, w, h, color)
    if outline is not None:
        _contour(ax, to_map(outline) == 1, w, h, MASK_COLOR)
    if cells is not None:
        _contour(ax, to_map(cells).astype(bool), w, h, REGION_COLOR, dashed=True)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    _blank(ax)
    if title:
        ax.set_title(title)
    return fig


EPISODE_KEYS = ("query", "query_label", "supports", "support_masks", "cls")
PREDICTION_TITLE = "prediction (orange; white: GT)"


def _episode_rows(episode) -> list[Mapping]:
    if not isinstance(episode, Mapping):
        return list(episode)
    if len(episode["query"].shape) == 4:  # a collated batch (B,3,S,S)
        return [{k: episode[k][i] for k in EPISODE_KEYS} for i in range(len(episode["query"]))]
    return [episode]


def show_episode(
    episode: Mapping | Sequence[Mapping],
    prediction=None,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    size: float = 2.2,
) -> Figure:
    """One episode per row: its K supports with their masks outlined (white), the query with its
    ground truth outlined (white) and, if given, the prediction (a mask or probabilities,
    outlined at 0.5 in orange over the white ground truth: (S,S) for one episode, (B,S,S) or a
    sequence for several).

    `episode`: a sample of `EpisodeDataset` (`supports` (K,3,S,S), `support_masks` (K,S,S),
    `query` (3,S,S), `query_label` (S,S), `cls`), a sequence of them, or a collated batch.
    """
    rows = _episode_rows(episode)
    if not rows:
        raise ValueError("show_episode: no episode given")
    preds = None
    if prediction is not None:
        single = hasattr(prediction, "shape") and len(prediction.shape) == 2  # (S,S)
        preds = [prediction] if single else list(prediction)
        if len(preds) != len(rows):
            raise ValueError(f"show_episode: {len(preds)} predictions for {len(rows)} episodes")
    shots = max(len(ep["supports"]) for ep in rows)
    cols = shots + 1 + (preds is not None)
    fig, axes = plt.subplots(len(rows), cols, figsize=(size * cols, size * len(rows) + 0.3 * bool(title)),
                             squeeze=False)
    for r, ep in enumerate(rows):
        cls = int(ep["cls"])
        name = class_names[cls - 1] if class_names else f"class {cls}"
        for k in range(shots):
            ax = axes[r, k]
            if k < len(ep["supports"]):
                overlay(ep["supports"][k], ep["support_masks"][k], ax=ax, title=f"support {k + 1}: {name}")
            else:
                ax.axis("off")
        overlay(ep["query"], ep["query_label"], ax=axes[r, shots], title="query + ground truth")
        if preds is not None:
            overlay(ep["query"], (to_map(preds[r]) > 0.5).astype(np.uint8), ax=axes[r, shots + 1],
                    color=PRED_COLOR, outline=ep["query_label"], title=PREDICTION_TITLE)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- grids of maps ----


def compare_maps(
    images,
    rows: Mapping[str, Sequence],
    labels=None,
    *,
    cmap: str = PROB_CMAP,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    title: str | None = None,
    size: float = 2.0,
) -> Figure:
    """Several episodes side by side, one column each: the first row shows the images (with their
    {0,1,255} `labels` outlined), every further row one kind of map over them (any resolution),
    with the label's boundary drawn; one colour scale and its colour bar."""
    n = len(images)
    for name, maps in rows.items():
        if len(maps) != n:
            raise ValueError(f"compare_maps: row {name!r} has {len(maps)} maps for {n} images")
    fig, axes = plt.subplots(len(rows) + 1, n, figsize=(size * n + 0.8, size * (len(rows) + 1) + 0.3 * bool(title)),
                             squeeze=False)
    for j in range(n):
        label = None if labels is None else labels[j]
        overlay(images[j], label, ax=axes[0, j])
        for i, maps in enumerate(rows.values(), 1):
            overlay(images[j], heat=maps[j], outline=label, ax=axes[i, j], cmap=cmap, vmin=vmin, vmax=vmax,
                    colorbar=False)
    for i, name in enumerate(["image" if labels is None else "image + ground truth", *rows]):
        axes[i, 0].set_ylabel(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap=cmap), ax=axes.ravel().tolist(),
                 fraction=0.025, pad=0.02)
    return fig


def map_grid(
    maps: Sequence,
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 4,
    image=None,
    outline=None,
    cmap: str = PROB_CMAP,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    title: str | None = None,
    size: float = 2.4,
) -> Figure:
    """Maps (each (h,w), any resolution) in a grid, each with its title and colour bar; over
    `image` as heat maps when given, with the boundary of `outline` (e.g. the ground truth)."""
    if not maps:
        raise ValueError("map_grid: no maps given")
    if titles is not None and len(titles) != len(maps):
        raise ValueError(f"map_grid: {len(titles)} titles for {len(maps)} maps")
    ncols = min(ncols, len(maps))
    nrows = -(-len(maps) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * 1.15, size * nrows + 0.3 * bool(title)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(maps):
            ax.axis("off")
            continue
        name = titles[i] if titles is not None else None
        if image is not None:
            overlay(image, heat=maps[i], ax=ax, outline=outline, cmap=cmap, vmin=vmin, vmax=vmax,
                    colorbar=True, title=name)
        else:
            _heat_panel(ax, maps[i], cmap, vmin, vmax, outline, name)
            _colorbar(fig, ax.images[0], ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _heat_panel(ax, m, cmap, vmin, vmax, outline=None, title=None, marker=None) -> None:
    a = to_map(m)
    ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, extent=(0, a.shape[1], a.shape[0], 0))
    if outline is not None:
        _contour(ax, to_map(outline) == 1, a.shape[1], a.shape[0], "white")
    if marker is not None:  # (y, x) in the map's cells
        ax.plot(marker[1] + 0.5, marker[0] + 0.5, marker="x", color="red", markersize=8, mew=2)
    _blank(ax)
    if title:
        ax.set_title(title)


def map_rows(
    rows: Mapping[str, Sequence],
    columns: Sequence[str] | None = None,
    *,
    outline=None,
    marker: tuple[int, int] | None = None,
    cmap: str = PROB_CMAP,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    title: str | None = None,
    size: float = 2.0,
) -> Figure:
    """Labelled rows of maps on one colour scale (vmax=None: the largest value shown), one
    colour bar; a None entry or a short row leaves blank cells. `marker` (y, x) marks a cell.
    Values outside [vmin, vmax] take the end colours (the caller prints their range)."""
    if not rows:
        raise ValueError("map_rows: no rows given")
    ncols = max(len(r) for r in rows.values())
    if columns is not None and len(columns) != ncols:
        raise ValueError(f"map_rows: {len(columns)} column titles for {ncols} columns")
    if vmax is None:
        vmax = max(float(to_map(m).max()) for r in rows.values() for m in r if m is not None)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(size * ncols + 0.8, size * len(rows) + 0.3 * bool(title)),
                             squeeze=False)
    for r, (label, maps) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            head = columns[c] if (columns is not None and r == 0) else None
            if c >= len(maps) or maps[c] is None:
                _blank(ax)  # kept (not axis off) so that the row label still shows
                ax.set_title(head or "")
                continue
            _heat_panel(ax, maps[c], cmap, vmin, vmax, outline, head, marker)
        axes[r, 0].set_ylabel(label)
    scale = plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap=cmap)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.colorbar(scale, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    return fig


def round_strip(
    history: Sequence[Mapping],
    initial=None,
    *,
    keys: Sequence[str] = ("S_qs", "S_qq", "W", "prior_disc"),
    index: int = 0,
    outline=None,
    title: str | None = None,
) -> Figure:
    """Iterative Memory Refinement round by round: one row per key of the per-round dicts of
    `iterative_memory_refinement(..., history=True)` (episode `index` of the batch), one column
    per round; `initial` (1,h,w) adds a first column holding the prior before refinement."""
    if not history:
        raise ValueError("round_strip: empty history (rounds=0?)")
    missing = [k for k in keys if k not in history[0]]
    if missing:
        raise ValueError(f"round_strip: keys {missing} not in the history (has {sorted(history[0])})")
    rows = {}
    for key in keys:
        maps = [step[key][index] for step in history]
        if initial is not None:
            maps = [initial if key == "prior_disc" else None, *maps]
        rows[key] = maps
    columns = (["before"] if initial is not None else []) + [f"round {t + 1}" for t in range(len(history))]
    return map_rows(rows, columns, outline=outline, title=title)


def attention_maps(
    maps: Mapping,
    pixel: tuple[int, int],
    *,
    index: int = 0,
    outline=None,
    title: str | None = None,
) -> Figure:
    """Where one query pixel `pixel` (y, x) on the memory grid looks in the query memory, per
    memory-attention layer, for each setting of `maps` ({name: AttentionMaps}), on one colour
    scale. Heads are averaged; episode `index`."""
    rows = {}
    for name, m in maps.items():
        if not m.query_attention:
            raise ValueError(f"attention_maps: {name!r} holds no query-memory attention")
        n = m.query_attention[0].shape[-1]
        side = int(round(n**0.5))
        row = pixel[0] * side + pixel[1]
        rows[f"{name}: attention"] = [a[index].mean(0)[row].reshape(side, side) for a in m.query_attention]
    columns = [f"layer {i + 1}" for i in range(max(len(r) for r in rows.values()))]
    return map_rows(rows, columns, outline=outline, marker=pixel, vmax=None, title=title)


def savefig(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG (creating the folder) and return the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: figures are written as PNG; use a .png name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


# ---- notebook figures: tracking, memory attention, predictions on files ----


def frame_strip(samples: Sequence[Mapping], probs, iou, title: str | None = None) -> Figure:
    """Memory frame + mask, then every query frame with its prediction (notebook 02).

    `samples`: B samples of one clip as `memory_study.clip_pairs` gives them (`query` (3,S,S),
    `query_label` (S,S), `supports` (1,3,S,S), `support_masks` (1,S,S), `gap`), all with the
    same memory; `probs` (B,S,S) their predicted probabilities and `iou` (B,) their IoU
    (`memory_reads.frame_ious`). One row of B + 1 panels: the memory's mask outlined in white,
    each query's prediction outlined in orange over its white ground truth, titled with its
    frame number and IoU."""
    fig, axes = plt.subplots(1, len(samples) + 1, figsize=(1.9 * (len(samples) + 1), 2.4))
    overlay(samples[0]["supports"][0], samples[0]["support_masks"][0], ax=axes[0], title="memory: frame 0")
    for ax, s, p, v in zip(axes[1:], samples, probs, iou):
        overlay(s["query"], (to_map(p) > 0.5).astype(np.uint8), ax=ax, color=PRED_COLOR, outline=s["query_label"],
                title=f"frame {s['gap']}: IoU {v:.2f}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def attention_row(axes, sample: Mapping, region, maps: Sequence, name: str) -> None:
    """Into one row of axes (2 + layers of them): the query with its ground truth (white) and its
    object cells on the memory grid (dashed), the memory image with its mask, then per
    memory-attention layer where those cells look in the memory image, each map on its own
    scale with its colour bar (notebook 02).

    `sample`: `query` (3,S,S), `query_label` (S,S), `supports` (K,3,S,S), `support_masks`
    (K,S,S) (the first shot is shown); `region` (h,w) bool, the query's object cells on the
    memory grid, and `maps` per layer (K,h,w), their attention (`memory_reads.object_attention`)."""
    overlay(sample["query"], ax=axes[0], outline=sample["query_label"], cells=region,
            title=f"{name}: query object cells")
    overlay(sample["supports"][0], sample["support_masks"][0], ax=axes[1], title="memory image + mask")
    for layer, (ax, m) in enumerate(zip(axes[2:], maps), 1):
        overlay(sample["supports"][0], heat=m[0], ax=ax, outline=sample["support_masks"][0],
                vmax=float(m[0].max()), title=f"layer {layer} attention")


def attention_rows(cases: Sequence[tuple], layers: int, title: str | None = None) -> Figure:
    """One `attention_row` per case (name, sample, region, maps): len(cases) rows of 2 + `layers`
    panels (`layers`: the memory-attention layers of the model; notebook 02)."""
    fig, axes = plt.subplots(len(cases), 2 + layers, figsize=(2.2 * (2 + layers), 2.4 * len(cases)), squeeze=False)
    for row, (name, s, region, maps) in zip(axes, cases):
        attention_row(row, s, region, maps, name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_predictions(supports: Sequence[tuple], queries: Sequence, masks: Sequence, truth=None,
                     title: str | None = None, size: float = 2.2) -> Figure:
    """Supports with their masks outlined (first row), then the queries with the predicted masks
    outlined in orange (notebook 09).

    `supports`: (image path, mask path) pairs; `queries`: image paths; `masks`: one bool (H,W)
    prediction per query, at the query's own size; `truth`: None, or a function of a query path
    giving its bool (H,W) ground truth (outlined in white, and the IoU added to the title) or None."""
    from ..data.folder import read_mask
    from ..data.sources import read_image

    cols = max(len(supports), min(len(queries), 4))
    rows = 1 + -(-len(queries) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, mask) in zip(axes[0], supports):
        overlay(read_image(image), read_mask(mask).astype(np.uint8), ax=ax, title=f"support: {image.name}")
    for ax, query, mask in zip(axes[1:].flat, queries, masks):
        gt = truth(query) if truth else None
        name = query.name
        if gt is not None:
            iou = (mask & gt).sum() / max((mask | gt).sum(), 1)
            name += f", IoU {iou:.2f}"
        overlay(read_image(query), mask.astype(np.uint8), ax=ax, color=PRED_COLOR,
                outline=None if gt is None else gt.astype(np.uint8), title=name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- the numbers printed beside the figures (so that the text says what the run shows) ----


def _where(label, values) -> tuple[np.ndarray, np.ndarray]:
    """`values` flattened to the cells of `label` (same number of cells, e.g. (B,1,h,w) and (B,h,w))."""
    v, lab = to_numpy(values).astype(np.float64).ravel(), to_numpy(label).ravel()
    if v.size != lab.size:
        raise ValueError(f"{v.size} values for {lab.size} label cells: expected one value per cell")
    return v, lab


def split_means(values, label) -> dict[str, float]:
    """Mean of `values` over the cells where `label` ({0,1,255}, one entry per value, e.g. a
    query label on the memory grid) is 1 ("object") and where it is 0 ("background"), pooled
    over every cell given; 255 cells are left out, NaN for a class with no cell."""
    v, lab = _where(label, values)
    return {name: float(v[lab == c].mean()) if (lab == c).any() else math.nan
            for name, c in (("object", 1), ("background", 0))}


def weight_sentence(values, label, name: str = "W", high: float = 0.5) -> str:
    """Where a map in [0,1] (e.g. IMR's W) is large, measured against the query's ground truth on
    its grid (`label`, {0,1,255}): its mean on object and on background cells, and how many of
    the cells above `high` are background."""
    v, lab = _where(label, values)
    means = split_means(v, lab)
    top = (v > high) & (lab != IGNORE)
    share = f", {(lab[top] == 0).mean():.0%} of them on background" if top.any() else ""
    return (f"mean {name} {means['object']:.2f} on query-object cells, {means['background']:.2f} on "
            f"query-background cells; {int(top.sum())} of the {int((lab != IGNORE).sum())} labelled cells "
            f"(ignore-label cells left out) have {name} > {high:g}{share}")


def best_rounds(curve, default: int, spread=None) -> list[str]:
    """One sentence per column of `curve` (index: rounds of refinement, 0 = before; values: a
    mean IoU): the round count with the best value, against `default` rounds and round 0;
    `spread` (same layout, e.g. the standard error of each mean) is printed beside each value."""
    def val(variant, r):
        value = f"{curve[variant][r]:.3f}"
        return value if spread is None else f"{value} ± {spread[variant][r]:.3f}"

    lines = []
    for variant in curve.columns:
        col = curve[variant]
        best = col.idxmax()
        line = f"{variant}: best mean IoU {val(variant, best)} after {best:g} round(s)"
        if default in col.index:
            verdict = ("the best" if col[default] >= col[best] else
                       f"{col[best] - col[default]:.3f} below the best")
            line += f"; the model's {default} rounds {val(variant, default)} ({verdict})"
        if 0 in col.index:
            line += f"; before refinement {val(variant, 0)}"
        lines.append(line)
    return lines


def peak_weights(query_attention) -> dict[str, float]:
    """How one attention block is spread: `query_attention` (B,heads,n,N), each row a slice of
    a softmax over a longer memory bank (e.g. the query-memory frame). Means over rows, heads and
    episodes of the largest weight a row gives one key of the block ("peak") and of the row's
    whole weight on the block ("block")."""
    a = to_numpy(query_attention).astype(np.float64)
    return {"peak": float(a.max(-1).mean()), "block": float(a.sum(-1).mean())}


def row_spread(weights: Sequence, rows, keys: int) -> dict[str, np.ndarray]:
    """How concentrated the attention of some query pixels is over the first `keys` memory
    tokens (e.g. the K·h·w support tokens; pointers left out): `weights` per layer (B,heads,n,L),
    `rows` (B,n) bool, the query pixels to read (e.g. its object cells). Each row's weights on
    those keys are renormalised, then per row, head and layer: the peak (largest share of one
    key) and the normalised entropy (0: all on one key, 1: uniform over the keys); averaged over
    heads, layers and the sample's rows -> (B,) each ("peak", "entropy"), NaN for a sample with
    no row."""
    r = to_numpy(rows).astype(bool)
    peaks, ents = [], []
    for w in weights:
        a = to_numpy(w).astype(np.float64)[..., :keys]  # (B,H,n,keys)
        p = a / np.maximum(a.sum(-1, keepdims=True), 1e-12)
        ent = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1) / math.log(keys) if keys > 1 else np.zeros(p.shape[:-1])
        peaks.append(p.max(-1).mean(1))  # (B,n), heads averaged
        ents.append(ent.mean(1))
    peak, ent = np.mean(peaks, 0), np.mean(ents, 0)  # layers averaged
    count = r.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"peak": np.where(count > 0, (peak * r).sum(1) / count, np.nan),
                "entropy": np.where(count > 0, (ent * r).sum(1) / count, np.nan)}


def _mean_se(x) -> tuple[float, float, int]:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    if not len(x):
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan, len(x)


def spread_sentences(spreads: Mapping[str, Mapping]) -> list[str]:
    """`row_spread` results by setting, as text: per setting its mean peak and normalised
    entropy (± their standard error over samples), then every other setting against the first:
    more spread / more concentrated when the entropies differ by more than twice the combined
    standard error, else about as spread."""
    stats = {name: (_mean_se(s["peak"]), _mean_se(s["entropy"])) for name, s in spreads.items()}
    lines = [f"{name}: {n} samples, the strongest memory location holds {p:.2f} of a query pixel's attention "
             f"on the memory frame, normalised entropy {e:.2f} ± {se:.2f} (± s.e. over the samples; 0: one location, "
             "1: uniform)"
             for name, ((p, _, _), (e, se, n)) in stats.items()]
    (first, ((_, _, _), (e0, se0, _))), *others = stats.items()
    for name, (_, (e, se, _)) in others:
        tol = 2 * math.sqrt(np.nansum([se0**2, se**2]))
        verdict = ("more spread than" if e > e0 + tol else "more concentrated than" if e < e0 - tol
                   else "about as spread as")
        lines.append(f"'{name}' attention is {verdict} '{first}' ({e:.2f} vs {e0:.2f}, "
                     f"twice the combined standard error {tol:.2f})")
    return lines


def standin_note(standins: Mapping) -> list[str]:
    """What `toy.standins.ensure_toy_standins` returned, as text: per stand-in, whether this call
    trained it, copied the package's shipped file (`toy/shipped.py`) or read it from the cache
    (and whether that file is the shipped one), and the training time and steps its record holds
    (measured where it was trained)."""
    lines = []
    for key, name in (("sam2", "SAM 2"), ("dino", "DINOv2")):
        if key not in standins:
            continue
        record = standins.get(f"{key}_metrics") or {}
        path = Path(standins[key])
        how = ("trained by this call" if key in standins.get("trained", ()) else
               "copied by this call from the file the package ships (made by `make standins`)"
               if key in standins.get("shipped", ()) else
               "read from the cache, where an earlier run copied the file the package ships"
               if shipped_files(path.stem) is not None else
               "read from the cache (trained by an earlier run)")
        seconds, steps = record.get("seconds"), record.get("steps")
        took = (f"its record: {steps} training steps in {seconds:.0f} s" if seconds is not None and steps is not None
                else f"its record: trained in {seconds:.0f} s" if seconds is not None
                else "its record holds no training time")
        lines.append(f"toy {name} stand-in {path.name}: {how}; {took}")
    return lines


def curve_notes(log, name: str) -> list[str]:
    """What a run's log.csv (a DataFrame: step, epoch, loss, val_miou) shows, as text: the
    first and last logged Dice loss, the val mIoU (%) first, best and last, and where the
    validation curve starts (step 0: the model before training; later: no point before the
    first validation)."""
    loss, val = log.dropna(subset=["loss"]), log.dropna(subset=["val_miou"])
    lines = []
    if len(loss):
        first, last = loss.iloc[0], loss.iloc[-1]
        lines.append(f"{name}: Dice loss {first['loss']:.3f} at step {first['step']:g}, "
                     f"{last['loss']:.3f} at step {last['step']:g}")
    if len(val):
        v = 100 * val["val_miou"]
        best = v.idxmax()
        lines.append(f"{name}: val mIoU {v.iloc[0]:.1f} at step {val['step'].iloc[0]:g}, best {v[best]:.1f} at step "
                     f"{val['step'][best]:g}, last {v.iloc[-1]:.1f} at step {val['step'].iloc[-1]:g}")
        start = val.iloc[0]
        lines.append(f"{name}: the validation curve starts at step {start['step']:g}" + (
            " (the model before training)" if start["step"] == 0 else
            f" (epoch {start['epoch']:g}): the run first validates there, so there is no point for the model "
            "before training"))
    else:
        lines.append(f"{name}: no validation in the log")
    return lines


def contrast_sentence(table, a: str, b: str, tolerance: float = 0.01) -> str:
    """Rows `a` and `b` of a table of scores in [0,1] (columns such as iou, precision, recall)
    side by side: per column a's value against b's (higher / lower / level within `tolerance`)
    and, with precision and recall columns, whether their errors are complementary (one has the
    higher recall, the other the higher precision)."""
    def rel(x, y):
        return "higher" if x > y + tolerance else "lower" if x < y - tolerance else "level"

    parts = [f"{col} {table.loc[a, col]:.2f} vs {table.loc[b, col]:.2f} ({rel(table.loc[a, col], table.loc[b, col])})"
             for col in table.columns]
    line = f"{a} vs {b}: " + ", ".join(parts)
    if {"precision", "recall"} <= set(table.columns):
        r = rel(table.loc[a, "recall"], table.loc[b, "recall"])
        p = rel(table.loc[a, "precision"], table.loc[b, "precision"])
        complementary = {r, p} == {"higher", "lower"}
        line += ("; complementary errors: one has the higher recall, the other the higher precision" if complementary
                 else "; not complementary here: neither trades recall for precision against the other")
    return line
