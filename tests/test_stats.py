"""Bootstrap intervals of the mIoU (`fss_sam2.stats`) against small cases worked out by hand."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from fss_sam2 import stats
from fss_sam2.data.episodes import Episode
from fss_sam2.metrics import FssMeter


def scores(rows, classes=(1,)) -> stats.EpisodeScores:
    """EpisodeScores of (class, I_fg, U_fg) rows (background counts: I_bg = U_bg = 10), episode i
    querying image q{i} with support s{i}."""
    counts = np.array([(c, 10, i, 10, u) for c, i, u in rows], dtype=np.int64).reshape(-1, 5)
    episodes = tuple(Episode(f"q{n}", c, (f"s{n}",)) for n, (c, _, _) in enumerate(rows))
    return stats.EpisodeScores(tuple(classes), episodes, counts)


def write_result(folder: Path, s: stats.EpisodeScores, seed: int = 321) -> Path:
    """A results.json (the keys `load_episode_scores` reads) and its episode_scores.csv."""
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"per_class": {str(c): 0.0 for c in s.classes},
                                                     "seeds": [{"seed": seed}]}))
    stats.write_episode_scores(folder / stats.EPISODE_SCORES, [(seed, s), (seed + 1, s)])
    return folder / "results.json"


def test_point_estimate_is_the_protocols_bit_for_bit():
    rng = np.random.default_rng(3)
    classes = (1, 2, 3, 4, 5)
    meter = FssMeter(classes)
    for _ in range(40):
        pred = (rng.random((7, 9)) < 0.5).astype(np.uint8)
        label = (rng.random((7, 9)) < 0.4).astype(np.uint8)
        meter.update(pred, label, int(rng.integers(1, 6)))
    s = stats.EpisodeScores(classes, tuple(Episode(f"q{i}", 1, ("s",)) for i in range(40)), np.array(meter.episodes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class without episodes is fine here
        expected = meter.compute()
    got = stats.weighted_scores(s, np.ones((1, 40)))
    assert got["miou"][0] == expected["miou"] and got["fb_iou"][0] == expected["fb_iou"]


def test_two_episodes_by_hand():
    # episode 1: I/U = 1/2, episode 2: 0/2; resamples {1,1} -> 2/4, {1,2} -> 1/4, {2,2} -> 0/4
    ci = stats.bootstrap_ci95(scores([(1, 1, 2), (1, 0, 2)]))
    assert ci["miou"] == pytest.approx([0.0, 0.5])
    assert ci["fb_iou"] == pytest.approx([0.5, 0.75])  # background 1 always, foreground as above


def test_a_class_missing_from_a_resample_counts_zero():
    # one perfect episode per class: {1,1} or {2,2} -> (1 + 0) / 2, {1,2} -> 1
    ci = stats.bootstrap_ci95(scores([(1, 1, 1), (2, 1, 1)], classes=(1, 2)))
    assert ci["miou"] == pytest.approx([0.5, 1.0])


def test_intervals_are_reproducible_and_seeded():
    s = scores([(1, int(i), 10) for i in np.random.default_rng(0).integers(0, 10, 50)])
    assert stats.bootstrap_ci95(s) == stats.bootstrap_ci95(s)
    assert stats.bootstrap_ci95(s, seed=1) != stats.bootstrap_ci95(s)
    with pytest.raises(ValueError, match="resamples=0"):
        stats.bootstrap_ci95(s, resamples=0)


def test_identical_results_differ_by_nothing(tmp_path):
    s = scores([(1, 3, 8), (1, 1, 6), (1, 5, 5)])
    a, b = write_result(tmp_path / "a", s), write_result(tmp_path / "b", s)
    assert stats.paired_miou_difference(a, b) == {"delta": 0.0, "ci95": [0.0, 0.0], "episodes": 3}
    assert stats.paired_miou_difference(tmp_path / "a", s) == {"delta": 0.0, "ci95": [0.0, 0.0], "episodes": 3}


def test_a_known_shift():
    # every episode 5/10 against 4/10: every resample gives 0.5 - 0.4
    d = stats.paired_miou_difference(scores([(1, 5, 10)] * 20), scores([(1, 4, 10)] * 20))
    assert d["delta"] == pytest.approx(0.1) and d["ci95"] == pytest.approx([0.1, 0.1]) and d["episodes"] == 20


def test_pairing_removes_how_hard_the_episodes_are():
    # b = a with one pixel less per episode: unpaired intervals overlap, the paired one is tight
    rng = np.random.default_rng(0)
    a = [(1, int(i), 20) for i in rng.integers(2, 20, 100)]
    b = [(c, i - 1, u) for c, i, u in a]
    d = stats.paired_miou_difference(scores(a), scores(b))
    assert d["delta"] == pytest.approx(0.05)
    assert 0.04 < d["ci95"][0] <= d["ci95"][1] < 0.06
    wide = stats.bootstrap_ci95(scores(a))["miou"]
    assert wide[1] - wide[0] > 5 * (d["ci95"][1] - d["ci95"][0])


def test_other_episodes_are_refused_naming_both_files(tmp_path):
    a = write_result(tmp_path / "a", scores([(1, 1, 2), (1, 1, 2)]))
    b = write_result(tmp_path / "b", stats.EpisodeScores((1,), (Episode("q0", 1, ("s0",)), Episode("q1", 1, ("other",))),
                                                        np.array([(1, 10, 1, 10, 2)] * 2)))
    with pytest.raises(ValueError, match=r"a/results.json and .*b/results.json: not evaluated on the same episodes "
                                         r"\(episode 1"):
        stats.paired_miou_difference(a, b)
    short = write_result(tmp_path / "c", scores([(1, 1, 2)]))
    with pytest.raises(ValueError, match="2 vs 1 episodes"):
        stats.paired_miou_difference(a, short)
    with pytest.raises(ValueError, match=r"not evaluated on the same episodes \(classes"):
        stats.paired_miou_difference(scores([(1, 1, 2)]), scores([(1, 1, 2)], classes=(1, 2)))


def test_hierarchical_over_training_seeds():
    same = (scores([(1, 3, 8), (1, 1, 6)]),) * 2
    d = stats.hierarchical_miou_difference([same, same, same])
    assert (d["delta"], d["ci95"], d["training_seeds"], d["episodes"]) == (0.0, [0.0, 0.0], 3, [2, 2, 2])
    # two training seeds whose runs shift by 0.1 and 0.3 on every episode: resampling the seeds
    # gives 0.1 (both draws the first), 0.2 (one each) or 0.3, each seed's episodes add nothing
    small = (scores([(1, 5, 10)] * 8), scores([(1, 4, 10)] * 8))
    large = (scores([(1, 5, 10)] * 8), scores([(1, 2, 10)] * 8))
    d = stats.hierarchical_miou_difference([small, large])
    assert d["delta"] == pytest.approx(0.2) and d["ci95"] == pytest.approx([0.1, 0.3])
    with pytest.raises(ValueError, match="no pairs"):
        stats.hierarchical_miou_difference([])


def test_episode_scores_file(tmp_path):
    s = scores([(1, 3, 8), (2, 1, 6)], classes=(1, 2))
    path = write_result(tmp_path / "r", s, seed=7)
    header, first = (tmp_path / "r" / stats.EPISODE_SCORES).read_text().splitlines()[:2]
    assert header == ",".join(stats.EPISODE_SCORES_HEADER) and first == "7,0,q0,1,s0,3,8,10,10"
    back = stats.load_episode_scores(path.parent)  # the first seed's rows only
    assert back.classes == (1, 2) and back.episodes == s.episodes and np.array_equal(back.counts, s.counts)
    (tmp_path / "r" / stats.EPISODE_SCORES).write_text("seed,index\n")
    with pytest.raises(ValueError, match="episode_scores.csv: expected the header"):
        stats.load_episode_scores(path)
    (tmp_path / "r" / stats.EPISODE_SCORES).unlink()
    with pytest.raises(FileNotFoundError, match="episode_scores.csv: missing"):
        stats.load_episode_scores(path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        stats.load_episode_scores(tmp_path / "nowhere")
