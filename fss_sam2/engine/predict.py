"""Segment your own images from k annotated examples (`fss-sam2 predict`).

Images may have any size: like the evaluation protocol, every image is stretched to the model's
size, and the query logits are resized back to the query's own size (bilinear, align_corners)
before the threshold. Support masks are binary files or arrays: a pixel is foreground when its
value is 1 or above 127 (0/1, 0/255 and anti-aliased masks work; RGB masks use their brightest
channel), the rule of folder datasets (`fss_sam2.data.folder.read_mask`). An empty support mask
gives a warning, then the model sees an all-background support, as the official code does.
Output masks are 0/255 PNGs named like their query images.
"""
from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.folder import IMAGE_SUFFIXES, read_mask
from ..data.sources import read_image
from ..data.transforms import val_transform
from ..metrics import logits_to_prediction
from ..model import FSSAM
from .cache import FeatureCache
from .evaluate import call_model
from .overlays import overlay_mask, save_png
from .runtime import autocast

ImageLike = np.ndarray | Image.Image | str | Path  # (H,W,3) RGB array, a PIL image or a file
MaskLike = np.ndarray | Image.Image | str | Path  # (H,W) array, a PIL image or a file


def _name(x, default: str) -> str:
    return str(x) if isinstance(x, (str, Path)) else default


def as_image(x: ImageLike, name: str = "image") -> np.ndarray:
    """RGB uint8 (H,W,3) from an array, a PIL image or a file (errors name it)."""
    if isinstance(x, (str, Path)):
        return read_image(Path(x))
    if isinstance(x, Image.Image):
        return np.asarray(x.convert("RGB"))
    a = np.asarray(x)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{name}: expected an (H,W,3) RGB image, got shape {a.shape}")
    return np.clip(a, 0, 255).astype(np.uint8)


def as_mask(x: MaskLike, name: str = "mask") -> np.ndarray:
    """Foreground bool (H,W) from an array, a PIL image or a file: value 1 or above 127."""
    if isinstance(x, (str, Path)):
        return read_mask(Path(x))
    if isinstance(x, Image.Image):
        x = np.asarray(x.convert("L"))
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected an (H,W) mask, got shape {a.shape}")
    return a.astype(bool) if a.dtype == bool else (a == 1) | (a > 127)


def prepare_supports(supports: Sequence[tuple[ImageLike, MaskLike]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> images (K,3,S,S) float 0..255 and masks (K,S,S) int64 {0,1}, stretched to S = size."""
    if not supports:
        raise ValueError("supports: at least one (image, mask) pair is needed")
    images, masks = [], []
    for i, (image, mask) in enumerate(supports):
        iname, mname = _name(image, f"support {i} image"), _name(mask, f"support {i} mask")
        img, m = as_image(image, iname), as_mask(mask, mname)
        if img.shape[:2] != m.shape:
            raise ValueError(f"{iname} ({img.shape[0]}x{img.shape[1]}) and its mask {mname} "
                             f"({m.shape[0]}x{m.shape[1]}): sizes differ")
        if not m.any():
            warnings.warn(f"{mname}: the support mask is empty; the model sees an all-background support "
                          "(as the official code does)")
        x, y = val_transform(img, m.astype(np.uint8), size)
        images.append(x)
        masks.append(y)
    return torch.stack(images), torch.stack(masks)


def to_mask(logits: torch.Tensor, shape: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """Logits (S,S) -> bool mask at `shape`, as the evaluation thresholds (`logits_to_prediction`)."""
    return logits_to_prediction(logits, shape, threshold).bool().cpu().numpy()


def predict(
    model: Callable,
    supports: Sequence[tuple[ImageLike, MaskLike]],
    queries: Sequence[ImageLike],
    threshold: float = 0.5,
    size: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    precision: str = "auto",
    cache: FeatureCache | None = None,
) -> list[np.ndarray]:
    """Bool masks (H_i,W_i), one per query, of the class the supports show.

    model: FSSAM (or any callable with its convention; then `size` is required). Queries run in
    batches of `batch_size`; for FSSAM the frozen encoders go through `cache` (default: a fresh
    in-memory FeatureCache), so the supports are encoded once.
    """
    fssam = isinstance(model, FSSAM)
    size = model.image_size if fssam and size is None else size
    if size is None:
        raise ValueError("size: required for a model that is not FSSAM")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold={threshold}: expected a probability in (0, 1)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1")
    if device is None:
        params = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        device = params.device if params is not None else "cpu"
    device = torch.device(device)
    step = (cache or FeatureCache()).step if fssam else call_model
    sup, sup_masks = prepare_supports(supports, size)  # (K,3,S,S), (K,S,S)
    out = []
    for start in range(0, len(queries), batch_size):
        chunk = queries[start:start + batch_size]
        images = [as_image(q, _name(q, f"query {start + i}")) for i, q in enumerate(chunk)]
        query = torch.stack([val_transform(img, np.zeros(img.shape[:2], np.uint8), size)[0] for img in images])
        b = len(images)
        batch = {"query": query, "supports": sup.expand(b, *sup.shape), "support_masks": sup_masks.expand(b, *sup_masks.shape)}
        with torch.inference_mode(), autocast(device, precision):
            logits = step(model, batch, device)  # (B,S,S)
        out += [to_mask(logits[i], img.shape[:2], threshold) for i, img in enumerate(images)]
    return out


# -- files: masks and overlays ---------------------------------------------------------------


def query_files(query: str | Path) -> list[Path]:
    """The image files of a folder (sorted), or the one file named."""
    path = Path(query)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"{path}: query image or folder not found")
    return [path]


def output_paths(queries: Sequence[Path], out: Path) -> list[Path]:
    """out/<stem>.png per query; refuses two queries with one stem and overwriting a query."""
    seen: dict[str, Path] = {}
    paths = []
    for q in queries:
        if q.stem in seen:
            raise ValueError(f"{seen[q.stem]} and {q}: both would write {out / (q.stem + '.png')}; rename one")
        seen[q.stem] = q
        target = out / f"{q.stem}.png"
        if target.resolve() == q.resolve():
            raise ValueError(f"{q}: the mask would overwrite the query image; choose another --out")
        paths.append(target)
    return paths


def predict_files(model, supports: Sequence[tuple[Path, Path]], queries: Sequence[Path], out: str | Path,
                  threshold: float = 0.5, overlays: bool = False, **options) -> list[Path]:
    """Write out/<stem>.png (0/255) per query and, with `overlays`, out/overlays/<stem>.png;
    returns the mask files written (one per query, in their order)."""
    out = Path(out)
    targets = output_paths(queries, out)
    masks = predict(model, supports, queries, threshold=threshold, **options)
    if len(masks) != len(queries):  # never report files that were not written
        raise RuntimeError(f"predict gave {len(masks)} mask(s) for {len(queries)} query image(s)")
    written = []
    for q, mask, target in zip(queries, masks, targets):
        save_png(mask.astype(np.uint8) * 255, target)
        written.append(target)
        if overlays:
            save_png(overlay_mask(read_image(q), mask), out / "overlays" / target.name)
    return written


