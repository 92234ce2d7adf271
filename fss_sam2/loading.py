"""Build FSSAM from a config, or load it from a checkpoint: ours, the authors', or none."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from .backbones.dinov2 import build_dinov2
from .backbones.sam2_checkpoint import load_checkpoint_file, unwrap_state_dict
from .backbones.sam2_model import build_sam2_model
from .config import parse_overrides, to_dict
from .methods import BACKBONE_KEYS, SWITCHES
from .model import FSSAM

OURS = "fss-sam2/"  # prefix of our checkpoints' `format` entry


def build_model(model_cfg: Mapping, image_size: int, device="cpu") -> FSSAM:
    """FSSAM from a config's `model:` section (sam2, dino, their checkpoint files, switches)."""
    unknown = set(model_cfg) - set(SWITCHES) - set(BACKBONE_KEYS)
    if unknown:
        raise ValueError(f"model config: unknown keys {sorted(unknown)}")
    sam = build_sam2_model(model_cfg["sam2"], image_size, device, checkpoint=model_cfg.get("sam2_checkpoint"))
    dino = build_dinov2(model_cfg["dino"], checkpoint=model_cfg.get("dino_checkpoint"))
    switches = {k: model_cfg[k] for k in SWITCHES if model_cfg.get(k) is not None}
    return FSSAM(sam, dino, **switches).to(device)


def checkpoint_kind(ckpt: dict, source: str) -> str:
    """'ours' (compact, trainable state + config) or 'official' (the authors' full state dict)."""
    if str(ckpt.get("format", "")).startswith(OURS):
        return "ours"
    keys = [k.removeprefix("module.") for k in unwrap_state_dict(ckpt, source)]
    if any(k.startswith("sam2.") for k in keys) and any(k.startswith("dino.") for k in keys):
        return "official"
    raise ValueError(
        f"{source}: neither an fss-sam2 checkpoint nor an FSSAM release checkpoint "
        f"(expected `sam2.*` and `dino.*` weights; found keys like {keys[:3]}). SAM 2 or DINOv2 "
        "weights alone go to sam2_checkpoint= / dino_checkpoint="
    )


def load_model(
    checkpoint=None,
    *,
    sam2: str = "small",
    dino: str = "vitb14",
    image_size: int = 512,
    device="cpu",
    dtype: torch.dtype = torch.float32,
    sam2_checkpoint=None,
    dino_checkpoint=None,
    **switches,
) -> FSSAM:
    """FSSAM in eval mode.

    checkpoint: None (random weights, seeded by the caller, unless sam2_checkpoint /
    dino_checkpoint name pretrained files); an authors' release checkpoint (`exp.zip`
    `best_1shot.pth`: full DDP state dict with `module.sam2.*` and `module.dino.*`, with or without
    `module.`), loaded whole — `sam2` must name its SAM 2 size; or one of our checkpoints
    (`last.pt` / `best.pt`): its config decides the architecture and switches, its trainable
    weights are loaded over the frozen SAM 2 / DINOv2 files its config names (override those
    paths with sam2_checkpoint= / dino_checkpoint= if they moved).
    """
    if checkpoint is None:
        cfg = {"sam2": sam2, "dino": dino, "sam2_checkpoint": sam2_checkpoint, "dino_checkpoint": dino_checkpoint}
        model = build_model(cfg | switches, image_size, device)
    else:
        source = str(checkpoint)
        model = _model_from_checkpoint(load_checkpoint_file(checkpoint), source, device, sam2_checkpoint=sam2_checkpoint,
                                       dino_checkpoint=dino_checkpoint, switches=switches, sam2=sam2, dino=dino,
                                       image_size=image_size)
    return model.to(dtype=dtype).eval()


