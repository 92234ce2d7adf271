"""Build SAM 2.0 (Hiera T-toy / S / B+ / L) for FSSAM and encode images with it.

We use the released ``sam2`` package unmodified: a stock ``SAM2Base`` built from its Hydra
configs with the FSSAM overrides (image size, RoPE grid = image_size / 16).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .sam2_checkpoint import SAM21_ERROR, load_sam2_weights, read_sam2_checkpoint, validate_sam2_config

SAM2_CONFIGS = {
    "tiny-toy": "configs/sam2/sam2_hiera_t.yaml",
    "tiny-toy-64": "configs/sam2/sam2_hiera_t.yaml",
    "small": "configs/sam2/sam2_hiera_s.yaml",
    "base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "large": "configs/sam2/sam2_hiera_l.yaml",
}

# An 8.5 M-parameter SAM 2 for the tests: 32-dim Hiera trunk,
# stages 1,1,2,1 with global attention at block 3 (never the first block of a stage),
# two memory-attention layers with a 512-wide FFN.
TINY_TOY_OVERRIDES = [
    "++model.image_encoder.trunk.embed_dim=32",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
    "++model.memory_attention.num_layers=2",
    "++model.memory_attention.layer.dim_feedforward=512",
]
# The toy profile's SAM 2 stand-in: the tiny-toy trunk with every 256-wide part 64 wide (FPN neck and
# with it the mask decoder's tokens, memory attention, memory encoder input): 2.4 M parameters
# instead of 8.5 M, a training step about 1.8x faster, so it is pretrained for more steps, and
# small enough to ship (toy/shipped.py; docs/toy_world.md, "The stand-ins").
# Its hidden width equals the memory width (64), so each frame gives 1 object-pointer token, not
# SAM 2's 4 (256 / 64); tests keep the 256-wide tiny-toy, which has SAM 2's structure.
NARROW_OVERRIDES = [
    "++model.image_encoder.neck.d_model=64",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=64",
    "++model.memory_attention.d_model=64",
    "++model.memory_attention.layer.d_model=64",
    "++model.memory_attention.layer.self_attention.embedding_dim=64",
    "++model.memory_attention.layer.cross_attention.embedding_dim=64",
    "++model.memory_encoder.in_dim=64",
    "++model.memory_encoder.mask_downsampler.embed_dim=64",
    "++model.memory_encoder.fuser.layer.dim=64",
]
TOY_OVERRIDES = {"tiny-toy": TINY_TOY_OVERRIDES, "tiny-toy-64": TINY_TOY_OVERRIDES + NARROW_OVERRIDES}

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def sam2_overrides(size: str, image_size: int) -> list[str]:
    """Hydra overrides that turn a stock SAM 2.0 config into FSSAM's."""
    if size not in SAM2_CONFIGS:
        raise ValueError(f"sam2={size!r}: expected one of {sorted(SAM2_CONFIGS)}")
    if image_size % 16 or image_size < 64:
        raise ValueError(f"image_size={image_size}: must be a multiple of 16 and at least 64")
    grid = image_size // 16  # stride-16 memory grid, 32 at 512
    extra = TOY_OVERRIDES.get(size, [])
    return extra + [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
    ]


def build_sam2_model(size: str = "small", image_size: int = 512, device="cpu", checkpoint=None):
    """A stock ``SAM2Base``, FSSAM-configured, in eval mode.

    Random weights unless ``checkpoint``: a SAM 2.0 file (release ``sam2_hiera_*.pt``, bare
    state dict or the authors' FSSAM checkpoint) or, if no such path exists, a SAM 2.0 hub id
    such as ``facebook/sam2-hiera-small`` (downloaded with ``huggingface_hub``).
    """
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2

    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("sam2", version_base="1.2")
    overrides = sam2_overrides(size, image_size)  # validates size before any download
    path = None if checkpoint is None else resolve_sam2_checkpoint(checkpoint, size)
    sam = build_sam2(
        SAM2_CONFIGS[size],
        None,
        device=device,
        mode="eval",
        hydra_overrides_extra=overrides,
        apply_postprocessing=False,
    )
    validate_sam2_config(sam)
    if path is not None:
        load_sam2_weights(sam, read_sam2_checkpoint(path), source=path)
    return sam


def resolve_sam2_checkpoint(checkpoint, size: str) -> str:
    """A local checkpoint path: ``checkpoint`` itself, or the download of a SAM 2.0 hub id."""
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    path = os.fspath(checkpoint)
    if os.path.exists(path) or path not in HF_MODEL_ID_TO_FILENAMES:
        return path  # a missing file is reported by read_sam2_checkpoint
    config, filename = HF_MODEL_ID_TO_FILENAMES[path]
    if "sam2.1" in path:
        raise ValueError(f"checkpoint={path!r}: {SAM21_ERROR}")
    if size in TOY_OVERRIDES or config != SAM2_CONFIGS[size]:
        raise ValueError(f"checkpoint={path!r} is not a SAM 2.0 {size} model ({config})")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise ImportError(
            f"checkpoint={path!r} is a hub id; install huggingface_hub or pass a local file"
        ) from err
    return hf_hub_download(repo_id=path, filename=filename)


@dataclass
class ImageFeatures:
    """SAM 2 image-encoder outputs of one batch of images (h = w = image_size / 16)."""

    pix: torch.Tensor  # (B,256,h,w) stride-16 image embedding, before memory attention
    pos: torch.Tensor  # (B,256,h,w) its sine position encoding
    high_res: list[torch.Tensor]  # [(B,32,4h,4w), (B,64,2h,2w)] for the mask decoder


def normalize_for_sam(images: torch.Tensor) -> torch.Tensor:
    """RGB in 0..255 (B,3,H,W) -> x/255 then ImageNet mean/std."""
    mean = images.new_tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (images / 255.0 - mean) / std


def encode_image(sam, images: torch.Tensor) -> ImageFeatures:
    """Run SAM 2's image encoder (+ the decoder's conv_s0/conv_s1) on 0..255 RGB images."""
    backbone_out = sam.forward_image(normalize_for_sam(images.float()))
    _, vision_feats, vision_pos, sizes = sam._prepare_backbone_features(backbone_out)
    # vision_feats / vision_pos: one (HW,B,C) sequence per level, lowest resolution last
    b = images.shape[0]
    maps = [f.permute(1, 2, 0).reshape(b, -1, *s) for f, s in zip(vision_feats, sizes)]
    pos = vision_pos[-1].permute(1, 2, 0).reshape(b, -1, *sizes[-1])
    return ImageFeatures(pix=maps[-1], pos=pos, high_res=maps[:-1])
