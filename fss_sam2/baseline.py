"""A trivial, training-free few-shot baseline: nearest colour prototype.

It shows what colour alone achieves on a benchmark (a floor any learned method must beat) and
has FSSAM's call convention, so evaluation code treats both the same:
  model(query (B,3,H,W) 0..255, supports (B,K,3,H,W) 0..255, support_masks (B,K,H,W) {0,1,255})
  -> logits (B,H,W)
Each pixel is described by its locally averaged colour in an opponent space (brightness
down-weighted, so shading matters less than hue); the foreground and background prototypes are
the mean features of the supports' mask==1 and mask==0 pixels (255 ignored), and the logit is
(d_bg - d_fg) / temperature with d the squared distance to each prototype.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .engine.runtime import atomic_write_text
from .modules.common import masked_average


class ColourPrototypeBaseline(nn.Module):
    def __init__(self, blur: int = 5, brightness_weight: float = 0.5, temperature: float = 0.05):
        super().__init__()
        self.blur = blur
        self.brightness_weight = brightness_weight
        self.temperature = temperature

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) RGB 0..255 -> (N,3,H,W): brightness, red-green, yellow-blue."""
        x = F.avg_pool2d(image / 255, self.blur, stride=1, padding=self.blur // 2, count_include_pad=False)
        r, g, b = x.unbind(1)
        return torch.stack([self.brightness_weight * (r + g + b) / 3, r - g, (r + g) / 2 - b], dim=1)

    def forward(self, query: torch.Tensor, supports: torch.Tensor, support_masks: torch.Tensor) -> torch.Tensor:
        b, k, _, h, w = supports.shape
        q = self.features(query.float())  # (B,C,H,W)
        s = self.features(supports.flatten(0, 1).float())  # (B*K,C,H,W)
        s = s.unflatten(0, (b, k)).transpose(1, 2).flatten(2, 3)  # (B,C,K*H,W): shots stacked
        m = support_masks.flatten(1, 2)[:, None]  # (B,1,K*H,W)
        fg = masked_average(s, (m == 1).float())  # (B,C,1,1)
        bg = masked_average(s, (m == 0).float())
        d_fg = (q - fg).square().sum(1)  # (B,H,W)
        d_bg = (q - bg).square().sum(1)
        return (d_bg - d_fg) / self.temperature


def write_baseline_result(path: str | Path, folds: Mapping[int, Mapping], *, dataset: str, shot: int,
                          synthetic: bool, model: str = "colour-prototype baseline") -> dict:
    """Write `path` in the results.json format of `fss-sam2 baseline`, which `read_result` reads
    (one row per fold, method = `model`): model, dataset, shot, synthetic, `folds` ({fold: the
    result of `engine.evaluate.evaluate`}: miou, fb_iou, per_class, ... as fractions) and the mean
    miou / fb_iou over the folds. Written atomically (the folder created); returns the record."""
    if not folds:
        raise ValueError("write_baseline_result: no fold results given")
    record = {"model": model, "dataset": dataset, "shot": shot, "synthetic": synthetic, "folds": dict(folds),
              "miou": sum(r["miou"] for r in folds.values()) / len(folds),
              "fb_iou": sum(r["fb_iou"] for r in folds.values()) / len(folds)}
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    return record
