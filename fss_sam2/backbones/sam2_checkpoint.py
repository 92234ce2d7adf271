"""Read SAM 2.0 checkpoints (release files, bare state dicts, the authors' FSSAM files) and
load them strictly into a stock ``SAM2Base``, with errors that say what the file is."""
from __future__ import annotations

import os
import re

import torch

# SAM 2.0 size of a checkpoint or model: (Hiera embed dim, Hiera block count, hidden width) -> size name
SAM2_SIZES = {
    (32, 5, 256): "tiny-toy",
    (32, 5, 64): "tiny-toy-64",  # the toy profile's stand-in (backbones/sam2_model.py, NARROW_OVERRIDES)
    (96, 12, 256): "tiny",
    (96, 16, 256): "small",
    (112, 24, 256): "base_plus",
    (144, 48, 256): "large",
}
WIDTH_KEY = "no_mem_embed"  # (1,1,hidden width): 256 in every SAM 2 release
TRUNK_PATCH_KEY = "image_encoder.trunk.patch_embed.proj.weight"  # (embed_dim,3,7,7)
SAM21_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight")
SAM21_ERROR = "SAM 2.1 checkpoints are not supported: FSSAM is built on SAM 2.0 (sam2_hiera_*.pt)"
# What a SAM 2.0 model must look like for FSSAM's hand-built memory; SAM 2.1 options change it
# (docs/deviations.md, "Stock sam2, no vendored copy").
EXPECTED_CONFIG = {
    "use_obj_ptrs_in_encoder": True,
    "pred_obj_scores": True,
    "fixed_no_obj_ptr": True,
    "use_high_res_features_in_sam": True,
    "multimask_output_in_sam": True,
    "multimask_output_for_tracking": True,
    "use_multimask_token_for_obj_ptr": True,
    "mem_dim": 64,
    "add_tpos_enc_to_obj_ptrs": False,
    "proj_tpos_enc_in_obj_ptrs": False,
    "use_signed_tpos_enc_to_obj_ptrs": False,
    "no_obj_embed_spatial": None,
    "sigmoid_scale_for_mem_enc": 20.0,
    "sigmoid_bias_for_mem_enc": -10.0,
}


def load_checkpoint_file(path) -> dict:
    """``torch.load`` (weights only, on CPU) with errors that name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler raises many types on foreign files
        first = (str(err).splitlines() or [""])[0]
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint (or it holds arbitrary Python "
            f"objects, which we refuse to unpickle): {type(err).__name__}: {first}"
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a checkpoint: holds a {type(obj).__name__}, not a dict")
    return obj


def unwrap_state_dict(obj: dict, source: str) -> dict:
    """The state dict inside a checkpoint: ``obj["model"]``, ``obj["state_dict"]`` or obj."""
    for wrapper in ("model", "state_dict"):
        if isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: not a state dict: non-tensor entries {bad[:5]}")
    return obj


def extract_prefixed(state_dict: dict, prefix: str) -> dict:
    """Entries whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def strip_wrapper_prefix(state_dict: dict, name: str) -> dict:
    """The ``name`` sub-model of an FSSAM state dict (``module.<name>.*`` under DDP, or
    ``<name>.*``); the state dict itself when it has neither prefix."""
    for prefix in (f"module.{name}.", f"{name}."):
        part = extract_prefixed(state_dict, prefix)
        if part:
            return part
    return state_dict


def read_sam2_checkpoint(path) -> dict:
    """SAM 2 state dict (upstream keys) of a SAM 2.0 release file (``{"model": sd}``), a bare
    state dict, or an authors' FSSAM checkpoint (``{"state_dict": {"module.sam2.*", ...}}``)."""
    source = os.fspath(path)
    state_dict = strip_wrapper_prefix(unwrap_state_dict(load_checkpoint_file(path), source), "sam2")
    if not any(k.startswith("image_encoder.trunk.") for k in state_dict):
        hint = " (it looks like a DINOv2 checkpoint)" if "cls_token" in state_dict else ""
        raise ValueError(f"{source}: holds no SAM 2 weights (no image_encoder.trunk.* keys){hint}")
    return state_dict


def sam2_size(state_dict: dict) -> str:
    """Which SAM 2.0 size a state dict is, from its Hiera trunk and hidden width (256, that of every
    release, when the dict lacks `WIDTH_KEY`); 'unknown' otherwise."""
    if TRUNK_PATCH_KEY not in state_dict:
        return "unknown"
    dim = state_dict[TRUNK_PATCH_KEY].shape[0]
    blocks = {m.group(1) for k in state_dict if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    width = state_dict[WIDTH_KEY].shape[-1] if WIDTH_KEY in state_dict else 256
    return SAM2_SIZES.get((dim, len(blocks), width),
                          f"unknown (Hiera dim {dim}, {len(blocks)} blocks, width {width})")


def check_state_dict(model_state: dict, state_dict: dict, context: str) -> None:
    """Raise ValueError(context: missing / unexpected keys, shape mismatches) unless they match."""
    missing = sorted(model_state.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - model_state.keys())
    wrong_shape = [
        f"{k} {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
        for k, v in state_dict.items()
        if k in model_state and v.shape != model_state[k].shape
    ]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{context}: {len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]}, {len(wrong_shape)} shape mismatches {wrong_shape[:5]}"
        )


def load_sam2_weights(sam, state_dict: dict, source: str) -> None:
    """Strictly load a SAM 2.0 state dict into ``sam``; ``source`` names it in errors."""
    if any(k in state_dict for k in SAM21_KEYS):
        raise ValueError(f"{source}: {SAM21_ERROR}")
    model_state = sam.state_dict()
    have, want = sam2_size(state_dict), sam2_size(model_state)
    if have != want:
        raise ValueError(f"{source}: checkpoint is SAM 2.0 {have}, model is {want}")
    check_state_dict(model_state, state_dict, f"{source}: does not match the SAM 2.0 {want} model")
    sam.load_state_dict(state_dict, strict=True)


def validate_sam2_config(sam) -> None:
    """Raise unless ``sam`` is configured like the SAM 2.0 models FSSAM is built on."""
    wrong = []
    for name, want in EXPECTED_CONFIG.items():
        have = getattr(sam, name, "absent")
        differs = have is not None if want is None else have != want
        if differs:
            shown = "a parameter" if isinstance(have, torch.Tensor) else repr(have)
            wrong.append(f"{name}={shown} (expected {want!r})")
    for i, layer in enumerate(sam.memory_attention.layers):
        for attn in ("self_attn", "cross_attn_image"):
            heads = getattr(layer, attn).num_heads
            if heads != 1:
                wrong.append(f"memory_attention.layers.{i}.{attn}.num_heads={heads} (expected 1)")
    if wrong:
        raise ValueError(
            "SAM 2 model is not configured as the SAM 2.0 models FSSAM expects (SAM 2.1 configs "
            "are not supported): " + "; ".join(wrong)
        )
