"""A cache of the frozen encoders' outputs, per image, for evaluation (docs/deviations.md,
"Feature cache").

SAM 2's image encoder and DINOv2 never train, and evaluation shows the same images again and
again (1000 episodes over a few hundred images; every seed; every validation). The cache keeps,
per image, SAM 2's image features (without the position map, which depends on the shape only)
and the DINOv2 patch tokens, so that `FSSAM.forward(features=...)` skips both encoders.

Keys can never be stale:
  image key  SHA-256 of the transformed image tensor itself (bytes, shape, dtype)
  model key  SHA-256 of everything the part's output depends on: the part ("sam" or "dino"),
             the exact bytes of the frozen weights that feed it (SAM 2: image encoder + the
             decoder's conv_s0 / conv_s1; DINOv2: its weights and input normalisation), the
             image size, the parameter dtype, the autocast dtype, the device type, and the
             torch / sam2 / cache-format versions.
The weights are hashed once per state of their tensors (storage pointer and version counter):
`load_state_dict`, optimizer steps, in-place ops and `.to()` all change that state and trigger a
rehash. Writes through `tensor.data` bypass version counters and are not seen.

Two tiers: memory (least recently used entries leave first once `max_bytes` is exceeded) and an
optional folder, `disk/<model key>/<image key[:2]>/<image key>.pt`, written to a temporary file
and renamed, so that several processes (DDP ranks) may write the same key and readers only ever
see complete files. A file holds the entry's tensors and the SHA-256 of their names, dtypes,
shapes and bytes (`entry_digest`), checked on every read: a file that is unreadable, or whose
content no longer matches its checksum (altered on disk), is a miss with a warning naming it,
and is rewritten.

Evaluation only: training augments its images (no reuse), and cached tensors made under
`torch.inference_mode` cannot take part in autograd.
"""
from __future__ import annotations

import functools
import hashlib
import json
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones.sam2_model import ImageFeatures, encode_image
from ..model import FSSAM, EpisodeFeatures
from .runtime import atomic_write

CACHE_FORMAT = 2  # 2: entries on disk carry their checksum
Entry = dict[str, torch.Tensor]  # one image's tensors of one part


def tensor_digest(x: torch.Tensor, h=None):
    """Feed a tensor's dtype, shape and bytes to a hash (a new SHA-256 unless `h` is given)."""
    h = hashlib.sha256() if h is None else h
    h.update(f"{x.dtype}{tuple(x.shape)}".encode())
    data = x.detach().cpu().contiguous().reshape(-1)
    if data.numel():
        h.update(memoryview(data.view(torch.uint8).numpy()))
    return h


def entry_digest(entry: Entry) -> str:
    """SHA-256 of an entry's tensors (names, dtypes, shapes, bytes), in name order."""
    h = hashlib.sha256()
    for name in sorted(entry):
        h.update(name.encode() + b"\0")
        tensor_digest(entry[name], h)
    return h.hexdigest()


def image_key(image: torch.Tensor) -> str:
    """Content key of one image tensor (3,S,S)."""
    return tensor_digest(image).hexdigest()


# -- what is cached ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One frozen encoder: the weights its output depends on, and how to compute the output."""

    name: str
    weights: Callable[[FSSAM], Iterable[tuple[str, torch.Tensor]]]
    settings: Callable[[FSSAM], dict]
    compute: Callable[[FSSAM, torch.Tensor], Entry]  # images (N,3,S,S) -> {name: (N,...)}


def _sam_weights(model: FSSAM):
    sam = model.sam2
    yield from sam.image_encoder.state_dict(prefix="image_encoder.", keep_vars=True).items()
    for conv in ("conv_s0", "conv_s1"):  # applied by forward_image to the high-res levels
        yield from getattr(sam.sam_mask_decoder, conv).state_dict(prefix=f"{conv}.", keep_vars=True).items()


def _sam_compute(model: FSSAM, images: torch.Tensor) -> Entry:
    f = encode_image(model.sam2, images)
    return {"pix": f.pix, "high_res_0": f.high_res[0], "high_res_1": f.high_res[1]}


def _dino_weights(model: FSSAM):
    gen = model.prompt_generator
    yield from gen.dino.state_dict(prefix="dino.", keep_vars=True).items()
    yield from (("mean", gen.mean), ("std", gen.std))


