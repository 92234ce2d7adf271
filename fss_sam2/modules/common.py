"""Small tensor helpers shared by the FSSAM modules, with the epsilons of the authors' code."""
import torch

MASKED_AVG_EPS = 5e-4  # official masked-average epsilon
COSINE_EPS = 1e-7  # official cosine epsilon
MINMAX_EPS = 1e-7  # official min-max epsilon


def masked_average(feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Prototype sum(f*m) / (sum(m) + 5e-4) over the spatial dims, for PPG, IMR and SCMA alike
    (the release's SCMA calls a helper it never defines: docs/deviations.md, "Masked average
    in SCMA").

    feat (B,C,H,W), mask (B,1,H,W) (same H,W) -> (B,C,1,1).
    """
    return (feat * mask).sum(dim=(2, 3), keepdim=True) / (mask.sum(dim=(2, 3), keepdim=True) + MASKED_AVG_EPS)


def minmax_normalize(x: torch.Tensor, dims) -> torch.Tensor:
    """(x - min) / (max - min + 1e-7) over `dims` (int or tuple)."""
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo + MINMAX_EPS)


def cosine_map(feat: torch.Tensor, proto: torch.Tensor) -> torch.Tensor:
    """Cosine of every location of feat (B,C,H,W) to proto (B,C,1,1) -> (B,1,H,W).

    The official form f.p / (|f| |p| + 1e-7) (not F.cosine_similarity's max(|f||p|, eps)).
    """
    dots = (feat * proto).sum(dim=1, keepdim=True)
    return dots / (feat.norm(dim=1, keepdim=True) * proto.norm(dim=1, keepdim=True) + COSINE_EPS)
