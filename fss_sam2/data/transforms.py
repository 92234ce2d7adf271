"""Episode image transforms of the release, numpy / PIL / torch only.

Inputs: image uint8 or float (H,W,3) RGB 0..255, label uint8 (H,W) already binarised {0,1,255}.
Outputs: image float32 tensor (3,S,S) still 0..255 (the model normalises), label int64 (S,S).
Every random draw comes from an explicit numpy Generator; there is no global RNG.

- validation: stretch resize to S x S (bilinear image, nearest label), no aspect preservation,
  for query and supports alike (the official `resized_val`).
- training: random scale -> random rotation (p=0.5) -> 5x5 Gaussian blur (p=0.5) -> horizontal
  flip (p=0.5) -> pad to S and a random S x S crop that keeps >= 85 % of the foreground.
  Training crops keep the aspect ratio while validation stretches it (kept: docs/deviations.md,
  "Train and val resizing").
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..constants import IGNORE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
FILL = tuple(255 * m for m in IMAGENET_MEAN)  # image border of rotations and padding
TRAIN_SCALE = {"pascal": (0.9, 1.1), "coco": (0.8, 1.25)}  # official RandScale ranges
ROTATE_DEG = 10.0
BLUR_KERNEL = np.array([1, 4, 6, 4, 1], np.float32) / 16  # OpenCV's 5-tap Gaussian at default sigma
CROP_KEEP = 0.85  # a random crop must keep this fraction of the label==1 pixels ...
CROP_TRIES = 31  # ... or it is re-drawn, at most this many draws in all (the last one stays)


def resize(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to (H, W): bilinear image (half-pixel centres, no antialias, like cv2 INTER_LINEAR),
    nearest label (floor mapping, like cv2 INTER_NEAREST)."""
    if image.shape[:2] == tuple(size):
        return image.astype(np.float32, copy=False), label
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]  # (1,3,H,W)
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    # labels read by PIL are read-only arrays: copied only then (torch warns on non-writable arrays)
    lab = F.interpolate(torch.from_numpy(np.require(label, requirements=["C", "W"]))[None, None], size=size, mode="nearest")
    return img[0].permute(1, 2, 0).numpy(), lab[0, 0].numpy()


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(H,W,3) image, (H,W) label -> float32 (3,H,W), int64 (H,W)."""
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1).contiguous()
    return img, torch.from_numpy(label.astype(np.int64))


def val_transform(image: np.ndarray, label: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stretch resize to size x size."""
    return to_tensors(*resize(image, label, (size, size)))


def rotate(image: np.ndarray, label: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate counter-clockwise by `angle` degrees about the centre; uncovered image pixels get
    the ImageNet mean x 255, uncovered label pixels 255."""
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).rotate(
            angle, resample=Image.BILINEAR, fillcolor=FILL[c]))
        for c in range(3)
    ]
    lab = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8)).rotate(
        angle, resample=Image.NEAREST, fillcolor=IGNORE)
    return np.stack(chans, axis=2), np.asarray(lab)


def blur(image: np.ndarray) -> np.ndarray:
    """Separable 5x5 Gaussian [1,4,6,4,1]/16, mirrored borders (cv2.GaussianBlur((5,5), 0))."""
    out = np.pad(image.astype(np.float32), ((2, 2), (2, 2), (0, 0)), mode="reflect")
    h, w = image.shape[:2]
    out = sum(k * out[i:i + h] for i, k in enumerate(BLUR_KERNEL))  # (H, W+4, 3)
    return sum(k * out[:, i:i + w] for i, k in enumerate(BLUR_KERNEL))  # (H, W, 3)


def pad_crop(
    image: np.ndarray, label: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pad (centred) to at least size x size, then take a random size x size crop, re-drawn while
    it keeps less than 85 % of the label==1 pixels (up to CROP_TRIES draws)."""
    h, w = label.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        image = np.stack(
            [np.pad(image[..., c], pads, constant_values=FILL[c]) for c in range(3)], axis=2)
        label = np.pad(label, pads, constant_values=IGNORE)
        h, w = label.shape
    total = int((label == 1).sum())
    for _ in range(CROP_TRIES):
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crop = label[top:top + size, left:left + size]
        if (crop == 1).sum() >= CROP_KEEP * total:
            break
    return image[top:top + size, left:left + size], crop


def train_transform(
    image: np.ndarray,
    label: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = TRAIN_SCALE["pascal"],
    rotate_deg: float = ROTATE_DEG,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official training augmentation, every draw from `rng`."""
    image = image.astype(np.float32)
    s = rng.uniform(*scale)
    h, w = label.shape
    image, label = resize(image, label, (max(1, round(h * s)), max(1, round(w * s))))
    if rng.random() < 0.5:
        image, label = rotate(image, label, rng.uniform(-rotate_deg, rotate_deg))
    if rng.random() < 0.5:
        image = blur(image)
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return to_tensors(*pad_crop(image, label, size, rng))
