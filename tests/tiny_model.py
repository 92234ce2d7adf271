"""A tiny stand-in for FSSAM with the same training contract, for the trainer's tests.

A frozen conv "image encoder", a trainable embedding, a masked-average support prototype, its
cosine map with the query features, and a small trainable head -> logits (B,S,S). Optional
dropout (to test that resuming replays the dropout masks), a NaN after N training forwards
and a simulated crash after N training forwards.

Run as a script (repository root on PYTHONPATH) it trains from a config with this model; the
DDP test launches it with torchrun:
    python tests/tiny_model.py --config configs/toy.yaml --set ... --out DIR [--dropout P]
"""
from __future__ import annotations

import argparse
from functools import partial

import torch
from torch import nn

from fss_sam2.modules.common import cosine_map, masked_average


class SimulatedCrash(RuntimeError):
    """Stands for a process killed in the middle of training."""


def dice_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Official Dice: p = sigmoid, t = (label == 1); 1 - 2 sum(pt) / max(sum p^2 + sum t^2, 1e-8), batch mean."""
    p = torch.sigmoid(logits).flatten(1)  # (B,S*S)
    t = (label == 1).float().flatten(1)
    return (1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1)).clamp(min=1e-8)).mean()


class TinyFewShot(nn.Module):
    def __init__(self, width: int = 8, dropout: float = 0.0, nan_after: int | None = None,
                 crash_after: int | None = None):
        super().__init__()
        self.encoder = nn.Conv2d(3, width, 3, padding=1)  # frozen, like SAM 2's image encoder
        self.encoder.requires_grad_(False)
        self.embed = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Sequential(
            nn.Conv2d(width + 1, width, 3, padding=1), nn.ReLU(), nn.Dropout(dropout), nn.Conv2d(width, 1, 1)
        )
        self.nan_after, self.crash_after = nan_after, crash_after
        self.train_forwards = 0

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.encoder(images / 255.0 - 0.5))  # (N,3,S,S) -> (N,C,S,S)

    def forward(self, query, supports, support_masks) -> torch.Tensor:
        b, k = supports.shape[:2]
        fq = self.features(query)  # (B,C,S,S)
        fs = self.features(supports.flatten(0, 1))  # (B*K,C,S,S)
        mask = (support_masks == 1).float().flatten(0, 1).unsqueeze(1)  # (B*K,1,S,S)
        proto = masked_average(fs, mask).view(b, k, -1, 1, 1).mean(1)  # (B,C,1,1)
        logits = self.head(torch.cat([fq, 5 * cosine_map(fq, proto)], 1))[:, 0]  # (B,S,S)
        if self.training:
            self.train_forwards += 1
            if self.crash_after is not None and self.train_forwards > self.crash_after:
                raise SimulatedCrash(f"crash in training forward {self.train_forwards}")
            if self.nan_after is not None and self.train_forwards > self.nan_after:
                logits = logits * float("nan")
        return logits

    def loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return dice_loss(logits, label)

    def trainable_parameters(self) -> list[dict]:
        return [{"name": "embed", "params": list(self.embed.parameters())},
                {"name": "head", "params": list(self.head.parameters())}]

    def trainable_state_dict(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def load_trainable_state_dict(self, state: dict) -> None:
        expected = set(self.trainable_state_dict())
        if set(state) != expected:
            raise KeyError(f"trainable state keys {sorted(state)} != {sorted(expected)}")
        self.load_state_dict(state, strict=False)


def tiny_factory(**kwargs):
    """A `model_factory(cfg.model)` building TinyFewShot(**kwargs) (the model config is ignored)."""
    return partial(_build, **kwargs)


def _build(model_cfg, **kwargs) -> TinyFewShot:
    return TinyFewShot(**kwargs)


def main() -> None:
    from fss_sam2.config import load_config
    from fss_sam2.engine.train import train

    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", nargs="+", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("--dropout", type=float, default=0.0)
    a = p.parse_args()
    train(load_config(a.config, a.overrides), tiny_factory(dropout=a.dropout), a.out, progress=False)


if __name__ == "__main__":
    main()
