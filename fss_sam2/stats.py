"""How sure a measured mIoU is: bootstrap intervals over the episodes of an evaluation.

An evaluation's 1000 episodes are one sample of the episodes the protocol could have drawn. A
bootstrap resample draws as many episodes with replacement and recomputes the numbers exactly
as the protocol does (`fss_sam2.metrics`): per class, the intersections and unions of its drawn
episodes summed, I / (U + 1e-10), averaged over the fold's classes (a class drawn no time
counts 0); FB-IoU from the summed background and foreground counts. The 95% interval is the
2.5th to 97.5th percentile over the resamples (1000 by default), drawn by a NumPy generator of a
fixed seed, so every interval is reproducible.

- `bootstrap_ci95`: the interval of one evaluation's mIoU and FB-IoU.
- `paired_miou_difference`: two evaluations of the same episodes (e.g. the same weights with
  IMR on and off): each resample draws the same episodes for both, so the interval of the
  difference leaves out how hard the drawn episodes happen to be.
- `hierarchical_miou_difference`: such pairs for several training seeds: each resample draws
  the training seeds with replacement, then the episodes within each, so the interval also
  holds how much training itself varies.

The per-episode counts live in `episode_scores.csv` beside each results.json (written by
`engine.evaluate.evaluate_checkpoint`): one row per episode and episode seed, columns
EPISODE_SCORES_HEADER. Intervals of a results.json with several episode seeds use its first.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.episodes import Episode
from .engine.runtime import atomic_write_text
from .metrics import summed_iou

RESAMPLES = 1000
EPISODE_SCORES = "episode_scores.csv"
# per episode: its episode seed, index in the list, the episode itself, then the counts of
# `metrics.intersection_union`: foreground intersection and union, background intersection and union
EPISODE_SCORES_HEADER = ("seed", "index", "query", "class", "supports", "intersection", "union",
                         "intersection_bg", "union_bg")


@dataclass(frozen=True)
class EpisodeScores:
    """The episodes of one evaluation (one episode seed) and their pixel counts.

    classes   the fold's classes, over which the mIoU averages
    episodes  (query, class, supports) of each episode, in list order
    counts    (n,5) int64: class, I_bg, I_fg, U_bg, U_fg per episode (`FssMeter.episodes`)
    """

    classes: tuple[int, ...]
    episodes: tuple[Episode, ...]
    counts: np.ndarray

    def __post_init__(self):
        if self.counts.shape != (len(self.episodes), 5):
            raise ValueError(f"EpisodeScores: counts of shape {self.counts.shape} for {len(self.episodes)} episodes "
                             "(expected (n, 5): class, I_bg, I_fg, U_bg, U_fg)")

    def __len__(self) -> int:
        return len(self.episodes)


def _draws(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R,n) float64: how often each of n episodes is drawn in each of R resamples of size n."""
    idx = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(idx.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def weighted_scores(scores: EpisodeScores, weights: np.ndarray) -> dict[str, np.ndarray]:
    """mIoU and FB-IoU (fractions) of `scores` with each episode counted `weights` times:
    weights (R,n) -> {"miou": (R,), "fb_iou": (R,)}. Weights of ones give the protocol's numbers
    exactly (sums of integer counts are exact in float64)."""
    counts = scores.counts.astype(np.float64)
    onehot = (scores.counts[:, :1] == np.asarray(scores.classes)[None]).astype(np.float64)  # (n,C)
    inter = weights @ (onehot * counts[:, 2:3])  # (R,C) per-class sums of I_fg
    union = weights @ (onehot * counts[:, 4:5])
    fb_inter, fb_union = weights @ counts[:, 1:3], weights @ counts[:, 3:5]  # (R,2) background, foreground
    return {"miou": summed_iou(inter, union).mean(-1), "fb_iou": summed_iou(fb_inter, fb_union).mean(-1)}


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def _check_resamples(resamples: int) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples={resamples!r}: expected an integer >= 1")


def bootstrap_ci95(scores: EpisodeScores, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals {"miou": [low, high], "fb_iou": [low, high]} (fractions) over
    `resamples` resamples of the episodes of `scores`."""
    _check_resamples(resamples)
    if not len(scores):
        raise ValueError("bootstrap_ci95: no episodes")
    resampled = weighted_scores(scores, _draws(len(scores), resamples, np.random.default_rng(seed)))
    return {k: _interval(v) for k, v in resampled.items()}


# ---- the per-episode file ----


def write_episode_scores(path: str | Path, runs: Sequence[tuple[int, EpisodeScores]]) -> None:
    """`path` (CSV, EPISODE_SCORES_HEADER) with the episodes of every (episode seed, scores) in
    `runs`, written atomically (supports joined by ';', as in episodes.csv)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(EPISODE_SCORES_HEADER)
    for seed, scores in runs:
        for i, (ep, c) in enumerate(zip(scores.episodes, scores.counts.tolist())):
            writer.writerow((seed, i, ep.query, ep.cls, ";".join(ep.supports), c[2], c[4], c[1], c[3]))
    atomic_write_text(path, text.getvalue())


def _result_file(result: str | Path) -> Path:
    path = Path(result)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{result}: no such results.json (or folder holding one)")
    return path


def load_episode_scores(result: str | Path) -> EpisodeScores:
    """The episodes of the first episode seed of a results.json (or its folder) with their
    counts, from the episode_scores.csv beside it; errors name the file."""
    path = _result_file(result)
    try:
        record = json.loads(path.read_text())
        classes = tuple(int(c) for c in record["per_class"])  # the meter's order: the same mean, bit for bit
        seed = int(record["seeds"][0]["seed"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{path}: not a results.json of `fss-sam2 evaluate` (per_class, seeds: {e})") from None
    csv_path = path.parent / EPISODE_SCORES
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: missing (results written before per-episode scores were kept: "
                                "evaluate again)")
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != EPISODE_SCORES_HEADER:
        raise ValueError(f"{csv_path}: expected the header {','.join(EPISODE_SCORES_HEADER)!r}")
    episodes, counts = [], []
    for n, row in enumerate(rows[1:], 2):
        try:
            if len(row) != len(EPISODE_SCORES_HEADER):
                raise ValueError(f"{len(row)} fields")
            if int(row[0]) != seed:
                continue
            if int(row[1]) != len(episodes):
                raise ValueError(f"index {row[1]}, expected {len(episodes)}")
            cls, (i_fg, u_fg, i_bg, u_bg) = int(row[3]), (int(v) for v in row[5:])
        except ValueError as e:
            raise ValueError(f"{csv_path}:{n}: not a row of {','.join(EPISODE_SCORES_HEADER)} ({e})") from None
        episodes.append(Episode(row[2], cls, tuple(row[4].split(";"))))
        counts.append((cls, i_bg, i_fg, u_bg, u_fg))
    if not episodes:
        raise ValueError(f"{csv_path}: no episodes of seed {seed} (the first seed of {path})")
    return EpisodeScores(classes, tuple(episodes), np.asarray(counts, dtype=np.int64))


# ---- differences ----


def _same_episodes(a: EpisodeScores, b: EpisodeScores, where_a, where_b) -> None:
    if a.classes != b.classes or a.episodes != b.episodes:
        if a.classes != b.classes:
            what = f"classes {list(a.classes)} vs {list(b.classes)}"
        elif len(a) != len(b):
            what = f"{len(a)} vs {len(b)} episodes"
        else:
            i = next(i for i, (x, y) in enumerate(zip(a.episodes, b.episodes)) if x != y)
            what = f"episode {i}: {a.episodes[i]} vs {b.episodes[i]}"
        raise ValueError(f"{where_a} and {where_b}: not evaluated on the same episodes ({what}); a paired "
                         "comparison needs the same episode list")


def _deltas(a: EpisodeScores, b: EpisodeScores, weights: np.ndarray) -> np.ndarray:
    return weighted_scores(a, weights)["miou"] - weighted_scores(b, weights)["miou"]


def _pair(a, b) -> tuple[EpisodeScores, EpisodeScores]:
    """Two results (results.json files or folders, or EpisodeScores), checked to share their episodes."""
    where = [str(x) if not isinstance(x, EpisodeScores) else "scores" for x in (a, b)]
    a, b = (x if isinstance(x, EpisodeScores) else load_episode_scores(x) for x in (a, b))
    _same_episodes(a, b, *where)
    return a, b


def paired_miou_difference(a, b, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """mIoU(a) - mIoU(b) (fractions) of two results evaluated on the same episodes, and its 95%
    paired bootstrap interval: {"delta", "ci95": [low, high], "episodes"}. `a`, `b`: results.json
    files (or their folders; the first episode seed) or EpisodeScores. Different episode lists
    raise ValueError naming both."""
    _check_resamples(resamples)
    a, b = _pair(a, b)
    delta = float(_deltas(a, b, np.ones((1, len(a))))[0])
    resampled = _deltas(a, b, _draws(len(a), resamples, np.random.default_rng(seed)))
    return {"delta": delta, "ci95": _interval(resampled), "episodes": len(a)}


def hierarchical_miou_difference(pairs: Sequence, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The mean over training seeds of mIoU(a) - mIoU(b), from one (a, b) pair per training seed
    (each pair as in `paired_miou_difference`), and its 95% hierarchical bootstrap interval: each
    resample draws len(pairs) training seeds with replacement and, for each draw, the episodes of
    that pair with replacement. Returns {"delta", "ci95": [low, high], "training_seeds", "episodes"}."""
    _check_resamples(resamples)
    if not pairs:
        raise ValueError("hierarchical_miou_difference: no pairs given")
    pairs = [_pair(a, b) for a, b in pairs]
    rng = np.random.default_rng(seed)
    n = len(pairs)
    picks = rng.integers(0, n, size=(resamples, n))  # (R,S): which training seed fills each slot
    slots = np.empty((resamples, n))
    for p, (a, b) in enumerate(pairs):
        # every slot gets its own episode resample of pair p; the slots that picked p keep theirs
        resampled = _deltas(a, b, _draws(len(a), resamples * n, rng)).reshape(resamples, n)
        slots[picks == p] = resampled[picks == p]
    delta = float(np.mean([_deltas(a, b, np.ones((1, len(a))))[0] for a, b in pairs]))
    return {"delta": delta, "ci95": _interval(slots.mean(1)), "training_seeds": n,
            "episodes": [len(a) for a, _ in pairs]}