SAM = Part(
    "sam",
    _sam_weights,
    lambda m: {"image_size": m.image_size, "levels": m.sam2.num_feature_levels},
    _sam_compute,
)
DINO = Part(
    "dino",
    _dino_weights,
    lambda m: {"image_size": m.image_size},
    lambda m, images: {"tokens": m.prompt_generator.tokens(images)},
)


def sam_position(model: FSSAM, pix: torch.Tensor) -> torch.Tensor:
    """The sine position map of stride-16 features (B,256,h,w): a function of the shape only."""
    return model.sam2.image_encoder.neck.position_encoding(pix).to(pix.dtype)


@functools.cache
def _versions() -> dict:
    try:
        from importlib.metadata import version

        sam2 = version("sam2")
    except Exception:  # not installed as a distribution (e.g. a source checkout)
        sam2 = "unknown"
    return {"format": CACHE_FORMAT, "torch": torch.__version__, "sam2": sam2}


# -- the cache --------------------------------------------------------------------------------


class FeatureCache:
    """Frozen-encoder outputs per (model key, image key); see the module docstring.

    max_bytes: memory budget of the in-memory tier (0 disables it); disk: a folder for the disk
    tier (None: memory only). Entries stay on the device that computed them.
    """

    def __init__(self, max_bytes: int = 4 * 2**30, disk: str | Path | None = None):
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes}: expected >= 0")
        self.max_bytes = max_bytes
        self.disk = None if disk is None else Path(disk)
        self.bytes = 0
        self.hits = self.disk_hits = self.misses = self.evictions = 0
        self._memory: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        # model -> {part: (state of its weight tensors, their hash)}; weak, so a model loaded later
        # (whose tensors may reuse freed addresses) is never mistaken for a dropped one
        self._weights: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def stats(self) -> dict:
        return {"hits": self.hits, "disk_hits": self.disk_hits, "misses": self.misses,
                "evictions": self.evictions, "entries": len(self._memory), "bytes": self.bytes}

    # -- keys ---------------------------------------------------------------------------------

    def model_key(self, model: FSSAM, part: Part, device: torch.device) -> str:
        """The key of `part` of `model` as it would run now on `device` (autocast included)."""
        weights = list(part.weights(model))
        state = tuple((n, t.data_ptr(), t._version, t.dtype, t.device) for n, t in weights)
        memos = self._weights.setdefault(model, {})
        memo = memos.get(part.name)
        if memo is None or memo[0] != state:
            h = hashlib.sha256()
            for name, t in weights:
                h.update(name.encode())
                tensor_digest(t, h)
            memo = memos[part.name] = (state, h.hexdigest())
        dtype = next(iter(model.parameters())).dtype
        amp = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        described = {"part": part.name, "weights": memo[1], **part.settings(model), "dtype": str(dtype),
                     "autocast": str(amp), "device": device.type, **_versions()}
        key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]
        if self.disk is not None:
            self._describe(key, described)
        return key

    def _describe(self, key: str, described: dict) -> None:
        path = self.disk / key / "key.json"
        if not path.is_file():
            atomic_write(path, lambda f: f.write(json.dumps(described, indent=1).encode() + b"\n"), shared=True)

    # -- entries ------------------------------------------------------------------------------

    def get(self, key: tuple[str, str], device: torch.device) -> Entry | None:
        """The entry of (model key, image key) from memory, else from disk (then kept in memory)."""
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            self.hits += 1
            return entry
        entry = self._read(key, device)
        if entry is not None:
            self.disk_hits += 1
            self._remember(key, entry)
        return entry

    def put(self, key: tuple[str, str], entry: Entry) -> None:
        """Keep an entry in memory (budget permitting) and on disk (unless a file exists)."""
        self._remember(key, entry)
        if self.disk is not None:
            path = self._path(key)
            if not path.is_file():
                cpu = {k: v.cpu() for k, v in entry.items()}
                record = {"tensors": cpu, "sha256": entry_digest(cpu)}
                atomic_write(path, lambda f: torch.save(record, f), shared=True)

    def clear(self) -> None:
        """Empty the memory tier (the disk tier stays)."""
        self._memory.clear()
        self.bytes = 0

    def _remember(self, key, entry: Entry) -> None:
        size = sum(t.numel() * t.element_size() for t in entry.values())
        if size > self.max_bytes:
            return
        old = self._memory.pop(key, None)
        if old is not None:
            self.bytes -= sum(t.numel() * t.element_size() for t in old.values())
        self._memory[key] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, gone = self._memory.popitem(last=False)
            self.bytes -= sum(t.numel() * t.element_size() for t in gone.values())
            self.evictions += 1

    def _path(self, key: tuple[str, str]) -> Path:
        model, image = key
        return self.disk / model / image[:2] / f"{image}.pt"

    def _read(self, key, device: torch.device) -> Entry | None:
        if self.disk is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
            problem = _check_record(record)
        except Exception as e:  # damaged (e.g. a crash of the file system)
            problem = f"unreadable ({type(e).__name__})"
        if problem is not None:  # a miss, rewritten by put
            warnings.warn(f"{path}: cache entry {problem}; recomputing it")
            path.unlink(missing_ok=True)
            return None
        return {name: t.to(device) for name, t in record["tensors"].items()}

    # -- features of a batch ------------------------------------------------------------------

    def features(self, model: FSSAM, query: torch.Tensor, supports: torch.Tensor,
                 device: str | torch.device | None = None) -> EpisodeFeatures:
        """The frozen encoders' outputs for an episode batch, computed only for unseen images.

        query (B,3,S,S), supports (B,K,3,S,S), 0..255, best on the CPU (they are hashed there);
        device: where the model runs (default: where its parameters are).
        """
        model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper
        if not isinstance(model, FSSAM):
            raise TypeError(f"FeatureCache serves FSSAM models, got {type(model).__name__}")
        device = torch.device(device) if device is not None else next(model.parameters()).device
        images = FSSAM.images(query, supports)  # (N,3,S,S), N = B + B·K
        keys = [image_key(x) for x in images]
        parts = [p for p, used in ((SAM, model.uses_sam), (DINO, model.uses_dino)) if used]
        out = {p.name: self._part(model, p, images, keys, device) for p in parts}
        sam = None
        if "sam" in out:
            pix = out["sam"]["pix"]
            sam = ImageFeatures(pix, sam_position(model, pix), [out["sam"]["high_res_0"], out["sam"]["high_res_1"]])
        return EpisodeFeatures(sam=sam, tokens=out["dino"]["tokens"] if "dino" in out else None)

    def _part(self, model: FSSAM, part: Part, images: torch.Tensor, keys: list[str], device) -> Entry:
        mkey = self.model_key(model, part, device)
        found: dict[str, Entry] = {}
        for k in keys:
            if k not in found and (entry := self.get((mkey, k), device)) is not None:
                found[k] = entry
        todo = list(dict.fromkeys(k for k in keys if k not in found))  # unseen, each image once
        if todo:
            self.misses += len(todo)
            first = {k: keys.index(k) for k in todo}
            with torch.no_grad():
                batch = part.compute(model, images[[first[k] for k in todo]].to(device))  # {name: (M,...)}
            for i, k in enumerate(todo):
                entry = {name: t[i].clone() for name, t in batch.items()}  # own storage, not the batch's
                found[k] = entry
                self.put((mkey, k), entry)
        return {name: _stack([found[k][name] for k in keys]) for name in found[keys[0]]}  # (N,...)

    def step(self, model: FSSAM, batch: dict, device: torch.device) -> torch.Tensor:
        """An `evaluate(step=...)`: the model on a collated batch, encoders served by the cache."""
        features = self.features(model, batch["query"], batch["supports"], device)
        return model(batch["query"].to(device), batch["supports"].to(device), batch["support_masks"].to(device),
                     features=features)


def _check_record(record) -> str | None:
    """What is wrong with a disk entry as read back (None: it is what was written)."""
    if not isinstance(record, dict) or not isinstance(record.get("tensors"), dict) or "sha256" not in record:
        return "not in the cache's format"
    tensors = record["tensors"]
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        return "not in the cache's format"
    if entry_digest(tensors) != record["sha256"]:
        return "does not match its checksum (altered on disk)"
    return None


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per-image tensors -> (N,...), batch outermost, the images' own dim order inside: the layout
    the encoder gives a batch directly (e.g. channels-last tokens), since downstream reductions
    follow the memory layout and the result must match the uncached forward bit for bit."""
    first = tensors[0]
    order = sorted(range(first.dim()), key=lambda d: -first.stride(d))  # outermost dim first
    out = first.new_empty((len(tensors), *(first.shape[d] for d in order)))
    out = out.permute(0, *(1 + order.index(d) for d in range(first.dim())))
    for i, t in enumerate(tensors):
        out[i].copy_(t)
    return out


