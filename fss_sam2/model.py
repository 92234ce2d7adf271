"""FSSAM: few-shot segmentation on an unmodified SAM 2 (paper, Fig. 1(c)), and its ablations.

The forward is the paper's pipeline, one method per stage (shapes for a 512 input with
Hiera-S: h = w = 32 is the memory grid, t = 40 the DINOv2 token grid):

  encode          frozen SAM 2 image encoder on [queries, supports]     (B+B·K,256,32,32) + high-res
  pseudo_prompts  frozen DINOv2 -> per-shot priors (PPG)                (B,K,2,512,512)
  memories        support GT and both query priors -> memory frames     (B,K,64,32,32), (B,64,32,32)
  refine          IMR rounds on the discriminative-prior query memory
  attend          SAM 2's memory attention, support-calibrated (SCMA)
  decode          SAM 2's mask decoder without prompts                  (B,512,512) logits

`forward` chains the stages; `trace` runs the same stages and keeps every intermediate (the
tutorial reads it); the toy pretraining and the memory study call the stages themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .backbones.sam2_model import ImageFeatures, encode_image
from .config import ModelConfig
from .constants import IGNORE
from .modules.calibrated_attention import KSHOT_MODES, AttentionMaps, calibrated_memory_attention
from .modules.decoder import DecoderOutput, decode_masks
from .modules.mask_memory import mask_to_memory
from .modules.memory_assembly import assemble_memory
from .modules.memory_refinement import VERSIONS, downsample_to_memory, iterative_memory_refinement
from .modules.prompt_generator import PriorMaps, PseudoPromptGenerator, dino_size

# The SAM 2 parts the release optimises; everything else is frozen.
TRAINABLE = ("sam_mask_decoder", "memory_encoder", "memory_attention")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, mask_ignore: bool = False) -> torch.Tensor:
    """The release's squared-denominator Dice, mean over the batch.

    logits (B,H,W); target (B,H,W) in {0,1,255}. By default ignore pixels (255) count as
    background, as in the release (docs/deviations.md, "Dice and ignore pixels");
    `mask_ignore=True` leaves them out instead.
    """
    p = torch.sigmoid(logits.float()).flatten(1)  # (B,HW)
    t = (target == 1).float().flatten(1)
    if mask_ignore:
        valid = (target != IGNORE).float().flatten(1)
        p, t = p * valid, t * valid
    inter = (p * t).sum(1)
    denom = (p.pow(2).sum(1) + t.pow(2).sum(1)).clamp_min(1e-8)
    return (1 - 2 * inter / denom).mean()


@dataclass
class EpisodeFeatures:
    """What the frozen encoders give for the B + B·K images of an episode batch, in the order of
    `FSSAM.images`: row b is query b, row B + b·K + i is support i of episode b. Pass it to
    `FSSAM.forward(features=...)` to skip the encoders (e.g. from `engine.cache.FeatureCache`)."""

    sam: ImageFeatures | None = None  # SAM 2 image features; None: run SAM 2's image encoder
    tokens: torch.Tensor | None = None  # (B+B·K,C,t,t) DINOv2 patch tokens; None: run DINOv2


@dataclass
class Memories:
    """The memory frames of an episode batch before IMR (h = w = image_size / 16).

    The query entries are None for the naive "support as memory" model (no priors)."""

    support: torch.Tensor  # (B,K,64,h,w) supports encoded with their ground truth
    support_pos: torch.Tensor  # (B,K,64,h,w) sine position encoding
    support_ptr: torch.Tensor  # (B,K,256) object pointers
    fg: torch.Tensor | None = None  # (B,64,h,w) M_fg: query encoded with the foreground prior
    disc: torch.Tensor | None = None  # (B,64,h,w) query with the discriminative prior ("ae" in the authors' code)
    query_pos: torch.Tensor | None = None  # (B,64,h,w)
    query_ptr: torch.Tensor | None = None  # (B,256) pointer of the discriminative prior (as released)
    support_mask_soft: torch.Tensor | None = None  # (B,K,1,h,w) bilinear: IMR's support masks
    support_mask_grid: torch.Tensor | None = None  # (B,K,1,h,w) nearest: SCMA's support masks
    prior_fg: torch.Tensor | None = None  # (B,1,h,w) shot-mean foreground prior on the grid
    prior_disc: torch.Tensor | None = None  # (B,1,h,w) shot-mean discriminative prior on the grid


@dataclass
class Trace:
    """Every intermediate of one forward (detached), for the tutorial. `logits` equal `forward`'s
    for the same batch and switches (bit for bit; with `fused_attention` up to rounding, since a
    trace keeps the attention weights and so computes them explicitly)."""

    logits: torch.Tensor  # (B,S,S)
    priors: PriorMaps | None = None  # per-shot DINOv2 maps (B,K,...); None: the naive model
    query_features: ImageFeatures | None = None  # the query's SAM 2 features (pix/pos (B,256,h,w))
    memories: Memories | None = None  # before IMR
    # one dict per IMR round: W, disc_memory, prior_disc, S_qq, S_qs, each (B,·,h,w)
    refinement: list[dict] = field(default_factory=list)
    query_memory: torch.Tensor | None = None  # (B,64,h,w) the query memory the attention reads
    attention: AttentionMaps | None = None  # the model's own memory attention, per layer
    # the same memory through plain and through support-calibrated attention (one of them is
    # `attention`, the other computed beside it for comparison); calibrated: None without a
    # query memory (the naive model)
    attention_plain: AttentionMaps | None = None
    attention_calibrated: AttentionMaps | None = None


def _cat_features(feats: list[ImageFeatures]) -> ImageFeatures:
    return ImageFeatures(
        pix=torch.cat([f.pix for f in feats]),
        pos=torch.cat([f.pos for f in feats]),
        high_res=[torch.cat(level) for level in zip(*(f.high_res for f in feats))],
    )


def split_features(feats: ImageFeatures, n: int) -> tuple[ImageFeatures, ImageFeatures]:
    """The first n images' features and the rest's."""
    first = ImageFeatures(feats.pix[:n], feats.pos[:n], [h[:n] for h in feats.high_res])
    rest = ImageFeatures(feats.pix[n:], feats.pos[n:], [h[n:] for h in feats.high_res])
    return first, rest


_SWITCH = ModelConfig  # the config schema holds every switch's default


class FSSAM(nn.Module):
    """FSSAM over a stock ``SAM2Base`` (`sam2`) and a frozen DINOv2 (`dino`).

    Switches (defaults = the released 1-shot behaviour, from `config.ModelConfig`):
      num_refine: IMR rounds (3; 0 = no IMR);  refine_version: "v1" | "v2"
      calibrate: Support-Calibrated Memory Attention (True; False = plain SAM 2 memory attention)
      kshot_calibration: "mean" (intended K-shot semantics) | "official" (released 5-shot,
        docs/deviations.md "K-shot calibration")
      query_memory: pseudo query memory from the priors (True; False = the naive "support as
        memory" SAM 2 baseline of the paper's Fig. 1(b): supports only, no priors, no SCMA;
        `dino` may then be None)
      priors_only: return the discriminative prior itself as the prediction (no SAM 2)
      dice_ignore: Dice without ignore pixels (False = as released, docs/deviations.md,
        "Dice and ignore pixels")
      bias_scale: scale s of the calibration bias (10 in the release, docs/deviations.md
        "Ablation switches")
      memory_dtype: cast memories (e.g. torch.bfloat16, as the release does); None keeps fp32
        (docs/deviations.md, "Memory dtype")
      fused_attention: SCMA through `F.scaled_dot_product_attention` with the calibration bias
        as an additive mask (False = the release's explicit logits / softmax, bit-identical to
        before). A speed option, not a config switch: the logits equal the default's up to
        rounding (fp32 ~1e-6), attention dropout in training draws other masks, and `trace` /
        `attend(maps=True)` use the explicit kernel (the maps need its weights)
    """

    def __init__(
        self,
        sam2: nn.Module,
        dino: nn.Module | None,
        *,
        num_refine: int = _SWITCH.num_refine,
        refine_version: str = _SWITCH.refine_version,
        calibrate: bool = _SWITCH.calibrate,
        kshot_calibration: str = _SWITCH.kshot_calibration,
        query_memory: bool = _SWITCH.query_memory,
        priors_only: bool = _SWITCH.priors_only,
        dice_ignore: bool = _SWITCH.dice_ignore,
        bias_scale: float = _SWITCH.bias_scale,
        memory_dtype: torch.dtype | None = None,
        fused_attention: bool = False,
    ):
        super().__init__()
        if refine_version not in VERSIONS:
            raise ValueError(f"refine_version={refine_version!r}: expected one of {VERSIONS}")
        if kshot_calibration not in KSHOT_MODES:
            raise ValueError(f"kshot_calibration={kshot_calibration!r}: expected one of {KSHOT_MODES}")
        if isinstance(num_refine, bool) or not isinstance(num_refine, int) or num_refine < 0:
            raise ValueError(f"num_refine={num_refine!r}: expected an integer >= 0")
        self.sam2 = sam2
        self.num_refine = num_refine
        self.refine_version = refine_version
        self.calibrate = calibrate
        self.kshot_calibration = kshot_calibration
        self.query_memory = query_memory
        self.priors_only = priors_only
        self.dice_ignore = dice_ignore
        self.bias_scale = bias_scale
        self.memory_dtype = memory_dtype
        self.fused_attention = fused_attention
        if dino is None and self.uses_dino:
            raise ValueError("dino=None: only the naive model (query_memory=False) runs without DINOv2")
        self.prompt_generator = PseudoPromptGenerator(dino) if dino is not None else None
        self._compiled_post_encoder = None  # see compile_post_encoder
        if self.uses_dino:
            try:
                dino_size(self.image_size)
            except ValueError as e:
                raise ValueError(f"image_size={self.image_size} (SAM 2's): {e}") from None
        self.requires_grad_(False)
        for name in TRAINABLE:
            getattr(self.sam2, name).requires_grad_(True)

    @property
    def image_size(self) -> int:
        return self.sam2.image_size

    @property
    def uses_sam(self) -> bool:
        """Whether forward runs SAM 2 (and its frozen image encoder)."""
        return not self.priors_only

    @property
    def uses_dino(self) -> bool:
        """Whether forward computes DINOv2 priors (unless they are given)."""
        return self.query_memory or self.priors_only

    @property
    def calibrates(self) -> bool:
        """Whether the memory attention is support-calibrated (it needs a query memory)."""
        return self.calibrate and self.query_memory

    @staticmethod
    def images(query: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
        """The frozen encoders' batch: queries (B,3,H,W), then supports (B,K,3,H,W) -> (B+B·K,3,H,W)."""
        return torch.cat([query, supports.flatten(0, 1)])

    def compile_post_encoder(self, **options) -> None:
        """`torch.compile` the part after the frozen encoders (memories, IMR, SCMA, decoder)."""
        self._compiled_post_encoder = torch.compile(self._post_encoder, **options)

    # ---- parameters and state -------------------------------------------------------------
    def trainable_parameters(self) -> list[dict]:
        """The release's AdamW groups: mask decoder, memory encoder, memory attention."""
        return [
            {"name": name, "params": [p for p in getattr(self.sam2, name).parameters() if p.requires_grad]}
            for name in TRAINABLE
        ]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        prefixes = tuple(f"sam2.{name}." for name in TRAINABLE)
        return {k: v for k, v in self.state_dict().items() if k.startswith(prefixes)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        own = self.trainable_state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"{source}: trainable weights do not match this model "
                f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
            )
        for k, v in state.items():
            if v.shape != own[k].shape:
                raise ValueError(f"{source}: {k} has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
        self.load_state_dict(state, strict=False)

    def loss(self, logits: torch.Tensor, query_label: torch.Tensor) -> torch.Tensor:
        return dice_loss(logits, query_label, mask_ignore=self.dice_ignore)

    # ---- the stages -----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, query: torch.Tensor, supports: torch.Tensor) -> ImageFeatures:
        """Frozen SAM 2 image encoder: query (B,3,S,S), supports (B,K,3,S,S) 0..255 ->
        features of the B + B·K images (`images` order): pix/pos (B+B·K,256,h,w), high_res."""
        return encode_image(self.sam2, self.images(query, supports))

    def pseudo_prompts(self, query, supports, masks, tokens: torch.Tensor | None = None) -> PriorMaps:
        """PPG (paper, "Pseudo Prompt Generator"): DINOv2 priors of each shot.
        masks (B,K,S,S) in {0,1}; tokens: known DINOv2 tokens (B+B·K,C,t,t), DINOv2 is then
        not run."""
        return self.prompt_generator.maps(query, supports, masks, tokens=tokens)

    def compute_priors(self, query, supports, support_masks) -> torch.Tensor:
        """DINOv2 priors (B,K,2,H,W) for caching; support_masks may hold 255."""
        return self.pseudo_prompts(query, supports, _binary(support_masks)).priors

    def memories(self, query_feats: ImageFeatures, support_feats: ImageFeatures, masks: torch.Tensor,
                 priors: torch.Tensor | None) -> Memories:
        """Mask -> memory: the supports with their ground truth and, with a query memory, the
        query with each shot-mean prior (the paper's pseudo query memory), in one
        memory-encoder batch.
        masks (B,K,S,S) in {0,1}; priors (B,K,2,S,S) or None for the naive model."""
        sam = self.sam2
        b, k = masks.shape[:2]
        grid = query_feats.pix.shape[-2:]  # (h,w) memory grid
        flat_masks = masks.flatten(0, 1).unsqueeze(1)  # (BK,1,S,S)
        if not self.query_memory:
            mem = mask_to_memory(sam, support_feats, flat_masks, self.memory_dtype)
            return Memories(mem.memory.unflatten(0, (b, k)), mem.pos.unflatten(0, (b, k)),
                            mem.obj_ptr.unflatten(0, (b, k)))
        prior_fg = priors[:, :, 0].mean(1, keepdim=True)  # (B,1,S,S)
        prior_disc = priors[:, :, 1].mean(1, keepdim=True)
        mem = mask_to_memory(
            sam,
            _cat_features([support_feats, query_feats, query_feats]),
            torch.cat([flat_masks, prior_fg, prior_disc]),
            memory_dtype=self.memory_dtype,
        )
        bk = b * k
        return Memories(
            support=mem.memory[:bk].unflatten(0, (b, k)),
            support_pos=mem.pos[:bk].unflatten(0, (b, k)),
            support_ptr=mem.obj_ptr[:bk].unflatten(0, (b, k)),
            fg=mem.memory[bk : bk + b],
            disc=mem.memory[bk + b :],
            query_pos=mem.pos[bk + b :],
            query_ptr=mem.obj_ptr[bk + b :],
            support_mask_soft=downsample_to_memory(flat_masks, grid).unflatten(0, (b, k)),
            support_mask_grid=downsample_to_memory(flat_masks, grid, mode="nearest").unflatten(0, (b, k)),
            prior_fg=downsample_to_memory(prior_fg, grid),
            prior_disc=downsample_to_memory(prior_disc, grid),
        )

    def refine(self, mem: Memories, rounds: int | None = None, version: str | None = None,
               history: bool = False):
        """IMR (paper, "Iterative Memory Refinement"): the discriminative-prior query memory
        refined with M_fg -> (B,64,h,w), and with `history` one dict per round. rounds /
        version default to the model's switches."""
        return iterative_memory_refinement(
            mem.support, mem.fg, mem.disc, mem.support_mask_soft, mem.prior_fg, mem.prior_disc,
            rounds=self.num_refine if rounds is None else rounds,
            version=self.refine_version if version is None else version,
            history=history,
        )

    def attend(self, query_feats: ImageFeatures, mem: Memories, query_memory: torch.Tensor | None,
               calibrate: bool | None = None, maps: bool = False, weights_with_grad: bool = False):
        """SAM 2's memory attention of the query over [supports, query memory, pointers] (the
        episode's memory bank), support-calibrated when `calibrate` (default: the model's
        switch; paper, "Support-Calibrated Memory Attention") -> (features (B,256,h,w),
        AttentionMaps or None). `maps`: keep the attention weights per layer;
        `weights_with_grad` (plain attention): keep them with their grad, e.g. for a loss on
        where the model looks."""
        sam = self.sam2
        b, k = mem.support.shape[:2]
        calibrate = self.calibrates if calibrate is None else calibrate
        memory, memory_pos, num_ptr = assemble_memory(
            sam, mem.support, mem.support_pos, query_memory,
            None if query_memory is None else mem.query_pos, mem.support_ptr,
            None if query_memory is None else mem.query_ptr,
        )  # (L,B,64)
        grid = query_feats.pix.shape[-2:]
        result = calibrated_memory_attention(
            sam.memory_attention,
            query_feats.pix.flatten(2).permute(2, 0, 1),  # (hw,B,256)
            query_feats.pos.flatten(2).permute(2, 0, 1),
            memory,
            memory_pos,
            num_ptr,
            support_mask=mem.support_mask_grid,
            num_shots=k,
            calibrate=calibrate,
            kshot_calibration=self.kshot_calibration,
            bias_scale=self.bias_scale,
            return_maps=maps or weights_with_grad,
            attention_weights=weights_with_grad,
            fused_kernel=self.fused_attention,
        )
        out, attention = result if (maps or weights_with_grad) else (result, None)  # (hw,B,256)
        return out.permute(1, 2, 0).reshape(b, -1, *grid), attention  # (B,256,h,w)

    def decode(self, pix_with_mem: torch.Tensor, high_res: list[torch.Tensor], points=None, labels=None) -> DecoderOutput:
        """SAM 2's mask decoder on the memory-conditioned query feature (B,256,h,w), without
        prompts, as released, unless `points` (B,P,2) / `labels` (B,P) are given."""
        return decode_masks(self.sam2, pix_with_mem, high_res, points, labels)

    # ---- forward and trace ----------------------------------------------------------------
    def forward(self, query, supports, support_masks, priors=None, return_priors=False, features=None):
        """query (B,3,H,W) and supports (B,K,3,H,W) RGB in 0..255, support_masks (B,K,H,W) in
        {0,1,255}; priors: cached (B,K,2,H,W) from `compute_priors`; features: the frozen
        encoders' outputs (`EpisodeFeatures`), which are then not run. -> logits (B,H,W)."""
        b, k = self._check(query, supports, support_masks)
        features = EpisodeFeatures() if features is None else features
        _check_features(features, b * (k + 1))
        masks = _binary(support_masks)  # (B,K,H,W), ignore -> 0
        if self.uses_dino and priors is None:
            priors = self.pseudo_prompts(query, supports, masks, features.tokens).priors  # (B,K,2,H,W)
        self._check_priors(priors, b, k, query)
        if self.priors_only:
            logits = _prior_logits(priors)
        else:
            feats = features.sam if features.sam is not None else self.encode(query, supports)
            post = self._compiled_post_encoder or self._post_encoder
            logits = post(feats, masks, priors)
        return (logits, priors) if return_priors else logits

    def _post_encoder(self, feats: ImageFeatures, masks: torch.Tensor, priors: torch.Tensor | None) -> torch.Tensor:
        """SAM 2 features of the B + B·K images, masks (B,K,H,W) in {0,1}, priors -> logits (B,H,W)."""
        query_feats, support_feats = split_features(feats, masks.shape[0])
        mem = self.memories(query_feats, support_feats, masks, priors)
        query_memory = self.refine(mem) if self.query_memory else None  # (B,64,h,w)
        pix_with_mem, _ = self.attend(query_feats, mem, query_memory)
        return self.decode(pix_with_mem, query_feats.high_res).logits[:, 0]  # (B,H,W)

    @torch.no_grad()
    def trace(self, query, supports, support_masks, *, rounds: int | None = None, version: str | None = None,
              features: EpisodeFeatures | None = None) -> Trace:
        """The stages of `forward` on one batch, every intermediate kept (see `Trace`).

        rounds / version: IMR settings for this trace only (default: the model's). The second
        attention (plain or calibrated, whichever the model does not use) is computed beside
        the model's and changes nothing."""
        b, k = self._check(query, supports, support_masks)
        features = EpisodeFeatures() if features is None else features
        _check_features(features, b * (k + 1))
        masks = _binary(support_masks)
        prior_maps = self.pseudo_prompts(query, supports, masks, features.tokens) if self.uses_dino else None
        priors = None if prior_maps is None else prior_maps.priors
        if self.priors_only:
            return Trace(logits=_prior_logits(priors), priors=prior_maps)
        feats = features.sam if features.sam is not None else self.encode(query, supports)
        query_feats, support_feats = split_features(feats, b)
        mem = self.memories(query_feats, support_feats, masks, priors)
        query_memory, steps = self.refine(mem, rounds, version, history=True) if self.query_memory else (None, [])
        pix_with_mem, attention = self.attend(query_feats, mem, query_memory, maps=True)
        plain, calibrated = attention, None
        if self.query_memory:  # the other attention on the same memory, beside the model's
            other = self.attend(query_feats, mem, query_memory, calibrate=not self.calibrates, maps=True)[1]
            plain, calibrated = (other, attention) if self.calibrates else (attention, other)
        return Trace(
            logits=self.decode(pix_with_mem, query_feats.high_res).logits[:, 0],
            priors=prior_maps,
            query_features=query_feats,
            memories=mem,
            refinement=steps,
            query_memory=query_memory,
            attention=attention,
            attention_plain=plain,
            attention_calibrated=calibrated,
        )

    def _check(self, query, supports, support_masks) -> tuple[int, int]:
        s = self.image_size
        if query.dim() != 4 or tuple(query.shape[1:]) != (3, s, s):
            raise ValueError(f"query: expected (B,3,{s},{s}) RGB in 0..255 (model image_size {s}), got {tuple(query.shape)}")
        b = query.shape[0]
        if supports.dim() != 5 or supports.shape[0] != b or tuple(supports.shape[2:]) != (3, s, s):
            raise ValueError(f"supports: expected (B,K,3,{s},{s}) with B={b}, got {tuple(supports.shape)}")
        k = supports.shape[1]
        if k < 1:
            raise ValueError("supports: at least one support image is needed (K >= 1)")
        if tuple(support_masks.shape) != (b, k, s, s):
            raise ValueError(f"support_masks: expected (B,K,H,W) = ({b},{k},{s},{s}), got {tuple(support_masks.shape)}")
        return b, k

    @staticmethod
    def _check_priors(priors, b: int, k: int, query: torch.Tensor) -> None:
        if priors is not None and priors.shape != (b, k, 2, *query.shape[-2:]):
            raise ValueError(f"priors: expected (B,K,2,H,W) = ({b},{k},2,{query.shape[-2]},{query.shape[-1]}), "
                             f"got {tuple(priors.shape)}")


def _prior_logits(priors: torch.Tensor) -> torch.Tensor:
    """The priors-only ablation: the shot-mean discriminative prior (B,H,W) in [0,1] as logits."""
    return torch.logit(priors[:, :, 1].mean(1).clamp(1e-6, 1 - 1e-6))


def _check_features(features: EpisodeFeatures, n: int) -> None:
    """Injected features must cover the n = B + B·K images of the batch."""
    if features.sam is not None and features.sam.pix.shape[0] != n:
        raise ValueError(f"features.sam: {features.sam.pix.shape[0]} images, expected B + B·K = {n}")
    if features.tokens is not None and features.tokens.shape[0] != n:
        raise ValueError(f"features.tokens: {features.tokens.shape[0]} images, expected B + B·K = {n}")


def _binary(support_masks: torch.Tensor) -> torch.Tensor:
    """{0,1,255} masks -> float {0,1}: ignore pixels count as background (as released)."""
    return (support_masks == 1).float()
