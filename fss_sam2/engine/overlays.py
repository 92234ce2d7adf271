"""PNG overlays of predictions: a mask drawn over its image, and an evaluation's first episodes."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.episode_dataset import EpisodeDataset, collate
from ..data.episodes import Episode
from ..metrics import logits_to_prediction
from .runtime import atomic_write


def overlay_mask(image: np.ndarray, mask: np.ndarray, colour=(230, 40, 40), alpha: float = 0.5) -> np.ndarray:
    """The image (H,W,3) uint8 tinted with `colour` where mask (H,W) is true."""
    out = image.astype(np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return out.round().astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    """An (H,W) or (H,W,3) uint8 array as a PNG, written atomically."""
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def write_overlays(model, source, episodes: Sequence[Episode], size: int, fold: int, device, step, out: Path) -> None:
    """out/episode_NNNN.png: the supports with their masks, the query with its ground truth and
    the query with the scored prediction, side by side at the query's original size."""
    data = EpisodeDataset(source, episodes, size=size, fold=fold, split="val")
    for i in range(len(data)):
        batch = collate([data[i]])
        with torch.inference_mode():
            logits = step(model, batch, device)[0]  # (S,S)
        raw = batch["raw_label"][0]  # (Ho,Wo), the original size
        shape = tuple(raw.shape)
        query = source.load_image(data.items[episodes[i].query])  # (Ho,Wo,3) uint8
        panels = [overlay_mask(_resized(img.permute(1, 2, 0), shape), _resized(mask == 1, shape), (40, 200, 60))
                  for img, mask in zip(batch["supports"][0], batch["support_masks"][0])]
        panels.append(overlay_mask(query, raw.numpy() == 1, (40, 200, 60)))
        panels.append(overlay_mask(query, logits_to_prediction(logits, shape).cpu().numpy() == 1, (230, 40, 40)))
        save_png(np.concatenate(panels, axis=1), out / f"episode_{i:04d}.png")


def _resized(x: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """An (S,S,3) image or (S,S) bool mask stretched to `shape` (bilinear / nearest)."""
    if x.dtype == torch.bool:
        m = torch.nn.functional.interpolate(x[None, None].float(), size=shape, mode="nearest")[0, 0]
        return m.numpy() > 0.5
    img = torch.nn.functional.interpolate(x.permute(2, 0, 1)[None].float(), size=shape, mode="bilinear",
                                          align_corners=False)[0]
    return img.permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()