def _model_from_checkpoint(ckpt: dict, source: str, device, *, sam2_checkpoint=None, dino_checkpoint=None,
                           switches: Mapping = (), sam2: str | None = None, dino: str | None = None,
                           image_size: int | None = None) -> FSSAM:
    """FSSAM from a checkpoint already read from `source` (`load_model` says which kinds);
    sam2, dino and image_size describe an authors' file (ours record them in their config)."""
    if checkpoint_kind(ckpt, source) == "official":
        cfg = {"sam2": sam2, "dino": dino, "sam2_checkpoint": source, "dino_checkpoint": source}
        return build_model(cfg | dict(switches), image_size, device)
    config = ckpt["config"]
    cfg = dict(config["model"]) | dict(switches)
    for key, value in (("sam2_checkpoint", sam2_checkpoint), ("dino_checkpoint", dino_checkpoint)):
        if value is not None:
            cfg[key] = value
        elif cfg.get(key) and not Path(cfg[key]).exists():
            raise FileNotFoundError(
                f"{source}: its config names {key}={cfg[key]} (the frozen weights it was trained "
                f"over), which does not exist here; pass {key}=PATH"
            )
    # frozen parts without a weights file are random: rebuild them as the trainer did
    torch.manual_seed(int(config["train"]["seed"]))
    model = build_model(cfg, int(config["data"]["image_size"]), device)
    model.load_trainable_state_dict(ckpt["model"], source=source)
    return model


def load_checkpoint_model(checkpoint, cfg=None, overrides: Sequence[str] = (), device="cpu", *,
                          state: dict | None = None):
    """(FSSAM in eval mode, kind) from our `last.pt` / `best.pt` ('ours') or an authors' release
    checkpoint ('official').

    ours: architecture, switches and frozen-weight files come from the checkpoint's own config;
    `model.*` keys set in `overrides` (an ablation switch, a moved `model.sam2_checkpoint`) apply
    on top. official: `cfg` (required) names the SAM 2 size, DINOv2, switches and image size.
    state: the file's contents if already read (`load_checkpoint_file`); it is then not read again.
    """
    path = str(checkpoint)
    ckpt = load_checkpoint_file(path) if state is None else state
    kind = checkpoint_kind(ckpt, path)
    if kind == "official":
        if cfg is None:
            raise ValueError(f"{path}: an authors' FSSAM checkpoint; pass --config too (it names the SAM 2 size, "
                             "DINOv2 and the image size)")
        model_cfg = to_dict(cfg.model)
        sam2, dino = model_cfg.pop("sam2"), model_cfg.pop("dino")
        for key in ("sam2_checkpoint", "dino_checkpoint"):  # the authors' file holds both weights itself
            model_cfg.pop(key, None)
        model = _model_from_checkpoint(ckpt, path, device, switches=model_cfg, sam2=sam2, dino=dino,
                                       image_size=cfg.data.image_size)
        return model.to(dtype=torch.float32).eval(), kind
    explicit = parse_overrides(overrides).get("model", {}) if overrides else {}
    keep = (*SWITCHES, "sam2_checkpoint", "dino_checkpoint")
    chosen = {k: v for k, v in explicit.items() if k in keep}
    model = _model_from_checkpoint(ckpt, path, device, sam2_checkpoint=chosen.pop("sam2_checkpoint", None),
                                   dino_checkpoint=chosen.pop("dino_checkpoint", None), switches=chosen)
    trained = ckpt["config"]["data"]
    if cfg is not None and cfg.data.dataset == trained["dataset"] and cfg.data.fold != trained["fold"]:
        warnings.warn(f"{path}: trained on fold {trained['fold']}, evaluated on fold {cfg.data.fold}, whose novel "
                      "classes it saw in training")
    return model.to(dtype=torch.float32).eval(), kind


def training_record(checkpoint, *, state: dict | None = None) -> dict:
    """{"trained_shot", "training_seed"} of a checkpoint: its config's data.shot and train.seed
    for ours; None for the authors' release files, which do not record them. state: as in
    `load_checkpoint_model`."""
    path = str(checkpoint)
    ckpt = load_checkpoint_file(path) if state is None else state
    if checkpoint_kind(ckpt, path) == "official":
        return {"trained_shot": None, "training_seed": None}
    config = ckpt["config"]
    return {"trained_shot": int(config["data"]["shot"]), "training_seed": int(config["train"]["seed"])}


def fssam_factory(image_size: int) -> Callable:
    """The model factory of `fss-sam2 train`: FSSAM from a config's `model:` section."""
    return lambda model_cfg: build_model(to_dict(model_cfg), image_size)
