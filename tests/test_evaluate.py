"""The evaluation loop: invariance to batching and workers, an oracle, the colour baseline."""
from __future__ import annotations

import pytest
import torch

from fss_sam2.baseline import ColourPrototypeBaseline
from fss_sam2.data.episodes import make_episodes
from fss_sam2.data.sources import ListSource
from fss_sam2.engine.evaluate import evaluate
from tests.fixtures_data import write_tiny_root

SIZE = 48


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return ListSource(write_tiny_root(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def episodes(source):
    return make_episodes(source, fold=0, shot=1, episodes=24)


def _scores(result):
    return {k: v for k, v in result.items() if k != "seconds"}


def oracle(model, batch, device):
    """Logits from the resized query label itself (ignore pixels scored as background)."""
    return torch.where(batch["query_label"] == 1, 10.0, -10.0)


def test_batching_and_workers_do_not_change_the_result(source, episodes):
    model = ColourPrototypeBaseline()
    one = evaluate(model, source, episodes, fold=0, size=SIZE, progress=False)
    many = evaluate(model, source, episodes, SIZE, batch_size=4, num_workers=2, progress=False)  # fold inferred
    assert _scores(one) == _scores(many)
    assert one["episodes"] == 24 and set(one["per_class"]) == set(source.novel(0))
    assert one["seconds"] > 0


def test_oracle_scores_one(tmp_path):
    square = ListSource(write_tiny_root(tmp_path, images=32, size=(40, 40), seed=1))
    episodes = make_episodes(square, fold=1, shot=1, episodes=10)
    out = evaluate(None, square, episodes, fold=1, size=40, progress=False, step=oracle)
    assert out["miou"] == pytest.approx(1.0) and out["fb_iou"] == pytest.approx(1.0)


def test_oracle_through_stretch_and_back_is_nearly_perfect(source, episodes):
    out = evaluate(None, source, episodes, fold=0, size=SIZE, progress=False, step=oracle)
    assert 0.9 < out["miou"] < 1.0  # nearest up and bilinear back move a few boundary pixels


def test_colour_baseline_is_sensible(source, episodes):
    model = ColourPrototypeBaseline().train()
    ours = evaluate(model, source, episodes, fold=0, size=SIZE, progress=False)
    everything = evaluate(lambda q, s, m: torch.ones(q.shape[0], *q.shape[2:]), source, episodes,
                          fold=0, size=SIZE, progress=False)
    assert ours["miou"] > 0.6 > everything["miou"]
    assert model.training  # evaluate restores the mode it found


def test_wrong_logit_shape_is_a_clear_error(source, episodes):
    with pytest.raises(ValueError, match=r"logits \(1, 1, 48, 48\)"):
        evaluate(lambda q, s, m: torch.zeros(q.shape[0], 1, *q.shape[2:]), source, episodes, fold=0,
                 size=SIZE, progress=False)
