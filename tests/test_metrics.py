"""FssMeter and logits_to_prediction against hand-computed examples."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fss_sam2.metrics import FssMeter, intersection_union, logits_to_prediction

# Episode A (class 1); label 255 at (1,1) is ignored.
#   pred  1 1 0     label 1   0 0
#         0 0 0           1 255 0
#   fg: I = {(0,0)} = 1, U = {(0,0),(0,1),(1,0)} = 3
#   bg: I = {(0,2),(1,2)} = 2, U = {(0,1),(0,2),(1,0),(1,2)} = 4
PRED_A = np.array([[1, 1, 0], [0, 0, 0]])
LABEL_A = np.array([[1, 0, 0], [1, 255, 0]])
# Episode B (class 2): pred all 1, label 1 1 / 0 255 -> fg I=2 U=3, bg I=0 U=1
PRED_B = np.ones((2, 2), np.uint8)
LABEL_B = np.array([[1, 1], [0, 255]])
# Episode C (class 1): perfect -> fg I=1 U=1, bg I=1 U=1
PRED_C = np.array([[0, 1]])
LABEL_C = np.array([[0, 1]])


def test_intersection_union_by_hand():
    assert intersection_union(PRED_A, LABEL_A) == ((2, 1), (4, 3))
    assert intersection_union(PRED_B, LABEL_B) == ((0, 2), (1, 3))
    assert intersection_union(torch.from_numpy(PRED_A), torch.from_numpy(LABEL_A)) == ((2, 1), (4, 3))


def test_meter_by_hand():
    meter = FssMeter([1, 2, 3])
    meter.update(PRED_A, LABEL_A, 1)
    meter.update(torch.from_numpy(PRED_B), torch.from_numpy(LABEL_B), torch.tensor(2))
    meter.update(PRED_C, LABEL_C, 1)
    with pytest.warns(UserWarning, match=r"\[3\]"):
        out = meter.compute()
    # class 1 accumulates I = 1 + 1, U = 3 + 1 -> 0.5 (not the mean of its episode IoUs, 2/3)
    assert out["per_class"][1] == pytest.approx(0.5)
    assert out["per_class"][2] == pytest.approx(2 / 3)
    assert out["per_class"][3] == 0.0  # no episodes: counts 0, as the official mean over the fold
    assert out["miou"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    # all episodes: bg I = 2+0+1 = 3, U = 4+1+1 = 6; fg I = 1+2+1 = 4, U = 3+3+1 = 7
    assert out["piou"] == pytest.approx(4 / 7)
    assert out["fb_iou"] == pytest.approx((3 / 6 + 4 / 7) / 2)
    assert out["episodes"] == 3
    assert meter.running_miou() == pytest.approx((0.5 + 2 / 3) / 2)  # seen classes only
    # every episode's counts, in order (what the bootstrap intervals resample): cls, I_bg, I_fg, U_bg, U_fg
    assert meter.episodes == [(1, 2, 1, 4, 3), (2, 0, 2, 1, 3), (1, 1, 1, 1, 1)]


def test_ignore_pixels_do_not_count():
    pred = np.array([[1, 0, 1, 0]])
    meter = FssMeter([1])
    meter.update(pred, np.array([[1, 0, 255, 255]]), 1)  # wrong predictions only on ignored pixels
    assert meter.compute()["miou"] == pytest.approx(1.0)
    assert meter.compute()["fb_iou"] == pytest.approx(1.0)


def test_empty_foreground_everywhere_scores_zero():
    meter = FssMeter([1])
    meter.update(np.zeros((2, 2)), np.zeros((2, 2)), 1)  # 0 / (0 + 1e-10) as officially
    out = meter.compute()
    assert out["miou"] == 0.0 and out["fb_iou"] == pytest.approx(0.5)


def test_bad_inputs_are_rejected():
    meter = FssMeter([1, 2])
    with pytest.raises(ValueError, match="class 5"):
        meter.update(PRED_C, LABEL_C, 5)
    with pytest.raises(ValueError, match="shapes differ"):
        meter.update(PRED_A, LABEL_C, 1)
    with pytest.raises(ValueError, match="binarise"):
        meter.update(PRED_C, np.array([[0, 3]]), 1)
    with pytest.raises(ValueError, match="prediction"):
        meter.update(np.array([[0, 2]]), LABEL_C, 1)


def test_logits_to_prediction_threshold_and_align_corners():
    # same size: sigmoid(0) = 0.5 counts as foreground
    logits = torch.tensor([[-1.0, 2.0], [0.0, -1e-3]])
    assert logits_to_prediction(logits, (2, 2)).tolist() == [[0, 1], [1, 0]]
    # 1x2 -> 1x4 with align_corners=True samples x = 0, 1/3, 2/3, 1: -1, 1/6, 4/3, 2.5
    # (align_corners=False would sample x = 0, 1/4, 3/4, 1 and give -1/8 < 0 at the second pixel)
    pred = logits_to_prediction(torch.tensor([[-1.0, 2.5]]), (1, 4))
    assert pred.tolist() == [[0, 1, 1, 1]] and pred.dtype == torch.uint8
    batch = logits_to_prediction(torch.tensor([[[-1.0, 2.5]], [[2.5, -1.0]]]), (1, 4))
    assert batch.tolist() == [[[0, 1, 1, 1]], [[1, 1, 1, 0]]]
    with pytest.raises(ValueError, match="expected"):
        logits_to_prediction(torch.zeros(1, 1, 2, 2), (2, 2))
